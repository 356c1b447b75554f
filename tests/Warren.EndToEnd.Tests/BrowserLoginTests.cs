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
}
