using Xunit;
using System.Text;
using System.Text.Json;
using Warren.Platform.Integrations;
using Warren.Platform.Tests.Commands;

namespace Warren.Platform.Tests.Integrations;

/// <summary><c>integrations …</c> through the dispatcher, with real SQLite (exe.dev's docs: integrations, http-proxy, vm-to-vm).</summary>
public sealed class IntegrationCommandTests : IDisposable
{
    private const string Bearer = "sk-live-7f3a9c1e5b2d4f6a8c0e";
    private const string HeaderSecret = "hv-secret-91b2c3d4e5f6";
    private const string Password = "pw-secret-a1b2c3";

    private readonly IntegrationHarness _h = new();

    public void Dispose() => _h.Dispose();

    [Fact]
    public async Task Add_then_list_shows_every_secret_masked_in_text_and_json()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        var add = await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "api", "--target", "https://api.example.com/v1",
            "--bearer", Bearer, "--header", "X-Api-Key:" + HeaderSecret);
        Assert.True(add.Exit == 0, add.Stderr);
        Assert.Contains("Added integration api", add.Stdout);
        var basic = await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "basic", "--target", $"https://bob:{Password}@auth.example.com/");
        Assert.True(basic.Exit == 0, basic.Stderr);

        var text = await _h.RunAsync(alice, "integrations", "list");
        var json = await _h.RunAsync(alice, "integrations", "list", "--json");
        foreach (var output in new[] { add.Stdout, basic.Stdout, text.Stdout, json.Stdout })
        {
            Assert.DoesNotContain(Bearer, output);
            Assert.DoesNotContain(HeaderSecret, output);
            Assert.DoesNotContain(Password, output);
        }
        var items = json.Json.GetProperty("integrations").EnumerateArray().ToDictionary(e => e.GetProperty("name").GetString()!);
        Assert.Equal("***", items["api"].GetProperty("bearer").GetString());
        Assert.Equal("***", items["api"].GetProperty("headers").GetProperty("X-Api-Key").GetString());
        Assert.Equal("https://api.example.com/v1", items["api"].GetProperty("target").GetString());
        Assert.Equal("https://bob:%2A%2A%2A@auth.example.com/", items["basic"].GetProperty("target").GetString());
        // Every account has reflection attached to all its VMs (exe.dev's docs: reflection).
        Assert.Equal("reflection", items["reflection"].GetProperty("type").GetString());
        Assert.Equal(["auto:all"], JsonAssert.Strings(items["reflection"], "attachments"));
        Assert.Contains("X-Api-Key: ***", text.Stdout);
    }

    [Fact]
    public async Task Secrets_are_not_in_the_sqlite_file_nor_in_the_audit_log()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "api", "--target", $"https://u:{Password}@api.example.com",
            "--header", "X-Api-Key:" + HeaderSecret)).Exit);
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "api2", "--target", "https://api.example.com", "--bearer", Bearer)).Exit);

        var audit = await _h.P.Audit.TailAsync(100);
        Assert.Contains(audit, e => e.Command == "integrations add");
        string auditText = JsonSerializer.Serialize(audit);
        Assert.DoesNotContain(Bearer, auditText);
        Assert.DoesNotContain(HeaderSecret, auditText);
        Assert.DoesNotContain(Password, auditText);

        // The database file and its write-ahead log, byte for byte.
        foreach (var path in Directory.GetFiles(_h.P.Options.DataDirectory, "warren.db*"))
        {
            byte[] bytes;
            using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)) { bytes = new byte[fs.Length]; fs.ReadExactly(bytes); }
            foreach (var secret in new[] { Bearer, HeaderSecret, Password })
                Assert.True(bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(secret)) < 0, $"{Path.GetFileName(path)} holds a secret in the clear");
        }
        // Still usable: the sealed blob opens with the key from the data directory.
        var api = (await _h.Integrations.FindAsync(alice.Account.Id, "api"))!;
        Assert.Equal(HeaderSecret, _h.Integrations.OpenSecrets(api).Headers["X-Api-Key"]);
        Assert.Equal(Password, _h.Integrations.OpenSecrets(api).BasicPassword);
    }

    [Theory]
    [InlineData("Api", "https://api.example.com", null, "invalid integration name")]
    [InlineData("-api", "https://api.example.com", null, "invalid integration name")]
    [InlineData("a.b", "https://api.example.com", null, "invalid integration name")]
    [InlineData("api", "http://api.example.com", null, "must use https")]
    [InlineData("api", "https://93.184.216.34/", null, "not an IP address")]
    [InlineData("api", "https://[2001:db8::1]/", null, "not an IP address")]
    [InlineData("api", "https://localhost/", null, "fully qualified")]
    [InlineData("api", "https://x.localhost/", null, "local host name")]
    [InlineData("api", "https://vm1.box.localhost/", null, "local host name")]
    [InlineData("api", "https://warren.example.net/", null, "Warren's own names")]
    [InlineData("api", "https://a.vms.example.net/", null, "Warren's own names")]
    [InlineData("api", "https://api.example.com/?q=1", null, "query")]
    [InlineData("api", "ftp://api.example.com/", null, "https")]
    [InlineData("api", "not a url", null, "not a URL")]
    [InlineData("api", "https://api.example.com", "X-Exedev-Source-Vm:evil", "reserved")]
    [InlineData("api", "https://api.example.com", "x-exedev-email:a@b.c", "reserved")]
    [InlineData("api", "https://api.example.com", "Host:evil.example", "cannot be injected")]
    [InlineData("api", "https://api.example.com", "Bad Name:v", "invalid header name")]
    [InlineData("api", "https://api.example.com", "X-Ok:a\r\nX-Evil: b", "control character")]
    [InlineData("api", "https://api.example.com", "novalue", "NAME:VALUE")]
    public async Task Bad_input_is_refused_with_a_clear_error_and_exit_1(string name, string target, string? header, string expected)
    {
        _h.P.Options.ControlHost = "warren.example.net";
        _h.P.Options.VmDomain = "vms.example.net";
        var alice = await _h.NewUserAsync("alice@example.com");
        var argv = new List<string> { "integrations", "add", "http-proxy", "--name=" + name, "--target", target };
        if (header is not null) argv.AddRange(["--header", header]);
        var r = await _h.RunAsync(alice, argv.ToArray());
        Assert.Equal(1, r.Exit);
        Assert.Contains(expected, r.Stderr);
        Assert.Null(await _h.Integrations.FindAsync(alice.Account.Id, name));
    }

    [Fact]
    public async Task Names_are_unique_per_account_not_globally()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        var bob = await _h.NewUserAsync("bob@example.com");
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "api", "--target", "https://a.example.com")).Exit);
        var again = await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "api", "--target", "https://b.example.com");
        Assert.Equal(1, again.Exit);
        Assert.Contains("already exists", again.Stderr);
        Assert.Equal(0, (await _h.RunAsync(bob, "integrations", "add", "http-proxy", "--name", "api", "--target", "https://b.example.com")).Exit);
    }

    [Fact]
    public async Task A_second_account_cannot_see_attach_rename_or_remove_anothers_integration()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        var mallory = await _h.NewUserAsync("mallory@example.com");
        var aliceVm = await _h.P.Vms.CreateAsync(alice.Account.Id, new Warren.Platform.Vms.VmCreateRequest { Name = "alice-vm" });
        await _h.P.Vms.CreateAsync(mallory.Account.Id, new Warren.Platform.Vms.VmCreateRequest { Name = "mallory-vm" });
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "secretapi", "--target", "https://a.example.com", "--bearer", Bearer)).Exit);

        var list = await _h.RunAsync(mallory, "integrations", "list", "--json");
        Assert.DoesNotContain("secretapi", list.Stdout);
        foreach (var argv in new[]
        {
            new[] { "integrations", "attach", "secretapi", "vm:mallory-vm" },
            ["integrations", "detach", "secretapi", "auto:all"],
            ["integrations", "rename", "secretapi", "mine"],
            ["integrations", "remove", "secretapi"],
        })
        {
            var r = await _h.RunAsync(mallory, argv);
            Assert.Equal(1, r.Exit);
            Assert.Contains("not found", r.Stderr);
        }
        // Nor attach their own integration to Alice's VM.
        Assert.Equal(0, (await _h.RunAsync(mallory, "integrations", "add", "http-proxy", "--name", "m", "--target", "https://m.example.com")).Exit);
        var cross = await _h.RunAsync(mallory, "integrations", "attach", "m", "vm:alice-vm");
        Assert.Equal(1, cross.Exit);
        Assert.Contains("not found", cross.Stderr);
        var aliceIntegration = await _h.Integrations.FindAsync(alice.Account.Id, "secretapi");
        Assert.NotNull(aliceIntegration);
        Assert.Empty(aliceIntegration.Attachments);
        Assert.False((await _h.Integrations.FindAsync(mallory.Account.Id, "m"))!.IsAttachedTo(aliceVm.Id, aliceVm.Tags));
    }

    [Fact]
    public async Task Attach_and_detach_vm_tag_and_all_and_deleting_a_vm_drops_its_attachment()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        var vm = await _h.P.Vms.CreateAsync(alice.Account.Id, new Warren.Platform.Vms.VmCreateRequest { Name = "box1" });
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "api", "--target", "https://a.example.com", "--attach", "vm:box1")).Exit);
        Assert.True((await _h.Integrations.FindAsync(alice.Account.Id, "api"))!.IsAttachedTo(vm.Id, vm.Tags));

        var dup = await _h.RunAsync(alice, "integrations", "attach", "api", "vm:box1");
        Assert.Equal(1, dup.Exit);
        Assert.Contains("already attached", dup.Stderr);
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "attach", "api", "tag:web")).Exit);
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "attach", "api", "auto:all")).Exit);
        var bad = await _h.RunAsync(alice, "integrations", "attach", "api", "everything");
        Assert.Equal(1, bad.Exit);
        Assert.Contains("vm:NAME, tag:TAG or auto:all", bad.Stderr);

        var json = await _h.RunAsync(alice, "integrations", "list", "--json");
        var api = json.Json.GetProperty("integrations").EnumerateArray().Single(e => e.GetProperty("name").GetString() == "api");
        Assert.Equal(["auto:all", "tag:web", "vm:box1"], JsonAssert.Strings(api, "attachments"));

        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "detach", "api", "auto:all")).Exit);
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "detach", "api", "tag:web")).Exit);
        var notThere = await _h.RunAsync(alice, "integrations", "detach", "api", "tag:web");
        Assert.Equal(1, notThere.Exit);
        Assert.Contains("not attached", notThere.Stderr);

        await _h.P.Vms.RemoveAsync(alice.Account.Id, "box1");
        Assert.Empty((await _h.Integrations.FindAsync(alice.Account.Id, "api"))!.Attachments);
    }

    [Fact]
    public async Task New_with_integration_attaches_at_creation_and_an_unknown_name_creates_nothing()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "a", "--target", "https://a.example.com")).Exit);
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--name", "b", "--target", "https://b.example.com")).Exit);

        var missing = await _h.RunAsync(alice, "new", "--name", "nope", "--integration", "a,zzz", "--no-email");
        Assert.Equal(1, missing.Exit);
        Assert.Contains("integration \"zzz\" not found", missing.Stderr);
        Assert.Null(await _h.P.Vms.FindOwnedAsync(alice.Account.Id, "nope"));

        var created = await _h.RunAsync(alice, "new", "--name", "withint", "--integration", "a,b", "--no-email");
        Assert.True(created.Exit == 0, created.Stderr);
        var vm = await _h.P.Vms.GetByNameAsync(alice.Account.Id, "withint");
        Assert.True((await _h.Integrations.FindAsync(alice.Account.Id, "a"))!.IsAttachedTo(vm.Id, vm.Tags));
        Assert.True((await _h.Integrations.FindAsync(alice.Account.Id, "b"))!.IsAttachedTo(vm.Id, vm.Tags));
    }

    [Fact]
    public async Task Peer_integration_owns_a_managed_key_that_ssh_key_remove_cannot_delete()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        await _h.P.Vms.CreateAsync(alice.Account.Id, new Warren.Platform.Vms.VmCreateRequest { Name = "backend" });
        var add = await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--peer", "--name", "be", "--target", "backend");
        Assert.True(add.Exit == 0, add.Stderr);
        var keys = await _h.P.Accounts.ListKeysAsync(alice.Account.Id);
        var managed = Assert.Single(keys, k => k.Name == "peer-be");
        Assert.Equal("backend", managed.Permissions!.Vm);

        var remove = await _h.RunAsync(alice, "ssh-key", "remove", "peer-be");
        Assert.Equal(1, remove.Exit);
        Assert.Contains("managed by an integration", remove.Stderr);
        Assert.Contains(await _h.P.Accounts.ListKeysAsync(alice.Account.Id), k => k.Name == "peer-be");

        var list = await _h.RunAsync(alice, "integrations", "list", "--json");
        var be = list.Json.GetProperty("integrations").EnumerateArray().Single(e => e.GetProperty("name").GetString() == "be");
        Assert.True(be.GetProperty("peer").GetBoolean());
        Assert.Equal("backend", be.GetProperty("target").GetString());

        // The minted token authenticates in the target's namespace while the integration exists, and never after.
        string token = _h.Integrations.OpenSecrets((await _h.Integrations.FindAsync(alice.Account.Id, "be"))!).PeerToken!;
        string ns = _h.ApiKeys.VmNamespace("backend");
        Assert.True((await _h.Authenticator.AuthenticateAsync(token, ns)).Succeeded);

        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "rename", "be", "backend-api")).Exit);
        Assert.Contains(await _h.P.Accounts.ListKeysAsync(alice.Account.Id), k => k.Name == "peer-backend-api");
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "remove", "backend-api")).Exit);
        Assert.DoesNotContain(await _h.P.Accounts.ListKeysAsync(alice.Account.Id), k => k.Name.StartsWith("peer-", StringComparison.Ordinal));
        Assert.False((await _h.Authenticator.AuthenticateAsync(token, ns)).Succeeded);

        // A peer target must be one of the caller's own VMs.
        var mallory = await _h.NewUserAsync("mallory@example.com");
        var cross = await _h.RunAsync(mallory, "integrations", "add", "http-proxy", "--peer", "--name", "steal", "--target", "backend");
        Assert.Equal(1, cross.Exit);
        Assert.Empty((await _h.P.Accounts.ListKeysAsync(mallory.Account.Id)).Where(k => k.Name.StartsWith("peer-", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Renaming_a_peer_target_moves_the_managed_key_to_the_new_name()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        await _h.P.Vms.CreateAsync(alice.Account.Id, new Warren.Platform.Vms.VmCreateRequest { Name = "backend" });
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "http-proxy", "--peer", "--name", "be", "--target", "backend")).Exit);
        string oldToken = _h.Integrations.OpenSecrets((await _h.Integrations.FindAsync(alice.Account.Id, "be"))!).PeerToken!;

        var rename = await _h.RunAsync(alice, "rename", "backend", "backend-v2");
        Assert.True(rename.Exit == 0, rename.Stderr);

        // The token a peer call presents is checked in the target's namespace, which follows its name.
        var be = (await _h.Integrations.FindAsync(alice.Account.Id, "be"))!;
        string newToken = _h.Integrations.OpenSecrets(be).PeerToken!;
        Assert.NotEqual(oldToken, newToken);
        Assert.True((await _h.Authenticator.AuthenticateAsync(newToken, _h.ApiKeys.VmNamespace("backend-v2"))).Succeeded);
        Assert.False((await _h.Authenticator.AuthenticateAsync(oldToken, _h.ApiKeys.VmNamespace("backend"))).Succeeded);
        Assert.Equal("backend-v2", be.Target);

        // One managed key, under its usual name, scoped to the new name; `list` shows the new target.
        var managed = Assert.Single(await _h.P.Accounts.ListKeysAsync(alice.Account.Id), k => k.Name.StartsWith("peer-", StringComparison.Ordinal));
        Assert.Equal("peer-be", managed.Name);
        Assert.Equal("backend-v2", managed.Permissions!.Vm);
        Assert.Equal(be.PeerKeyFingerprint, managed.Fingerprint);
        var list = await _h.RunAsync(alice, "integrations", "list", "--json");
        Assert.Equal("backend-v2", list.Json.GetProperty("integrations").EnumerateArray().Single(e => e.GetProperty("name").GetString() == "be").GetProperty("target").GetString());
    }

    [Fact]
    public async Task Reflection_fields_are_checked_and_the_default_can_be_removed_for_good()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        var bad = await _h.RunAsync(alice, "integrations", "add", "reflection", "--name", "meta", "--fields", "email,password");
        Assert.Equal(1, bad.Exit);
        Assert.Contains("unknown reflection field \"password\"", bad.Stderr);
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "add", "reflection", "--name", "meta", "--fields", "email,tags")).Exit);
        Assert.Equal(["email", "tags"], (await _h.Integrations.FindAsync(alice.Account.Id, "meta"))!.Fields);

        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "remove", "reflection")).Exit);
        var list = await _h.RunAsync(alice, "integrations", "list", "--json");
        Assert.DoesNotContain("\"reflection\",\"type\"", list.Stdout.Replace(" ", ""));
        Assert.Null(await _h.Integrations.FindAsync(alice.Account.Id, "reflection"));
    }

    [Fact]
    public async Task Help_lists_the_integrations_commands()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        var help = await _h.RunAsync(alice, "help");
        foreach (var sub in new[] { "list", "add", "remove", "rename", "attach", "detach" })
            Assert.Contains("integrations " + sub, help.Stdout);
        var addHelp = await _h.RunAsync(alice, "help", "integrations", "add");
        Assert.Contains("--bearer", addHelp.Stdout);
        Assert.Contains("--peer", addHelp.Stdout);
    }
}
