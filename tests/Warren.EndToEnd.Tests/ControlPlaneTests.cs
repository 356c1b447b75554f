using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>The exe.dev command set through the real OpenSSH client against a running daemon.</summary>
public sealed class ControlPlaneTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;

    private static JsonElement Json(ProcessResult r)
    {
        Assert.True(r.ExitCode == 0, r.ToString());
        return JsonDocument.Parse(r.Stdout).RootElement;
    }

    [Fact]
    public async Task Whoami_Json_ListsTheCurrentKey()
    {
        var u = await Daemon.CreateUserAsync("whoami@example.com");
        var j = Json(await u.ControlAsync("whoami --json"));
        Assert.Equal("whoami@example.com", j.GetProperty("email").GetString());
        var keys = j.GetProperty("ssh_keys");
        Assert.Equal(1, keys.GetArrayLength());
        var k = keys[0];
        Assert.Equal(u.PublicKey.Split(' ')[1], k.GetProperty("public_key").GetString()!.Split(' ')[1]);
        var fp = (await ProcessRunner.RunAsync("ssh-keygen", ["-l", "-E", "sha256", "-f", u.KeyPath + ".pub"])).Stdout.Split(' ')[1];
        Assert.Equal(fp, k.GetProperty("fingerprint").GetString());
        Assert.True(k.GetProperty("current").GetBoolean());
    }

    [Fact]
    public async Task SshKey_AddFromStdin_ListRenameRemove()
    {
        var u = await Daemon.CreateUserAsync("keys@example.com");
        var second = await SshUser.CreateKeyAsync(Daemon, "keys2@example.com");
        var added = Json(await u.ControlAsync("ssh-key add --json", stdin: second.PublicKey + "\n"));
        Assert.Equal("added", added.GetProperty("status").GetString());

        // The new key now logs into the same account.
        var who = Json(await second.ControlAsync("whoami --json"));
        Assert.Equal("keys@example.com", who.GetProperty("email").GetString());

        var list = Json(await u.ControlAsync("ssh-key list --json")).GetProperty("ssh_keys");
        Assert.Equal(2, list.GetArrayLength());
        var secondName = list.EnumerateArray().Single(k => !k.GetProperty("current").GetBoolean()).GetProperty("name").GetString()!;

        var renamed = Json(await u.ControlAsync($"ssh-key rename {secondName} laptop --json"));
        Assert.Equal("renamed", renamed.GetProperty("status").GetString());
        Assert.Equal("laptop", renamed.GetProperty("new_name").GetString());

        var removed = Json(await u.ControlAsync("ssh-key remove laptop --json"));
        Assert.Equal("deleted", removed.GetProperty("status").GetString());
        var denied = await second.ControlAsync("whoami --json");
        Assert.NotEqual(0, denied.ExitCode);
    }

    [Fact]
    public async Task UnknownCommand_SuggestsTheNearest_AndExitsNonZero()
    {
        var u = await Daemon.CreateUserAsync("typo@example.com");
        var r = await u.ControlAsync("whoamj");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("whoami", r.Stdout + r.Stderr);

        var j = await u.ControlAsync("ls --jsno");
        Assert.NotEqual(0, j.ExitCode);
        Assert.Contains("--json", j.Stdout + j.Stderr);
    }

    [Fact]
    public async Task UnregisteredKey_Exec_AsksToRegister()
    {
        var stranger = await SshUser.CreateKeyAsync(Daemon, "stranger@example.com");
        var r = await stranger.ControlAsync("ls");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("registration", r.Stdout + r.Stderr);
    }

    [Fact]
    public async Task New_Ls_Tag_Comment_Rename_Rm_FieldByField()
    {
        var u = await Daemon.CreateUserAsync("vms@example.com");
        var created = Json(await u.ControlAsync("new --name=cpvm1 --image=warren/busybox:1 --tag web --json"));
        Assert.Equal("cpvm1", created.GetProperty("vm_name").GetString());
        Assert.Equal("cpvm1.box.localhost", created.GetProperty("ssh_dest").GetString());
        Assert.Equal(JsonValueKind.Array, created.GetProperty("tags").ValueKind);
        Assert.Equal("web", created.GetProperty("tags")[0].GetString());
        Assert.StartsWith("https://cpvm1.box.localhost", created.GetProperty("https_url").GetString());

        var ls = Json(await u.ControlAsync("ls --json")).GetProperty("vms");
        Assert.Equal(1, ls.GetArrayLength());
        var vm = ls[0];
        Assert.Equal("cpvm1", vm.GetProperty("vm_name").GetString());
        Assert.Equal("running", vm.GetProperty("status").GetString());
        Assert.Equal("warren/busybox:1", vm.GetProperty("image").GetString());

        var tag = Json(await u.ControlAsync("tag cpvm1 prod --json"));
        Assert.Equal(["web", "prod"], tag.GetProperty("tags").EnumerateArray().Select(t => t.GetString()).OrderByDescending(s => s).ToArray());
        var comment = Json(await u.ControlAsync("comment cpvm1 'staging copy' --json"));
        Assert.Equal("staging copy", comment.GetProperty("comment").GetString());

        var renamed = Json(await u.ControlAsync("rename cpvm1 cpvm2 --json"));
        Assert.Equal("cpvm2", renamed.GetProperty("new_name").GetString());

        // Text ls as the seed's deploy script greps it.
        var text = await u.ControlAsync("ls");
        Assert.Matches(@"(^|\s)cpvm2\.box\.localhost", text.Stdout);

        var rm = Json(await u.ControlAsync("rm cpvm2 --json"));
        Assert.Equal(["cpvm2"], rm.GetProperty("deleted").EnumerateArray().Select(e => e.GetString()).ToArray());
        Assert.Equal(0, Json(await u.ControlAsync("ls --json")).GetProperty("vms").GetArrayLength());
    }

    [Fact]
    public async Task New_BadName_IsRefused_WithNothingLeftBehind()
    {
        var u = await Daemon.CreateUserAsync("badname@example.com");
        var r = await u.ControlAsync("new --name=Bad_Name --image=warren/busybox:1");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal(0, Json(await u.ControlAsync("ls --json")).GetProperty("vms").GetArrayLength());
    }

    [Fact]
    public async Task AnotherAccountsVm_IsInvisible()
    {
        var a = await Daemon.CreateUserAsync("owner@example.com");
        var b = await Daemon.CreateUserAsync("other@example.com");
        Json(await a.ControlAsync("new --name=privvm --image=warren/busybox:1 --json"));
        Assert.Equal(0, Json(await b.ControlAsync("ls --json")).GetProperty("vms").GetArrayLength());
        var rm = await b.ControlAsync("rm privvm --json");
        Assert.Contains("privvm", rm.Stdout);
        Assert.Equal(1, Json(await a.ControlAsync("ls --json")).GetProperty("vms").GetArrayLength());
        Json(await a.ControlAsync("rm privvm --json"));
    }
}
