using Warren.Platform.Commands;
using Xunit;
using static Warren.Platform.Tests.Commands.JsonAssert;

namespace Warren.Platform.Tests.Commands;

public sealed class DispatcherTests : IDisposable
{
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    [Theory]
    [InlineData(new[] { "ls" }, "ls")]
    [InlineData(new[] { "--json", "ls", "-l" }, "ls")]
    [InlineData(new[] { "ssh-key", "list" }, "ssh-key list")]
    [InlineData(new[] { "ssh-key", "--json", "list" }, "ssh-key list")]
    [InlineData(new[] { "ssh-key" }, "ssh-key")]
    [InlineData(new[] { "share", "add-share-link", "vm" }, "share add-link")]
    [InlineData(new[] { "delete", "vm" }, "rm")]
    [InlineData(new[] { "ssh", "vm", "ls", "-la" }, "ssh")]
    [InlineData(new[] { "ssh-key", "lst" }, null)]
    [InlineData(new[] { "nope" }, null)]
    [InlineData(new string[0], null)]
    public void Resolve_GivesTheCanonicalPath(string[] argv, string? expected) => Assert.Equal(expected, CommandDispatcher.Resolve(argv));

    [Fact]
    public void IsAllowed_IsExactOnTheCanonicalPath()
    {
        Assert.False(CommandDispatcher.IsAllowed(["ssh-key"], ["ssh-key", "list"]));
        Assert.True(CommandDispatcher.IsAllowed(["ssh-key list"], ["ssh-key", "list", "--json"]));
        Assert.True(CommandDispatcher.IsAllowed(["ssh my-vm"], ["ssh", "my-vm", "uptime"]));
        Assert.False(CommandDispatcher.IsAllowed(["ssh my-vm"], ["ssh", "other", "uptime"]));
        Assert.False(CommandDispatcher.IsAllowed([], ["ls"]));
        Assert.True(CommandDispatcher.IsAllowed(null, ["anything"]));
    }

    [Fact]
    public async Task UnknownCommand_SuggestsTheNearest()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "lss");
        Assert.Equal(1, r.Exit);
        Assert.Equal("unknown command \"lss\" (did you mean \"ls\"?)\n", r.Stderr);
        var j = await _h.RunAsync(a, k, "whomai", "--json");
        Assert.Equal("{\"error\":\"unknown command \\\"whomai\\\" (did you mean \\\"whoami\\\"?)\"}\n", j.Stdout);
        var sub = await _h.RunAsync(a, k, "ssh-key", "lst");
        Assert.Equal("unknown ssh-key subcommand \"lst\" (did you mean \"list\"?)\n", sub.Stderr);
    }

    [Fact]
    public async Task UnknownFlag_SuggestsTheNearest()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "new", "--nmae=x");
        Assert.Equal(1, r.Exit);
        Assert.Equal("unknown flag: --nmae (did you mean --name?)\n", r.Stderr);
        Assert.Empty(await _h.P.Vms.ListAsync(a.Id));
    }

    [Fact]
    public async Task Help_ListsCommands_AndPerCommandFlags()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "help");
        Assert.Equal(0, r.Exit);
        foreach (var c in new[] { "ls", "new", "rm", "restart", "rename", "tag", "comment", "cp", "resize", "stat", "whoami",
                     "ssh-key list", "ssh-key generate-api-key", "share show", "share receive-email", "browser", "ssh" })
            Assert.Contains("  " + c, r.Stdout);
        Assert.DoesNotContain("exit", r.Stdout); // interactive only
        var none = await _h.RunAsync(a, k);
        Assert.Equal(r.Stdout, none.Stdout);
        var nh = await _h.RunAsync(a, k, "help", "new");
        Assert.Contains("--registry-auth USER:TOKEN", nh.Stdout);
        var flag = await _h.RunAsync(a, k, "new", "--help");
        Assert.Equal(nh.Stdout, flag.Stdout);
        var group = await _h.RunAsync(a, k, "share");
        Assert.Equal(0, group.Exit);
        Assert.Contains("share set-public VM", group.Stdout);
        var json = await _h.RunAsync(a, k, "help", "--json");
        Assert.Contains(json.Json.GetProperty("commands").EnumerateArray(), c => Str(c, "name") == "ssh-key generate-api-key");
        // exe.dev's entries are {name, description}.
        Assert.All(json.Json.GetProperty("commands").EnumerateArray(), c => Assert.False(string.IsNullOrEmpty(Str(c, "description"))));
        Assert.Equal("Create a new VM", Str((await _h.RunAsync(a, k, "help", "new", "--json")).Json, "description"));
    }

    [Fact]
    public async Task Help_Verbose_ShowsSubcommandFlags()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var plain = await _h.RunAsync(a, k, "help", "ssh-key");
        Assert.DoesNotContain("--cmds", plain.Stdout);
        var verbose = await _h.RunAsync(a, k, "help", "ssh-key", "--verbose");
        Assert.Equal(0, verbose.Exit);
        Assert.Contains("Flags of ssh-key add:", verbose.Stdout);
        Assert.Contains("--cmds CMDS", verbose.Stdout);
        var json = await _h.RunAsync(a, k, "help", "ssh-key", "--verbose", "--json");
        var add = json.Json.GetProperty("subcommands").EnumerateArray().Single(s => Str(s, "name") == "ssh-key add");
        Assert.Contains(add.GetProperty("flags").EnumerateArray(), f => Str(f, "name") == "--vm");
    }

    [Fact]
    public async Task EveryCommandAcceptsJson()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        foreach (var path in CommandCatalog.AllPaths())
        {
            var def = CommandCatalog.FindPath(path)!;
            if (def.InteractiveOnly) continue;
            var r = await _h.RunAsync(a, k, [.. path.Split(' '), "--json", "--help"]);
            Assert.True(r.Exit == 0, $"{path}: {r.Stdout}{r.Stderr}");
        }
    }

    [Fact]
    public async Task Ssh_WithoutSession_ExplainsItself()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "ssh", "vm", "ls", "-la", "--json");
        Assert.Equal(1, r.Exit);
        Assert.Equal("{\"error\":\"ssh command requires an SSH session\"}\n", r.Stdout);
    }

    [Fact]
    public async Task TokenPermissions_AreEnforced()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var ctx = new CommandContext { Account = a, CurrentKey = k, ForceJson = true, AllowedCommands = ["ls", "whoami"] };
        var ok = await _h.RunWithAsync(ctx, "", "ls");
        Assert.Equal("{\"vms\":[]}\n", ok.Stdout);
        var denied = await _h.RunWithAsync(ctx, "", "new", "--name=x");
        Assert.Equal(1, denied.Exit);
        Assert.Equal("{\"error\":\"command not allowed by token permissions\"}\n", denied.Stdout);
        Assert.Empty(await _h.P.Vms.ListAsync(a.Id));
    }

    [Fact]
    public async Task Interactive_JsonIsIndented_ErrorsAreRed()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var ctx = new CommandContext { Account = a, CurrentKey = k, Interactive = true };
        var r = await _h.RunWithAsync(ctx, "", "ls", "--json");
        Assert.Equal("{\n  \"vms\": []\n}\n", r.Stdout);
        var e = await _h.RunWithAsync(ctx, "", "rm", "ghost");
        Assert.Equal("\x1b[31mVM \"ghost\" not found\x1b[0m\n", e.Stderr);
    }

    [Fact]
    public async Task Audit_RecordsEveryCommand()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "ls");
        await _h.RunAsync(a, k, "rm", "ghost");
        var entries = await _h.P.Audit.TailAsync(10, a.Id);
        Assert.Contains(entries, e => e.Command == "ls" && e.Result == "ok" && e.KeyFingerprint == k.Fingerprint);
        Assert.Contains(entries, e => e.Command == "rm" && e.Result == "error");
    }
}
