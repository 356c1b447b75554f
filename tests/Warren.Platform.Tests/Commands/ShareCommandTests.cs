using Xunit;
using static Warren.Platform.Tests.Commands.JsonAssert;

namespace Warren.Platform.Tests.Commands;

public sealed class ShareCommandTests : IDisposable
{
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    [Fact]
    public async Task Show_Public_Private_Port()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");

        var show = (await _h.RunAsync(a, k, "share", "show", "web", "--json")).Json;
        Assert.Equal(["vm_name", "status", "port", "url", "users", "links", "email_enabled"], Keys(show));
        Assert.Equal("private", Str(show, "status"));
        Assert.Equal(80, show.GetProperty("port").GetInt32());
        Assert.Equal("https://web.box.localhost:8443", Str(show, "url"));
        Assert.Equal(0, show.GetProperty("users").GetArrayLength());

        Assert.Equal("{\"vm_name\":\"web\",\"port\":80,\"share\":\"public\",\"status\":\"updated\"}\n", (await _h.RunAsync(a, k, "share", "set-public", "web", "--json")).Stdout);
        Assert.Equal("https://web.box.localhost:8443/ is now private (port 80).\n", (await _h.RunAsync(a, k, "share", "set-private", "web")).Stdout);

        Assert.Equal("{\"vm_name\":\"web\",\"port\":80,\"share\":\"private\"}\n", (await _h.RunAsync(a, k, "share", "port", "web", "--json")).Stdout);
        Assert.Equal("{\"vm_name\":\"web\",\"port\":8080,\"share\":\"private\",\"status\":\"updated\"}\n", (await _h.RunAsync(a, k, "share", "port", "web", "8080", "--json")).Stdout);
        var bad = await _h.RunAsync(a, k, "share", "port", "web", "80");
        Assert.Equal("port must be between 3000 and 9999, got \"80\"\n", bad.Stderr);
        var nan = await _h.RunAsync(a, k, "share", "port", "web", "http");
        Assert.Equal("port must be between 3000 and 9999, got \"http\"\n", nan.Stderr);
    }

    [Fact]
    public async Task Add_Remove_Users_AndInvitationMail()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.NewUserAsync("bob@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");

        var add = (await _h.RunAsync(a, k, "share", "add", "web", "Bob@Example.com", "--root", "--json")).Json;
        Assert.Equal("success", Str(add, "status"));
        Assert.Equal("web", Str(add, "vm_name"));
        Assert.Equal("bob@example.com", Str(add, "shared_with"));
        Assert.Equal("Invitation sent", Str(add, "message"));
        Assert.Equal("active", Str(add, "share_status"));
        Assert.True(add.GetProperty("ssh").GetBoolean());
        Assert.Single(_h.Email.Sent, m => m.To == "bob@example.com");

        var pending = (await _h.RunAsync(a, k, "share", "add", "web", "carol@example.com", "--json")).Json;
        Assert.Equal("pending", Str(pending, "share_status"));

        var again = await _h.RunAsync(a, k, "share", "add", "web", "bob@example.com");
        Assert.Equal("web is already shared with bob@example.com\n", again.Stderr);

        var users = (await _h.RunAsync(a, k, "share", "show", "web", "--json")).Json.GetProperty("users").EnumerateArray().ToList();
        Assert.Equal(2, users.Count);
        Assert.Equal(["email", "status", "invited_at", "ssh"], Keys(users[0]));

        Assert.Equal("{\"status\":\"success\",\"vm_name\":\"web\",\"message\":\"Removed bob@example.com's access\"}\n",
            (await _h.RunAsync(a, k, "share", "remove", "web", "bob@example.com", "--json")).Stdout);
        Assert.Equal("no share found for bob@example.com\n", (await _h.RunAsync(a, k, "share", "remove", "web", "bob@example.com")).Stderr);
    }

    [Fact]
    public async Task Links_AndReceiveEmail()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        var link = (await _h.RunAsync(a, k, "share", "add-link", "web", "--json")).Json;
        Assert.Equal(["status", "vm_name", "token", "url"], Keys(link));
        string token = Str(link, "token");
        Assert.Equal($"https://web.box.localhost:8443/?share={token}", Str(link, "url"));
        var shown = (await _h.RunAsync(a, k, "share", "show", "web", "--json")).Json.GetProperty("links")[0];
        Assert.Equal(token[..6], Str(shown, "token"));
        Assert.Equal(System.Text.Json.JsonValueKind.Null, shown.GetProperty("last_used_at").ValueKind);
        Assert.Equal("{\"status\":\"success\",\"vm_name\":\"web\",\"message\":\"Share link removed\"}\n",
            (await _h.RunAsync(a, k, "share", "remove-link", "web", token, "--json")).Stdout);

        Assert.Equal("{\"vm_name\":\"web\",\"email_enabled\":false,\"email_address\":\"anything@web.box.localhost\"}\n",
            (await _h.RunAsync(a, k, "share", "receive-email", "web", "--json")).Stdout);
        Assert.Equal("{\"vm_name\":\"web\",\"email_enabled\":true,\"email_address\":\"anything@web.box.localhost\",\"status\":\"updated\"}\n",
            (await _h.RunAsync(a, k, "share", "receive-email", "web", "on", "--json")).Stdout);
        Assert.Equal(1, (await _h.RunAsync(a, k, "share", "receive-email", "web", "maybe")).Exit);
    }

    [Fact]
    public async Task OthersVm_IsNotFoundOrAccessDenied()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var (b, bk) = await _h.NewUserAsync("bob@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        var r = await _h.RunAsync(b, bk, "share", "set-public", "web", "--json");
        Assert.Equal(1, r.Exit);
        Assert.Equal("{\"error\":\"VM \\\"web\\\" not found or access denied\"}\n", r.Stdout);
        Assert.False((await _h.P.Vms.GetByNameAsync(a.Id, "web")).IsPublic);
    }

    [Fact]
    public async Task LsAll_ListsVmsSharedWithMe()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var (b, bk) = await _h.NewUserAsync("bob@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        await _h.RunAsync(a, k, "share", "add", "web", "bob@example.com");
        Assert.Equal("{\"vms\":[]}\n", (await _h.RunAsync(b, bk, "ls", "--json")).Stdout);
        var team = (await _h.RunAsync(b, bk, "ls", "-a", "--json")).Json.GetProperty("team_vms")[0];
        Assert.Equal("web", Str(team, "vm_name"));
        Assert.Equal("alice@example.com", Str(team, "creator_email"));
        Assert.False(team.TryGetProperty("tags", out _));
        var text = await _h.RunAsync(b, bk, "ls", "-a");
        Assert.EndsWith("Team VMs:\n  • web.box.localhost - running (" + _h.P.Options.DefaultImage + ") by alice@example.com\n", text.Stdout);
    }
}
