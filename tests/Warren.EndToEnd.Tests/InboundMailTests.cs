using System.Text.Json;
using Microsoft.Data.Sqlite;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>A daemon whose outgoing mail goes to a loopback sink (the owner's "mailbox full" notice), with one owner account.</summary>
public sealed class InboundMailFixture : DaemonFixture, IAsyncLifetime
{
    public SmtpSink Outbound { get; } = new();
    public SshUser Owner { get; private set; } = null!;

    protected override Dictionary<string, string> Config => new()
    {
        ["Warren:Smtp:Host"] = "127.0.0.1",
        ["Warren:Smtp:Port"] = Outbound.Port.ToString(),
        ["Warren:Smtp:Security"] = "None",
        ["Warren:Smtp:From"] = "warren@localhost",
    };

    public new async Task InitializeAsync()
    {
        await base.InitializeAsync();
        Owner = await Daemon.CreateUserAsync("mail-owner@example.com");
    }

    public new async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Outbound.DisposeAsync();
    }
}

/// <summary>
/// Inbound mail through the real daemon: <c>share receive-email</c> on a busybox VM, then real clients — swaks
/// (plain and STARTTLS) and Debian's exim relaying to Warren's SMTP port — deliver into <c>~/Maildir/new</c>;
/// refused recipients get 550 at RCPT; a stopped VM gets a temporary failure; 1000 files in <c>new/</c> turn
/// receiving off and mail the owner; <c>dig</c> finds the MX.
/// </summary>
public sealed class InboundMailTests(InboundMailFixture fixture) : IClassFixture<InboundMailFixture>
{
    private static readonly TimeSpan MailWait = TimeSpan.FromSeconds(60);
    private WarrenDaemon Daemon => fixture.Daemon;
    private SshUser Owner => fixture.Owner;

    private async Task CreateVmWithMailAsync(string vm)
    {
        var created = await Owner.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
        Assert.True(created.ExitCode == 0, created.ToString());
        var on = await Owner.ControlAsync($"share receive-email {vm} on");
        Assert.True(on.ExitCode == 0, on.ToString());
        Assert.Equal($"{vm} receives e-mail at anything@{vm}.box.localhost; it is delivered to ~/Maildir/new/ in the VM.\n", on.Stdout);
    }

    /// <summary>A shell command run in the VM as its login user, through the control plane's <c>ssh VM</c>.</summary>
    private async Task<ProcessResult> InVmAsync(string vm, string script)
    {
        var r = await Owner.ControlAsync($"ssh {vm} '{script}'");
        return r;
    }

    /// <summary>The message in <c>~/Maildir/new</c> that contains <paramref name="marker"/>.</summary>
    private async Task<string> DeliveredAsync(string vm, string marker)
    {
        var found = await InVmAsync(vm, $"grep -l {marker} ~/Maildir/new/*");
        Assert.True(found.ExitCode == 0, "no message with the marker in ~/Maildir/new: " + found);
        var path = found.Stdout.Trim().Split('\n').Single();
        var cat = await InVmAsync(vm, $"cat {path}");
        Assert.True(cat.ExitCode == 0, cat.ToString());
        return cat.Stdout;
    }

    private async Task<ProcessResult> SwaksAsync(string to, string? body = null, params string[] extra)
    {
        var args = new List<string>
        {
            "--server", $"{Daemon.ControlAddress}:{Daemon.SmtpPort}", "--to", to, "--from", "sender@example.com",
            "--helo", "client.example", "--timeout", "60",
        };
        if (body is not null) args.AddRange(["--body", body, "--header", "Subject: " + body]);
        args.AddRange(extra);
        return await ProcessRunner.RunAsync(ProcessRunner.Require("swaks"), args, timeout: TimeSpan.FromSeconds(120));
    }

    [Fact]
    public async Task Swaks_Delivers_IntoMaildirNew_WithDeliveredToFirst()
    {
        await CreateVmWithMailAsync("mbx");
        var welcome = await InVmAsync("mbx", "head -1 ~/Maildir/new/*");
        Assert.Contains("Delivered-To: welcome@mbx.box.localhost", welcome.Stdout);

        string marker = "plain" + Guid.NewGuid().ToString("N");
        var sent = await SwaksAsync("Some.One@mbx.box.localhost", marker);
        Assert.True(sent.ExitCode == 0, sent.ToString());
        var message = await DeliveredAsync("mbx", marker);
        Assert.StartsWith("Delivered-To: Some.One@mbx.box.localhost\nReturn-Path: <sender@example.com>\nReceived: from client.example ([127.0.0.1])\n", message);
        Assert.Contains(" with ESMTP id ", message);
        Assert.Contains("Subject: " + marker, message);

        string tlsMarker = "tls" + Guid.NewGuid().ToString("N");
        var tls = await SwaksAsync("x@mbx.box.localhost", tlsMarker, "--tls", "--tls-sni", "mbx.box.localhost");
        Assert.True(tls.ExitCode == 0, tls.ToString());
        Assert.Contains("TLS started", tls.Stdout);
        Assert.Contains("CN=*.box.localhost", tls.Stdout);
        Assert.Contains(" with ESMTPS id ", await DeliveredAsync("mbx", tlsMarker));

        var listed = await Owner.ControlAsync("ls --json");
        var vm = JsonDocument.Parse(listed.Stdout).RootElement.GetProperty("vms").EnumerateArray().Single(v => v.GetProperty("vm_name").GetString() == "mbx");
        Assert.True(vm.GetProperty("email_enabled").GetBoolean());

        var mx = await DnsEndToEndTests.DigAsync(Daemon, "mbx.box.localhost", "MX");
        Assert.Equal("NOERROR", mx.Status);
        Assert.Contains(mx.Answer, r => r.Type == "CNAME" && r.Name == "mbx.box.localhost");
        Assert.Contains(mx.Answer, r => r.Type == "MX" && r.Data == "10 warren.localhost");
    }

    [Fact]
    public async Task Exim_RelaysToWarren_AndDelivers()
    {
        await CreateVmWithMailAsync("mbexim");
        string exim = ProcessRunner.Require("exim4");
        var dir = Directory.CreateTempSubdirectory("warren-e2e-exim-").FullName;
        try
        {
            // A private exim: its own spool and logs, one manualroute router sending *.box.localhost to Warren's port
            // (exim's counterpart of a postfix transport map). Exim wants its configuration owned by root and its
            // spool writable by its own user.
            string config = Path.Combine(dir, "exim.conf");
            File.WriteAllText(config, $"""
                primary_hostname = mta.test
                spool_directory = {dir}/spool
                log_file_path = {dir}/%slog
                keep_environment =
                begin routers
                to_warren:
                  driver = manualroute
                  domains = *.box.localhost
                  transport = warren_smtp
                  route_list = * {Daemon.ControlAddress}
                  self = send
                begin transports
                warren_smtp:
                  driver = smtp
                  port = {Daemon.SmtpPort}
                  allow_localhost
                  tls_verify_certificates =
                begin retry
                * * F,1m,1m
                """);
            var own = await ProcessRunner.RunAsync("chown", ["Debian-exim:Debian-exim", dir]);
            Assert.True(own.ExitCode == 0, own.ToString());

            string marker = "exim" + Guid.NewGuid().ToString("N");
            var sent = await ProcessRunner.RunAsync(exim, ["-C", config, "-odi", "-f", "sender@example.com", "someone@mbexim.box.localhost"],
                stdin: $"Subject: {marker}\n\nrelayed by exim\n", timeout: TimeSpan.FromSeconds(120));
            string log = File.Exists(Path.Combine(dir, "mainlog")) ? File.ReadAllText(Path.Combine(dir, "mainlog")) : "(no mainlog)";
            Assert.True(sent.ExitCode == 0, sent + "\n" + log);
            Assert.Contains("=> someone@mbexim.box.localhost R=to_warren T=warren_smtp", log);
            var message = await DeliveredAsync("mbexim", marker);
            Assert.StartsWith("Delivered-To: someone@mbexim.box.localhost\n", message);
            Assert.Contains("Received: from mta.test ([127.0.0.1])", message);
            Assert.Contains("(Exim 4", message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task RefusedRecipients_Get550AtRcpt()
    {
        await CreateVmWithMailAsync("mbref");
        var other = await Owner.ControlAsync("new --name=mbquiet --image=warren/busybox:1");
        Assert.True(other.ExitCode == 0, other.ToString());
        string[] refused =
        [
            "a@elsewhere.example",          // not our domain: no relaying
            "a@x.mbref.box.localhost",      // nested subdomain
            "a@nosuchvm.box.localhost",     // unknown VM
            "a@mbquiet.box.localhost",      // receive-email off
            "a@box.localhost",              // the zone apex
        ];
        foreach (var to in refused)
        {
            var r = await SwaksAsync(to, null, "--quit-after", "RCPT");
            Assert.NotEqual(0, r.ExitCode);
            Assert.Matches(@"<\*\* +550 5\.(1\.1|7\.1) ", r.Stdout);
        }
        await Owner.ControlAsync("share receive-email mbref off");
        var off = await SwaksAsync("a@mbref.box.localhost", null, "--quit-after", "RCPT");
        Assert.Contains("<** 550 5.1.1 mailbox unavailable", off.Stdout);
    }

    [Fact]
    public async Task StoppedVm_GetsATemporaryFailure()
    {
        await CreateVmWithMailAsync("mbstop");
        string container = "warren-" + VmId("mbstop");
        var stop = await ProcessRunner.RunAsync("docker", ["stop", "-t", "1", container]);
        Assert.True(stop.ExitCode == 0, stop.ToString());
        try
        {
            var r = await SwaksAsync("a@mbstop.box.localhost", "while stopped");
            Assert.NotEqual(0, r.ExitCode);
            Assert.Matches(@"<\*\* +45[01] 4\.", r.Stdout);
        }
        finally
        {
            await ProcessRunner.RunAsync("docker", ["start", container]);
        }
    }

    [Fact]
    public async Task ThousandFilesInNew_TurnReceivingOff_AndMailTheOwner()
    {
        await CreateVmWithMailAsync("mbfull");
        var fill = await InVmAsync("mbfull", "i=0; while [ $i -lt 1000 ]; do : > ~/Maildir/new/fill$i; i=$((i+1)); done; ls ~/Maildir/new | wc -l");
        Assert.True(fill.ExitCode == 0, fill.ToString());
        Assert.Equal("1001", fill.Stdout.Trim()); // 1000 + the welcome message

        var r = await SwaksAsync("a@mbfull.box.localhost", "one too many");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("<** 452 4.2.2 mailbox full", r.Stdout);

        var state = await Owner.ControlAsync("share receive-email mbfull --json");
        Assert.False(JsonDocument.Parse(state.Stdout).RootElement.GetProperty("email_enabled").GetBoolean());
        Assert.Equal("1001", (await InVmAsync("mbfull", "ls ~/Maildir/new | wc -l")).Stdout.Trim());

        using var wait = new CancellationTokenSource(MailWait);
        string notice;
        while (true)
        {
            notice = await fixture.Outbound.Messages.Reader.ReadAsync(wait.Token);
            if (notice.Contains("mailbox full")) break;
        }
        Assert.Contains("To: mail-owner@example.com", notice);
        Assert.Contains("share receive-email mbfull on", notice.Replace("\r", ""));

        var later = await SwaksAsync("a@mbfull.box.localhost", null, "--quit-after", "RCPT");
        Assert.Contains("<** 550 5.1.1 mailbox unavailable", later.Stdout);
    }

    [Fact]
    public async Task Others_CannotSwitchSomeoneElsesVm()
    {
        await CreateVmWithMailAsync("mbown");
        var mallory = await Daemon.CreateUserAsync("mallory-mail@example.com");
        var r = await mallory.ControlAsync("share receive-email mbown off");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("VM \"mbown\" not found or access denied\n", r.Stderr);
    }

    private string VmId(string name)
    {
        using var c = new SqliteConnection($"Data Source={Path.Combine(Daemon.DataDirectory, "warren.db")};Mode=ReadOnly;Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT id FROM vms WHERE name = $n";
        cmd.Parameters.AddWithValue("$n", name);
        return (string)cmd.ExecuteScalar()!;
    }
}
