using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Warren.Edge.Http;
using Warren.Edge.Tests.Support;
using Xunit.Abstractions;
using Warren.Edge.Http.FrontDoor;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>
/// The connection-level HTTP/1.1 path (the native event loop's lane, <see cref="Warren.Edge.Http.Forwarding.Http1LaneRules"/>) end to
/// end: the real front door on loopback in front of a raw TCP "VM" (<see cref="RawUpstream"/>), with a raw TLS
/// client that writes request bytes itself and parses the answers itself, so that framing, pipelining and the
/// hand-off to Kestrel in the middle of a connection are visible byte for byte. Which path answered is read from
/// <see cref="HttpFrontDoor.ConnectionLevelRequests"/> (tests of this collection run one at a time, so its deltas
/// belong to the test that reads them).
/// </summary>
[Collection(FrontDoorCollection.Name)]
public sealed class Http1ConnectionForwarderTests(FrontDoorFixture fixture, ITestOutputHelper output)
    : Http1ConnectionForwarderTestsBase(fixture, output);

public abstract class Http1ConnectionForwarderTestsBase : IAsyncLifetime
{
    /// <summary>The most any single wait in these tests may take; nothing here should come close.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private static int s_sites;

    private readonly FrontDoorFixture _f;
    private readonly ITestOutputHelper _output;
    private readonly List<RawUpstream> _upstreams = new();

    protected Http1ConnectionForwarderTestsBase(FrontDoorFixture fixture, ITestOutputHelper output)
    {
        _f = fixture;
        _output = output;
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var upstream in _upstreams)
            await upstream.DisposeAsync();
    }

    // ------------------------------------------------------------------ helpers

    private HttpFrontDoor FrontDoor => (HttpFrontDoor)_f.Services.GetService(typeof(HttpFrontDoor))!;

    /// <summary>Requests the connection-level path has answered so far.</summary>
    private long LaneCount => FrontDoor.ConnectionLevelRequests;

    /// <summary>Starts a raw upstream and a public site in front of it; returns both.</summary>
    private (RawUpstream Upstream, string Site) Start(Func<RawConnection, Task> serve)
    {
        var upstream = new RawUpstream(serve, Bound);
        _upstreams.Add(upstream);
        return (upstream, AddSite(upstream.Port));
    }

    private string AddSite(int port)
    {
        string name = "lane" + Interlocked.Increment(ref s_sites);
        _f.Sites.Sites[name] = new WebSite("vm-" + name, name, People.Owner.UserId, port, IsPublic: true);
        _f.Locator.Addresses["vm-" + name] = IPAddress.Loopback;
        return name;
    }

    private static Func<RawConnection, Task> Serve(Func<RawRequest, string> respond) => async c =>
    {
        while (await c.ReadRequestAsync() is { } request)
            await c.WriteAsync(respond(request));
    };

    /// <summary>A VM that answers every request with its method, target and body.</summary>
    private static Func<RawConnection, Task> Echo() =>
        Serve(r => Ok($"{r.Method} {r.Target} [{Encoding.ASCII.GetString(r.Body)}]"));

    private static string Ok(string body, string extraHeaders = "") =>
        $"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extraHeaders}Content-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}";

    /// <summary>The Host a browser sends for <paramref name="site"/> on the test's HTTPS port.</summary>
    private string Host(string site) => $"{site}.{FrontDoorFixture.Domain}:{_f.HttpsPort}";

    /// <summary>A plain request head: the request line, Host, <paramref name="extra"/> field lines (each ending in CRLF), the empty line.</summary>
    private string Head(string site, string target = "/", string extra = "", string method = "GET") =>
        $"{method} {target} HTTP/1.1\r\nHost: {Host(site)}\r\n{extra}\r\n";

    private Task<LaneClient> ConnectAsync(string site) =>
        LaneClient.ConnectAsync(_f.HttpsPort, $"{site}.{FrontDoorFixture.Domain}", Bound);

    private HttpClient Client()
    {
        var client = _f.CreateClient();
        client.Timeout = Bound;
        return client;
    }

    private Task<ExternalTool.Result> CurlAsync(string site, params string[] args) => _f.CurlSiteAsync(site, args);

    // ------------------------------------------------------------------ the lane

    [Fact]
    public async Task LaneGet_ForwardsTheVmsAnswer_WithTheFrontDoorsOwnForwardingHeaders()
    {
        var (upstream, site) = Start(Serve(r => Ok("hello " + r.Target,
            "Connection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\nX-Vm: yes\r\n")));
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/hello?x=1",
            "X-ExeDev-UserID: u-evil\r\n"
            + "X-ExeDev-Email: evil@example.com\r\n"
            + "X-Forwarded-Proto: http\r\n"
            + "X-Forwarded-For: 10.9.8.7\r\n"
            + "X-Forwarded-Host: evil.example\r\n"
            + "Keep-Alive: timeout=99\r\n"
            + "TE: trailers\r\n"
            + "Proxy-Connection: keep-alive\r\n"
            + "Cookie: theme=dark\r\n"
            + "X-Custom: kept\r\n"));
        var response = await client.ReadResponseAsync();

        Assert.Equal(200, response.Status);
        Assert.Equal("HTTP/1.1", response.Version);
        Assert.Equal("hello /hello?x=1", response.BodyText);
        Assert.Equal(new[] { "yes" }, response.Values("X-Vm"));
        Assert.Equal(new[] { "text/plain" }, response.Values("Content-Type"));
        Assert.Equal(new[] { "16" }, response.Values("Content-Length"));
        Assert.Empty(response.Values("Transfer-Encoding"));
        Assert.Single(response.Values("Date"));
        // The VM's hop-by-hop fields end at the front door.
        Assert.Empty(response.Values("Keep-Alive"));
        Assert.Empty(response.Values("Proxy-Connection"));
        Assert.Empty(response.Values("Connection"));
        Assert.Equal(before + 1, LaneCount);

        var seen = upstream.Requests.Single();
        string host = Host(site);
        Assert.Equal(("GET", "/hello?x=1", "HTTP/1.1"), (seen.Method, seen.Target, seen.Version));
        Assert.Equal("Host", seen.Headers[0].Name);
        Assert.Equal(new[] { host }, seen.Values("Host"));
        Assert.Equal(new[] { "10.9.8.7, 127.0.0.1" }, seen.Values("X-Forwarded-For"));
        Assert.Equal(new[] { "https" }, seen.Values("X-Forwarded-Proto"));
        Assert.Equal(new[] { host }, seen.Values("X-Forwarded-Host"));
        Assert.DoesNotContain(seen.Headers, h => h.Name.StartsWith("X-ExeDev-", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(seen.Headers, h => h.Value.Contains("evil", StringComparison.OrdinalIgnoreCase));
        Assert.Empty(seen.Values("Keep-Alive"));
        Assert.Empty(seen.Values("TE"));
        Assert.Empty(seen.Values("Proxy-Connection"));
        Assert.Empty(seen.Values("Connection"));
        Assert.Equal(new[] { "theme=dark" }, seen.Values("Cookie"));
        Assert.Equal(new[] { "kept" }, seen.Values("X-Custom"));
        Assert.Empty(seen.Values("Content-Length"));
        Assert.Empty(seen.Values("Transfer-Encoding"));

        // Without a chain of its own, the client's address is the whole X-Forwarded-For; same connection, same VM connection.
        await client.WriteAsync(Head(site, "/again"));
        var again = await client.ReadResponseAsync();
        Assert.Equal("hello /again", again.BodyText);
        Assert.Equal(before + 2, LaneCount);
        var second = upstream.Requests.Last();
        Assert.Equal("/again", second.Target);
        Assert.Equal(new[] { "127.0.0.1" }, second.Values("X-Forwarded-For"));
        Assert.EndsWith("127.0.0.1", second.Values("X-Forwarded-For").Single());
        Assert.Equal(1, upstream.Accepted);
        Assert.Empty(upstream.Errors);
    }

    [Fact]
    public async Task LaneRequests_OnKeptConnections_AllocateNothingOnTheLoop()
    {
        // The lane's per-request work is meant to allocate nothing (docs/PERFORMANCE.md): the request's buffers come
        // from the pool and go back, the two head writers, the parsed heads and the VM connection are kept.
        var (upstream, site) = Start(Serve(_ => Ok(new string('x', 600), "Server: nginx\r\nAccept-Ranges: bytes\r\n")));
        var native = _f.Services.GetRequiredService<FrontDoorListeners>().Native;
        Assert.NotNull(native);
        await using var client = await ConnectAsync(site);
        string head = Head(site, "/index.html", "User-Agent: lane-test\r\nAccept: */*\r\n");
        async Task RequestsAsync(int count)
        {
            for (int i = 0; i < count; i++)
            {
                await client.WriteAsync(head);
                var response = await client.ReadResponseAsync();
                Assert.Equal(200, response.Status);
            }
        }
        await RequestsAsync(100); // the connection's first request sets up what the others reuse
        const int Measured = 500;
        long lane = LaneCount, before = native.AllocatedBytes;
        var took = System.Diagnostics.Stopwatch.StartNew();
        await RequestsAsync(Measured);
        await RequestsAsync(1); // the counter is read at the end of a loop pass: one more request's pass publishes it
        long allocated = native.AllocatedBytes - before;
        double seconds = took.Elapsed.TotalSeconds;
        _output.WriteLine($"{allocated} bytes allocated on the loops for {Measured} requests in {seconds:F2} s");

        Assert.Equal(lane + Measured + 1, LaneCount);
        Assert.Equal(1, upstream.Accepted);
        // Once a second each loop sweeps its deadlines and idle VM connections (enumerating the pool's table takes
        // an enumerator): allowed for, generously, from how long the requests took. One object per request would
        // be 24 bytes or more a request; this allows 2.
        long sweeps = (long)(Math.Ceiling(seconds) + 1) * Environment.ProcessorCount * 256;
        Assert.True(allocated < 2 * Measured + sweeps, $"{allocated} bytes allocated on the loops for {Measured} requests in {seconds:F2} s");
    }

    [Fact]
    public async Task SetCookie_LosesItsDomainAttribute_InAnyCase()
    {
        // A VM must not set cookies for its parent domain (other people's sites); the rule is the other path's.
        var (_, site) = Start(Serve(_ => Ok("c",
            "Set-Cookie: a=1; DOMAIN=box.localhost; Path=/\r\nSet-Cookie: b=2; domain=.box.localhost\r\nSet-Cookie: c=3; HttpOnly\r\n")));
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/cookies"));
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(before + 1, LaneCount);
        var cookies = response.Values("Set-Cookie");
        Assert.Equal(3, cookies.Length);
        Assert.All(cookies, c => Assert.DoesNotContain("domain", c, StringComparison.OrdinalIgnoreCase));
        Assert.Contains(cookies, c => c.StartsWith("a=1") && c.Contains("Path=/"));
        Assert.Contains(cookies, c => c.StartsWith("c=3") && c.Contains("HttpOnly"));
    }

    [Fact]
    public async Task LaneHead_HasNoBody_AndKeepsTheVmsContentLength()
    {
        var (upstream, site) = Start(Serve(r => r.Method == "HEAD"
            ? "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\nETag: \"v1\"\r\n\r\n"
            : Ok("after")));
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/h", method: "HEAD"));
        var head = await client.ReadResponseAsync(head: true);
        Assert.Equal(200, head.Status);
        Assert.Equal(new[] { "1234" }, head.Values("Content-Length"));
        Assert.Equal(new[] { "\"v1\"" }, head.Values("ETag"));
        Assert.Empty(head.Values("Transfer-Encoding"));
        Assert.Empty(head.Body);
        Assert.Equal(0, client.Buffered);

        // No body bytes followed the head: the next response on the connection parses from its first byte.
        await client.WriteAsync(Head(site, "/next"));
        var next = await client.ReadResponseAsync();
        Assert.Equal(200, next.Status);
        Assert.Equal("after", next.BodyText);
        Assert.Equal(before + 2, LaneCount);
        Assert.Equal(new[] { "HEAD", "GET" }, upstream.Requests.Select(r => r.Method));

        // And as a real client sees it.
        using var http = Client();
        var response = await http.SendAsync(new HttpRequestMessage(HttpMethod.Head, _f.Url(site, "/h2")));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1234, response.Content.Headers.ContentLength);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(before + 3, LaneCount);
    }

    [Fact]
    public async Task AddressAnsweredLater_TheRequestWaitsForIt_OnTheLane()
    {
        // The address cache expires every few seconds and the runtime answers asynchronously: the request waits
        // for the answer without leaving the lane (on the native loop the connection is parked and resumed on its
        // thread), and the connection keeps serving.
        var (upstream, site) = Start(Echo());
        _f.Locator.Delays["vm-" + site] = TimeSpan.FromMilliseconds(150);
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        for (int i = 0; i < 3; i++)
        {
            await client.WriteAsync(Head(site, $"/late{i}"));
            var response = await client.ReadResponseAsync();
            Assert.Equal(200, response.Status);
            Assert.Equal($"GET /late{i} []", response.BodyText);
        }
        Assert.Equal(before + 3, LaneCount);

        // An address that never comes (the VM went away meanwhile) is the page, not a hang.
        _f.Locator.Addresses.TryRemove("vm-" + site, out _);
        await client.WriteAsync(Head(site, "/gone"));
        var gone = await client.ReadResponseAsync();
        Assert.True(gone.Status is 503 or 502 or 404, $"got {gone.Status}");
        Assert.Equal(3, upstream.Requests.Count);
    }

    // ------------------------------------------------------------------ hand-off to Kestrel

    [Fact]
    public async Task HandOff_MidConnection_KestrelServesTheRest_InOrder()
    {
        var (upstream, site) = Start(Echo());
        long before = LaneCount;
        await using var client = await ConnectAsync(site);

        await client.WriteAsync(Head(site, "/one"));
        var one = await client.ReadResponseAsync();
        Assert.Equal("GET /one []", one.BodyText);
        Assert.Equal(before + 1, LaneCount);

        await client.WriteAsync(Head(site, "/two", "Content-Type: text/plain\r\nContent-Length: 7\r\n", method: "POST") + "payload");
        var two = await client.ReadResponseAsync();
        Assert.Equal(200, two.Status);
        Assert.Equal("POST /two [payload]", two.BodyText);

        await client.WriteAsync(Head(site, "/three"));
        var three = await client.ReadResponseAsync();
        Assert.Equal(200, three.Status);
        Assert.Equal("GET /three []", three.BodyText);

        // Only the first: after the hand-off Kestrel owns the connection.
        Assert.Equal(before + 1, LaneCount);
        Assert.Equal(new[] { "/one", "/two", "/three" }, upstream.Requests.Select(r => r.Target));
        var post = upstream.Requests.Single(r => r.Method == "POST");
        Assert.Equal("payload", Encoding.ASCII.GetString(post.Body));
        Assert.Equal(new[] { "7" }, post.Values("Content-Length"));
        Assert.Empty(upstream.Errors);
    }

    [Fact]
    public async Task Pipelining_TwoGetsInOneWrite_AreAnsweredInOrder()
    {
        var (upstream, site) = Start(Echo());
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/p1") + Head(site, "/p2"));
        var first = await client.ReadResponseAsync();
        var second = await client.ReadResponseAsync();
        Assert.Equal("GET /p1 []", first.BodyText);
        Assert.Equal("GET /p2 []", second.BodyText);
        Assert.Equal(before + 2, LaneCount);

        // A GET, a POST and a GET in one write: the lane answers the first, Kestrel the rest, from the buffered bytes.
        await client.WriteAsync(Head(site, "/p3")
            + Head(site, "/p4", "Content-Length: 4\r\n", method: "POST") + "body"
            + Head(site, "/p5"));
        Assert.Equal("GET /p3 []", (await client.ReadResponseAsync()).BodyText);
        Assert.Equal("POST /p4 [body]", (await client.ReadResponseAsync()).BodyText);
        Assert.Equal("GET /p5 []", (await client.ReadResponseAsync()).BodyText);
        Assert.Equal(before + 3, LaneCount);
        Assert.Equal(new[] { "/p1", "/p2", "/p3", "/p4", "/p5" }, upstream.Requests.Select(r => r.Target));
        Assert.Empty(upstream.Errors);
    }

    [Fact]
    public async Task PrivateSite_Anonymous_IsRedirectedToLogin_ByTheFullPath()
    {
        int webRequests = _f.Web.Requests;
        long before = LaneCount;
        await using var client = await ConnectAsync("web");
        await client.WriteAsync(Head("web", "/secret?a=1"));
        var response = await client.ReadResponseAsync();
        Assert.Equal(307, response.Status);
        Assert.StartsWith("/__exe.dev/login?redirect=", response.Values("Location").Single());
        Assert.Equal(before, LaneCount);
        Assert.Equal(webRequests, _f.Web.Requests);
    }

    [Fact]
    public async Task LoginCookie_OnAPublicSite_TakesTheFullPath_WhichIdentifiesThePerson()
    {
        var (upstream, site) = Start(Echo());
        string cookie = await _f.LoginCookieAsync(People.Owner, site);
        Assert.StartsWith("login-with-exe-", cookie);
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/me", $"Cookie: theme=dark; {cookie}\r\n"));
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal("GET /me []", response.BodyText);
        Assert.Equal(before, LaneCount);

        var seen = upstream.Requests.Single();
        Assert.Equal(new[] { People.Owner.UserId }, seen.Values("X-ExeDev-UserID"));
        Assert.Equal(new[] { People.Owner.Email }, seen.Values("X-ExeDev-Email"));
        Assert.DoesNotContain(seen.Values("Cookie"), v => v.Contains("login-with-exe-", StringComparison.Ordinal));
        Assert.Equal(new[] { "theme=dark" }, seen.Values("Cookie"));
    }

    // ------------------------------------------------------------------ the VM failing

    [Fact]
    public async Task NothingListening_Is503_AndTheFrontDoorKeepsServing()
    {
        string site = AddSite(TestUpstream.UnusedPort());
        long before = LaneCount;
        await using (var client = await ConnectAsync(site))
        {
            await client.WriteAsync(Head(site, "/"));
            var response = await client.ReadResponseAsync();
            Assert.Equal(503, response.Status);
            Assert.Contains("Service Unavailable", response.BodyText);
            Assert.StartsWith("text/html", response.Values("Content-Type").Single());

            // The client connection stays usable.
            await client.WriteAsync(Head(site, "/again"));
            Assert.Equal(503, (await client.ReadResponseAsync()).Status);
        }
        Assert.Equal(before + 2, LaneCount);

        var (_, good) = Start(Echo());
        await using var other = await ConnectAsync(good);
        await other.WriteAsync(Head(good, "/ok"));
        var ok = await other.ReadResponseAsync();
        Assert.Equal(200, ok.Status);
        Assert.Equal("GET /ok []", ok.BodyText);
    }

    [Fact]
    public async Task InvalidVmResponse_Is502_WithoutTheVmsHeaders_AndTheBrokenConnectionIsNotReused()
    {
        var (upstream, site) = Start(Serve(r => r.Target == "/bad"
            ? "HTTP/1.1 200 OK\r\nX-Vm: 1\r\nSet-Cookie: vm=1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"
            : Ok("fine")));
        long before = LaneCount;
        await using var first = await ConnectAsync(site);
        await first.WriteAsync(Head(site, "/bad"));
        var bad = await first.ReadResponseAsync();
        Assert.Equal(502, bad.Status);
        Assert.Contains("Bad Gateway", bad.BodyText);
        Assert.Empty(bad.Values("X-Vm"));
        Assert.Empty(bad.Values("Set-Cookie"));
        Assert.DoesNotContain("hello", bad.BodyText);
        Assert.Equal(before + 1, LaneCount);

        await using (var second = await ConnectAsync(site))
        {
            await second.WriteAsync(Head(site, "/good"));
            var good = await second.ReadResponseAsync();
            Assert.Equal(200, good.Status);
            Assert.Equal("fine", good.BodyText);
        }
        // The broken connection was not reused.
        Assert.Equal(2, upstream.Accepted);
        Assert.Equal(before + 2, LaneCount);

        // The client connection that got the 502 is still good too.
        await first.WriteAsync(Head(site, "/good"));
        Assert.Equal("fine", (await first.ReadResponseAsync()).BodyText);
        Assert.Equal(before + 3, LaneCount);
    }

    [Fact]
    public async Task CloseDelimitedVmResponse_IsChunkedToTheClient_AndTheConnectionStaysUsable()
    {
        var (upstream, site) = Start(async c =>
        {
            if (await c.ReadRequestAsync() is null)
                return;
            await c.WriteAsync($"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close {c.Index}");
            c.Close();
        });
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/a"));
        var first = await client.ReadResponseAsync();
        Assert.Equal(200, first.Status);
        Assert.Equal("HTTP/1.1", first.Version);
        Assert.Equal(new[] { "chunked" }, first.Values("Transfer-Encoding"));
        Assert.Empty(first.Values("Content-Length"));
        Assert.True(first.Chunked);
        Assert.Equal("until close 0", first.BodyText);

        await client.WriteAsync(Head(site, "/b"));
        var second = await client.ReadResponseAsync();
        Assert.Equal("until close 1", second.BodyText);
        Assert.True(second.Chunked);
        Assert.Equal(2, upstream.Accepted);
        Assert.Equal(before + 2, LaneCount);
    }

    [Fact]
    public async Task VmBreaksAfterTheHead_TheClientConnectionIsAborted()
    {
        var (_, site) = Start(async c =>
        {
            if (await c.ReadRequestAsync() is null)
                return;
            await c.WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\nonly this much");
            c.Close();
        });
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/cut"));
        var ex = await Record.ExceptionAsync(() => client.ReadResponseAsync());
        Assert.True(ex is EndOfStreamException or IOException, $"expected the response to break off, got {ex?.ToString() ?? "a whole response"}");
        Assert.Equal(before + 1, LaneCount);
    }

    // ------------------------------------------------------------------ connection management

    [Fact]
    public async Task ConnectionClose_IsAnswered_ThenTheServerCloses()
    {
        var (upstream, site) = Start(Echo());
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/bye", "Connection: close\r\n"));
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal("GET /bye []", response.BodyText);
        Assert.Equal(new[] { "close" }, response.Values("Connection"));
        Assert.True(await client.ClosedWithinAsync(Bound), "the front door kept the connection open after Connection: close");
        Assert.Equal(before + 1, LaneCount);
        // Connection is the client's hop's: the VM connection stays reusable.
        Assert.Empty(upstream.Requests.Single().Values("Connection"));
    }

    // ------------------------------------------------------------------ heads for Kestrel to judge

    [Fact]
    public async Task SpaceBeforeTheColon_GoesToKestrel_Which400s_AndTheFrontDoorKeepsServing()
    {
        var (upstream, site) = Start(Echo());
        long before = LaneCount;

        // RFC 9112 §5.1: whitespace between a field name and the colon must be rejected with 400.
        await using (var client = await ConnectAsync(site))
        {
            await client.WriteAsync($"GET /space HTTP/1.1\r\nHost: {Host(site)}\r\nX-Bad : 1\r\n\r\n");
            var answer = await client.ReadResponseOrCloseAsync(Bound);
            Assert.True(answer is null || answer.Status == 400, $"expected 400 or a close, got {answer?.Status}");
        }
        Assert.DoesNotContain(upstream.Requests, r => r.Target == "/space");
        Assert.Equal(before, LaneCount);

        await AssertStillServingAsync(site, before);
        Assert.Empty(upstream.Errors);
    }

    [Fact]
    public async Task BareLfHead_IsHandedToKestrel_Promptly()
    {
        // A head with bare-LF line ends never holds a CRLF CRLF: the lane must hand it to Kestrel at once (which
        // accepts LF, RFC 9112 §2.2) rather than wait for one until the headers timeout. (Found by this test: it used
        // to sit 30 s.) The bound is short so that such a wait fails instead of passing as "a close" at ~31 s.
        var (upstream, site) = Start(Echo());
        long before = LaneCount;
        await using (var client = await ConnectAsync(site))
        {
            await client.WriteAsync($"GET /lf HTTP/1.1\nHost: {Host(site)}\n\n");
            var answer = await client.ReadResponseOrCloseAsync(TimeSpan.FromSeconds(10));
            Assert.True(answer is null || answer.Status is 400 or 200, $"expected 400, 200 or a close, got {answer?.Status}");
            if (answer?.Status == 200)
                Assert.Equal("GET /lf []", answer.BodyText);
        }
        Assert.Equal(before, LaneCount);

        await AssertStillServingAsync(site, before);
        Assert.Empty(upstream.Errors);
    }

    /// <summary>A plain GET on a new connection is answered by the lane (the counter rises by one from <paramref name="before"/>).</summary>
    private async Task AssertStillServingAsync(string site, long before)
    {
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/fine"));
        var fine = await client.ReadResponseAsync();
        Assert.Equal(200, fine.Status);
        Assert.Equal("GET /fine []", fine.BodyText);
        Assert.Equal(before + 1, LaneCount);
    }

    [Fact]
    public async Task HeadLargerThanTheLanesLimit_IsHandedToKestrel_AndStillForwarded()
    {
        var (upstream, site) = Start(Echo());
        string big = new('a', 20 * 1024);
        long before = LaneCount;
        await using var client = await ConnectAsync(site);
        await client.WriteAsync(Head(site, "/big", $"X-Long: {big}\r\n"));
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal("GET /big []", response.BodyText);
        Assert.Equal(before, LaneCount);
        Assert.Equal(new[] { big }, upstream.Requests.Single().Values("X-Long"));
    }

    [Fact]
    public async Task Http2_IsKestrels()
    {
        var (upstream, site) = Start(Echo());
        long before = LaneCount;
        using var client = Client();
        client.DefaultRequestVersion = HttpVersion.Version20;
        client.DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        var response = await client.GetAsync(_f.Url(site, "/h2"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal("GET /h2 []", await response.Content.ReadAsStringAsync());
        Assert.Equal(before, LaneCount);
        Assert.Single(upstream.Requests);
    }

    [Fact]
    public async Task Curl_Http11_GetAndHead()
    {
        var (upstream, site) = Start(Serve(r => r.Method == "HEAD"
            ? "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Vm: head\r\nContent-Length: 11\r\n\r\n"
            : Ok("hello world", "X-Vm: get\r\n")));
        long before = LaneCount;

        var get = await CurlAsync(site, "--http1.1", "-i", _f.Url(site, "/curl"));
        Assert.True(get.ExitCode == 0, $"curl: {get.ExitCode} {get.Stderr}");
        var (getHead, getBody) = SplitHead(get.Stdout);
        Assert.StartsWith("HTTP/1.1 200", getHead);
        Assert.Contains("x-vm: get", getHead.ToLowerInvariant());
        Assert.Contains("content-length: 11", getHead.ToLowerInvariant());
        Assert.Equal("hello world", getBody);

        var head = await CurlAsync(site, "--http1.1", "-I", _f.Url(site, "/curl"));
        Assert.True(head.ExitCode == 0, $"curl: {head.ExitCode} {head.Stderr}");
        var (headHead, headBody) = SplitHead(head.Stdout);
        Assert.StartsWith("HTTP/1.1 200", headHead);
        Assert.Contains("x-vm: head", headHead.ToLowerInvariant());
        Assert.Contains("content-length: 11", headHead.ToLowerInvariant());
        Assert.Equal("", headBody);

        Assert.Equal(before + 2, LaneCount);
        Assert.Equal(new[] { "GET", "HEAD" }, upstream.Requests.Select(r => r.Method));
    }

    private static (string Head, string Body) SplitHead(string output)
    {
        int end = output.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        Assert.True(end >= 0, $"no head in curl's output: {output}");
        return (output[..end], output[(end + 4)..]);
    }

    // ------------------------------------------------------------------ fuzz

    private static readonly Regex s_token = new("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", RegexOptions.CultureInvariant);

    [Fact]
    public async Task Fuzz_MutatedHeads_NeverHang_AndNothingMalformedReachesTheVm()
    {
        var (upstream, site) = Start(Serve(_ => Ok("fuzz")));
        string host = Host(site);
        byte[] valid = Encoding.ASCII.GetBytes(
            $"GET /fuzz?q=1 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fuzz/1.0\r\nAccept: */*\r\n"
            + "X-Forwarded-For: 10.1.2.3\r\nCookie: a=b\r\nConnection: keep-alive\r\n\r\n");
        byte[] interesting = [(byte)'\r', (byte)'\n', (byte)' ', (byte)':', (byte)'\t', 0, 0x7F, 0x80, 0xFF, (byte)'/', (byte)'"', (byte)','];

        var random = new Random(1_234_567);
        byte Pick() => random.Next(2) == 0 ? interesting[random.Next(interesting.Length)] : (byte)random.Next(256);
        var cases = new List<byte[]>();
        for (int i = 0; i < 270; i++)
        {
            var bytes = new List<byte>(valid);
            int mutations = 1 + random.Next(4);
            for (int m = 0; m < mutations && bytes.Count > 0; m++)
            {
                int at = random.Next(bytes.Count);
                switch (random.Next(4))
                {
                    case 0: bytes[at] = Pick(); break;
                    case 1: bytes[at] ^= (byte)(1 << random.Next(8)); break;
                    case 2: bytes.Insert(at, Pick()); break;
                    default: bytes.RemoveAt(at); break;
                }
            }
            cases.Add(bytes.ToArray());
        }
        for (int i = 0; i < 30; i++)
        {
            var junk = new byte[1 + random.Next(300)];
            random.NextBytes(junk);
            byte[] prefix = i % 3 == 0 ? Encoding.ASCII.GetBytes($"GET / HTTP/1.1\r\nHost: {host}\r\n") : [];
            byte[] suffix = i % 2 == 0 ? "\r\n\r\n"u8.ToArray() : [];
            cases.Add([.. prefix, .. junk, .. suffix]);
        }

        var perConnection = TimeSpan.FromSeconds(2);
        long laneBefore = LaneCount;
        var hung = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var started = DateTime.UtcNow;
        await Parallel.ForEachAsync(Enumerable.Range(0, cases.Count), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, _) =>
        {
            await using var client = await ConnectAsync(site);
            try
            {
                await client.WriteAsync(cases[i]);
                // close_notify: the server sees the end of the stream, so every head is complete or never will be.
                await client.ShutdownAsync();
            }
            catch (IOException)
            {
                // The server already answered and closed.
            }
            if (!await client.ClosedWithinAsync(perConnection))
                hung.Enqueue($"case {i}: {Printable(cases[i])}");
        });
        var elapsed = DateTime.UtcNow - started;
        _output.WriteLine($"{cases.Count} cases in {elapsed.TotalSeconds:F1} s: {LaneCount - laneBefore} answered on the lane, "
            + $"{upstream.Requests.Count} reached the VM, {hung.Count} left open");
        Assert.True(elapsed < TimeSpan.FromSeconds(60), $"the fuzz took {elapsed}");
        Assert.True(hung.IsEmpty, $"{hung.Count} connections were still open {perConnection.TotalSeconds} s after the client's close:\n"
            + string.Join("\n", hung.Take(10)));

        // Still serving, on the lane.
        long before = LaneCount;
        await using (var client = await ConnectAsync(site))
        {
            await client.WriteAsync(Head(site, "/after"));
            var after = await client.ReadResponseAsync();
            Assert.Equal(200, after.Status);
            Assert.Equal("fuzz", after.BodyText);
        }
        Assert.Equal(before + 1, LaneCount);

        // Nothing malformed was forwarded (a bare LF would have failed the VM's parser: Errors).
        Assert.Empty(upstream.Errors);
        Assert.NotEmpty(upstream.Requests);
        foreach (var request in upstream.Requests)
        {
            Assert.Matches(s_token, request.Method);
            Assert.Equal("HTTP/1.1", request.Version);
            Assert.StartsWith("/", request.Target);
            Assert.DoesNotContain(request.Target, c => c <= ' ' || c >= 0x7F);
            foreach (var (name, value) in request.Headers)
            {
                Assert.True(s_token.IsMatch(name), $"a field name that is not a token reached the VM: {Printable(name)}");
                Assert.False(value.Any(c => c is '\r' or '\n' or '\0'), $"a CR, LF or NUL in a value reached the VM: {name}: {Printable(value)}");
            }
            Assert.Single(request.Values("Host"));
        }
    }

    private static string Printable(byte[] bytes) => Printable(Encoding.Latin1.GetString(bytes));

    private static string Printable(string s) =>
        string.Concat(s.Select(c => c is >= ' ' and < (char)0x7F ? c.ToString() : $"\\x{(int)c:X2}"));
}

/// <summary>One response as <see cref="LaneClient"/> parsed it.</summary>
internal sealed record LaneResponse(string Version, int Status, List<(string Name, string Value)> Headers, byte[] Body, bool Chunked)
{
    public string BodyText => Encoding.UTF8.GetString(Body);

    public string[] Values(string name) =>
        Headers.Where(h => h.Name.Equals(name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value).ToArray();
}

/// <summary>
/// A raw HTTP/1.1 client over TLS (ALPN http/1.1): writes whatever bytes a test gives it and parses responses with
/// its own minimal parser (status line, fields, Content-Length or chunked body). Every read is bounded.
/// </summary>
internal sealed class LaneClient : IAsyncDisposable
{
    private readonly TcpClient _tcp;
    private readonly SslStream _tls;
    private readonly TimeSpan _bound;
    private byte[] _buffer = new byte[64 * 1024];
    private int _start, _end;

    private LaneClient(TcpClient tcp, SslStream tls, TimeSpan bound)
    {
        _tcp = tcp;
        _tls = tls;
        _bound = bound;
    }

    public static async Task<LaneClient> ConnectAsync(int port, string serverName, TimeSpan bound)
    {
        var tcp = new TcpClient { NoDelay = true };
        try
        {
            using var cts = new CancellationTokenSource(bound);
            await tcp.ConnectAsync(IPAddress.Loopback, port, cts.Token);
            // The front door's own dev certificate on loopback; certificate checks are other tests' business.
            var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false, (_, _, _, _) => true);
            await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = serverName,
                ApplicationProtocols = [SslApplicationProtocol.Http11],
            }, cts.Token);
            Assert.Equal(SslApplicationProtocol.Http11, tls.NegotiatedApplicationProtocol);
            return new LaneClient(tcp, tls, bound);
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    /// <summary>Bytes received and not yet parsed.</summary>
    public int Buffered => _end - _start;

    public Task WriteAsync(string latin1) => WriteAsync(Encoding.Latin1.GetBytes(latin1));

    public async Task WriteAsync(byte[] bytes)
    {
        using var cts = new CancellationTokenSource(_bound);
        await _tls.WriteAsync(bytes, cts.Token);
        await _tls.FlushAsync(cts.Token);
    }

    /// <summary>Sends TLS close_notify: the end of what this client sends.</summary>
    public async Task ShutdownAsync() => await _tls.ShutdownAsync().WaitAsync(_bound);

    private async Task<bool> FillAsync(CancellationToken ct)
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
            Array.Resize(ref _buffer, _buffer.Length * 2);
        int n = await _tls.ReadAsync(_buffer.AsMemory(_end), ct);
        _end += n;
        return n > 0;
    }

    private int Find(ReadOnlySpan<byte> what) => _buffer.AsSpan(_start, _end - _start).IndexOf(what);

    private async Task<string> ReadLineAsync(CancellationToken ct)
    {
        int i;
        while ((i = Find("\r\n"u8)) < 0)
        {
            if (!await FillAsync(ct))
                throw new EndOfStreamException("closed inside a line");
        }
        string line = Encoding.Latin1.GetString(_buffer, _start, i);
        _start += i + 2;
        return line;
    }

    private async Task<byte[]> ReadExactlyAsync(int count, CancellationToken ct)
    {
        while (_end - _start < count)
        {
            if (!await FillAsync(ct))
                throw new EndOfStreamException($"closed inside a body: {_end - _start} of {count} bytes");
        }
        var result = _buffer.AsSpan(_start, count).ToArray();
        _start += count;
        return result;
    }

    /// <summary>Reads one response; <paramref name="head"/> for the answer to a HEAD (no body whatever its fields say).</summary>
    public async Task<LaneResponse> ReadResponseAsync(bool head = false)
    {
        using var cts = new CancellationTokenSource(_bound);
        var ct = cts.Token;
        int end;
        while ((end = Find("\r\n\r\n"u8)) < 0)
        {
            if (!await FillAsync(ct))
                throw new EndOfStreamException($"closed before a whole response head; got: {Encoding.Latin1.GetString(_buffer, _start, _end - _start)}");
        }
        var lines = Encoding.Latin1.GetString(_buffer, _start, end).Split("\r\n");
        _start += end + 4;
        var statusLine = lines[0].Split(' ', 3);
        Assert.True(statusLine.Length >= 2 && statusLine[0].StartsWith("HTTP/", StringComparison.Ordinal), $"bad status line: {lines[0]}");
        var headers = new List<(string, string)>();
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            Assert.True(colon > 0, $"bad field line: {line}");
            headers.Add((line[..colon], line[(colon + 1)..].Trim(' ', '\t')));
        }
        var response = new LaneResponse(statusLine[0], int.Parse(statusLine[1], System.Globalization.CultureInfo.InvariantCulture), headers, [], false);
        if (head || response.Status is 204 or 304 || response.Status < 200)
            return response;
        if (response.Values("Transfer-Encoding").Any(v => v.Equals("chunked", StringComparison.OrdinalIgnoreCase)))
        {
            Assert.Empty(response.Values("Content-Length"));
            var body = new MemoryStream();
            while (true)
            {
                string sizeLine = await ReadLineAsync(ct);
                int semicolon = sizeLine.IndexOf(';');
                int size = int.Parse(semicolon >= 0 ? sizeLine[..semicolon] : sizeLine,
                    System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture);
                if (size == 0)
                {
                    while ((await ReadLineAsync(ct)).Length > 0)
                    {
                        // trailer fields
                    }
                    return response with { Body = body.ToArray(), Chunked = true };
                }
                body.Write(await ReadExactlyAsync(size, ct));
                if ((await ReadLineAsync(ct)).Length != 0)
                    throw new InvalidDataException("chunk data not followed by CRLF");
            }
        }
        var lengths = response.Values("Content-Length");
        if (lengths.Length == 1)
            return response with { Body = await ReadExactlyAsync(int.Parse(lengths[0], System.Globalization.CultureInfo.InvariantCulture), ct) };
        Assert.Empty(lengths);
        // Delimited by the close.
        while (await FillAsync(ct))
        {
        }
        var rest = _buffer.AsSpan(_start, _end - _start).ToArray();
        _start = _end;
        return response with { Body = rest };
    }

    /// <summary>A response, or null when the server closed (or reset) the connection first; fails after <paramref name="within"/>.</summary>
    public async Task<LaneResponse?> ReadResponseOrCloseAsync(TimeSpan within)
    {
        var task = ReadResponseAsync();
        var done = await Task.WhenAny(task, Task.Delay(within));
        Assert.True(done == task, $"neither an answer nor a close within {within.TotalSeconds} s");
        try
        {
            return await task;
        }
        catch (Exception ex) when (ex is EndOfStreamException or IOException && Buffered == 0)
        {
            return null;
        }
    }

    /// <summary>True when the server closes the connection within <paramref name="within"/> (anything it sends first is discarded).</summary>
    public async Task<bool> ClosedWithinAsync(TimeSpan within)
    {
        using var cts = new CancellationTokenSource(within);
        var scratch = new byte[16 * 1024];
        try
        {
            while (await _tls.ReadAsync(scratch, cts.Token) > 0)
            {
            }
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (IOException)
        {
            return true; // reset
        }
    }

    public ValueTask DisposeAsync()
    {
        _tls.Dispose();
        _tcp.Dispose();
        return ValueTask.CompletedTask;
    }
}
