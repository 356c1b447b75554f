using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon whose per-source HTTP limit is tiny: a burst of 5, then one request per 100 s, so a run of
/// requests is limited whatever the machine's speed.
/// </summary>
public sealed class ProxyRateLimitFixture : DaemonFixture
{
    public const int Burst = 5;

    protected override Dictionary<string, string> Config => new()
    {
        ["Warren:Http:RequestsPerSecondPerSource"] = "0.01",
        ["Warren:Http:RequestBurstPerSource"] = Burst.ToString(),
    };
}

/// <summary>
/// The front door's per-source-IP limit through the real daemon and curl: 429 with Retry-After on the
/// control host, VM sites, /exec (JSON) and plain HTTP alike; another source address is unaffected.
/// </summary>
public sealed class ProxyRateLimitTests(ProxyRateLimitFixture fixture) : IClassFixture<ProxyRateLimitFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string ControlHost = "warren.localhost";
    private const string SiteHost = "anything.box.localhost";

    /// <summary>curl from <paramref name="source"/> (a loopback address) to the control address; --resolve pins both names there.</summary>
    private async Task<ProcessResult> CurlAsync(string source, params string[] args)
    {
        var all = new List<string>
        {
            "-sS", "--max-time", "60", "--cacert", WebSupport.CaPath(Daemon), "--interface", source,
            "--resolve", $"{ControlHost}:{Daemon.HttpsPort}:{Daemon.ControlAddress}",
            "--resolve", $"{SiteHost}:{Daemon.HttpsPort}:{Daemon.ControlAddress}",
            "--resolve", $"{SiteHost}:{Daemon.HttpPort}:{Daemon.ControlAddress}",
        };
        all.AddRange(args);
        var r = await ProcessRunner.RunAsync(ProcessRunner.Require("curl"), all, timeout: TimeSpan.FromSeconds(90));
        Assert.True(r.ExitCode == 0, "curl failed: " + r);
        return r;
    }

    [Fact]
    public async Task OverTheLimit_Gets429WithRetryAfter_Everywhere_ButOnlyForThatSource()
    {
        const string source = "127.0.0.1";
        string login = $"https://{ControlHost}:{Daemon.HttpsPort}/login";

        // Twelve requests in one curl (one kept-alive connection): the burst passes, the rest are refused.
        var args = new List<string> { "-w", "%{http_code}\\n" };
        for (int i = 0; i < 12; i++) args.AddRange(["-o", "/dev/null", login]);
        var run = await CurlAsync(source, [.. args]);
        var codes = run.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(codes.Length == 12, run.ToString());
        // The sign-in page answers 401 "Sign in to continue" to a visitor without a session; the burst passes as that.
        Assert.True(codes.Take(ProxyRateLimitFixture.Burst).All(c => c == "401"), string.Join(' ', codes));
        Assert.True(codes.Skip(ProxyRateLimitFixture.Burst).All(c => c == "429"), string.Join(' ', codes));

        var limited = WebSupport.ParseResponse((await CurlAsync(source, "-i", login)).Stdout);
        Assert.Equal(429, limited.Status);
        Assert.True(int.TryParse(limited.Header("retry-after"), out int retryAfter) && retryAfter is >= 1 and <= 100, limited.Raw);
        Assert.Equal("rate limit exceeded\n", limited.Body);

        // The same bucket covers VM sites (existing or not), plain HTTP and /exec (in /exec's JSON error shape).
        var site = WebSupport.ParseResponse((await CurlAsync(source, "-i", $"https://{SiteHost}:{Daemon.HttpsPort}/")).Stdout);
        Assert.True(site.Status == 429, site.Raw);
        var plain = WebSupport.ParseResponse((await CurlAsync(source, "-i", $"http://{SiteHost}:{Daemon.HttpPort}/")).Stdout);
        Assert.True(plain.Status == 429, plain.Raw);
        var exec = WebSupport.ParseResponse((await CurlAsync(source, "-i", "--data-binary", "ls", $"https://{ControlHost}:{Daemon.HttpsPort}/exec")).Stdout);
        Assert.True(exec.Status == 429, exec.Raw);
        Assert.Equal("rate limit exceeded", JsonDocument.Parse(exec.Body).RootElement.GetProperty("error").GetString());

        // Another source address has its own bucket.
        var other = WebSupport.ParseResponse((await CurlAsync("127.0.0.2", "-i", login)).Stdout);
        Assert.True(other.Status == 401 && other.Body.Contains("Sign in to continue"), other.Raw);
    }
}
