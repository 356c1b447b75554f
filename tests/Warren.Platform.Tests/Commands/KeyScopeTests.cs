using Warren.Platform.Accounts;
using Warren.Platform.Commands;
using Warren.Platform.Tests.TestSupport;
using Xunit;
using static Warren.Platform.Tests.Commands.JsonAssert;

namespace Warren.Platform.Tests.Commands;

/// <summary>Scoped SSH keys (<c>ssh-key add --cmds/--vm</c>): the rule, and keys added by limited sessions.</summary>
public sealed class KeyScopeTests : IDisposable
{
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    private static AccountKey KeyWith(ApiKeyPermissions? p)
        => new("key_x", "acct_x", "ssh-ed25519 AAAA", "SHA256:x", "k", DateTimeOffset.UnixEpoch, null, p);

    private static ApiKeyPermissions Ssh(string? vm, params string[] cmds) => new("", cmds, vm, null) { IsSshKey = true };

    [Fact]
    public void Rule_UnlimitedKeysReachEverything_ApiKeysNeverLogIn()
    {
        Assert.True(KeyScope.AllowsControlPlane(KeyWith(null)));
        Assert.True(KeyScope.AllowsVmSsh(KeyWith(null), "web"));
        Assert.True(KeyScope.AllowsCommand(KeyWith(null), ["rm", "web"]));

        var api = KeyWith(new ApiKeyPermissions("api-key", null, null, null));
        Assert.False(KeyScope.AllowsControlPlane(api));
        Assert.False(KeyScope.AllowsVmSsh(api, "web"));
    }

    [Fact]
    public void Rule_CmdsKey_SshCountsAsACommand()
    {
        var ls = KeyWith(Ssh(null, "ls", "ssh-key list"));
        Assert.True(KeyScope.AllowsControlPlane(ls));
        Assert.True(KeyScope.AllowsCommand(ls, ["ls", "--json"]));
        Assert.True(KeyScope.AllowsCommand(ls, ["ssh-key", "list"]));
        Assert.False(KeyScope.AllowsCommand(ls, ["ssh-key", "remove", "key-1"]));
        Assert.False(KeyScope.AllowsCommand(ls, ["help"]));
        Assert.False(KeyScope.AllowsVmSsh(ls, "web"));

        var ssh = KeyWith(Ssh(null, "ssh"));
        Assert.True(KeyScope.AllowsVmSsh(ssh, "web"));
        Assert.True(KeyScope.AllowsVmSsh(ssh, "other"));
        Assert.True(KeyScope.AllowsCommand(ssh, ["ssh", "web", "ls"]));
        Assert.False(KeyScope.AllowsCommand(ssh, ["ls"]));

        var one = KeyWith(Ssh(null, "ssh web"));
        Assert.True(KeyScope.AllowsVmSsh(one, "web"));
        Assert.False(KeyScope.AllowsVmSsh(one, "other"));
    }

    [Fact]
    public void Rule_VmKey_OnlyThatVm_NoControlPlane()
    {
        var vm = KeyWith(Ssh("web", "ssh web"));
        Assert.False(KeyScope.AllowsControlPlane(vm));
        Assert.False(KeyScope.AllowsCommand(vm, ["ssh", "web"]));
        Assert.True(KeyScope.AllowsVmSsh(vm, "web"));
        Assert.False(KeyScope.AllowsVmSsh(vm, "other"));
        // A row whose commands were widened by hand still holds to its VM.
        Assert.False(KeyScope.AllowsVmSsh(KeyWith(Ssh("web", "ssh")), "other"));
    }

    [Fact]
    public async Task TokenSession_AddedKeyInheritsTheTokensCommands()
    {
        var (a, k) = await _h.NewUserAsync("tok@example.com");
        var child = TestPlatform.NewKey();
        var r = await _h.RunWithAsync(new CommandContext { Account = a, CurrentKey = k, AllowedCommands = ["ls", "ssh-key add"] },
            child.ToOpenSshString() + "\n", "ssh-key", "add", "--json");
        Assert.Equal(0, r.Exit);
        Assert.Equal(["ls", "ssh-key add"], Strings(r.Json.GetProperty("permissions"), "cmds"));
        var row = await _h.P.Accounts.FindKeyByFingerprintAsync(child.Fingerprint);
        Assert.True(row!.Permissions!.IsSshKey);

        var wider = TestPlatform.NewKey();
        var refused = await _h.RunWithAsync(new CommandContext { Account = a, CurrentKey = k, AllowedCommands = ["ssh-key add"] },
            wider.ToOpenSshString() + "\n", "ssh-key", "add", "--cmds=rm");
        Assert.Equal(1, refused.Exit);
        Assert.Contains(KeyScope.NotAllowed, refused.Stderr);
        Assert.Null(await _h.P.Accounts.FindKeyByFingerprintAsync(wider.Fingerprint));
    }

    [Fact]
    public async Task ScopedKey_CannotMintTokens_AndIsRemovedAsAnSshKey()
    {
        var (a, k) = await _h.NewUserAsync("mint@example.com");
        var limited = await _h.P.Accounts.AddKeyAsync(a.Id, TestPlatform.NewKey(), "ci", Ssh(null, "ssh-key generate-api-key"));
        var mint = await _h.RunAsync(a, limited, "ssh-key", "generate-api-key");
        Assert.Equal(1, mint.Exit);
        Assert.Contains("limited SSH key cannot create API tokens", mint.Stderr);

        var list = await _h.RunAsync(a, k, "ssh-key", "list");
        Assert.Contains("[commands: ssh-key generate-api-key]", list.Stdout);
        var removed = await _h.RunAsync(a, k, "ssh-key", "remove", "ci");
        Assert.Equal("Removed SSH key \"ci\"\n", removed.Stdout);
    }
}
