using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// The front door against a hostile client, end to end with the real curl and a busybox VM whose CGI script prints
/// the environment it got: header-name variants a CGI app would read as the front door's own, Forwarded and
/// X-Real-IP, on every path (the event-loop lane, HTTP/2, a body, a token); and a person given a share, who reaches
/// the site but not the VM's alternate ports.
/// </summary>
public sealed class FrontDoorHardeningTests(AlternatePortFixture fixture) : IClassFixture<AlternatePortFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string Site = AlternatePortFixture.Site;
    private const string SiteHost = Site + ".box.localhost";

    /// <summary>Headers a client sends to pass as the front door (CGI maps '-' and '_' alike to '_').</summary>
    private static readonly string[] Spoofed =
    [
        "-H", "X_ExeDev_Email: boss@example.com",
        "-H", "x_exedev_userid: u-boss",
        "-H", "X_Forwarded_For: 203.0.113.9",
        "-H", "X_Real_IP: 203.0.113.9",
        "-H", "Forwarded: for=203.0.113.9;proto=http",
        "-H", "X-Real-IP: 203.0.113.9",
    ];

    private static JsonElement Json(ProcessResult r)
    {
        Assert.True(r.ExitCode == 0, r.ToString());
        return JsonDocument.Parse(r.Stdout).RootElement;
    }

    [Fact]
    public async Task HeaderVariants_NeverReachTheVmsCgi_OnAnyPath()
    {
        var owner = fixture.Owner;
        string token = Json(await owner.ControlAsync($"ssh-key generate-api-key --vm={Site} --label=hardening --json")).GetProperty("token").GetString()!;
        Json(await owner.ControlAsync($"share set-public {Site} --json"));
        try
        {
            var paths = new (string Name, string[] Args, bool Authenticated)[]
            {
                ("anonymous GET, HTTP/1.1 (the event-loop lane)", ["--http1.1"], false),
                ("anonymous GET, HTTP/2", ["--http2"], false),
                ("POST with a body", ["--http1.1", "--data-binary", "body"], false),
                ("token, HTTP/1.1", ["--http1.1", "-H", "X-Exedev-Authorization: Bearer " + token], true),
                ("token, HTTP/2, body", ["--http2", "-H", "Authorization: Bearer " + token, "--data-binary", "body"], true),
            };
            foreach (var (name, args, authenticated) in paths)
            {
                var r = await WebSupport.CurlAsync(Daemon, SiteHost, Daemon.ControlAddress, "/cgi-bin/env", [.. args, .. Spoofed]);
                Assert.True(r.Status == 200, $"{name}:\n{r.Raw}");
                var env = r.Env();
                Assert.True(env.ContainsKey("REQUEST_METHOD"), $"{name}: the CGI script did not run:\n{r.Body}");
                Assert.DoesNotContain("boss", r.Body);
                Assert.DoesNotContain("203.0.113.9", r.Body);
                Assert.False(env.ContainsKey("HTTP_FORWARDED"), $"{name}:\n{r.Body}");
                Assert.False(env.ContainsKey("HTTP_X_REAL_IP"), $"{name}:\n{r.Body}");
                Assert.Equal("https", env.GetValueOrDefault("HTTP_X_FORWARDED_PROTO"));
                Assert.Equal(authenticated ? "alt-owner@example.com" : null, env.GetValueOrDefault("HTTP_X_EXEDEV_EMAIL"));
            }
        }
        finally
        {
            Json(await owner.ControlAsync($"share set-private {Site} --json"));
        }
    }

    [Fact]
    public async Task SharedPerson_ReachesTheSite_NotItsAlternatePorts()
    {
        var friend = await Daemon.CreateUserAsync("alt-friend@example.com");
        Json(await fixture.Owner.ControlAsync($"share add {Site} alt-friend@example.com --json"));
        string minted = await WebSupport.MintExe0Async(friend.KeyPath, $"{{\"exp\":{WebSupport.UnixNow() + 3600}}}", $"v0@{SiteHost}");

        var site = await WebSupport.CurlAsync(Daemon, SiteHost, Daemon.ControlAddress, "/", "-H", "X-Exedev-Authorization: Bearer " + minted);
        Assert.True(site.Status == 200, site.Raw);
        Assert.Equal("default route\n", site.Body);

        int port = fixture.AlternatePort;
        var r = await ProcessRunner.RunAsync(ProcessRunner.Require("curl"),
        [
            "-sS", "-i", "--max-time", "60", "--cacert", WebSupport.CaPath(Daemon),
            "--resolve", $"{SiteHost}:{port}:{Daemon.ControlAddress}", $"https://{SiteHost}:{port}/",
            "-H", "X-Exedev-Authorization: Bearer " + minted,
        ], timeout: TimeSpan.FromSeconds(90));
        Assert.True(r.ExitCode == 0, "curl failed: " + r);
        var alternate = WebSupport.ParseResponse(r.Stdout);
        Assert.True(alternate.Status == 401, alternate.Raw);
        Assert.Contains("Access Denied", alternate.Body);
        Assert.DoesNotContain("alternate port", alternate.Body);
    }
}
