using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>A mailing daemon that verifies sign-ups by mail, restarted by one of its tests.</summary>
public sealed class CompatLoginLinkFixture : MailingSiteFixture
{
    protected override string SiteName => "linksite";
    protected override string SiteContent => "link site";
    protected override string OwnerEmail => "links-owner@example.com";
    protected override Dictionary<string, string> ExtraConfig => new() { ["Warren:Signup:AutoVerify"] = "false" };
}

/// <summary>
/// Sign-up verification links and login links through the real daemon, OpenSSH and curl: they are kept in SQLite, so
/// one mailed or printed before a daemon restart works once after it; a login link's GET only shows a page (a mail
/// scanner fetching it spends nothing) and its button's POST logs in, once; the login page's "email me a link" does
/// not mail domains reserved for examples (RFC 2606), as sign-up does not.
/// </summary>
public sealed partial class CompatLoginLinkTests(CompatLoginLinkFixture fixture) : IClassFixture<CompatLoginLinkFixture>
{
    private static readonly TimeSpan MailWait = TimeSpan.FromSeconds(60);
    private const string ControlHost = "warren.localhost";

    private WarrenDaemon Daemon => fixture.Daemon;

    [GeneratedRegex(@"https://\S+/verify-email\?token(?:=3D|=)([A-Za-z0-9_-]+)")]
    private static partial Regex VerifyLink();

    [GeneratedRegex(@"https://warren\.localhost:\d+/auth\?secret=[A-Za-z0-9_%\-]+(&redirect=[^\s]*)?")]
    private static partial Regex LoginLink();

    private CurlBrowser Browser() => new(Daemon, (ControlHost, Daemon.ControlAddress));
    private string ControlUrl(string path) => $"https://{ControlHost}:{Daemon.HttpsPort}{path}";

    /// <summary>The next mail to <paramref name="address"/>, quoted-printable "=" undone.</summary>
    private async Task<string> MailToAsync(string address)
    {
        var mail = await fixture.Mail.NextContainingAsync("To: " + address, MailWait);
        Assert.True(mail is not null, $"no mail to {address}\n{Daemon.Log}");
        return mail!.Replace("=3D", "=");
    }

    /// <summary>Whether a login-link mail to <paramref name="address"/> arrives within <paramref name="wait"/> (other mail is skipped).</summary>
    private async Task<bool> LoginMailArrivesAsync(string address, TimeSpan wait)
    {
        var deadline = DateTime.UtcNow + wait;
        for (var left = wait; left > TimeSpan.Zero; left = deadline - DateTime.UtcNow)
        {
            var mail = await fixture.Mail.NextContainingAsync("To: " + address, left);
            if (mail is null) return false;
            if (mail.Contains("Log in to", StringComparison.Ordinal)) return true;
        }
        return false;
    }

    /// <summary>The link <c>ssh CONTROL browser</c> prints for <paramref name="user"/>.</summary>
    private static async Task<string> PrintedLoginLinkAsync(SshUser user)
    {
        var printed = await user.ControlAsync("browser");
        Assert.True(printed.ExitCode == 0, printed.ToString());
        string link = LoginLink().Match(printed.Stdout + printed.Stderr).Value;
        Assert.False(string.IsNullOrEmpty(link), printed.ToString());
        return link;
    }

    private static bool HasSession(CurlBrowser browser) => File.ReadAllText(browser.Jar).Contains("\texe-auth\t", StringComparison.Ordinal);

    [Fact]
    public async Task SignupAndLoginLinks_SurviveADaemonRestart_AndWorkOnce()
    {
        // A web sign-up's verification link, a printed login link and a mailed login link, all made before the restart.
        const string newcomer = "restart-newcomer@mail.internal";
        var signup = Browser();
        var asked = await signup.RequestAsync(ControlUrl("/auth"), "--data-urlencode", "email=" + newcomer);
        Assert.True(asked.Status == 200, asked.Raw);
        string token = VerifyLink().Match(await MailToAsync(newcomer)).Groups[1].Value;
        Assert.NotEqual("", token);

        string printed = await PrintedLoginLinkAsync(fixture.Owner);

        const string reader = "restart-reader@mail.internal";
        await Daemon.CreateUserAsync(reader);
        var form = await Browser().RequestAsync(ControlUrl("/login"), "--data-urlencode", "email=" + reader, "--data-urlencode", "redirect=/login");
        Assert.True(form.Status == 200, form.Raw);
        var mailed = LoginLink().Match(await MailToAsync(reader));
        Assert.True(mailed.Success, "no login link mailed");

        await Daemon.StopAsync();
        await Daemon.StartAsync();

        // The verification link: the page, then its button signs the browser in; a second POST is refused.
        var page = await signup.RequestAsync(ControlUrl("/verify-email?token=" + token));
        Assert.True(page.Status == 200, page.Raw + Daemon.Log);
        Assert.Contains(newcomer, page.Body);
        // Its own page: the token stays off other origins' Referer, and the button's POST keeps its Origin.
        Assert.Equal("same-origin", page.Header("referrer-policy"));
        var crossSite = await signup.RequestAsync(ControlUrl("/verify-email"), "-H", "Origin: https://evil.example", "--data-urlencode", "token=" + token);
        Assert.Equal(403, crossSite.Status); // another site's form: refused, the link still good
        var confirmed = await signup.RequestAsync(ControlUrl("/verify-email"), "-L", "--data-urlencode", "token=" + token);
        Assert.True(confirmed.Status == 200, confirmed.Raw);
        Assert.Contains(newcomer, confirmed.Body);
        Assert.True(HasSession(signup));
        var again = await Browser().RequestAsync(ControlUrl("/verify-email"), "--data-urlencode", "token=" + token);
        Assert.Equal(404, again.Status);

        // The printed login link logs in once.
        var owner = Browser();
        var ownerLogin = await owner.OpenLoginLinkAsync(printed, "-L");
        Assert.True(ownerLogin.Status == 200, ownerLogin.Raw);
        Assert.Contains(fixture.Owner.Email, ownerLogin.Body);
        var replay = await Browser().OpenLoginLinkAsync(printed);
        Assert.Equal(401, replay.Status);

        // The mailed one too.
        var readerBrowser = Browser();
        var readerLogin = await readerBrowser.OpenLoginLinkAsync(mailed.Value, "-L");
        Assert.True(readerLogin.Status == 200, readerLogin.Raw);
        Assert.Contains(reader, readerLogin.Body);
        Assert.Equal(401, (await Browser().OpenLoginLinkAsync(mailed.Value)).Status);
    }

    [Fact]
    public async Task ALoginLink_GetTwiceSpendsNothing_OnlyItsPostLogsIn_Once()
    {
        string link = await PrintedLoginLinkAsync(fixture.Owner);

        // A mail scanner or link preview: GETs (and a HEAD) show the page with its button and set no session.
        var scanner = Browser();
        for (int i = 0; i < 2; i++)
        {
            var page = await scanner.RequestAsync(link);
            Assert.True(page.Status == 200, page.Raw);
            Assert.Contains("method=\"post\"", page.Body);
            Assert.Equal("no-referrer", page.Header("referrer-policy"));
            Assert.False(HasSession(scanner));
        }
        Assert.Equal(200, (await scanner.RequestAsync(link, "-I")).Status);

        // A forged POST: the secret, but no anti-forgery cookie from the page (another site's form, or a script).
        string secret = Uri.UnescapeDataString(Regex.Match(link, "secret=([^&]+)").Groups[1].Value);
        var forged = await Browser().RequestAsync(ControlUrl("/auth"), "--data-urlencode", "secret=" + secret, "--data-urlencode", "form_token=guess");
        Assert.Equal(403, forged.Status);
        // The page's cookie, but the POST from another origin.
        var crossSite = Browser();
        var shown = await crossSite.RequestAsync(link);
        string formToken = Regex.Match(shown.Body, "name=\"form_token\" value=\"([^\"]+)\"").Groups[1].Value;
        var fromElsewhere = await crossSite.RequestAsync(ControlUrl("/auth"), "-H", "Origin: https://evil.example",
            "--data-urlencode", "secret=" + secret, "--data-urlencode", "form_token=" + formToken);
        Assert.Equal(403, fromElsewhere.Status);
        Assert.False(HasSession(crossSite));

        // The person's click: logs in (303 to the page it names, with the session cookie). Under the page's
        // no-referrer policy a browser sends "Origin: null" with it.
        var person = Browser();
        var login = await person.OpenLoginLinkAsync(link, "-H", "Origin: null");
        Assert.True(login.Status == 303, login.Raw);
        Assert.Equal("/login", login.Header("location"));
        Assert.True(HasSession(person));
        var loggedIn = await person.RequestAsync(ControlUrl("/login"));
        Assert.Contains(fixture.Owner.Email, loggedIn.Body);

        // Used: the same POST again is refused.
        var second = await crossSite.RequestAsync(ControlUrl("/auth"), "--data-urlencode", "secret=" + secret, "--data-urlencode", "form_token=" + formToken);
        Assert.Equal(401, second.Status);
    }

    [Fact]
    public async Task BadLoginLinks_GetClearErrors()
    {
        var browser = Browser();
        Assert.Equal(401, (await browser.RequestAsync(ControlUrl("/auth?secret="))).Status);
        // Whatever the secret, the page shows it only escaped.
        var markup = await browser.RequestAsync(ControlUrl("/auth?secret=%3Cscript%3Ex%22%3E"));
        Assert.Equal(200, markup.Status);
        Assert.DoesNotContain("<script>", markup.Body);
        var unknown = await browser.OpenLoginLinkAsync(ControlUrl("/auth?secret=" + new string('B', 43)));
        Assert.Equal(401, unknown.Status);
        Assert.Contains("invalid, expired or already used", unknown.Body);
        var notAForm = await browser.RequestAsync(ControlUrl("/auth"), "-X", "POST", "-H", "Content-Type: text/plain", "--data", "secret=x");
        Assert.Equal(415, notAForm.Status);
        Assert.Equal(405, (await browser.RequestAsync(ControlUrl("/auth?secret=x"), "-X", "DELETE")).Status);
        Assert.False(HasSession(browser));
    }

    [Fact]
    public async Task TheLoginPagesEmailForm_DoesNotMailReservedExampleDomains_AndSaysSo()
    {
        // The owner's account is at example.com: the form says no mail can reach it, and none is sent.
        var asked = await Browser().RequestAsync(ControlUrl("/login"), "--data-urlencode", "email=" + fixture.Owner.Email, "--data-urlencode", "redirect=/");
        Assert.Equal(400, asked.Status);
        Assert.Contains("reserved for examples", asked.Body);
        // Accounts or not, the answer is the same (it says nothing about accounts).
        var nobody = await Browser().RequestAsync(ControlUrl("/login"), "--data-urlencode", "email=nobody@shop.example", "--data-urlencode", "redirect=/");
        Assert.Equal(400, nobody.Status);
        Assert.False(await LoginMailArrivesAsync(fixture.Owner.Email, TimeSpan.FromSeconds(3)));
    }

    /// <summary>
    /// A person the site was shared with by address, in Chromium, without an account: the private site sends them to
    /// the sign-in page, whose email form signs up; the mailed link's page (with the front door's common headers)
    /// confirms, and the browser goes on to the site it started at (CSP form-action lets the redirect leave the
    /// control host). Then the site, logout, and a mailed login link of an existing account that returns to the site.
    /// </summary>
    [Fact]
    public async Task Chromium_SignsUpFromAPrivateSitesSignInPage_AndComesBackToTheSite()
    {
        const string newcomer = "web-newcomer@mail.internal";
        string siteHost = "linksite.box.localhost";
        string siteUrl = $"https://{siteHost}:{Daemon.HttpsPort}/cgi-bin/env?from=signup";
        var shared = await fixture.Owner.ControlAsync($"share add linksite {newcomer} --json");
        Assert.True(shared.ExitCode == 0, shared.ToString());
        try
        {
            using var playwright = await Playwright.CreateAsync();
            await using var browser = await Chromium.LaunchAsync(playwright, fixture.SlotIp, Daemon.ControlAddress);
            await using var context = await Chromium.NewContextAsync(browser);
            var page = await context.NewPageAsync();

            var signIn = await page.GotoAsync(siteUrl);
            Assert.Equal(401, signIn!.Status);
            Assert.StartsWith(ControlUrl("/login?"), page.Url);
            await page.FillAsync("input[name=email]", newcomer);
            var asked = await Chromium.ClickAndWaitAsync(page, "button");
            Assert.Equal(200, asked.Status);
            Assert.Contains("Check your email", await page.InnerTextAsync("body"));
            AssertCommonPageHeaders(await asked.AllHeadersAsync());

            // The share's invitation reached that address first; the sign-up mail holds the verification link.
            string token = "";
            for (int mails = 0; mails < 3 && token == ""; mails++)
                token = VerifyLink().Match(await MailToAsync(newcomer)).Groups[1].Value;
            Assert.NotEqual("", token);
            var confirmPage = await page.GotoAsync(ControlUrl("/verify-email?token=" + token));
            Assert.Equal(200, confirmPage!.Status);
            var headers = await confirmPage.AllHeadersAsync();
            AssertCommonPageHeaders(headers);
            Assert.Equal("same-origin", headers["referrer-policy"]);

            var site = await Chromium.ClickAndWaitAsync(page, "button");
            Assert.True(site.Status == 200, $"{site.Status} {page.Url}\n{await page.InnerTextAsync("body")}");
            Assert.Equal(siteUrl, page.Url);
            Assert.Contains("HTTP_X_EXEDEV_EMAIL=" + newcomer, await page.InnerTextAsync("body"));

            // Logging out of the site lands on the control host's logged-out page; the site asks for a login again.
            await page.GotoAsync($"https://{siteHost}:{Daemon.HttpsPort}/__exe.dev/logout");
            await page.ClickAsync("button");
            await page.WaitForURLAsync(ControlUrl("/logged-out"), new PageWaitForURLOptions { WaitUntil = WaitUntilState.Commit });
            Assert.Contains("You are logged out", await page.InnerTextAsync("body"));
            Assert.DoesNotContain(await context.CookiesAsync([siteUrl]), c => c.Name.StartsWith("login-with-exe-", StringComparison.Ordinal));
            // Still signed in on the control host, the site would sign the browser in again at once; the logged-out
            // page's button logs out there too, and then the site asks for a sign-in.
            var controlLogout = await Chromium.ClickAndWaitAsync(page, "button");
            Assert.Equal(200, controlLogout.Status);
            Assert.Contains("You are logged out of warren.localhost", await page.InnerTextAsync("body"));
            Assert.DoesNotContain(await context.CookiesAsync([ControlUrl("/")]), c => c.Name == "exe-auth");
            var again = await page.GotoAsync(siteUrl);
            Assert.Equal(401, again!.Status);
            Assert.StartsWith(ControlUrl("/login?"), page.Url);
        }
        finally
        {
            await fixture.Owner.ControlAsync($"share remove linksite {newcomer} --json");
        }

        // An existing account's mailed login link that returns to the site: its button's answer goes on to the site.
        const string reader = "web-reader@mail.internal";
        await Daemon.CreateUserAsync(reader);
        string returnUrl = "/login?redirect=%2Fcgi-bin%2Fenv&return_host=" + Uri.EscapeDataString($"{siteHost}:{Daemon.HttpsPort}");
        var mailedForm = await Browser().RequestAsync(ControlUrl("/login"), "--data-urlencode", "email=" + reader, "--data-urlencode", "redirect=" + returnUrl);
        Assert.True(mailedForm.Status == 200, mailedForm.Raw);
        var mailed = LoginLink().Match(await MailToAsync(reader));
        Assert.True(mailed.Success, "no login link mailed");
        using (var playwright = await Playwright.CreateAsync())
        {
            await using var browser = await Chromium.LaunchAsync(playwright, fixture.SlotIp, Daemon.ControlAddress);
            await using var context = await Chromium.NewContextAsync(browser);
            var page = await context.NewPageAsync();
            var landed = await Chromium.OpenLoginLinkAsync(page, mailed.Value);
            // Not shared with this account: the site's own "You need access" page, on the site's host.
            Assert.True(landed!.Status == 401, $"{landed.Status} {page.Url}\n{await page.InnerTextAsync("body")}");
            Assert.StartsWith($"https://{siteHost}:{Daemon.HttpsPort}/cgi-bin/env", page.Url);
            Assert.Contains("You need access", await page.InnerTextAsync("body"));
        }
    }

    /// <summary>The headers every page of the front door carries (not cached, not sniffed, not framed, nothing loaded).</summary>
    private static void AssertCommonPageHeaders(Dictionary<string, string> headers)
    {
        Assert.Equal("no-store", headers["cache-control"]);
        Assert.Equal("nosniff", headers["x-content-type-options"]);
        Assert.Contains("frame-ancestors 'none'", headers["content-security-policy"]);
        Assert.Contains("default-src 'none'", headers["content-security-policy"]);
        Assert.True(headers.ContainsKey("referrer-policy"));
    }
}
