using Warren.Platform.Accounts;
using Warren.Platform.Commands;
using Warren.Platform.Tests.TestSupport;
using Warren.Ssh.Keys;
using Xunit;
using static Warren.Platform.Tests.Commands.JsonAssert;

namespace Warren.Platform.Tests.Commands;

public sealed class AccountCommandTests : IDisposable
{
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    [Fact]
    public async Task Whoami_Json_CurrentKeyFirst()
    {
        var (a, k1) = await _h.NewUserAsync("alice@example.com");
        var second = TestPlatform.NewKey();
        var k2 = await _h.P.Accounts.AddKeyAsync(a.Id, second, "laptop");
        var r = await _h.RunAsync(a, k2, "whoami", "--json");
        Assert.Equal(0, r.Exit);
        var j = r.Json;
        Assert.Equal(["email", "ssh_keys"], Keys(j));
        Assert.Equal("alice@example.com", Str(j, "email"));
        var keys = j.GetProperty("ssh_keys").EnumerateArray().ToList();
        Assert.Equal(2, keys.Count);
        Assert.Equal(["public_key", "fingerprint", "name", "current"], Keys(keys[0]));
        Assert.Equal("laptop", Str(keys[0], "name"));
        Assert.True(keys[0].GetProperty("current").GetBoolean());
        Assert.Equal(second.Fingerprint, Str(keys[0], "fingerprint"));
        Assert.Equal(second.ToOpenSshString(), Str(keys[0], "public_key"));
        Assert.False(keys[1].GetProperty("current").GetBoolean());
        Assert.Equal(k1.Fingerprint, Str(keys[1], "fingerprint"));
    }

    [Fact]
    public async Task Whoami_Text()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "whoami");
        Assert.Equal($"Email Address: alice@example.com\n  Public Key: {k.PublicKey} (key-1) ← current\n", r.Stdout);
    }

    [Fact]
    public async Task SshKey_Add_FromArgumentOrStdin_List_Rename_Remove()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var newKey = TestPlatform.NewKey();
        string line = newKey.ToOpenSshString("me@laptop");

        // ssh joins argv with spaces: the key arrives as three words.
        var add = await _h.RunAsync(a, k, ["ssh-key", "add", .. line.Split(' '), "--json"]);
        Assert.Equal(0, add.Exit);
        Assert.Equal(["public_key", "status", "name"], Keys(add.Json));
        Assert.Equal(newKey.ToOpenSshString(), Str(add.Json, "public_key"));
        Assert.Equal("added", Str(add.Json, "status"));
        Assert.Equal("me@laptop", Str(add.Json, "name"));

        var third = TestPlatform.NewKey();
        var fromStdin = await _h.RunWithAsync(new CommandContext { Account = a, CurrentKey = k }, third.ToOpenSshString() + "\n", "ssh-key", "add", "--name", "ci", "--json");
        Assert.Equal("ci", Str(fromStdin.Json, "name"));

        var list = await _h.RunAsync(a, k, "ssh-key", "list", "--json");
        var keys = list.Json.GetProperty("ssh_keys").EnumerateArray().ToList();
        Assert.Equal(3, keys.Count);
        Assert.Equal(["public_key", "fingerprint", "name", "added_at", "current"], Keys(keys[0]));
        Assert.True(keys[0].GetProperty("current").GetBoolean());

        var rename = await _h.RunAsync(a, k, "ssh-key", "rename", "ci", "deploy", "--json");
        Assert.Equal("ci", Str(rename.Json, "old_name"));
        Assert.Equal("deploy", Str(rename.Json, "new_name"));
        Assert.Equal("renamed", Str(rename.Json, "status"));

        var remove = await _h.RunAsync(a, k, "ssh-key", "remove", "deploy", "--json");
        Assert.Equal(["public_key", "fingerprint", "status", "name"], Keys(remove.Json));
        Assert.Equal("deleted", Str(remove.Json, "status"));
        Assert.Equal(third.Fingerprint, Str(remove.Json, "fingerprint"));

        var bad = await _h.RunAsync(a, k, "ssh-key", "add", "not-a-key");
        Assert.Equal(1, bad.Exit);
        Assert.StartsWith("invalid SSH public key", bad.Stderr);
    }

    [Fact]
    public async Task SshKey_Add_NamedFromItsSanitisedComment_UnlessTaken()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var first = await _h.RunAsync(a, k, "ssh-key", "add", TestPlatform.NewKey().ToOpenSshString("my;laptop"), "--json");
        Assert.Equal("mylaptop", Str(first.Json, "name"));
        var again = await _h.RunAsync(a, k, "ssh-key", "add", TestPlatform.NewKey().ToOpenSshString("my laptop`"), "--json");
        Assert.Equal("my-laptop", Str(again.Json, "name"));
        var taken = await _h.RunAsync(a, k, "ssh-key", "add", TestPlatform.NewKey().ToOpenSshString("mylaptop"), "--json");
        Assert.Equal("key-4", Str(taken.Json, "name"));
        // An explicit --name still wins over the comment.
        var named = await _h.RunAsync(a, k, "ssh-key", "add", TestPlatform.NewKey().ToOpenSshString("mylaptop"), "--name=ci", "--json");
        Assert.Equal("ci", Str(named.Json, "name"));
    }

    [Fact]
    public async Task SshKey_Add_KeyAsArgumentAndOnStdin_IsRefused()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var argKey = TestPlatform.NewKey();
        var stdinKey = TestPlatform.NewKey();
        var r = await _h.RunWithAsync(new CommandContext { Account = a, CurrentKey = k }, stdinKey.ToOpenSshString() + "\n",
            ["ssh-key", "add", .. argKey.ToOpenSshString().Split(' ')]);
        Assert.Equal(1, r.Exit);
        Assert.Contains("either as an argument or on stdin, not both", r.Stderr);
        Assert.Null(await _h.P.Accounts.FindKeyByFingerprintAsync(argKey.Fingerprint));
        Assert.Null(await _h.P.Accounts.FindKeyByFingerprintAsync(stdinKey.Fingerprint));

        // Blank stdin (ssh -n, a closed pipe) is no second key.
        var ok = await _h.RunWithAsync(new CommandContext { Account = a, CurrentKey = k }, "\n \n", ["ssh-key", "add", .. argKey.ToOpenSshString().Split(' ')]);
        Assert.Equal(0, ok.Exit);
    }

    [Fact]
    public async Task DeleteSshKey_IsSshKeyRemove_ForPermissionsToo()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.P.Accounts.AddKeyAsync(a.Id, TestPlatform.NewKey(), "old");
        var r = await _h.RunAsync(a, k, "delete-ssh-key", "old", "--json");
        Assert.Equal(0, r.Exit);
        Assert.Equal("deleted", Str(r.Json, "status"));
        Assert.Equal("ssh-key remove", CommandDispatcher.Resolve(["delete-ssh-key", "x"]));
        Assert.True(CommandDispatcher.IsAllowed(["ssh-key remove"], ["delete-ssh-key", "x"]));
        Assert.False(CommandDispatcher.IsAllowed(["ssh-key list"], ["delete-ssh-key", "x"]));
    }

    [Fact]
    public async Task SshKey_Add_KeyOfAnotherAccount_Fails()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var (_, bk) = await _h.NewUserAsync("bob@example.com");
        var r = await _h.RunAsync(a, k, "ssh-key", "add", bk.PublicKey, "--json");
        Assert.Equal(1, r.Exit);
        Assert.Equal("{\"error\":\"This SSH key is already registered.\"}\n", r.Stdout);
    }

    [Fact]
    public async Task UnknownKey_AsksToRegister()
    {
        var r = await _h.RunAsync(null, null, "ls", "--json");
        Assert.Equal(1, r.Exit);
        Assert.Equal("{\"error\":\"Please complete registration by running: ssh warren.localhost\"}\n", r.Stdout);
        var t = await _h.RunAsync(null, null, "whoami");
        Assert.Equal("Please complete registration by running: ssh warren.localhost\n", t.Stderr);
    }

    [Fact]
    public async Task Browser_WithoutIssuer_SaysSo_WithIssuer_PrintsLink()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "browser");
        Assert.Equal(1, r.Exit);
        Assert.Contains("not available", r.Stderr);

        using var h2 = new CommandHarness(new FixedLinkIssuer());
        var (a2, k2) = await h2.NewUserAsync("carol@example.com");
        var ok = await h2.RunAsync(a2, k2, "browser", "--json");
        Assert.Equal("{\"magic_link\":\"https://warren.localhost:8443/auth/one-time?x=carol@example.com\",\"url\":\"https://warren.localhost:8443/auth/one-time?x=carol@example.com\"}\n", ok.Stdout);
    }

    private sealed class FixedLinkIssuer : ILoginLinkIssuer
    {
        public Task<Uri> IssueLoginLinkAsync(Account account, CancellationToken ct)
            => Task.FromResult(new Uri("https://warren.localhost:8443/auth/one-time?x=" + account.Email));
    }
}
