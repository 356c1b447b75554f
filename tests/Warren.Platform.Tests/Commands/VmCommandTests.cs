using System.Text.Json;
using Warren.Platform.Commands;
using Warren.Platform.Tests.TestSupport;
using Xunit;
using static Warren.Platform.Tests.Commands.JsonAssert;

namespace Warren.Platform.Tests.Commands;

public sealed class VmCommandTests : IDisposable
{
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    [Fact]
    public async Task Ls_Empty()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "ls", "--json");
        Assert.Equal(0, r.Exit);
        Assert.Equal("{\"vms\":[]}\n", r.Stdout);
        var t = await _h.RunAsync(a, k, "ls");
        Assert.Equal("No VMs found. Create one with 'new'.\n", t.Stdout);
    }

    [Fact]
    public async Task New_Json_FieldByField()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "new", "--name=web", "--tag", "prod", "--tag=api", "--json");
        Assert.Equal(0, r.Exit);
        Assert.Equal("", r.Stderr);
        Assert.Single(r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)); // no progress text in JSON mode
        var j = r.Json;
        Assert.Equal(["vm_name", "tags", "ssh_command", "ssh_dest", "ssh_port", "https_url", "proxy_port", "status"], Keys(j));
        Assert.Equal("web", Str(j, "vm_name"));
        Assert.Equal(["api", "prod"], Strings(j, "tags"));
        Assert.Equal("ssh -p 2222 web.box.localhost", Str(j, "ssh_command"));
        Assert.Equal("web.box.localhost", Str(j, "ssh_dest"));
        Assert.Equal(2222, j.GetProperty("ssh_port").GetInt32());
        Assert.Equal("https://web.box.localhost:8443", Str(j, "https_url"));
        Assert.Equal(80, j.GetProperty("proxy_port").GetInt32());
        Assert.Equal("running", Str(j, "status"));
    }

    [Fact]
    public async Task New_Text_AndGeneratedName()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "new");
        Assert.Equal(0, r.Exit);
        var vm = Assert.Single(await _h.P.Vms.ListAsync(a.Id));
        Assert.Matches("^[a-z]+-[a-z]+", vm.Name);
        Assert.Equal(
            $"Creating a new VM using image {_h.P.Options.DefaultImage}...\n\nApp (HTTPS proxy → :80)\nhttps://{vm.Name}.box.localhost:8443\n\nSSH\nssh -p 2222 {vm.Name}.box.localhost\n",
            r.Stdout);
        Assert.DoesNotContain("\x1b", r.Stdout);
    }

    [Fact]
    public async Task New_PassesEveryFlag()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        _h.P.Engine.ExposedPorts["ghcr.io/o/app:1"] = [8080];
        var r = await _h.RunAsync(a, k, "new", "--name", "myapp", "--image", "ghcr.io/o/app:1", "--registry-auth", "bob:s3cret",
            "--env", "A=1", "--env=B=two words", "--cpu=1", "--memory", "4GB", "--disk=20GB", "--command", "none", "--comment", "hello", "--json");
        Assert.True(r.Exit == 0, r.Stdout + r.Stderr);
        Assert.Equal(8080, r.Json.GetProperty("proxy_port").GetInt32());
        var vm = await _h.P.Vms.GetByNameAsync(a.Id, "myapp");
        Assert.Equal("ghcr.io/o/app:1", vm.Image);
        Assert.Equal(1, vm.Cpus);
        Assert.Equal(4L << 30, vm.MemoryBytes);
        Assert.Equal(20L << 30, vm.DiskBytes);
        Assert.Equal("hello", vm.Comment);
        Assert.Equal("two words", vm.Env["B"]);
        Assert.Equal(Runtime.CommandMode.None, vm.CommandMode);
        Assert.Contains("s3cret", _h.P.Engine.CredentialsSeen);
        Assert.DoesNotContain("s3cret", r.Stdout);
        var audit = await _h.P.Audit.TailAsync(10);
        Assert.DoesNotContain(audit, e => e.Arguments.Any(x => x.Contains("s3cret")));
    }

    [Fact]
    public async Task New_CustomCommand_IsLexed()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=c1", "--command", "sleep 'infinity'")).Exit);
        var vm = await _h.P.Vms.GetByNameAsync(a.Id, "c1");
        Assert.Equal(["sleep", "infinity"], vm.CustomCommand);
    }

    [Fact]
    public async Task New_SetupScriptFromStdin()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunWithAsync(new CommandContext { Account = a, CurrentKey = k }, "#!/bin/sh\necho hi\n", "new", "--name=s1", "--setup-script=/dev/stdin");
        Assert.Equal(0, r.Exit);
        Assert.Equal("#!/bin/sh\necho hi\n", (await _h.P.Vms.GetByNameAsync(a.Id, "s1")).SetupScript);
    }

    [Fact]
    public async Task New_Errors_AreOneLine()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "new", "--name=Bad_Name", "--json");
        Assert.Equal(1, r.Exit);
        Assert.StartsWith("{\"error\":", r.Stdout);
        Assert.Single(r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var t = await _h.RunAsync(a, k, "new", "--env", "NOEQUALS");
        Assert.Equal(1, t.Exit);
        Assert.Equal("invalid environment variable format \"NOEQUALS\": must be KEY=VALUE\n", t.Stderr);
        Assert.Equal("", t.Stdout);
        var u = await _h.RunAsync(a, k, "new", "--registry-auth", "nocolon");
        Assert.Equal("invalid --registry-auth: expected USER:TOKEN\n", u.Stderr);
        Assert.Empty(await _h.P.Vms.ListAsync(a.Id));
    }

    [Fact]
    public async Task Ls_Json_FieldByField_AndLong()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web", "--tag=prod", "--comment=main site");
        var j = (await _h.RunAsync(a, k, "ls", "--json")).Json.GetProperty("vms")[0];
        Assert.Equal(["vm_name", "ssh_dest", "ssh_host", "ssh_port", "https_url", "status", "region", "image", "tags", "comment", "created_at",
            "allocated_cpus", "memory_capacity_bytes", "disk_capacity_bytes"], Keys(j));
        Assert.Equal("local", Str(j, "region"));
        // A configured region (and its display name) is what every VM shows.
        _h.P.Options.Region = "lon";
        _h.P.Options.RegionDisplay = "London, UK";
        var configured = (await _h.RunAsync(a, k, "ls", "--json")).Json.GetProperty("vms")[0];
        Assert.Equal("lon", Str(configured, "region"));
        Assert.Equal("London, UK", Str(configured, "region_display"));
        _h.P.Options.Region = "local";
        _h.P.Options.RegionDisplay = "";
        Assert.Equal("web", Str(j, "vm_name"));
        Assert.Equal("web.box.localhost", Str(j, "ssh_dest"));
        Assert.Equal("web.box.localhost", Str(j, "ssh_host"));
        Assert.Equal("https://web.box.localhost:8443", Str(j, "https_url"));
        Assert.Equal("running", Str(j, "status"));
        Assert.Equal(_h.P.Options.DefaultImage, Str(j, "image"));
        Assert.Equal(["prod"], Strings(j, "tags"));
        Assert.Equal("main site", Str(j, "comment"));
        Assert.Equal("2026-11-22T12:00:00Z", Str(j, "created_at"));
        Assert.Equal(8L << 30, j.GetProperty("memory_capacity_bytes").GetInt64());

        var l = (await _h.RunAsync(a, k, "ls", "-l", "--json")).Json.GetProperty("vms")[0];
        Assert.Equal(2, l.GetProperty("cpu").GetDouble());
        Assert.Equal("8 GB", Str(l, "memory"));
        Assert.Equal("25 GB", Str(l, "disk"));
        Assert.Equal(80, l.GetProperty("proxy_port").GetInt32());
    }

    [Fact]
    public async Task Ls_Text_MatchesTheDeployScriptsGrep()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web", "--tag=prod", "--comment=hi");
        var r = await _h.RunAsync(a, k, "ls");
        Assert.Equal($"Your VMs:\n  • web.box.localhost - running ({_h.P.Options.DefaultImage}) #prod # hi\n", r.Stdout);
        // Pattern A: ssh HOST ls | rg -q "(^|[[:space:]])${VM_NAME}\.exe\.xyz"
        Assert.Matches(@"(^|\s)web\.box\.localhost", r.Stdout);
        var l = await _h.RunAsync(a, k, "ls", "-l");
        Assert.Contains("web.box.localhost", l.Stdout);
        Assert.Contains("https://web.box.localhost:8443", l.Stdout);
    }

    [Fact]
    public async Task Ls_Pattern_ByNameTagAndGlob_AndNormalisedName()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web1", "--tag=prod");
        await _h.RunAsync(a, k, "new", "--name=db1");
        async Task<string[]> Names(string p) => (await _h.RunAsync(a, k, "ls", p, "--json")).Json.GetProperty("vms").EnumerateArray().Select(v => Str(v, "vm_name")).ToArray();
        Assert.Equal(["web1"], await Names("prod"));
        Assert.Equal(["db1"], await Names("db1.box.localhost"));
        Assert.Equal(["db1", "web1"], (await Names("*1")).Order().ToArray());
    }

    [Fact]
    public async Task Ls_ShowsOnlyOwnVms_AndSlotDestinationWhenNotDirect()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var (b, bk) = await _h.NewUserAsync("bob@example.com");
        await _h.RunAsync(a, k, "new", "--name=alpha");
        var bob = await _h.RunAsync(b, bk, "ls", "--json");
        Assert.Equal("{\"vms\":[]}\n", bob.Stdout);
        // Five VMs on four slots: one of them is reached as vm+NAME@sNNN.
        for (int i = 2; i <= 5; i++) await _h.RunAsync(a, k, "new", $"--name=vm{i}");
        var vms = (await _h.RunAsync(a, k, "ls", "--json")).Json.GetProperty("vms").EnumerateArray().ToList();
        var indirect = Assert.Single(vms, v => v.TryGetProperty("ssh_user", out _));
        Assert.Equal($"vm+{Str(indirect, "vm_name")}", Str(indirect, "ssh_user"));
        Assert.Equal($"{Str(indirect, "ssh_user")}@{Str(indirect, "ssh_host")}", Str(indirect, "ssh_dest"));
        Assert.Matches(@"^s\d{3}\.box\.localhost$", Str(indirect, "ssh_host"));
    }

    [Fact]
    public async Task Rm_Json_DeletedAndFailed()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        var r = await _h.RunAsync(a, k, "rm", "web.box.localhost", "ghost", "--json");
        Assert.Equal("{\"deleted\":[\"web\"],\"failed\":[\"ghost\"]}\n", r.Stdout);
        Assert.Equal(1, r.Exit);
        Assert.Empty(await _h.P.Vms.ListAsync(a.Id));
    }

    [Fact]
    public async Task Rm_Text()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        var r = await _h.RunAsync(a, k, "rm", "web");
        Assert.Equal(0, r.Exit);
        Assert.Equal("Deleting web...\n1 VM(s) deleted successfully\n", r.Stdout);
    }

    [Fact]
    public async Task Rm_OtherAccountsVm_IsNotFound()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var (b, bk) = await _h.NewUserAsync("bob@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        var r = await _h.RunAsync(b, bk, "rm", "web");
        Assert.Equal(1, r.Exit);
        Assert.Equal("VM \"web\" not found\n", r.Stderr);
        Assert.Single(await _h.P.Vms.ListAsync(a.Id));
    }

    [Fact]
    public async Task Restart_Rename_Tag_Comment()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");

        Assert.Equal("{\"vm_name\":\"web\",\"status\":\"restarted\"}\n", (await _h.RunAsync(a, k, "restart", "web", "--json")).Stdout);
        Assert.Equal("Restarting web...\nVM \"web\" restarted successfully\n", (await _h.RunAsync(a, k, "restart", "web")).Stdout);

        Assert.Equal("web is already named web\n", (await _h.RunAsync(a, k, "rename", "web", "web")).Stdout);
        Assert.Equal("", (await _h.RunAsync(a, k, "rename", "web", "web", "--json")).Stdout);
        Assert.Equal("{\"old_name\":\"web\",\"new_name\":\"site\",\"status\":\"renamed\"}\n", (await _h.RunAsync(a, k, "rename", "web", "site", "--json")).Stdout);

        Assert.Equal("{\"vm_name\":\"site\",\"tags\":[\"prod\",\"web\"]}\n", (await _h.RunAsync(a, k, "tag", "site", "prod", "web", "--json")).Stdout);
        Assert.Equal("Removed tags \"prod\", \"web\" from site\n", (await _h.RunAsync(a, k, "tag", "-d", "site", "prod", "web")).Stdout);
        Assert.Equal("Added tag \"x\" to site\n", (await _h.RunAsync(a, k, "tag", "site", "x")).Stdout);
        var dup = await _h.RunAsync(a, k, "tag", "site", "x");
        Assert.Equal(1, dup.Exit);
        Assert.Contains("already exists", dup.Stderr);

        // ssh joins words with spaces: comment VM staging copy
        Assert.Equal("{\"vm_name\":\"site\",\"comment\":\"staging copy\"}\n", (await _h.RunAsync(a, k, "comment", "site", "staging", "copy", "--json")).Stdout);
        Assert.Equal("{\"vm_name\":\"site\",\"comment\":\"\"}\n", (await _h.RunAsync(a, k, "comment", "site", "--json")).Stdout);
    }

    [Fact]
    public async Task Defaults_NewSetupScript_UsedByNew_OverriddenByFlag_AndPerAccount()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var (b, bk) = await _h.NewUserAsync("bob@example.com");
        Assert.Equal("No defaults set.\n", (await _h.RunAsync(a, k, "defaults", "read")).Stdout);
        var write = await _h.RunWithAsync(new CommandContext { Account = a, CurrentKey = k }, "#!/bin/sh\necho from-default\n",
            "defaults", "write", "dev.exe", "new.setup-script", "--json");
        Assert.Equal("{\"domain\":\"dev.exe\",\"key\":\"new.setup-script\",\"status\":\"written\"}\n", write.Stdout);
        Assert.Equal("#!/bin/sh\necho from-default\n", (await _h.RunAsync(a, k, "defaults", "read", "dev.exe", "new.setup-script")).Stdout);
        Assert.Equal("{\"dev.exe\":{\"new.setup-script\":\"#!/bin/sh\\necho from-default\\n\"}}\n", (await _h.RunAsync(a, k, "defaults", "read", "--json")).Stdout);

        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=d1", "--no-email")).Exit);
        Assert.Equal("#!/bin/sh\necho from-default\n", (await _h.P.Vms.GetByNameAsync(a.Id, "d1")).SetupScript);
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=d2", "--setup-script=echo mine", "--no-email")).Exit);
        Assert.Equal("echo mine", (await _h.P.Vms.GetByNameAsync(a.Id, "d2")).SetupScript);
        // Another account's VMs do not get it.
        Assert.Equal(0, (await _h.RunAsync(b, bk, "new", "--name=d3", "--no-email")).Exit);
        Assert.Null((await _h.P.Vms.GetByNameAsync(b.Id, "d3")).SetupScript);

        // An argument works too; unknown names are errors, not silent no-ops.
        Assert.Equal(0, (await _h.RunAsync(a, k, "defaults", "write", "dev.exe", "new.setup-script", "echo arg")).Exit);
        Assert.Equal("echo arg\n", (await _h.RunAsync(a, k, "defaults", "read", "dev.exe", "new.setup-script")).Stdout);
        Assert.Contains("unknown default", (await _h.RunAsync(a, k, "defaults", "write", "dev.exe", "new.setup", "x")).Stderr);
        Assert.Contains("unknown defaults domain", (await _h.RunAsync(a, k, "defaults", "read", "com.apple")).Stderr);

        Assert.Equal("Deleted dev.exe new.setup-script\n", (await _h.RunAsync(a, k, "defaults", "delete", "dev.exe", "new.setup-script")).Stdout);
        Assert.Equal(1, (await _h.RunAsync(a, k, "defaults", "delete", "dev.exe", "new.setup-script")).Exit);
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=d4", "--no-email")).Exit);
        Assert.Null((await _h.P.Vms.GetByNameAsync(a.Id, "d4")).SetupScript);
    }

    [Fact]
    public async Task Tags_CommaLists_Deduplicated_KeptSorted()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var made = await _h.RunAsync(a, k, "new", "--name=tagged", "--tag=zeta,alpha", "--tag=alpha", "--tag", "mid", "--no-email", "--json");
        Assert.Equal(0, made.Exit);
        Assert.Equal(["alpha", "mid", "zeta"], Strings(made.Json, "tags"));

        var added = await _h.RunAsync(a, k, "tag", "tagged", "beta,omega", "--json");
        Assert.Equal("{\"vm_name\":\"tagged\",\"tags\":[\"alpha\",\"beta\",\"mid\",\"omega\",\"zeta\"]}\n", added.Stdout);
        var ls = await _h.RunAsync(a, k, "ls", "tagged");
        Assert.Contains("#alpha #beta #mid #omega #zeta", ls.Stdout);
        Assert.Equal("Removed tags \"beta\", \"omega\" from tagged\n", (await _h.RunAsync(a, k, "tag", "-d", "tagged", "beta,omega")).Stdout);

        var bad = await _h.RunAsync(a, k, "new", "--name=badtags", "--tag=ok,Not-Ok", "--no-email");
        Assert.Equal(1, bad.Exit);
        Assert.Contains("invalid tag \"Not-Ok\"", bad.Stderr);
    }

    [Fact]
    public async Task New_MailsTheOwner_UnlessNoEmail()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=mailed")).Exit);
        var (to, subject, body) = Assert.Single(_h.Email.Sent);
        Assert.Equal("alice@example.com", to);
        Assert.Contains("mailed", subject);
        Assert.Contains("https://mailed.box.localhost", body);

        Assert.Equal(0, (await _h.RunAsync(a, k, "new", "--name=quiet", "--no-email")).Exit);
        Assert.Single(_h.Email.Sent);

        // An address the account never proved is not mailed: signing up with someone else's address gets them no mail.
        var unverified = await _h.P.Accounts.CreateAsync("victim@example.com", TestPlatform.NewKey(), emailVerified: false);
        var key = (await _h.P.Accounts.ListKeysAsync(unverified.Id)).Single();
        Assert.Equal(0, (await _h.RunAsync(unverified, key, "new", "--name=spam")).Exit);
        Assert.Single(_h.Email.Sent);
    }

    [Fact]
    public async Task Cp_CopiesTagsUnlessFalse()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web", "--tag=prod");
        var r = await _h.RunAsync(a, k, "cp", "web", "web-staging", "--json");
        Assert.Equal(0, r.Exit);
        var j = r.Json;
        Assert.Equal(["name", "state", "source", "ssh", "ssh_command", "https_url", "tags", "elapsed"], Keys(j));
        Assert.Equal("web-staging", Str(j, "name"));
        Assert.Equal("web", Str(j, "source"));
        Assert.Equal(["prod"], Strings(j, "tags"));
        var r2 = await _h.RunAsync(a, k, "cp", "web", "web-two", "--copy-tags=false", "--json");
        Assert.Empty(Strings(r2.Json, "tags"));
        var t = await _h.RunAsync(a, k, "cp", "web", "web-three");
        Assert.StartsWith("Copying web to web-three...\nCreated web-three from web in ", t.Stdout);
    }

    [Fact]
    public async Task Resize_Json_AndDiskOnlyGrows()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        var r = await _h.RunAsync(a, k, "resize", "web", "--memory=16GB", "--cpu", "4", "--disk=50GB", "--json");
        Assert.Equal(0, r.Exit);
        var j = r.Json;
        Assert.Equal(8L << 30, j.GetProperty("old_memory").GetInt64());
        Assert.Equal(16L << 30, j.GetProperty("new_memory").GetInt64());
        Assert.Equal(2, j.GetProperty("old_cpus").GetDouble());
        Assert.Equal(4, j.GetProperty("new_cpus").GetDouble());
        Assert.Equal(25L << 30, j.GetProperty("disk_old_bytes").GetInt64());
        Assert.Equal(50L << 30, j.GetProperty("disk_new_bytes").GetInt64());
        var shrink = await _h.RunAsync(a, k, "resize", "web", "--disk=10GB");
        Assert.Equal(1, shrink.Exit);
        Assert.Equal("--disk must be larger than current size (50 GB)\n", shrink.Stderr);
        var none = await _h.RunAsync(a, k, "resize", "web");
        Assert.Equal(1, none.Exit);
        Assert.Contains("--cpu, --memory, --disk", none.Stderr);
        var text = await _h.RunAsync(a, k, "resize", "web", "--memory=8GB");
        Assert.StartsWith("Memory: 16 GB -> 8 GB\n", text.Stdout);
    }

    [Fact]
    public async Task Stat_Json()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        var vm = await _h.P.Vms.GetByNameAsync(a.Id, "web");
        var empty = await _h.RunAsync(a, k, "stat", "web", "--range=1h", "--json");
        Assert.Equal("{\"name\":\"web\",\"status\":\"running\",\"range\":\"1h\",\"points\":null}\n", empty.Stdout);
        var t0 = _h.P.Time.GetUtcNow();
        await _h.P.Stats.AddSampleAsync(vm.Id, new Runtime.VmStatsSample(t0.AddSeconds(-120), 10, 1L << 30, 8L << 30, 2L << 30, 0, 0));
        await _h.P.Stats.AddSampleAsync(vm.Id, new Runtime.VmStatsSample(t0.AddSeconds(-60), 30, 1L << 30, 8L << 30, 2L << 30, 7_500_000, 0));
        var r = await _h.RunAsync(a, k, "stat", "web", "--range=1h", "--json");
        var points = r.Json.GetProperty("points");
        Assert.Equal(2, points.GetArrayLength());
        Assert.Equal(10, points[0].GetProperty("cpu_percent").GetDouble());
        Assert.Equal(1, points[0].GetProperty("memory_used_gb").GetDouble());
        Assert.Equal(1, points[1].GetProperty("network_rx_mbps").GetDouble()); // 7.5 MB over 60 s = 1 Mbit/s
        Assert.Equal("VM not found: nope\n", (await _h.RunAsync(a, k, "stat", "nope")).Stderr);
        Assert.Contains("invalid --range", (await _h.RunAsync(a, k, "stat", "web", "--range=2y")).Stderr);
    }
}
