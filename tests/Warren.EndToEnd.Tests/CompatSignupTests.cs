using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>A mailing daemon that verifies sign-ups by mail (no AutoVerify), with the owner's busybox site "signupsite".</summary>
public sealed class CompatSignupFixture : MailingSiteFixture
{
    protected override string SiteName => "signupsite";
    protected override string SiteContent => "signup site";
    protected override string OwnerEmail => "signup-owner@example.com";
    protected override Dictionary<string, string> ExtraConfig => new() { ["Warren:Signup:AutoVerify"] = "false" };
}

/// <summary>
/// Sign-up verification as exe.dev offers it, through the real daemon, OpenSSH (a pty), an SMTP sink and curl: a
/// one-click link in the mail beside the code (GET shows a page, only its POST confirms, so link scanners change
/// nothing), web sign-up with <c>POST /auth</c>, the SSH key of that address joining the same account, pending shares
/// becoming active, and no mail to domains reserved for examples (RFC 2606).
/// </summary>
public sealed partial class CompatSignupTests(CompatSignupFixture fixture) : IClassFixture<CompatSignupFixture>
{
    private static readonly TimeSpan MailWait = TimeSpan.FromSeconds(60);
    private const string ControlHost = "warren.localhost";

    private WarrenDaemon Daemon => fixture.Daemon;

    [GeneratedRegex(@"https://\S+/verify-email\?token(?:=3D|=)([A-Za-z0-9_-]+)")]
    private static partial Regex Link();

    [GeneratedRegex(@"verification code for \S+ is (\d{6})")]
    private static partial Regex Code();

    private CurlBrowser Browser() => new(Daemon, (ControlHost, Daemon.ControlAddress));
    private string ControlUrl(string path) => $"https://{ControlHost}:{Daemon.HttpsPort}{path}";

    /// <summary>An OpenSSH client on a pty to the control host, typing what the test sends.</summary>
    private sealed class PtySession : IAsyncDisposable
    {
        private readonly Process _ssh;
        private readonly Task<string> _stdout;
        private readonly Task<string> _stderr;

        public PtySession(SshUser u, WarrenDaemon daemon)
        {
            var psi = new ProcessStartInfo("ssh") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in u.SshOptions(daemon.SshPort)) psi.ArgumentList.Add(a);
            psi.ArgumentList.Add("-tt");
            psi.ArgumentList.Add(daemon.ControlAddress);
            _ssh = Process.Start(psi)!;
            _stdout = _ssh.StandardOutput.ReadToEndAsync();
            _stderr = _ssh.StandardError.ReadToEndAsync();
        }

        public async Task TypeAsync(string text)
        {
            await _ssh.StandardInput.WriteAsync(text);
            await _ssh.StandardInput.FlushAsync();
        }

        /// <summary>Ends input and returns the screen.</summary>
        public async Task<string> FinishAsync()
        {
            _ssh.StandardInput.Close();
            if (!_ssh.WaitForExit(60_000)) _ssh.Kill();
            return await _stdout + await _stderr;
        }

        public async ValueTask DisposeAsync()
        {
            if (!_ssh.HasExited) _ssh.Kill();
            await Task.WhenAny(_stdout, Task.Delay(1000));
            _ssh.Dispose();
        }
    }

    private async Task<string> MailToAsync(string address)
    {
        var mail = await fixture.Mail.NextContainingAsync("To: " + address, MailWait);
        Assert.True(mail is not null, $"no mail to {address}\n{Daemon.Log}");
        return mail!;
    }

    [Fact]
    public async Task SshSignup_TheMailedLink_ConfirmsByPostOnly_AndTheDialogueGoesOn()
    {
        var u = await SshUser.CreateKeyAsync(Daemon, "linked@mail.internal");
        await using var pty = new PtySession(u, Daemon);
        await pty.TypeAsync("linked@mail.internal\n");
        var mail = await MailToAsync("linked@mail.internal");
        var link = Link().Match(mail);
        Assert.True(link.Success, mail);
        Assert.Matches(Code(), mail); // the code is still there for those who type it
        string token = link.Groups[1].Value;

        // A scanner (or a preview) fetching the link twice uses nothing up: each GET shows the page with its button.
        var browser = Browser();
        for (int i = 0; i < 2; i++)
        {
            var page = await browser.RequestAsync(ControlUrl("/verify-email?token=" + token));
            Assert.True(page.Status == 200, page.Raw);
            Assert.Contains("linked@mail.internal", page.Body);
            Assert.Contains("method=\"post\"", page.Body);
        }
        var confirm = await browser.RequestAsync(ControlUrl("/verify-email"), "--data-urlencode", "token=" + token);
        Assert.True(confirm.Status == 200, confirm.Raw);
        // Used once: a second POST is refused.
        var again = await browser.RequestAsync(ControlUrl("/verify-email"), "--data-urlencode", "token=" + token);
        Assert.Equal(404, again.Status);

        await pty.TypeAsync("whoami --json\nexit\n");
        var screen = await pty.FinishAsync();
        Assert.Contains("Email verified successfully", screen);
        var who = await u.ControlAsync("whoami --json");
        Assert.True(who.ExitCode == 0, who.ToString() + screen);
        Assert.Contains("\"email\":\"linked@mail.internal\"", who.Stdout);
    }

    [Fact]
    public async Task WebSignup_ByPostAuth_ActivatesPendingShares_AndTheSshKeyJoinsTheSameAccount()
    {
        const string address = "web-newcomer@mail.internal";
        // A share for an address with no account yet: pending.
        var shared = await fixture.Owner.ControlAsync($"share add signupsite {address} --json");
        Assert.True(shared.ExitCode == 0, shared.ToString());
        await MailToAsync(address); // the invitation

        var browser = Browser();
        var asked = await browser.RequestAsync(ControlUrl("/auth"), "--data-urlencode", "email=" + address);
        Assert.True(asked.Status == 200, asked.Raw);
        var mail = await MailToAsync(address);
        var token = Link().Match(mail).Groups[1].Value;
        Assert.NotEqual("", token);
        var page = await browser.RequestAsync(ControlUrl("/verify-email?token=" + token));
        Assert.Equal(200, page.Status);
        // The button: signs the browser in (the session cookie) and lands on the logged-in page.
        var signedIn = await browser.RequestAsync(ControlUrl("/verify-email"), "-L", "--data-urlencode", "token=" + token);
        Assert.True(signedIn.Status == 200, signedIn.Raw);
        Assert.Contains(address, signedIn.Body);
        Assert.Contains("exe-auth", File.ReadAllText(browser.Jar));

        var show = await fixture.Owner.ControlAsync("share show signupsite --json");
        var user = JsonDocument.Parse(show.Stdout).RootElement.GetProperty("users").EnumerateArray()
            .Single(x => x.GetProperty("email").GetString() == address);
        Assert.Equal("active", user.GetProperty("status").GetString());

        // The person's SSH key joins that account (verified by mail again).
        var u = await SshUser.CreateKeyAsync(Daemon, address);
        await using var pty = new PtySession(u, Daemon);
        await pty.TypeAsync(address + "\n");
        var codeMail = await MailToAsync(address);
        await pty.TypeAsync(Code().Match(codeMail).Groups[1].Value + "\nexit\n");
        var screen = await pty.FinishAsync();
        Assert.Contains("Your new ssh key has been added to your existing account.", screen);
        var who = await u.ControlAsync("whoami --json");
        Assert.True(who.ExitCode == 0, who.ToString() + screen);
        Assert.Contains($"\"email\":\"{address}\"", who.Stdout);
    }

    [Theory]
    [InlineData("someone@example.com")]
    [InlineData("someone@mail.example.org")]
    [InlineData("someone@host.test")]
    [InlineData("someone@nowhere.invalid")]
    public async Task ReservedExampleDomains_AreNotMailed_AndThePersonIsTold(string address)
    {
        var asked = await Browser().RequestAsync(ControlUrl("/auth"), "--data-urlencode", "email=" + address);
        Assert.Equal(400, asked.Status);
        Assert.Contains("reserved for examples", asked.Body);

        var u = await SshUser.CreateKeyAsync(Daemon, address);
        await using var pty = new PtySession(u, Daemon);
        await pty.TypeAsync(address + "\n\n");
        var screen = await pty.FinishAsync();
        Assert.Contains("reserved for examples (RFC 2606)", screen);
        Assert.DoesNotContain("Verification email sent", screen);
        Assert.Null(await fixture.Mail.NextContainingAsync("To: " + address, TimeSpan.FromSeconds(2)));
    }

    [Fact]
    public async Task BadInput_GetsClearErrors_NeverAnAccount()
    {
        var browser = Browser();
        var notAnAddress = await browser.RequestAsync(ControlUrl("/auth"), "--data-urlencode", "email=not-an-address");
        Assert.Equal(400, notAnAddress.Status);
        var noForm = await browser.RequestAsync(ControlUrl("/auth"), "-X", "POST", "-H", "Content-Type: text/plain", "--data", "x");
        Assert.Equal(415, noForm.Status);
        var unknownToken = await browser.RequestAsync(ControlUrl("/verify-email?token=" + new string('A', 43)));
        Assert.Equal(404, unknownToken.Status);
        var longToken = await browser.RequestAsync(ControlUrl("/verify-email"), "--data-urlencode", "token=" + new string('A', 3000));
        Assert.Equal(404, longToken.Status);
        var wrongMethod = await browser.RequestAsync(ControlUrl("/verify-email"), "-X", "DELETE");
        Assert.Equal(405, wrongMethod.Status);
    }
}
