using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Issue 6 "a real browser": Playwright driving Debian's chromium logs in through the one-time link
/// that <c>ssh CONTROL browser</c> prints and sees a private site; a second account, logged in with
/// its own link, gets the "You need access" page and never the site's content.
/// </summary>
public sealed class BrowserLoginTests(WebFrontDoorFixture fixture) : IClassFixture<WebFrontDoorFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private string SiteUrl => $"https://{WebFrontDoorFixture.Site}.box.localhost:{Daemon.HttpsPort}/";

    private Task<IBrowser> LaunchAsync(IPlaywright playwright) => Chromium.LaunchAsync(playwright, fixture.SlotIp, Daemon.ControlAddress);

    private static Task<IBrowserContext> NewContextAsync(IBrowser browser) => Chromium.NewContextAsync(browser);

    private static Task<IResponse?> OpenLoginLinkAsync(IPage page, string link) => Chromium.OpenLoginLinkAsync(page, link);

    /// <summary>Runs <c>ssh CONTROL browser</c> and returns the one-time link it prints.</summary>
    private async Task<string> LoginLinkAsync(SshUser user)
    {
        var r = await user.ControlAsync("browser");
        Assert.True(r.ExitCode == 0, r.ToString());
        var m = Regex.Match(r.Stdout + r.Stderr, @"https://warren\.localhost:\d+/auth\?secret=[A-Za-z0-9_%\-]+");
        Assert.True(m.Success, "no login link in:\n" + r);
        Assert.Contains($":{Daemon.HttpsPort}/", m.Value);
        return m.Value;
    }

    [Fact]
    public async Task Owner_LogsInWithTheBrowserLink_AndSeesThePrivateSite_AnotherAccountDoesNot()
    {
        Assert.True((await fixture.Owner.ControlAsync($"share set-private {WebFrontDoorFixture.Site} --json")).ExitCode == 0);

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await LaunchAsync(playwright);

        // Anonymous: the site sends the browser to the control host's sign-in page (401), which says how to sign in.
        await using (var anon = await NewContextAsync(browser))
        {
            var page = await anon.NewPageAsync();
            var response = await page.GotoAsync(SiteUrl);
            Assert.NotNull(response);
            Assert.Equal(401, response!.Status);
            Assert.StartsWith($"https://warren.localhost:{Daemon.HttpsPort}/login?", page.Url);
            string text = await page.InnerTextAsync("body");
            Assert.Contains("browser", text);
            Assert.DoesNotContain(WebFrontDoorFixture.Content, text);
        }

        // The owner: one-time link, then the private site shows the VM's content.
        await using (var ownerContext = await NewContextAsync(browser))
        {
            var page = await ownerContext.NewPageAsync();
            string link = await LoginLinkAsync(fixture.Owner);
            var login = await OpenLoginLinkAsync(page, link);
            Assert.NotNull(login);
            Assert.Equal(200, login!.Status);
            Assert.Contains("owner@example.com", await page.InnerTextAsync("body"));

            var site = await page.GotoAsync(SiteUrl);
            Assert.NotNull(site);
            Assert.Equal(200, site!.Status);
            Assert.Equal(SiteUrl, page.Url);
            Assert.Equal(WebFrontDoorFixture.Content, (await page.InnerTextAsync("body")).Trim());

            // The site's own session cookie is host-only and HttpOnly; the VM sees the user, not the cookie.
            var cookies = await ownerContext.CookiesAsync([SiteUrl]);
            var siteCookie = Assert.Single(cookies, c => c.Name.StartsWith("login-with-exe-", StringComparison.Ordinal));
            Assert.True(siteCookie.HttpOnly);
            Assert.True(siteCookie.Secure);
            Assert.Equal($"{WebFrontDoorFixture.Site}.box.localhost", siteCookie.Domain);

            await page.GotoAsync(SiteUrl + "cgi-bin/env");
            string env = await page.InnerTextAsync("body");
            Assert.Contains("HTTP_X_EXEDEV_EMAIL=owner@example.com", env);
            Assert.DoesNotContain("login-with-exe-", env);

            // The link was one-time: opening it again is refused.
            var reuse = await OpenLoginLinkAsync(page, link);
            Assert.NotNull(reuse);
            Assert.Equal(401, reuse!.Status);
        }

        // A second account, logged in with its own link, is told it needs access.
        var other = await Daemon.CreateUserAsync("browser-other@example.com");
        await using (var otherContext = await NewContextAsync(browser))
        {
            var page = await otherContext.NewPageAsync();
            var login = await OpenLoginLinkAsync(page, await LoginLinkAsync(other));
            Assert.NotNull(login);
            Assert.Equal(200, login!.Status);
            Assert.Contains("browser-other@example.com", await page.InnerTextAsync("body"));

            var site = await page.GotoAsync(SiteUrl);
            Assert.NotNull(site);
            Assert.Equal(401, site!.Status);
            string text = await page.InnerTextAsync("body");
            Assert.Contains("You need access", text);
            Assert.Contains("browser-other@example.com", text);
            Assert.DoesNotContain(WebFrontDoorFixture.Content, text);

            // Once the owner shares the site with that address, a reload shows the content.
            var share = await fixture.Owner.ControlAsync($"share add {WebFrontDoorFixture.Site} browser-other@example.com --json");
            Assert.True(share.ExitCode == 0, share.ToString());
            try
            {
                var shared = await page.GotoAsync(SiteUrl);
                Assert.NotNull(shared);
                Assert.Equal(200, shared!.Status);
                Assert.Equal(WebFrontDoorFixture.Content, (await page.InnerTextAsync("body")).Trim());

                // Logging out of the site (POST /__exe.dev/logout) ends that site's session; as on exe.dev, the browser
                // lands on the control host's logged-out page.
                await page.GotoAsync(SiteUrl + "__exe.dev/logout");
                await page.ClickAsync("button");
                // Waits for the navigation to commit, then for the page's text: the default wait for the "load" event
                // once timed out under CI load although the page had arrived (Playwright logged only "NetworkIdle").
                await page.WaitForURLAsync($"https://warren.localhost:{Daemon.HttpsPort}/logged-out",
                    new PageWaitForURLOptions { WaitUntil = WaitUntilState.Commit });
                Assert.Contains("You are logged out", await page.InnerTextAsync("body"));
                var cookies = await otherContext.CookiesAsync([SiteUrl]);
                Assert.DoesNotContain(cookies, c => c.Name.StartsWith("login-with-exe-", StringComparison.Ordinal));
            }
            finally
            {
                await fixture.Owner.ControlAsync($"share remove {WebFrontDoorFixture.Site} browser-other@example.com --json");
            }
        }
    }

    /// <summary>
    /// Two login links opened in two tabs of one browser: each page keeps its own anti-forgery cookie, so the first
    /// tab's button still logs in after the second tab was opened (one shared cookie was overwritten by the second).
    /// </summary>
    [Fact]
    public async Task TwoLoginLinksInTwoTabs_EachTabsButtonLogsIn()
    {
        string first = await LoginLinkAsync(fixture.Owner);
        string second = await LoginLinkAsync(fixture.Owner);
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await LaunchAsync(playwright);
        await using var context = await NewContextAsync(browser);
        var tab1 = await context.NewPageAsync();
        var tab2 = await context.NewPageAsync();
        Assert.Equal(200, (await tab1.GotoAsync(first))!.Status);
        Assert.Equal(200, (await tab2.GotoAsync(second))!.Status);

        var loggedIn = await Chromium.ClickAndWaitAsync(tab1, "button");
        Assert.Equal(200, loggedIn.Status);
        Assert.Contains("owner@example.com", await tab1.InnerTextAsync("body"));
        var again = await Chromium.ClickAndWaitAsync(tab2, "button");
        Assert.Equal(200, again.Status);
        Assert.Contains("owner@example.com", await tab2.InnerTextAsync("body"));
        // Each link's cookie is gone once its button was used.
        var cookies = await context.CookiesAsync([$"https://warren.localhost:{Daemon.HttpsPort}/auth"]);
        Assert.DoesNotContain(cookies, c => c.Name.StartsWith("exe-login-confirm-", StringComparison.Ordinal));
    }

    /// <summary>
    /// Long addresses over HTTP/2 and HTTP/1.1. Chromium: a private site's address with a return path of 4000
    /// characters comes back after the login, although percent-encoding makes it three times as long at every hop
    /// (<c>/__exe.dev/login</c>, the control host's <c>/login</c>, <c>/__exe.dev/auth</c>: about 12 KB each). curl: a
    /// 9 KB sign-in address is served, and an address over 16 KiB gets 414 with a page, never an HTTP/2 reset.
    /// (curl 7.88 sends no cookies with a URL over about 8 KB, so the login round trip is Chromium's.)
    /// </summary>
    [Fact]
    public async Task LongAddresses_GetTheirPageOrA414_OverHttp2AndHttp11()
    {
        Assert.True((await fixture.Owner.ControlAsync($"share set-private {WebFrontDoorFixture.Site} --json")).ExitCode == 0);
        string siteHost = $"{WebFrontDoorFixture.Site}.box.localhost";
        // Characters percent-encoding triples ('/', '&', '='), 4011 characters of return path in all.
        string query = "q=" + string.Concat(Enumerable.Repeat("/&=/", 1000)).Substring(0, 3994);
        Assert.True(("/cgi-bin/env?" + query).Length <= 4096);
        using var playwright = await Playwright.CreateAsync();
        foreach (bool http2 in new[] { true, false })
        {
            await using var browser = await Chromium.LaunchAsync(playwright, fixture.SlotIp, Daemon.ControlAddress, http2);
            await using var context = await NewContextAsync(browser);
            var page = await context.NewPageAsync();
            var login = await OpenLoginLinkAsync(page, await LoginLinkAsync(fixture.Owner));
            Assert.Equal(200, login!.Status);
            var env = await page.GotoAsync(SiteUrl + "cgi-bin/env?" + query);
            Assert.True(env!.Status == 200, $"http2={http2} {env.Status} {page.Url}");
            Assert.Equal(SiteUrl + "cgi-bin/env?" + query, page.Url);
            Assert.Contains("QUERY_STRING=" + query, await page.InnerTextAsync("body"));
        }

        foreach (string protocol in new[] { "--http2", "--http1.1" })
        {
            // Not signed in: exe.dev's sign-in address with a 9 KB return path gets the sign-in page (401).
            var curl = new CurlBrowser(Daemon, ("warren.localhost", Daemon.ControlAddress), (siteHost, fixture.SlotIp));
            var signIn = await curl.RequestAsync($"https://warren.localhost:{Daemon.HttpsPort}/auth?return_host={siteHost}&redirect=/" + new string('a', 9000), protocol);
            Assert.True(signIn.Status == 401, protocol + "\n" + signIn.Raw);
            Assert.Contains("Sign in to continue", signIn.Body);

            var tooLong = await curl.RequestAsync(SiteUrl + "?" + new string('a', Warren.Edge.Http.HttpFrontDoorLimits.MaxRequestTargetBytes + 1), protocol);
            Assert.True(tooLong.Status == 414, protocol + "\n" + tooLong.Raw);
            Assert.Contains("URI Too Long", tooLong.Body);
            Assert.Equal("no-store", tooLong.Header("cache-control"));
        }
    }
}
