using System.Net;
using System.Net.Sockets;
using Warren.Edge.Http;
using Warren.Ssh.Server;

namespace Warren.Edge.Tests.Http;

/// <summary>The front door with a tiny per-source limit: burst 3, then one request a second.</summary>
public sealed class RateLimitedFrontDoorFixture : FrontDoorFixture
{
    public const int Burst = 3;

    protected override void ConfigureFrontDoor(HttpFrontDoorOptions options)
    {
        options.RequestsPerSecondPerSource = 1;
        options.RequestBurstPerSource = Burst;
    }

    /// <summary>Time enough for every bucket to be full again (tests share the fixture).</summary>
    public void Refill() => Time.Advance(TimeSpan.FromMinutes(5));
}

/// <summary>Per-source request limit of the front door: 429 with <c>Retry-After</c>, across sites, the control host and plain HTTP.</summary>
public sealed class SourceRateLimitTests(RateLimitedFrontDoorFixture fixture) : IClassFixture<RateLimitedFrontDoorFixture>
{
    private readonly RateLimitedFrontDoorFixture _f = fixture;

    private async Task<HttpResponseMessage> GetAsync(string url)
    {
        using var client = _f.CreateClient();
        return await client.GetAsync(url);
    }

    [Fact]
    public async Task BurstThen429_WithRetryAfter_ThenRefill()
    {
        _f.Refill();
        for (int i = 0; i < RateLimitedFrontDoorFixture.Burst; i++)
            Assert.Equal(HttpStatusCode.OK, (await GetAsync(_f.Url("pub"))).StatusCode);
        int upstreamSeen = _f.Pub.Requests;

        var limited = await GetAsync(_f.Url("pub"));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("1", limited.Headers.GetValues("Retry-After").Single());
        Assert.Equal("rate limit exceeded\n", await limited.Content.ReadAsStringAsync());
        Assert.Equal(upstreamSeen, _f.Pub.Requests); // the VM never saw it

        _f.Time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(_f.Url("pub"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await GetAsync(_f.Url("pub"))).StatusCode);
    }

    [Fact]
    public async Task OneBucketPerSource_AcrossSitesControlHostAndPlainHttp()
    {
        _f.Refill();
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(_f.Url("pub"))).StatusCode);
        Assert.Equal(HttpStatusCode.TemporaryRedirect, (await GetAsync(_f.Url("web"))).StatusCode);
        Assert.Equal(HttpStatusCode.PermanentRedirect, (await GetAsync($"http://pub.{FrontDoorFixture.Domain}:{_f.HttpPort}/")).StatusCode);

        Assert.Equal(HttpStatusCode.TooManyRequests, (await GetAsync($"http://pub.{FrontDoorFixture.Domain}:{_f.HttpPort}/")).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await GetAsync(_f.Url("nosuch"))).StatusCode);
        var login = await GetAsync($"https://{FrontDoorFixture.ControlHost}:{_f.HttpsPort}/login");
        Assert.Equal(HttpStatusCode.TooManyRequests, login.StatusCode);
    }

    [Fact]
    public async Task Exec_Gets429_InItsJsonShape()
    {
        _f.Refill();
        using var client = _f.CreateClient();
        HttpResponseMessage? last = null;
        for (int i = 0; i <= RateLimitedFrontDoorFixture.Burst; i++)
            last = await client.PostAsync($"https://{FrontDoorFixture.ControlHost}:{_f.HttpsPort}/exec", new StringContent("ls"));
        Assert.Equal(HttpStatusCode.TooManyRequests, last!.StatusCode);
        Assert.Equal("{\"error\":\"rate limit exceeded\"}\n", await last.Content.ReadAsStringAsync());
        Assert.StartsWith("application/json", last.Content.Headers.ContentType!.ToString());
    }

    [Fact]
    public async Task UnknownHosts_AreNotCounted()
    {
        _f.Refill();
        // curl keeps the URL's name for SNI and sends another Host (HttpClient would use the Host for both).
        for (int i = 0; i < RateLimitedFrontDoorFixture.Burst + 5; i++)
        {
            var (status, body, _) = await _f.CurlAsync("-H", "Host: elsewhere.example", _f.Url("pub"));
            Assert.Equal(404, status);
            Assert.Equal("fallthrough", body);
        }
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(_f.Url("pub"))).StatusCode);
    }

    [Fact]
    public async Task WithCurl_ManyRequestsOnOneConnection_Get429()
    {
        _f.Refill();
        // One curl, eight URLs on one kept-alive connection; CurlAsync's -w prints each status on its own line.
        var args = new List<string>();
        for (int i = 0; i < 8; i++)
            args.AddRange(["-o", "/dev/null", _f.Url("pub", "/n" + i)]);
        var (last, body, headers) = await _f.CurlAsync(args.ToArray());
        var codes = body.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).Append(last).ToList();
        Assert.Equal(8, codes.Count);
        Assert.Equal(Enumerable.Repeat(200, RateLimitedFrontDoorFixture.Burst), codes.Take(RateLimitedFrontDoorFixture.Burst));
        Assert.All(codes.Skip(RateLimitedFrontDoorFixture.Burst), c => Assert.Equal(429, c));
        Assert.Contains("retry-after: 1", headers, StringComparison.OrdinalIgnoreCase);
    }
}

public sealed class SourceNetworkTests
{
    [Fact]
    public void Ipv4_AndItsMappedForm_AreOneSource()
    {
        var v4 = SourceNetwork.Of(IPAddress.Parse("203.0.113.7"));
        Assert.Equal(v4, SourceNetwork.Of(IPAddress.Parse("::ffff:203.0.113.7")));
        Assert.NotEqual(v4, SourceNetwork.Of(IPAddress.Parse("203.0.113.8")));
        Assert.Equal("203.0.113.7", v4.ToString());
    }

    [Fact]
    public void Ipv6_CountsPer64()
    {
        var a = SourceNetwork.Of(IPAddress.Parse("2001:db8:1:2::1"));
        Assert.Equal(a, SourceNetwork.Of(IPAddress.Parse("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        Assert.NotEqual(a, SourceNetwork.Of(IPAddress.Parse("2001:db8:1:3::1")));
        Assert.Equal("2001:db8:1:2::/64", a.ToString());
    }

    [Fact]
    public void Ipv4_NeverCollidesWithIpv6()
    {
        Assert.NotEqual(SourceNetwork.Of(IPAddress.Parse("0.0.0.1")), SourceNetwork.Of(IPAddress.Parse("::1")));
        Assert.NotEqual(SourceNetwork.Of(IPAddress.Loopback), SourceNetwork.Of(IPAddress.IPv6Loopback));
        Assert.Equal(AddressFamily.InterNetworkV6, IPAddress.IPv6Loopback.AddressFamily);
    }
}
