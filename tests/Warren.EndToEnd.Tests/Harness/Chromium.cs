using Microsoft.Playwright;
using Xunit;

namespace Warren.EndToEnd.Tests.Harness;

/// <summary>Debian's chromium driven by Playwright, resolving the test's host names to the daemon's addresses.</summary>
public static class Chromium
{
    private const string ExecutablePath = "/usr/bin/chromium";
    private const float NavigationTimeoutMs = 60_000;

    /// <param name="slotIp">Where <c>*.box.localhost</c> (the VM sites) resolve.</param>
    /// <param name="controlAddress">Where <c>warren.localhost</c> (the control host) resolves.</param>
    /// <param name="http2">False: HTTP/1.1 only (<c>--disable-http2</c>), to try the front door's HTTP/1.1 paths.</param>
    public static async Task<IBrowser> LaunchAsync(IPlaywright playwright, string slotIp, string controlAddress, bool http2 = true)
    {
        Assert.True(File.Exists(ExecutablePath), $"{ExecutablePath} is not installed; run scripts/prereqs.sh (apt-get install chromium)");
        return await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ExecutablePath,
            Headless = true,
            Timeout = 120_000,
            Args =
            [
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                // DNS as the daemon's own server answers it: the VM name to its slot, the control host to the control address.
                $"--host-resolver-rules=MAP *.box.localhost {slotIp}, MAP warren.localhost {controlAddress}",
                .. (http2 ? Array.Empty<string>() : ["--disable-http2"]),
            ],
        });
    }

    public static async Task<IBrowserContext> NewContextAsync(IBrowser browser)
    {
        // The dev CA is not in chromium's trust store; these tests are about login and forms, not PKI.
        var context = await browser.NewContextAsync(new BrowserNewContextOptions { IgnoreHTTPSErrors = true });
        context.SetDefaultNavigationTimeout(NavigationTimeoutMs);
        context.SetDefaultTimeout(NavigationTimeoutMs);
        return context;
    }

    /// <summary>Opens a login link as its user does: the page, then its button (only that POST logs in).</summary>
    public static async Task<IResponse?> OpenLoginLinkAsync(IPage page, string link)
    {
        var shown = await page.GotoAsync(link);
        Assert.Equal(200, shown!.Status);
        return await ClickAndWaitAsync(page, "button");
    }

    /// <summary>Clicks a form's button and returns the page the browser ends on (redirects followed; a refusal is the answer itself).</summary>
    public static Task<IResponse> ClickAndWaitAsync(IPage page, string selector) =>
        page.RunAndWaitForResponseAsync(() => page.ClickAsync(selector),
            r => r.Request.IsNavigationRequest && r.Status is not (>= 300 and < 400));
}
