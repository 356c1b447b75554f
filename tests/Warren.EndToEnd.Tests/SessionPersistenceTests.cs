using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>A browser login (one-time link, then the site's cookie) outlives a daemon restart: sessions are in SQLite.</summary>
public sealed class SessionPersistenceTests
{
    [Fact]
    public async Task LoggedInCookie_StillWorks_AfterTheDaemonRestarts()
    {
        var daemon = new WarrenDaemon();
        try
        {
            await daemon.StartAsync();
            var owner = await daemon.CreateUserAsync("persist@example.com");
            var slotIp = await WebSupport.CreateWebVmAsync(daemon, owner, "persist", "persisted-content");
            var jar = Path.Combine(daemon.DataDirectory, "cookies.txt");
            string site = "persist.box.localhost", control = "warren.localhost";
            var resolve = new[]
            {
                "--resolve", $"{site}:{daemon.HttpsPort}:{slotIp}",
                "--resolve", $"{control}:{daemon.HttpsPort}:{daemon.ControlAddress}",
            };

            var browser = await owner.ControlAsync("browser");
            var link = browser.Stdout.Split('\n').Select(l => l.Trim()).First(l => l.StartsWith("https://"));
            // The control-host login (the link's page, then its button), then the site's own login round trip, as a
            // browser would follow them.
            var curlBrowser = new CurlBrowser(daemon, (site, slotIp), (control, daemon.ControlAddress));
            var login = await curlBrowser.OpenLoginLinkAsync(link);
            Assert.True(login.Status == 303, login.Raw);
            File.Copy(curlBrowser.Jar, jar, overwrite: true);
            var first = await ProcessRunner.RunAsync("curl", ["-sS", "-L", "--max-redirs", "10", "--cacert", WebSupport.CaPath(daemon),
                "-c", jar, "-b", jar, .. resolve, $"https://{site}:{daemon.HttpsPort}/"]);
            Assert.Contains("persisted-content", first.Stdout);

            await daemon.StopAsync();
            await daemon.StartAsync();

            // No redirects allowed: the cookie alone must be enough after the restart.
            var after = await ProcessRunner.RunAsync("curl", ["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", WebSupport.CaPath(daemon),
                "-b", jar, .. resolve, $"https://{site}:{daemon.HttpsPort}/"]);
            Assert.True(after.Stdout.TrimEnd().EndsWith("200"), after.ToString());
            Assert.Contains("persisted-content", after.Stdout);
        }
        finally
        {
            await daemon.StopAsync();
            await DaemonFixture.CleanupContainersAsync(daemon.DataDirectory);
            await daemon.DisposeAsync();
        }
    }
}
