using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// exe.dev compatibility of the control plane through the real OpenSSH client: scoped SSH keys
/// (<c>ssh-key add --cmds/--vm</c>), tried by a limited key trying to leave its limits and by a second account.
/// </summary>
public sealed class ControlPlaneCompatTests(SingleSlotDaemonFixture fixture) : IClassFixture<SingleSlotDaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string Slot = "127.0.1.1";
    private const string NotAllowed = "command not allowed by SSH key permissions";

    private static JsonElement Json(ProcessResult r)
    {
        Assert.True(r.ExitCode == 0, r.ToString());
        return JsonDocument.Parse(r.Stdout).RootElement;
    }

    private static string[] Strings(JsonElement array) => array.EnumerateArray().Select(e => e.GetString()!).ToArray();

    private static void AssertNotAllowed(ProcessResult r)
    {
        Assert.True(r.ExitCode == 1 && r.Stderr.Contains(NotAllowed), r.ToString());
    }

    /// <summary>OpenSSH's exit status and message when every key was refused at authentication.</summary>
    private static void AssertRefusedAtAuth(ProcessResult r)
    {
        Assert.True(r.ExitCode == 255, r.ToString());
        Assert.Contains("Permission denied", r.Stderr);
    }

    [Fact]
    public async Task CmdsScopedKey_RunsOnlyItsCommands_AndItsChildrenInheritTheLimit()
    {
        var owner = await Daemon.CreateUserAsync("scoped-owner@example.com");
        var ci = await SshUser.CreateKeyAsync(Daemon, "ci@example.com");
        var added = Json(await owner.ControlAsync("ssh-key add --cmds=\"ls,whoami,ssh-key add,ssh-key list\" --json", stdin: ci.PublicKey + "\n"));
        Assert.Equal("added", added.GetProperty("status").GetString());
        Assert.Equal(["ls", "whoami", "ssh-key add", "ssh-key list"], Strings(added.GetProperty("permissions").GetProperty("cmds")));

        // ssh-key list --json shows each key's permissions; the owner's own key has none.
        var keys = Json(await owner.ControlAsync("ssh-key list --json")).GetProperty("ssh_keys").EnumerateArray().ToList();
        Assert.False(keys.Single(k => k.GetProperty("current").GetBoolean()).TryGetProperty("permissions", out _));
        var ciRow = keys.Single(k => !k.GetProperty("current").GetBoolean());
        Assert.Equal(["ls", "whoami", "ssh-key add", "ssh-key list"], Strings(ciRow.GetProperty("permissions").GetProperty("cmds")));

        // Listed commands run; anything else is refused with exe.dev's message, in text and JSON.
        Assert.Equal("scoped-owner@example.com", Json(await ci.ControlAsync("whoami --json")).GetProperty("email").GetString());
        Json(await ci.ControlAsync("ls --json"));
        AssertNotAllowed(await ci.ControlAsync("rm some-vm"));
        var jsonRefusal = await ci.ControlAsync("ssh-key remove key-1 --json");
        Assert.Equal(1, jsonRefusal.ExitCode);
        Assert.Equal(NotAllowed, JsonDocument.Parse(jsonRefusal.Stdout).RootElement.GetProperty("error").GetString());
        AssertNotAllowed(await ci.ControlAsync("ssh-key generate-api-key"));
        // No pty and no command means help, which is not in the list either.
        AssertNotAllowed(await ci.ControlAsync(""));

        // A key the limited key adds inherits its limits: "unlimited" from it is still limited.
        var child = await SshUser.CreateKeyAsync(Daemon, "ci-child@example.com");
        var childAdded = Json(await ci.ControlAsync("ssh-key add --json", stdin: child.PublicKey + "\n"));
        Assert.Equal(["ls", "whoami", "ssh-key add", "ssh-key list"], Strings(childAdded.GetProperty("permissions").GetProperty("cmds")));
        AssertNotAllowed(await child.ControlAsync("ssh-key remove key-1"));

        // It may grant less, never more.
        var narrower = await SshUser.CreateKeyAsync(Daemon, "ci-narrow@example.com");
        Assert.Equal(["ls"], Strings(Json(await ci.ControlAsync("ssh-key add --cmds=ls --json", stdin: narrower.PublicKey + "\n"))
            .GetProperty("permissions").GetProperty("cmds")));
        var wider = await SshUser.CreateKeyAsync(Daemon, "ci-wide@example.com");
        var refused = await ci.ControlAsync("ssh-key add --cmds=ls,rm", stdin: wider.PublicKey + "\n");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains(NotAllowed, refused.Stderr);
        var escape = await wider.ControlAsync("whoami");
        Assert.NotEqual(0, escape.ExitCode);
        Assert.Contains("registration", escape.Stdout + escape.Stderr);

        // Unknown commands in --cmds are refused when the key is added.
        var typo = await owner.ControlAsync("ssh-key add --cmds=lss", stdin: wider.PublicKey + "\n");
        Assert.Equal(1, typo.ExitCode);
        Assert.Contains("unknown command \"lss\"", typo.Stderr);
    }

    [Fact]
    public async Task VmScopedKey_ReachesOnlyThatVm_AndNeverTheControlHost()
    {
        var owner = await Daemon.CreateUserAsync("deploy-owner@example.com");
        foreach (var vm in new[] { "deploy-web", "deploy-other" })
            Json(await owner.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json"));

        var deploy = await SshUser.CreateKeyAsync(Daemon, "deploy@example.com");
        var added = Json(await owner.ControlAsync("ssh-key add --vm=deploy-web --json", stdin: deploy.PublicKey + "\n"));
        Assert.Equal("deploy-web", added.GetProperty("permissions").GetProperty("vm").GetString());

        var inside = await deploy.VmAsync(Slot, "hostname", user: "vm+deploy-web");
        Assert.True(inside.ExitCode == 0, inside.ToString());
        Assert.Equal("deploy-web", inside.Stdout.Trim());
        AssertRefusedAtAuth(await deploy.VmAsync(Slot, "hostname", user: "vm+deploy-other"));
        AssertRefusedAtAuth(await deploy.ControlAsync("whoami"));
        AssertRefusedAtAuth(await deploy.ControlAsync("ssh deploy-other hostname"));

        // --cmds=ssh: SSH into every VM of the account (directly or through the control host), nothing else.
        var sshOnly = await SshUser.CreateKeyAsync(Daemon, "ssh-only@example.com");
        Json(await owner.ControlAsync("ssh-key add --cmds=ssh --json", stdin: sshOnly.PublicKey + "\n"));
        Assert.Equal("deploy-other", (await sshOnly.VmAsync(Slot, "hostname", user: "vm+deploy-other")).Stdout.Trim());
        var hop = await sshOnly.ControlAsync("ssh deploy-web hostname");
        Assert.True(hop.ExitCode == 0, hop.ToString());
        Assert.Equal("deploy-web", hop.Stdout.Trim());
        AssertNotAllowed(await sshOnly.ControlAsync("ls"));

        // A key without ssh in its commands cannot SSH into VMs at all, directly or through the control host.
        var lsOnly = await SshUser.CreateKeyAsync(Daemon, "ls-only@example.com");
        Json(await owner.ControlAsync("ssh-key add --cmds=ls --json", stdin: lsOnly.PublicKey + "\n"));
        AssertRefusedAtAuth(await lsOnly.VmAsync(Slot, "hostname", user: "vm+deploy-web"));
        AssertNotAllowed(await lsOnly.ControlAsync("ssh deploy-web hostname"));

        // Another account cannot scope a key to a VM it does not own, nor tell whether it exists.
        var stranger = await Daemon.CreateUserAsync("deploy-stranger@example.com");
        var strangerKey = await SshUser.CreateKeyAsync(Daemon, "stranger-ci@example.com");
        foreach (var name in new[] { "deploy-web", "no-such-vm" })
        {
            var r = await stranger.ControlAsync($"ssh-key add --vm={name}", stdin: strangerKey.PublicKey + "\n");
            Assert.Equal(1, r.ExitCode);
            Assert.Contains($"VM \"{name}\" not found or access denied", r.Stderr);
        }
    }

    [Fact]
    public async Task Help_JsonEntriesHaveNameAndDescription_VerboseShowsSubcommandFlags()
    {
        var u = await Daemon.CreateUserAsync("help-compat@example.com");
        var commands = Json(await u.ControlAsync("help --json")).GetProperty("commands").EnumerateArray().ToList();
        Assert.All(commands, c => Assert.False(string.IsNullOrEmpty(c.GetProperty("description").GetString())));
        Assert.Contains(commands, c => c.GetProperty("name").GetString() == "ls");
        var verbose = await u.ControlAsync("help ssh-key --verbose");
        Assert.True(verbose.ExitCode == 0 && verbose.Stdout.Contains("Flags of ssh-key add:") && verbose.Stdout.Contains("--vm VM"), verbose.ToString());
    }

    [Fact]
    public async Task Browser_JsonHasMagicLink_Exe0ToExe1RefusesAnotherAccountsVm()
    {
        var u = await Daemon.CreateUserAsync("browser-compat@example.com");
        var link = Json(await u.ControlAsync("browser --json")).GetProperty("magic_link").GetString();
        Assert.StartsWith("https://", link);

        var other = await Daemon.CreateUserAsync("exe1-other@example.com");
        Json(await other.ControlAsync("new --name=exe1-theirs --image=warren/busybox:1 --json"));
        foreach (var vm in new[] { "exe1-theirs", "exe1-missing" })
        {
            var r = await u.ControlAsync($"exe0-to-exe1 --vm={vm} exe0.e30.AAAA");
            Assert.True(r.ExitCode == 1 && r.Stderr.Contains($"VM \"{vm}\" not found or access denied"), r.ToString());
        }
    }

    [Fact]
    public async Task ClientWithNoKey_IsToldToMakeOne()
    {
        // An interactive user's client with no key at all (BatchMode off, OpenSSH's default log level shows it).
        var r = await ProcessRunner.RunAsync("ssh", [
            "-F", "/dev/null", "-o", "PubkeyAuthentication=no", "-o", "IdentityAgent=none", "-o", "BatchMode=no",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
            "-p", Daemon.SshPort.ToString(), Daemon.ControlAddress, "whoami"]);
        Assert.True(r.ExitCode == 255 && r.Stderr.Contains("SSH keys are required") && r.Stderr.Contains("ssh-keygen -t ed25519"), r.ToString());

        // A client with a key never sees it.
        var u = await Daemon.CreateUserAsync("has-key@example.com");
        var ok = await ProcessRunner.RunAsync("ssh", [.. u.SshOptions(Daemon.SshPort).Select(o => o == "LogLevel=ERROR" ? "LogLevel=INFO" : o), Daemon.ControlAddress, "whoami"]);
        Assert.True(ok.ExitCode == 0 && !ok.Stderr.Contains("SSH keys are required"), ok.ToString());
    }

    [Fact]
    public async Task DefaultsSetupScript_RunsOnceAtFirstBootOfNewVms()
    {
        var owner = await Daemon.CreateUserAsync("defaults-compat@example.com");
        var written = await owner.ControlAsync("defaults write dev.exe new.setup-script", stdin: "#!/bin/sh\necho ran >> /data/setup-count\n");
        Assert.True(written.ExitCode == 0, written.ToString());
        Assert.Contains("echo ran", (await owner.ControlAsync("defaults read dev.exe new.setup-script")).Stdout);
        Json(await owner.ControlAsync("new --name=setup-vm --image=warren/busybox:1 --no-email --json"));

        // Waits (bounded in count) for the agent's once-per-disk marker, then reads what the script wrote.
        const string ReadCount = "i=0; while [ ! -f /data/.warren/setup.done ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done; cat /data/setup-count";
        var first = await owner.VmAsync(Slot, ReadCount, user: "vm+setup-vm");
        Assert.True(first.ExitCode == 0 && first.Stdout == "ran\n", first.ToString());
        Json(await owner.ControlAsync("restart setup-vm --json"));
        var again = await owner.VmAsync(Slot, ReadCount, user: "vm+setup-vm");
        Assert.True(again.ExitCode == 0 && again.Stdout == "ran\n", again.ToString());

        var deleted = await owner.ControlAsync("defaults delete dev.exe new.setup-script");
        Assert.True(deleted.ExitCode == 0, deleted.ToString());
    }

    [Fact]
    public async Task ScpAndSftpToTheControlHost_SayWhereFilesLive()
    {
        var u = await Daemon.CreateUserAsync("scp-compat@example.com");
        var opts = u.SshOptions(Daemon.SshPort);
        opts[opts.IndexOf("-p")] = "-P";
        var file = Path.Combine(Directory.CreateTempSubdirectory("warren-e2e-scp-").FullName, "f.txt");
        await File.WriteAllTextAsync(file, "x\n");
        const string Expected = "scp/sftp is not supported here; use NAME.box.localhost";

        var sftpMode = await ProcessRunner.RunAsync("scp", [.. opts, file, Daemon.ControlAddress + ":/tmp/f.txt"]);
        Assert.True(sftpMode.ExitCode != 0 && sftpMode.Stderr.Contains(Expected), sftpMode.ToString());
        var legacy = await ProcessRunner.RunAsync("scp", ["-O", .. opts, file, Daemon.ControlAddress + ":/tmp/f.txt"]);
        Assert.True(legacy.ExitCode != 0 && legacy.Stderr.Contains(Expected), legacy.ToString());
        var sftp = await ProcessRunner.RunAsync("sftp", [.. opts, "-b", "-", Daemon.ControlAddress], stdin: "ls\n");
        Assert.True(sftp.ExitCode != 0 && sftp.Stderr.Contains(Expected), sftp.ToString());
    }

    [Fact]
    public async Task SshKeyAdd_NamesFromComment_RefusesTwoSources_DeleteSshKeyAlias()
    {
        var owner = await Daemon.CreateUserAsync("key-names@example.com");
        var dir = Directory.CreateTempSubdirectory("warren-e2e-key-").FullName;
        var path = Path.Combine(dir, "id_ed25519");
        var made = await ProcessRunner.RunAsync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "my;laptop", "-f", path]);
        Assert.True(made.ExitCode == 0, made.ToString());
        string laptop = File.ReadAllText(path + ".pub").Trim();

        // The key as an argument and another on stdin: which one was meant is unclear, so neither is added.
        var other = await SshUser.CreateKeyAsync(Daemon, "other-source@example.com");
        var both = await owner.ControlAsync($"ssh-key add '{laptop}'", stdin: other.PublicKey + "\n");
        Assert.True(both.ExitCode == 1 && both.Stderr.Contains("not both"), both.ToString());
        Assert.Single(Json(await owner.ControlAsync("ssh-key list --json")).GetProperty("ssh_keys").EnumerateArray());

        // ssh-keygen -C names the key, with shell metacharacters removed.
        var added = Json(await owner.ControlAsync($"ssh-key add '{laptop}' --json"));
        Assert.Equal("mylaptop", added.GetProperty("name").GetString());
        // The same comment again is taken: the next key-N instead.
        var again = await SshUser.CreateKeyAsync(Daemon, "mylaptop");
        Assert.Equal("key-3", Json(await owner.ControlAsync("ssh-key add --json", stdin: again.PublicKey + "\n")).GetProperty("name").GetString());

        var deleted = Json(await owner.ControlAsync("delete-ssh-key mylaptop --json"));
        Assert.Equal("deleted", deleted.GetProperty("status").GetString());
        Assert.Equal("mylaptop", deleted.GetProperty("name").GetString());
    }
}

/// <summary>A daemon whose mail relay is a loopback <see cref="SmtpSink"/>.</summary>
public sealed class MailDaemonFixture : DaemonFixture, IAsyncLifetime
{
    public SmtpSink Sink { get; } = new();

    protected override Dictionary<string, string> Config => new()
    {
        ["Warren:Smtp:Host"] = "127.0.0.1",
        ["Warren:Smtp:Port"] = Sink.Port.ToString(),
        ["Warren:Smtp:Security"] = "None",
        ["Warren:Smtp:From"] = "warren@localhost",
    };

    /// <summary>The next mail the relay delivered; fails after a generous bound instead of hanging.</summary>
    public async Task<string> NextMailAsync()
    {
        using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try { return (await Sink.Messages.Reader.ReadAsync(wait.Token)).Replace("\r", "").Replace("=\n", ""); }
        catch (OperationCanceledException) { throw new Xunit.Sdk.XunitException("no mail arrived\ndaemon: " + Daemon.Log); }
    }

    // Re-implemented so the sink outlives the daemon and is closed after it.
    Task IAsyncLifetime.InitializeAsync() => InitializeAsync();

    async Task IAsyncLifetime.DisposeAsync()
    {
        await DisposeAsync();
        await Sink.DisposeAsync();
    }
}

/// <summary><c>new</c>/<c>tag</c> tags and the creation mail through the real OpenSSH client.</summary>
public sealed class VmCreationCompatTests(MailDaemonFixture fixture) : IClassFixture<MailDaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;

    private static JsonElement Json(ProcessResult r)
    {
        Assert.True(r.ExitCode == 0, r.ToString());
        return JsonDocument.Parse(r.Stdout).RootElement;
    }

    private static string[] Tags(JsonElement e) => e.GetProperty("tags").EnumerateArray().Select(t => t.GetString()!).ToArray();

    [Fact]
    public async Task Tags_CommaListsDeduplicatedSorted_CreationMailUnlessNoEmail()
    {
        var owner = await Daemon.CreateUserAsync("vm-mail@example.com");
        var made = Json(await owner.ControlAsync("new --name=mail-vm --image=warren/busybox:1 --tag=zeta,alpha --tag=alpha --json"));
        Assert.Equal(["alpha", "zeta"], Tags(made));
        var mail = await fixture.NextMailAsync();
        Assert.Contains("To: vm-mail@example.com", mail);
        Assert.Matches("(?m)^Subject: .*mail-vm", mail);

        Assert.Equal(["alpha", "beta", "omega", "zeta"], Tags(Json(await owner.ControlAsync("tag mail-vm omega,beta --json"))));
        var listed = Json(await owner.ControlAsync("ls mail-vm --json")).GetProperty("vms")[0];
        Assert.Equal(["alpha", "beta", "omega", "zeta"], Tags(listed));
        Assert.Equal("local", listed.GetProperty("region").GetString());
        Assert.Equal("mail-vm.box.localhost", listed.GetProperty("ssh_host").GetString());
        Assert.Contains("#alpha #beta #omega #zeta", (await owner.ControlAsync("ls mail-vm")).Stdout);

        // --no-email: the next mail the relay sees is the one for the VM made after it (mail is sent before new returns).
        Json(await owner.ControlAsync("new --name=quiet-vm --image=warren/busybox:1 --no-email --json"));
        Json(await owner.ControlAsync("new --name=loud-vm --image=warren/busybox:1 --json"));
        Assert.Matches("(?m)^Subject: .*loud-vm", await fixture.NextMailAsync());
    }
}
