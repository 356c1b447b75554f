using Warren.Platform.Commands;
using Xunit;

namespace Warren.Platform.Tests.Commands;

/// <summary><c>ssh-key generate-api-key --tag=T</c>: a token session scoped to the account's VMs tagged T.</summary>
public sealed class TagScopeTests : IDisposable
{
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    private async Task<CommandContext> TagTokenSessionAsync(string email, string tag, string cmds)
    {
        var (a, k) = await _h.NewUserAsync(email);
        var made = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--label=t", "--tag=" + tag, "--cmds=" + cmds, "--json");
        Assert.Equal(0, made.Exit);
        Assert.Equal(tag, JsonAssert.Str(made.Json, "tag"));
        var auth = await _h.Authenticator.AuthenticateAsync(JsonAssert.Str(made.Json, "token"), _h.ApiKeys.ControlNamespace);
        Assert.True(auth.Succeeded, auth.Error);
        return new CommandContext { Account = auth.Identity!.Account, CurrentKey = auth.Identity.Key, AllowedCommands = auth.Identity.AllowedCommands, ForceJson = true };
    }

    [Fact]
    public async Task TheScope_HidesOtherVms_TagsNewOnes_AndRefusesTagChanges()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=inside", "--tag=ci")).Exit);
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=outside")).Exit);
        var made = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--label=ci", "--tag=ci", "--cmds=ls,new,rm,comment,cp,share show", "--json");
        Assert.Equal(0, made.Exit);
        var auth = await _h.Authenticator.AuthenticateAsync(JsonAssert.Str(made.Json, "token"), _h.ApiKeys.ControlNamespace);
        var ctx = new CommandContext { Account = auth.Identity!.Account, CurrentKey = auth.Identity.Key, AllowedCommands = auth.Identity.AllowedCommands, ForceJson = true };

        var ls = await _h.RunWithAsync(ctx, "", "ls");
        Assert.Equal(["inside"], ls.Json.GetProperty("vms").EnumerateArray().Select(v => v.GetProperty("vm_name").GetString()).ToArray());
        var rm = await _h.RunWithAsync(ctx, "", "rm", "outside");
        Assert.Equal(["outside"], JsonAssert.Strings(rm.Json, "failed"));
        Assert.NotNull(_h.P.Index.GetByName("outside"));
        foreach (var argv in new[] { new[] { "comment", "outside", "x" }, ["share", "show", "outside"], ["cp", "outside", "copy"] })
        {
            var r = await _h.RunWithAsync(ctx, "", argv);
            Assert.Equal(1, r.Exit);
            Assert.Equal("VM \"outside\" not found", r.Json.GetProperty("error").GetString());
        }
        Assert.Equal(0, (await _h.RunWithAsync(ctx, "", "new", "--name=made")).Exit);
        Assert.Contains("ci", _h.P.Index.GetByName("made")!.Tags);
        Assert.Equal(0, (await _h.RunWithAsync(ctx, "", "cp", "inside", "copied", "--copy-tags=false")).Exit);
        Assert.Contains("ci", _h.P.Index.GetByName("copied")!.Tags);
    }

    [Fact]
    public async Task TagAndVm_DoNotCombine_NorDoesTagInCmds_NorABadTag()
    {
        var (a, k) = await _h.NewUserAsync("bob@example.com");
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=web")).Exit);
        Assert.Equal(1, (await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--tag=ci", "--vm=web")).Exit);
        Assert.Equal(1, (await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--tag=ci", "--cmds=ls,tag")).Exit);
        Assert.Equal(1, (await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--tag=Bad Tag")).Exit);
    }

    [Fact]
    public async Task AScopedSession_CannotAddKeys_NorReachAnotherAccountsTaggedVm()
    {
        var (m, mk) = await _h.NewUserAsync("mallory@example.com");
        Assert.Equal(0, (await _h.RunAsync(m, mk, "new", "--name=mallorys", "--tag=ci")).Exit);
        var ctx = await TagTokenSessionAsync("carol@example.com", "ci", "ls,rm,ssh-key add");
        var ls = await _h.RunWithAsync(ctx, "", "ls");
        Assert.Empty(ls.Json.GetProperty("vms").EnumerateArray());
        Assert.Equal(1, (await _h.RunWithAsync(ctx, "", "rm", "mallorys")).Exit);
        Assert.NotNull(_h.P.Index.GetByName("mallorys"));
        var key = Warren.Platform.Tests.TestSupport.TestPlatform.NewKey().ToOpenSshString();
        var add = await _h.RunWithAsync(ctx, "", "ssh-key", "add", key);
        Assert.Equal(1, add.Exit);
        Assert.Contains("cannot add SSH keys", add.Stdout);
    }

    [Fact]
    public async Task AnSshKeyAddedWithTag_IsScopedLikeATagToken_OverSshAndThroughCommands()
    {
        var (a, k) = await _h.NewUserAsync("dora@example.com");
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=tagged", "--tag=ci")).Exit);
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=untagged")).Exit);
        var child = Warren.Platform.Tests.TestSupport.TestPlatform.NewKey();
        var added = await _h.RunAsync(a, k, "ssh-key", "add", "--tag=ci", "--json", child.ToOpenSshString());
        Assert.Equal(0, added.Exit);
        Assert.Equal("ci", JsonAssert.Str(added.Json.GetProperty("permissions"), "tag"));
        var row = (await _h.P.Accounts.FindKeyByFingerprintAsync(child.Fingerprint))!;
        Assert.True(row.Permissions!.IsSshKey);
        Assert.Contains("[VMs tagged ci]", (await _h.RunAsync(a, k, "ssh-key", "list")).Stdout);

        // The rule: the control host, every command (within the scope), SSH only into the account's VMs tagged ci.
        Assert.True(KeyScope.AllowsControlPlane(row));
        Assert.True(KeyScope.AllowsCommand(row, ["ls"]));
        Assert.True(KeyScope.AllowsVmSsh(row, _h.P.Index.GetByName("tagged")!));
        Assert.False(KeyScope.AllowsVmSsh(row, _h.P.Index.GetByName("untagged")!));
        // Tokens its holder signs for a VM's HTTPS proxy: the same scope.
        Assert.True(KeyScope.AllowsVmToken(row, "tagged", _h.P.Index.GetByName("tagged")));
        Assert.False(KeyScope.AllowsVmToken(row, "untagged", _h.P.Index.GetByName("untagged")));
        Assert.False(KeyScope.AllowsVmToken(row, "missing", null));
        Assert.True(KeyScope.AllowsVmToken(k, "untagged", _h.P.Index.GetByName("untagged")));

        var ls = await _h.RunAsync(a, row, "ls", "--json");
        Assert.Equal(["tagged"], ls.Json.GetProperty("vms").EnumerateArray().Select(v => v.GetProperty("vm_name").GetString()).ToArray());
        var rm = await _h.RunAsync(a, row, "rm", "untagged", "--json");
        Assert.Equal(["untagged"], JsonAssert.Strings(rm.Json, "failed"));
        Assert.Equal(0, (await _h.RunAsync(a, row, "new", "--name=fromkey")).Exit);
        Assert.Contains("ci", _h.P.Index.GetByName("fromkey")!.Tags);

        // Nor may it add, remove or rename keys, change tags or mint tokens.
        foreach (var argv in new[]
        {
            new[] { "ssh-key", "add", Warren.Platform.Tests.TestSupport.TestPlatform.NewKey().ToOpenSshString() },
            ["ssh-key", "remove", k.Name], ["ssh-key", "rename", k.Name, "other"], ["tag", "tagged", "x"], ["ssh-key", "generate-api-key"],
        })
        {
            var r = await _h.RunAsync(a, row, argv);
            Assert.True(r.Exit == 1, string.Join(' ', argv) + ": " + r.Stdout + r.Stderr);
        }
        Assert.NotNull(await _h.P.Accounts.FindKeyByFingerprintAsync(k.Fingerprint));
    }

    [Fact]
    public async Task SshKeyAddTag_BadInput_GetsClearErrors()
    {
        var (a, k) = await _h.NewUserAsync("erin@example.com");
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=web")).Exit);
        foreach (var (flags, message) in new[]
        {
            (new[] { "--tag=ci", "--vm=web" }, "cannot be combined"),
            (["--tag=ci", "--cmds=ls,tag"], "cannot run tag"),
            (["--tag=Bad Tag"], "invalid --tag"),
        })
        {
            var key = Warren.Platform.Tests.TestSupport.TestPlatform.NewKey();
            var r = await _h.RunAsync(a, k, ["ssh-key", "add", .. flags, key.ToOpenSshString()]);
            Assert.Equal(1, r.Exit);
            Assert.Contains(message, r.Stdout + r.Stderr);
            Assert.Null(await _h.P.Accounts.FindKeyByFingerprintAsync(key.Fingerprint));
        }
    }
}
