using System.Text;
using Dapper;
using Warren.Platform.Accounts;
using Warren.Platform.Commands;
using Warren.Platform.Mail;
using Warren.Platform.Tests.Commands;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Mail;

/// <summary>
/// receive-email and delivery with the Maildir scripts run by the host's real <c>/bin/sh</c> (HOME in a temp
/// directory) instead of inside a container; the container path is covered end to end.
/// </summary>
public sealed class ReceiveEmailServiceTests : IDisposable
{
    private readonly TestPlatform _p = new();
    private readonly LocalShellRuntime _runtime;
    private readonly RecordingEmailSender _email = new();
    private readonly ReceiveEmailService _mail;

    public ReceiveEmailServiceTests()
    {
        _runtime = new LocalShellRuntime(_p.Runtime, Path.Combine(_p.Directory_, "homes"));
        _mail = new ReceiveEmailService(_p.Vms, _p.Shares, _p.Accounts, _runtime, _p.Options, _p.Time, _email);
    }

    public void Dispose() => _p.Dispose();

    private async Task<(Account Owner, VmRecord Vm)> VmAsync(string name = "web")
    {
        var a = await _p.NewAccountAsync($"owner-{name}@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = name });
        return (a, vm);
    }

    private string MaildirOf(VmRecord vm) => Path.Combine(_runtime.HomeOf(vm.Id), "Maildir");

    [Fact]
    public async Task On_CreatesTheMaildir_AsTheLoginUser_AndDeliversAWelcome()
    {
        var (owner, vm) = await VmAsync();
        var updated = await _mail.EnableAsync(owner.Id, "web");
        Assert.True(updated.ReceiveEmail);
        foreach (var sub in new[] { "new", "cur", "tmp" })
            Assert.True(Directory.Exists(Path.Combine(MaildirOf(vm), sub)), sub);
        var welcome = File.ReadAllText(Assert.Single(Directory.GetFiles(Path.Combine(MaildirOf(vm), "new"))));
        Assert.StartsWith("Delivered-To: welcome@web.box.localhost\n", welcome);
        Assert.Contains("\nSubject: E-mail to web.box.localhost is delivered here\n", welcome);
        Assert.DoesNotContain("\r", welcome);
        Assert.Empty(Directory.GetFiles(Path.Combine(MaildirOf(vm), "tmp")));
        Assert.All(_runtime.Execs, e => Assert.Equal(_p.Options.DefaultLoginUser, e.User));
        // Turning it on again keeps the mailbox and sends no second welcome.
        await _mail.EnableAsync(owner.Id, "web");
        Assert.Single(Directory.GetFiles(Path.Combine(MaildirOf(vm), "new")));
    }

    [Fact]
    public async Task On_FailsClearly_WhenMaildirIsAFile()
    {
        var (owner, vm) = await VmAsync();
        File.WriteAllText(MaildirOf(vm), "not a directory");
        var e = await Assert.ThrowsAsync<PlatformException>(() => _mail.EnableAsync(owner.Id, "web"));
        Assert.Equal("~/Maildir exists and is not a directory; move it away and try again", e.UserMessage);
        Assert.False((await _p.Vms.GetByNameAsync(owner.Id, "web")).ReceiveEmail);
    }

    [Fact]
    public async Task On_ByAnotherAccount_IsNotFoundOrAccessDenied()
    {
        await VmAsync();
        var bob = await _p.NewAccountAsync("bob@example.com");
        var e = await Assert.ThrowsAsync<PlatformException>(() => _mail.EnableAsync(bob.Id, "web"));
        Assert.Contains("not found or access denied", e.UserMessage);
        Assert.Empty(_runtime.Execs);
    }

    [Fact]
    public async Task Deliver_AddsDeliveredToFirst_ThenTrace_AndWritesLf_ThroughStdinOnly()
    {
        var (owner, vm) = await VmAsync();
        vm = await _mail.EnableAsync(owner.Id, "web");
        var marker = "secret-body-" + Guid.NewGuid().ToString("N");
        var message = Encoding.ASCII.GetBytes($"Subject: hi\r\n\r\n{marker}\r\n$(touch /tmp/pwned) `id` ;rm -rf ~\r\n");
        var outcome = await _mail.DeliverAsync(vm, "Any.Name@web.box.localhost", "Return-Path: <a@b.example>\r\nReceived: from x ([127.0.0.1])\r\n", message);
        Assert.Equal(MaildirOutcome.Delivered, outcome);
        var file = Directory.GetFiles(Path.Combine(MaildirOf(vm), "new")).Select(File.ReadAllText).Single(t => t.Contains(marker));
        Assert.Equal($"Delivered-To: Any.Name@web.box.localhost\nReturn-Path: <a@b.example>\nReceived: from x ([127.0.0.1])\nSubject: hi\n\n{marker}\n$(touch /tmp/pwned) `id` ;rm -rf ~\n", file);
        Assert.DoesNotContain(_runtime.Execs, e => e.Command.Any(arg => arg.Contains(marker)));
        Assert.True(Directory.Exists(Path.Combine(MaildirOf(vm), "cur")));
    }

    [Fact]
    public async Task FullMailbox_TurnsReceivingOff_MailsTheOwnerOnce_AndWritesNothing()
    {
        var (owner, vm) = await VmAsync();
        vm = await _mail.EnableAsync(owner.Id, "web");
        string newDir = Path.Combine(MaildirOf(vm), "new");
        for (int i = Directory.GetFiles(newDir).Length; i < Maildir.MaxNewMessages; i++)
            File.WriteAllText(Path.Combine(newDir, $"filler{i}"), "x");

        var outcome = await _mail.DeliverAsync(vm, "x@web.box.localhost", "", "Subject: one too many\r\n\r\nx\r\n"u8.ToArray());
        Assert.Equal(MaildirOutcome.Full, outcome);
        Assert.Equal(Maildir.MaxNewMessages, Directory.GetFiles(newDir).Length);
        Assert.Empty(Directory.GetFiles(Path.Combine(MaildirOf(vm), "tmp")));
        Assert.False((await _p.Vms.GetByNameAsync(owner.Id, "web")).ReceiveEmail);
        var (to, subject, body) = Assert.Single(_email.Sent);
        Assert.Equal(owner.Email, to);
        Assert.Equal("web: e-mail receiving turned off (mailbox full)", subject);
        Assert.Contains("share receive-email web on", body);

        // A second delivery that raced the first finds receiving already off: no second mail.
        await _mail.DeliverAsync(vm, "x@web.box.localhost", "", "x\r\n"u8.ToArray());
        Assert.Single(_email.Sent);
    }

    [Fact]
    public async Task BelowTheLimit_StillDelivers()
    {
        var (owner, vm) = await VmAsync();
        vm = await _mail.EnableAsync(owner.Id, "web");
        string newDir = Path.Combine(MaildirOf(vm), "new");
        for (int i = Directory.GetFiles(newDir).Length; i < Maildir.MaxNewMessages - 1; i++)
            File.WriteAllText(Path.Combine(newDir, $"filler{i}"), "x");
        Assert.Equal(MaildirOutcome.Delivered, await _mail.DeliverAsync(vm, "x@web.box.localhost", "", "x\r\n"u8.ToArray()));
        Assert.Equal(Maildir.MaxNewMessages, Directory.GetFiles(newDir).Length);
    }

    [Fact]
    public async Task ConcurrentDeliveries_CannotTogetherPassTheLimit()
    {
        var (owner, vm) = await VmAsync();
        vm = await _mail.EnableAsync(owner.Id, "web");
        string newDir = Path.Combine(MaildirOf(vm), "new");
        for (int i = Directory.GetFiles(newDir).Length; i < Maildir.MaxNewMessages - 1; i++)
            File.WriteAllText(Path.Combine(newDir, $"filler{i}"), "x");
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 5).Select(i =>
            Task.Run(() => _mail.DeliverAsync(vm, $"r{i}@web.box.localhost", "", "x\r\n"u8.ToArray()))));
        Assert.Equal(1, outcomes.Count(o => o == MaildirOutcome.Delivered));
        Assert.Equal(4, outcomes.Count(o => o == MaildirOutcome.Full));
        Assert.Equal(Maildir.MaxNewMessages, Directory.GetFiles(newDir).Length);
    }

    [Fact]
    public async Task UnreachableVm_IsATemporaryFailure()
    {
        var (owner, vm) = await VmAsync();
        vm = await _mail.EnableAsync(owner.Id, "web");
        _runtime.Unavailable = true;
        Assert.Equal(MaildirOutcome.TemporaryFailure, await _mail.DeliverAsync(vm, "x@web.box.localhost", "", "x\r\n"u8.ToArray()));
        Assert.True((await _p.Vms.GetByNameAsync(owner.Id, "web")).ReceiveEmail);
    }

    [Fact]
    public async Task StoppedVm_CannotBeSwitchedOn()
    {
        var (owner, vm) = await VmAsync();
        await _p.Db.WriteAsync(async u =>
        {
            await u.Connection.ExecuteAsync("UPDATE vms SET state = 'stopped' WHERE id = @Id", new { vm.Id }, u.Transaction);
            _p.Index.ReloadVmsOnCommit(u, [vm.Id]);
        });
        var e = await Assert.ThrowsAsync<PlatformException>(() => _mail.EnableAsync(owner.Id, "web"));
        Assert.Equal("VM \"web\" is stopped; start it to turn on e-mail (the Maildir is made inside it)", e.UserMessage);
    }

    [Fact]
    public void UniqueNames_AreMaildirSafe_AndDistinct()
    {
        var maildir = new Maildir(_runtime, _p.Time);
        var names = Enumerable.Range(0, 1000).Select(_ => maildir.UniqueName("Web/VM:1")).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
        Assert.All(names, n => Assert.Matches(@"^\d+\.M\d+P\d+Q\d+R[0-9a-f]{16}\.webvm1$", n));
    }

    [Theory]
    [InlineData("a\r\nb\r\n", "a\nb\n")]
    [InlineData("bare\rcr\nand lf\r\n", "bare\rcr\nand lf\n")]
    [InlineData("", "")]
    [InlineData("no end", "no end")]
    public void Compose_TurnsCrlfIntoLf(string message, string expected) =>
        Assert.Equal("Delivered-To: r@x\nT: 1\n" + expected, Encoding.ASCII.GetString(ReceiveEmailService.Compose("r@x", "T: 1\r\n", Encoding.ASCII.GetBytes(message))));

    [Fact]
    public void Compose_DropsDkimSignatures_FromTheHeaderOnly()
    {
        const string message =
            "DKIM-Signature: v=1; a=rsa-sha256; d=example.com;\r\n" +
            "\tb=AbCdEf==\r\n" +
            "Authentication-Results: mx.example; dkim=pass\r\n" +
            "dkim-signature : v=1; d=other.example;\r\n" +
            "  bh=xyz\r\n" +
            "X-DKIM-Signature: kept\r\n" +
            "Subject: hi\r\n" +
            "\r\n" +
            "DKIM-Signature: in the body is text\r\n";
        var composed = Encoding.ASCII.GetString(ReceiveEmailService.Compose("r@x", "", Encoding.ASCII.GetBytes(message)));
        Assert.Equal(
            "Delivered-To: r@x\nAuthentication-Results: mx.example; dkim=pass\nX-DKIM-Signature: kept\nSubject: hi\n\nDKIM-Signature: in the body is text\n",
            composed);
    }

    [Fact]
    public async Task Command_On_Off_Json_AndOthersGetNotFound()
    {
        var h = new CommandHarness();
        try
        {
            var runtime = new LocalShellRuntime(h.P.Runtime, Path.Combine(h.P.Directory_, "homes"));
            var mail = new ReceiveEmailService(h.P.Vms, h.P.Shares, h.P.Accounts, runtime, h.P.Options, h.P.Time, h.Email);
            var s = h.Services;
            var dispatcher = new CommandDispatcher(new CommandServices(s.Options, s.Accounts, s.Vms, s.Shares, s.Stats, s.Index, s.Routes, s.ApiKeys, s.Time, null, s.Email, s.Audit, mail));
            var (a, k) = await h.NewUserAsync("alice@example.com");
            var (b, bk) = await h.NewUserAsync("bob@example.com");
            await h.RunAsync(a, k, "new", "--name=web");

            async Task<(int Exit, string Out, string Err)> Run(Account acct, AccountKey key, params string[] argv)
            {
                var stdout = new StringWriter { NewLine = "\n" };
                var stderr = new StringWriter { NewLine = "\n" };
                int exit = await dispatcher.RunAsync(new CommandContext { Account = acct, CurrentKey = key, Stdout = stdout, Stderr = stderr }, argv);
                return (exit, stdout.ToString(), stderr.ToString());
            }

            Assert.Equal((0, "web receives e-mail at anything@web.box.localhost; it is delivered to ~/Maildir/new/ in the VM.\n", ""),
                await Run(a, k, "share", "receive-email", "web", "on"));
            var vm = await h.P.Vms.GetByNameAsync(a.Id, "web");
            Assert.Single(Directory.GetFiles(Path.Combine(runtime.HomeOf(vm.Id), "Maildir", "new")));
            var ls = await Run(a, k, "ls", "--json");
            Assert.Contains("\"email_enabled\":true", ls.Out);
            var denied = await Run(b, bk, "share", "receive-email", "web", "on");
            Assert.Equal(1, denied.Exit);
            Assert.Contains("not found or access denied", denied.Err);
            Assert.Equal((0, "{\"vm_name\":\"web\",\"email_enabled\":false,\"email_address\":\"anything@web.box.localhost\",\"status\":\"updated\"}\n", ""),
                await Run(a, k, "share", "receive-email", "web", "off", "--json"));
            Assert.DoesNotContain("email_enabled", (await Run(a, k, "ls", "--json")).Out);
            var help = await Run(a, k, "help", "share", "receive-email");
            Assert.Contains("~/Maildir/new/", help.Out);
        }
        finally
        {
            h.Dispose();
        }
    }
}
