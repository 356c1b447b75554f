using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Warren.Edge.Http;
using Warren.Edge.Tests.ProxyProtocol;
using Warren.Edge.Tests.Support;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>
/// The front door's HTTP/1.1 forwarders end to end: the real front door (Kestrel on loopback) in front of a raw
/// TCP "VM" that writes hand-made responses and records the bytes it was sent, with HttpClient and curl as
/// clients. Run twice: with the connection-level path on (the shared <see cref="FrontDoorFixture"/>: anonymous
/// GET/HEAD on these public sites take it, everything else is handed to Kestrel mid-connection) and with it off
/// (<see cref="KestrelOnlyFrontDoorFixture"/>: every request through Kestrel's HTTP layer) — the same answers.
/// </summary>
[Collection(FrontDoorCollection.Name)]
public sealed class Http1ForwarderTests(FrontDoorFixture fixture) : Http1ForwarderTestsBase(fixture);

/// <summary><see cref="Http1ForwarderTestsBase"/> with every request through Kestrel's HTTP layer.</summary>
public sealed class Http1ForwarderKestrelPathTests(KestrelOnlyFrontDoorFixture fixture)
    : Http1ForwarderTestsBase(fixture), IClassFixture<KestrelOnlyFrontDoorFixture>;

/// <summary><see cref="Http1ForwarderTestsBase"/> on Kestrel's transport, with its connection-level lane.</summary>
public sealed class Http1ForwarderKestrelTransportTests(KestrelTransportFrontDoorFixture fixture)
    : Http1ForwarderTestsBase(fixture), IClassFixture<KestrelTransportFrontDoorFixture>;

/// <summary>The front door on Kestrel's socket transport and SslStream instead of the native event loops.</summary>
public sealed class KestrelTransportFrontDoorFixture : FrontDoorFixture
{
    protected override void ConfigureFrontDoor(HttpFrontDoorOptions options) => options.Transport = HttpsTransport.Kestrel;
}

/// <summary>The front door with <see cref="HttpFrontDoorOptions.ConnectionLevelForwarding"/> off.</summary>
public sealed class KestrelOnlyFrontDoorFixture : FrontDoorFixture
{
    protected override void ConfigureFrontDoor(HttpFrontDoorOptions options) => options.ConnectionLevelForwarding = false;
}

public abstract class Http1ForwarderTestsBase : IAsyncLifetime
{
    /// <summary>The most any single wait in these tests may take; nothing here should come close.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private static int s_sites;

    private readonly FrontDoorFixture _f;
    private readonly List<RawUpstream> _upstreams = new();

    protected Http1ForwarderTestsBase(FrontDoorFixture fixture) => _f = fixture;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var upstream in _upstreams)
            await upstream.DisposeAsync();
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Starts a raw upstream and a public site in front of it; returns both.</summary>
    private (RawUpstream Upstream, string Site) Start(Func<RawConnection, Task> serve)
    {
        var upstream = new RawUpstream(serve, Bound);
        _upstreams.Add(upstream);
        return (upstream, AddSite(upstream.Port));
    }

    private string AddSite(int port)
    {
        string name = "fwd" + Interlocked.Increment(ref s_sites);
        _f.Sites.Sites[name] = new WebSite("vm-" + name, name, People.Owner.UserId, port, IsPublic: true);
        _f.Locator.Addresses["vm-" + name] = IPAddress.Loopback;
        _f.Tokens.Table[("tok-owner", $"v0@{name}.{FrontDoorFixture.Domain}")] =
            TokenValidation.Valid(new TokenPrincipal(People.Owner, "fp-owner", Array.Empty<string>(), "{\"ci\":true}"));
        return name;
    }

    private HttpClient Client()
    {
        var client = _f.CreateClient();
        client.Timeout = Bound;
        return client;
    }

    /// <summary>Serves every request on a connection with <paramref name="respond"/> until the front door closes it.</summary>
    /// <summary>One request per connection: <c>/good</c> gets "fine", anything else goes to <paramref name="other"/>.</summary>
    private static Func<RawConnection, Task> GoodOr(Func<RawConnection, RawRequest, Task> other) => async c =>
    {
        var request = await c.ReadRequestAsync();
        if (request is null)
            return;
        if (request.Target == "/good")
            await c.WriteAsync(Ok("fine"));
        else
            await other(c, request);
    };

    private static Func<RawConnection, Task> Serve(Func<RawRequest, string> respond) => async c =>
    {
        while (await c.ReadRequestAsync() is { } request)
            await c.WriteAsync(respond(request));
    };

    private static string Ok(string body, string extraHeaders = "") =>
        $"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extraHeaders}Content-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}";

    private static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    private Task<ExternalTool.Result> CurlAsync(string site, params string[] args) => _f.CurlSiteAsync(site, args);

    private static async Task<T> Within<T>(Task<T> task)
    {
        var done = await Task.WhenAny(task, Task.Delay(Bound));
        Assert.True(done == task, "timed out");
        return await task;
    }

    private static async Task Within(Task task)
    {
        var done = await Task.WhenAny(task, Task.Delay(Bound));
        Assert.True(done == task, "timed out");
        await task;
    }

    /// <summary>The exception <paramref name="task"/> fails with, within the bound: a client-side failure, never a timeout.</summary>
    private static async Task<Exception> FailureOf(Task task)
    {
        var done = await Task.WhenAny(task, Task.Delay(Bound));
        Assert.True(done == task, "the client was left waiting");
        var ex = await Record.ExceptionAsync(() => task);
        Assert.NotNull(ex);
        Assert.True(ex is HttpRequestException or IOException, $"unexpected failure: {ex}");
        return ex;
    }

    // ------------------------------------------------------------------ connection reuse

    [Fact]
    public async Task KeepAlive_TwoRequests_UseOneUpstreamConnection()
    {
        var (upstream, site) = Start(Serve(r => Ok("hello " + r.Target)));
        using var client = Client();
        Assert.Equal("hello /a", await client.GetStringAsync(_f.Url(site, "/a")));
        Assert.Equal("hello /b?x=1", await client.GetStringAsync(_f.Url(site, "/b?x=1")));
        Assert.Equal(1, upstream.Accepted);
        Assert.Equal(new[] { "/a", "/b?x=1" }, upstream.Requests.Select(r => r.Target));
        Assert.All(upstream.Requests, r => Assert.Equal("HTTP/1.1", r.Version));
        Assert.Empty(upstream.Errors);
    }

    [Fact]
    public async Task ConnectionClose_NextRequestOpensANewConnection()
    {
        var (upstream, site) = Start(async c =>
        {
            var request = await c.ReadRequestAsync();
            if (request is null)
                return;
            await c.WriteAsync(Ok($"conn {c.Index}", "Connection: close\r\n"));
            c.Close();
        });
        using var client = Client();
        Assert.Equal("conn 0", await client.GetStringAsync(_f.Url(site, "/1")));
        Assert.Equal("conn 1", await client.GetStringAsync(_f.Url(site, "/2")));
        Assert.Equal(2, upstream.Accepted);
    }

    [Fact]
    public async Task Http10Response_WithoutLength_IsReadUntilClose_AndNotReused()
    {
        var (upstream, site) = Start(async c =>
        {
            if (await c.ReadRequestAsync() is null)
                return;
            await c.WriteAsync($"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close {c.Index}");
            c.Close();
        });
        using var client = Client();
        Assert.Equal("until close 0", await client.GetStringAsync(_f.Url(site, "/")));
        Assert.Equal("until close 1", await client.GetStringAsync(_f.Url(site, "/")));
        Assert.Equal(2, upstream.Accepted);
    }

    [Fact]
    public async Task IdleConnectionClosedByTheVm_NextRequestIsRetriedTransparently()
    {
        var firstClosed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (upstream, site) = Start(async c =>
        {
            if (c.Index == 0)
            {
                // Answers as keep-alive, then goes away while the connection sits in the pool (a VM's keep-alive timeout).
                var request = await c.ReadRequestAsync();
                if (request is null)
                    return;
                await c.WriteAsync(Ok("first"));
                c.Close();
                firstClosed.TrySetResult();
                return;
            }
            while (await c.ReadRequestAsync() is { } request)
                await c.WriteAsync(Ok($"{request.Method} on {c.Index}"));
        });
        using var client = Client();
        Assert.Equal("first", await client.GetStringAsync(_f.Url(site, "/")));
        await Within(firstClosed.Task);

        var second = await client.GetAsync(_f.Url(site, "/again"));
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Equal("GET on 1", await second.Content.ReadAsStringAsync());

        Assert.Equal(2, upstream.Accepted);
        Assert.Equal(new[] { "/", "/again" }, upstream.Requests.Select(r => r.Target));
    }

    [Fact]
    public async Task IdleConnectionClosedByTheVm_SmallPostIsRetriedTransparently()
    {
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (upstream, site) = Start(async c =>
        {
            var request = await c.ReadRequestAsync();
            if (request is null)
                return;
            if (c.Index == 0)
            {
                await c.WriteAsync(Ok("first"));
                c.Close();
                closed.TrySetResult();
                return;
            }
            await c.WriteAsync(Ok($"{request.Method} {Encoding.ASCII.GetString(request.Body)} on {c.Index}"));
            while (await c.ReadRequestAsync() is { } more)
                await c.WriteAsync(Ok("more"));
        });
        using var client = Client();
        Assert.Equal("first", await client.GetStringAsync(_f.Url(site, "/")));
        await Within(closed.Task);
        var response = await client.PostAsync(_f.Url(site, "/post"), new StringContent("payload"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("POST payload on 1", await response.Content.ReadAsStringAsync());
        Assert.Equal(2, upstream.Accepted);
    }

    // ------------------------------------------------------------------ response bodies

    [Fact]
    public async Task ChunkedResponse_PassesThroughIntact()
    {
        var body = RandomBytes(100_000, 1);
        var (upstream, site) = Start(async c =>
        {
            while (await c.ReadRequestAsync() is { } request)
            {
                await c.WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
                int offset = 0, n = 0;
                while (offset < body.Length)
                {
                    int size = Math.Min(body.Length - offset, 1 + (n++ * 7919 % 20_000));
                    await c.WriteAsync(Encoding.ASCII.GetBytes($"{size:X};n={n}\r\n"));
                    await c.WriteAsync(body.AsMemory(offset, size));
                    await c.WriteAsync("\r\n");
                    offset += size;
                }
                await c.WriteAsync("0\r\nX-Trailer: dropped\r\n\r\n");
            }
        });
        using var client = Client();
        var response = await client.GetAsync(_f.Url(site, "/bin"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(body, await response.Content.ReadAsByteArrayAsync());
        // The message ended exactly: the connection was reused.
        Assert.Equal(body, await client.GetByteArrayAsync(_f.Url(site, "/bin")));
        Assert.Equal(1, upstream.Accepted);
    }

    [Fact]
    public async Task ChunkedResponse_WithCurl()
    {
        var (_, site) = Start(Serve(_ =>
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "6\r\nhello \r\n5;ext=1\r\nworld\r\n1\r\n!\r\n0\r\n\r\n"));
        foreach (var version in new[] { "--http1.1", "--http2" })
        {
            var result = await CurlAsync(site, version, _f.Url(site, "/"));
            Assert.True(result.ExitCode == 0, $"curl {version}: {result.ExitCode} {result.Stderr}");
            Assert.Equal("hello world!", result.Stdout);
        }
    }

    [Fact]
    public async Task ContentLengthBody_LargerThanTheBuffer_ArrivesInPieces()
    {
        var body = RandomBytes(300_000, 2);
        var (upstream, site) = Start(async c =>
        {
            while (await c.ReadRequestAsync() is { } request)
            {
                await c.WriteAsync($"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body.Length}\r\n\r\n");
                for (int offset = 0; offset < body.Length; offset += 7_000)
                {
                    await c.WriteAsync(body.AsMemory(offset, Math.Min(7_000, body.Length - offset)));
                    await Task.Yield();
                }
            }
        });
        using var client = Client();
        var response = await client.GetAsync(_f.Url(site, "/big"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(body.Length, response.Content.Headers.ContentLength);
        Assert.Equal(body, await response.Content.ReadAsByteArrayAsync());

        var curl = await CurlAsync(site, "--http1.1", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", _f.Url(site, "/big"));
        Assert.True(curl.ExitCode == 0, curl.Stderr);
        Assert.Equal($"200 {body.Length}", curl.Stdout);
        Assert.Empty(upstream.Errors);
    }

    [Theory]
    [InlineData(100)]
    [InlineData(12 * 1024)]
    public async Task ResponseHead_ArrivingInSmallPieces_IsForwarded(int headerBytes)
    {
        string big = new('h', headerBytes);
        string response = $"HTTP/1.1 200 OK\r\nX-Big: {big}\r\nX-Small: s\r\nContent-Length: 4\r\n\r\nbody";
        var (_, site) = Start(async c =>
        {
            while (await c.ReadRequestAsync() is { })
            {
                var bytes = Encoding.ASCII.GetBytes(response);
                for (int offset = 0; offset < bytes.Length; offset += 1000)
                {
                    await c.WriteAsync(bytes.AsMemory(offset, Math.Min(1000, bytes.Length - offset)));
                    await Task.Yield();
                }
            }
        });
        using var client = Client();
        var got = await client.GetAsync(_f.Url(site, "/"));
        Assert.Equal(HttpStatusCode.OK, got.StatusCode);
        Assert.Equal(big, got.Headers.GetValues("X-Big").Single());
        Assert.Equal("s", got.Headers.GetValues("X-Small").Single());
        Assert.Equal("body", await got.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task InformationalResponses_AreDropped()
    {
        var (_, site) = Start(Serve(_ =>
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" + Ok("final")));
        using var client = Client();
        var response = await client.GetAsync(_f.Url(site, "/"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("final", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task HeadAnd204_HaveNoBody_AndKeepTheConnection()
    {
        var (upstream, site) = Start(Serve(r => r.Method == "HEAD"
            ? "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
            : r.Target == "/204" ? "HTTP/1.1 204 No Content\r\n\r\n" : Ok("after")));
        using var client = Client();
        var head = await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, _f.Url(site, "/")));
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Equal(1234, head.Content.Headers.ContentLength);
        var noContent = await client.GetAsync(_f.Url(site, "/204"));
        Assert.Equal(HttpStatusCode.NoContent, noContent.StatusCode);
        Assert.Equal("after", await client.GetStringAsync(_f.Url(site, "/x")));
        Assert.Equal(1, upstream.Accepted);
    }

    // ------------------------------------------------------------------ request bodies

    [Fact]
    public async Task SmallPost_ArrivesByteExact_WithItsContentLength()
    {
        var body = RandomBytes(10_000, 3);
        var (upstream, site) = Start(Serve(r => Ok($"got {r.Body.Length}")));
        using var client = Client();
        var response = await client.PostAsync(_f.Url(site, "/small"), new ByteArrayContent(body));
        Assert.Equal("got 10000", await response.Content.ReadAsStringAsync());
        var request = upstream.Requests.Single();
        Assert.Equal("POST", request.Method);
        Assert.Equal(new[] { "10000" }, request.Values("Content-Length"));
        Assert.Empty(request.Values("Transfer-Encoding"));
        Assert.False(request.Chunked);
        Assert.Equal(body, request.Body);
    }

    [Fact]
    public async Task SmallPost_WithCurl_ArrivesByteExact()
    {
        var (upstream, site) = Start(Serve(r => Ok($"got {r.Body.Length}")));
        string file = Path.Combine(_f.DataDirectory, $"post-{Guid.NewGuid():N}");
        var body = RandomBytes(16 * 1024, 4);
        await File.WriteAllBytesAsync(file, body);
        try
        {
            var result = await CurlAsync(site, "--data-binary", "@" + file, "-H", "Content-Type: application/octet-stream", _f.Url(site, "/curl"));
            Assert.True(result.ExitCode == 0, result.Stderr);
            Assert.Equal($"got {body.Length}", result.Stdout);
        }
        finally
        {
            File.Delete(file);
        }
        var request = upstream.Requests.Single();
        Assert.Equal(new[] { body.Length.ToString() }, request.Values("Content-Length"));
        Assert.Equal(body, request.Body);
    }

    [Fact]
    public async Task LargePost_IsStreamed_ByteExact_WithItsContentLength()
    {
        var body = RandomBytes(1024 * 1024, 5);
        var (upstream, site) = Start(Serve(r => Ok($"got {r.Body.Length}")));
        using var client = Client();
        var response = await client.PostAsync(_f.Url(site, "/large"), new ByteArrayContent(body));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"got {body.Length}", await response.Content.ReadAsStringAsync());
        var request = upstream.Requests.Single();
        Assert.Equal(new[] { "1048576" }, request.Values("Content-Length"));
        Assert.False(request.Chunked);
        Assert.Equal(body, request.Body);

        // The body ended where its length said: the connection carries the next request.
        Assert.Equal("got 0", await client.GetStringAsync(_f.Url(site, "/after")));
        Assert.Equal(1, upstream.Accepted);
    }

    [Fact]
    public async Task BodyOfUnknownLength_ArrivesChunked()
    {
        var body = RandomBytes(200_000, 6);
        var (upstream, site) = Start(Serve(r => Ok($"got {r.Body.Length}")));
        using var client = Client();
        var content = new StreamContent(new DribbleStream(body, maxRead: 3_333), 5_000); // odd-sized reads: chunk boundaries fall anywhere
        var request = new HttpRequestMessage(HttpMethod.Put, _f.Url(site, "/chunked")) { Content = content };
        var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"got {body.Length}", await response.Content.ReadAsStringAsync());
        var seen = upstream.Requests.Single();
        Assert.Equal("PUT", seen.Method);
        Assert.True(seen.Chunked);
        Assert.Equal(new[] { "chunked" }, seen.Values("Transfer-Encoding"));
        Assert.Empty(seen.Values("Content-Length"));
        Assert.Equal(body, seen.Body);
        Assert.Equal("got 0", await client.GetStringAsync(_f.Url(site, "/after")));
        Assert.Equal(1, upstream.Accepted);
    }

    [Fact]
    public async Task EarlyResponse_BeforeALargeBodyIsRead_ReachesTheClient()
    {
        var (upstream, site) = Start(async c =>
        {
            var request = await c.ReadRequestAsync(readBody: false);
            if (request is null)
                return;
            if (request.Method == "GET")
            {
                await c.WriteAsync(Ok("still here"));
                return;
            }
            await c.WriteAsync("HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large");
            // A polite server: stops writing, drains what is in flight (bounded), then closes.
            await c.ShutdownSendAndDrainAsync(maxBytes: 64 * 1024 * 1024);
        });
        using var client = Client();
        var response = await client.PostAsync(_f.Url(site, "/upload"), new ByteArrayContent(RandomBytes(8 * 1024 * 1024, 7)));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("too large", await response.Content.ReadAsStringAsync());
        Assert.Equal("still here", await client.GetStringAsync(_f.Url(site, "/")));
    }

    [Fact]
    public async Task InvalidEarlyResponse_FromAVmThatStopsReading_Is502_NotAHang()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (_, site) = Start(async c =>
        {
            var request = await c.ReadRequestAsync(readBody: false);
            if (request is null)
                return;
            if (request.Method == "GET")
            {
                await c.WriteAsync(Ok("still here"));
                return;
            }
            // Garbage instead of an answer, then neither reading nor closing: only the front door can end this.
            await c.WriteAsync("garbage\r\n\r\n");
            await release.Task.WaitAsync(Bound);
        });
        try
        {
            using var client = Client();
            // More than the socket buffers on both sides of the VM connection hold.
            var post = client.PostAsync(_f.Url(site, "/upload"), new ByteArrayContent(new byte[64 * 1024 * 1024]));
            var response = await Within(post);
            Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
            Assert.Equal("still here", await client.GetStringAsync(_f.Url(site, "/")));
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task EarlyStreamedResponse_EndsForAClientThatWaitsForIt_BeforeSendingTheRestOfItsBody()
    {
        // A full-duplex exchange: the VM answers (chunked) while the upload is under way, and this client sends the
        // rest of its body only after the response has ended.
        var (_, site) = Start(async c =>
        {
            var request = await c.ReadRequestAsync(readBody: false);
            if (request is null)
                return;
            await c.WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
            await c.ShutdownSendAndDrainAsync(maxBytes: 1 << 30);
        });
        string host = $"{site}.{FrontDoorFixture.Domain}";
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, _f.HttpsPort);
        // The front door's own dev certificate on loopback; certificate checks are other tests' business.
        using var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false, (_, _, _, _) => true);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = host,
            ApplicationProtocols = new() { SslApplicationProtocol.Http11 },
        });
        await tls.WriteAsync(Encoding.ASCII.GetBytes($"POST /duplex HTTP/1.1\r\nHost: {host}:{_f.HttpsPort}\r\nContent-Length: 1000000\r\n\r\n"));
        await tls.WriteAsync(new byte[64 * 1024]);
        await tls.FlushAsync();

        var received = new StringBuilder();
        using var cts = new CancellationTokenSource(Bound);
        var buffer = new byte[4096];
        while (!received.ToString().EndsWith("\r\n0\r\n\r\n", StringComparison.Ordinal))
        {
            int n;
            try
            {
                n = await tls.ReadAsync(buffer, cts.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"the response never ended; received so far:\n{received}");
                return;
            }
            Assert.True(n > 0, $"the connection closed before the response ended:\n{received}");
            received.Append(Encoding.Latin1.GetString(buffer, 0, n));
        }
        string text = received.ToString();
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", text);
        Assert.EndsWith("\r\n\r\n5\r\nhello\r\n0\r\n\r\n", text);
    }

    // ------------------------------------------------------------------ header rules

    [Fact]
    public async Task SpoofedExeDevAndForwardedHeaders_AreReplaced()
    {
        var (upstream, site) = Start(Serve(_ => Ok("ok")));
        using var client = Client();
        var request = new HttpRequestMessage(HttpMethod.Get, _f.Url(site, "/who"));
        request.Headers.Add("X-Exedev-Authorization", "Bearer tok-owner");
        request.Headers.Add("X-ExeDev-UserID", "u-evil");
        request.Headers.Add("x-exedev-email", "evil@example.com");
        request.Headers.Add("X-ExeDev-Token-Ctx", "{\"evil\":true}");
        request.Headers.Add("X-ExeDev-Anything", "1");
        request.Headers.Add("X-Forwarded-For", "203.0.113.7");
        request.Headers.Add("X-Forwarded-Proto", "http");
        request.Headers.Add("X-Forwarded-Host", "evil.example");
        var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        var seen = upstream.Requests.Single();
        string authority = $"{site}.{FrontDoorFixture.Domain}:{_f.HttpsPort}";
        Assert.Equal(new[] { People.Owner.UserId }, seen.Values("X-ExeDev-UserID"));
        Assert.Equal(new[] { People.Owner.Email }, seen.Values("X-ExeDev-Email"));
        Assert.Equal(new[] { "{\"ci\":true}" }, seen.Values("X-ExeDev-Token-Ctx"));
        Assert.Empty(seen.Values("X-ExeDev-Anything"));
        Assert.Empty(seen.Values("X-Exedev-Authorization"));
        Assert.Equal(new[] { "203.0.113.7, 127.0.0.1" }, seen.Values("X-Forwarded-For"));
        Assert.Equal(new[] { "https" }, seen.Values("X-Forwarded-Proto"));
        Assert.Equal(new[] { authority }, seen.Values("X-Forwarded-Host"));
        Assert.Equal(new[] { authority }, seen.Values("Host"));
        Assert.Equal("Host", seen.Headers[0].Name);
    }

    [Fact]
    public async Task SpoofedExeDevHeaders_Anonymous_NeverReachTheVm()
    {
        var (upstream, site) = Start(Serve(_ => Ok("ok")));
        var result = await CurlAsync(site,
            "-H", "X-ExeDev-UserID: u-owner",
            "-H", "X-ExeDev-Email: owner@example.com",
            "-H", "x-exedev-token-ctx: {}",
            "-H", "X-Forwarded-Proto: http",
            "-H", "Connection: X-Drop-Me",
            "-H", "X-Drop-Me: 1",
            "-H", "X-Keep-Me: 2",
            "--http1.1",
            _f.Url(site, "/anon"));
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal("ok", result.Stdout);
        var seen = upstream.Requests.Single();
        Assert.DoesNotContain(seen.Headers, h => h.Name.StartsWith("x-exedev-", StringComparison.OrdinalIgnoreCase));
        Assert.Equal(new[] { "https" }, seen.Values("X-Forwarded-Proto"));
        Assert.Empty(seen.Values("X-Drop-Me"));
        Assert.Empty(seen.Values("Connection"));
        Assert.Equal(new[] { "2" }, seen.Values("X-Keep-Me"));
    }

    /// <summary>
    /// Names that CGI, PHP and WSGI read as the front door's own headers (<c>_</c> and <c>-</c> both become
    /// <c>_</c>), and Forwarded/X-Real-IP, never reach the VM: anonymous (the lane where it runs), with a token,
    /// with a body, and over HTTP/2.
    /// </summary>
    [Theory]
    [InlineData("--http1.1")]
    [InlineData("--http1.1", "-H", "X-Exedev-Authorization: Bearer tok-owner")]
    [InlineData("--http1.1", "--data-binary", "body")]
    [InlineData("--http2")]
    [InlineData("--http2", "-H", "Authorization: Bearer tok-owner", "--data-binary", "body")]
    public async Task UnderscoreVariants_ForwardedAndXRealIp_NeverReachTheVm(params string[] mode)
    {
        var (upstream, site) = Start(Serve(_ => Ok("ok")));
        var args = new List<string>
        {
            "-H", "X_ExeDev_Email: boss@example.com",
            "-H", "x_exedev_userid: u-boss",
            "-H", "X-ExeDev_Token-Ctx: {}",
            "-H", "X_Forwarded_For: 203.0.113.9",
            "-H", "X_Real_IP: 203.0.113.9",
            "-H", "Forwarded: for=203.0.113.9;proto=http",
            "-H", "X-Real-IP: 203.0.113.9",
            "-H", "X-Keep-Me: 2",
        };
        args.AddRange(mode);
        args.Add(_f.Url(site, "/variants"));
        var result = await CurlAsync(site, args.ToArray());
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal("ok", result.Stdout);
        var seen = upstream.Requests.Single();
        Assert.DoesNotContain(seen.Headers, h => h.Name.Contains('_'));
        Assert.DoesNotContain(seen.Headers, h => h.Value.Contains("boss", StringComparison.Ordinal) || h.Value.Contains("203.0.113.9", StringComparison.Ordinal));
        Assert.Empty(seen.Values("Forwarded"));
        Assert.Empty(seen.Values("X-Real-IP"));
        Assert.Equal(new[] { "127.0.0.1" }, seen.Values("X-Forwarded-For"));
        Assert.Equal(new[] { "2" }, seen.Values("X-Keep-Me"));
        bool authenticated = mode.Any(m => m.Contains("tok-owner", StringComparison.Ordinal));
        Assert.Equal(authenticated ? new[] { People.Owner.Email } : Array.Empty<string>(), seen.Values("X-ExeDev-Email"));
    }

    [Fact]
    public async Task HopByHopResponseHeaders_AreNotPassedToTheClient()
    {
        var (_, site) = Start(Serve(_ =>
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5, max=100\r\nX-Hop: secret\r\n"
            + "Proxy-Connection: keep-alive\r\nX-End: kept\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5\r\nhello\r\n0\r\n\r\n"));
        using var client = Client();
        var response = await client.GetAsync(_f.Url(site, "/"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("hello", await response.Content.ReadAsStringAsync());
        Assert.False(response.Headers.Contains("Keep-Alive"));
        Assert.False(response.Headers.Contains("X-Hop"));
        Assert.False(response.Headers.Contains("Proxy-Connection"));
        Assert.DoesNotContain(response.Headers.Connection, t => t.Equals("X-Hop", StringComparison.OrdinalIgnoreCase));
        Assert.Equal(new[] { "kept" }, response.Headers.GetValues("X-End"));
        // The front door frames the body itself: one chunked coding, its own.
        Assert.True(response.Headers.TransferEncoding.Count <= 1);

        // The raw head curl saw.
        string headersFile = Path.Combine(_f.DataDirectory, $"hop-{Guid.NewGuid():N}");
        try
        {
            var result = await CurlAsync(site, "--http1.1", "-D", headersFile, _f.Url(site, "/"));
            Assert.True(result.ExitCode == 0, result.Stderr);
            Assert.Equal("hello", result.Stdout);
            var lines = (await File.ReadAllTextAsync(headersFile)).Split("\r\n", StringSplitOptions.RemoveEmptyEntries)
                .Select(l => l.ToLowerInvariant()).ToArray();
            Assert.DoesNotContain(lines, l => l.StartsWith("keep-alive:") || l.StartsWith("x-hop:") || l.StartsWith("proxy-connection:"));
            Assert.DoesNotContain(lines, l => l.StartsWith("connection:") && l.Contains("x-hop"));
            Assert.True(lines.Count(l => l.StartsWith("transfer-encoding:")) <= 1);
            Assert.Contains("x-end: kept", lines);
        }
        finally
        {
            File.Delete(headersFile);
        }
    }

    // ------------------------------------------------------------------ failures

    public static TheoryData<string> InvalidResponses => new()
    {
        "HTTP/1.1 200 OK\r\nX-Vm: 1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nX-Vm: 1\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        "HELLO WORLD\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Vm: 1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nX-Vm: 1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Vm: 1\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        // More body than the Content-Length, in the same packet as the head.
        "HTTP/1.1 200 OK\r\nX-Vm: 1\r\nSet-Cookie: vm=1\r\nContent-Length: 2\r\n\r\nhello",
    };

    [Theory]
    [MemberData(nameof(InvalidResponses))]
    public async Task InvalidUpstreamResponse_Is502_AndTheNextRequestIsServed(string bad)
    {
        var (upstream, site) = Start(async c =>
        {
            while (await c.ReadRequestAsync() is { } request)
                await c.WriteAsync(request.Target == "/bad" ? bad : Ok("fine"));
        });
        using var client = Client();
        var response = await client.GetAsync(_f.Url(site, "/bad"));
        var text = await response.Content.ReadAsStringAsync();
        if (response.StatusCode != HttpStatusCode.BadGateway)
            Assert.Fail($"expected 502, got {(int)response.StatusCode}: {text}");
        Assert.Contains("Bad Gateway", text);
        Assert.False(response.Headers.Contains("X-Vm"), "the VM's header reached the error page");
        Assert.Equal("fine", await client.GetStringAsync(_f.Url(site, "/good")));
        // The broken connection was not reused.
        Assert.Equal(2, upstream.Accepted);
    }

    /// <summary>
    /// A response that broke after its head: the client must see either the break (an aborted response) or a clean
    /// 502 page — never a whole-looking response, and never the VM's head or body bytes on the error page.
    /// </summary>
    private async Task AssertBrokenResponseAsync(HttpClient client, string url)
    {
        var task = client.GetAsync(url);
        var done = await Task.WhenAny(task, Task.Delay(Bound));
        Assert.True(done == task, "the client was left waiting");
        HttpResponseMessage response;
        try
        {
            response = await task;
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException)
        {
            return; // aborted
        }
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadGateway, $"expected 502 or an aborted response, got {(int)response.StatusCode}: {body}");
        Assert.False(response.Headers.Contains("Set-Cookie"), "the VM's Set-Cookie leaked onto the error page");
        Assert.DoesNotContain("vm-bytes", body);
        Assert.Contains("Bad Gateway", body);
    }

    [Fact]
    public async Task InvalidChunkedBody_AfterTheHead_BreaksTheClientResponse()
    {
        var (upstream, site) = Start(Serve(r => r.Target switch
        {
            "/bad" => "HTTP/1.1 200 OK\r\nSet-Cookie: vm=1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nvm-bytes\r\nzz\r\n",
            "/bad-split" => "HTTP/1.1 200 OK\r\nSet-Cookie: vm=1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nvm-bytes\r\n0\r\n\n",
            _ => Ok("fine"),
        }));
        using var client = Client();
        await AssertBrokenResponseAsync(client, _f.Url(site, "/bad"));
        await AssertBrokenResponseAsync(client, _f.Url(site, "/bad-split"));
        Assert.Equal("fine", await client.GetStringAsync(_f.Url(site, "/good")));
    }

    [Fact]
    public async Task VmClosesInsideAContentLengthBody_TheClientSeesAFailedResponse()
    {
        var (_, site) = Start(GoodOr(async (c, request) =>
        {
            await c.WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n");
            await c.WriteAsync(RandomBytes(30_000, 8));
            c.Close();
        }));
        using var client = Client();
        await FailureOf(client.GetAsync(_f.Url(site, "/cut")));

        var curl = await CurlAsync(site, "--http1.1", "-o", "/dev/null", _f.Url(site, "/cut"));
        Assert.NotEqual(0, curl.ExitCode);
        Assert.NotEqual(28, curl.ExitCode); // 28 is curl's timeout: the break must be seen, not waited out

        Assert.Equal("fine", await client.GetStringAsync(_f.Url(site, "/good")));
    }

    [Fact]
    public async Task VmClosesRightAfterTheHead_TheClientGetsACleanErrorOrTheBreak()
    {
        var (_, site) = Start(GoodOr(async (c, request) =>
        {
            await c.WriteAsync(request.Target == "/chunked"
                ? "HTTP/1.1 200 OK\r\nSet-Cookie: vm=1\r\nTransfer-Encoding: chunked\r\n\r\n"
                : "HTTP/1.1 200 OK\r\nSet-Cookie: vm=1\r\nContent-Length: 100000\r\n\r\n");
            c.Close();
        }));
        using var client = Client();
        await AssertBrokenResponseAsync(client, _f.Url(site, "/cl"));
        await AssertBrokenResponseAsync(client, _f.Url(site, "/chunked"));
        Assert.Equal("fine", await client.GetStringAsync(_f.Url(site, "/good")));
    }

    [Fact]
    public async Task NothingListening_IsThePortUnboundPage()
    {
        string site = AddSite(TestUpstream.UnusedPort());
        int port = _f.Sites.Sites[site].DefaultPort;
        using var client = Client();
        var owner = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, _f.Url(site))
        {
            Headers = { { "X-Exedev-Authorization", "Bearer tok-owner" } },
        });
        Assert.Equal(HttpStatusCode.BadGateway, owner.StatusCode);
        Assert.Contains($"Port {port} unbound.", await owner.Content.ReadAsStringAsync());

        var anonymous = await client.GetAsync(_f.Url(site));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, anonymous.StatusCode);

        var curl = await CurlAsync(site, "-o", "/dev/null", "-w", "%{http_code}", _f.Url(site));
        Assert.Equal(0, curl.ExitCode);
        Assert.Equal("503", curl.Stdout);
    }

    [Fact]
    public async Task VmClosesWithoutAnswering_IsNotAHang()
    {
        var (_, site) = Start(async c =>
        {
            if (await c.ReadRequestAsync() is { } request && request.Target == "/good")
            {
                await c.WriteAsync(Ok("fine"));
                return;
            }
            c.Close();
        });
        using var client = Client();
        var response = await Within(client.GetAsync(_f.Url(site, "/silent")));
        Assert.True((int)response.StatusCode is 502 or 503, $"got {(int)response.StatusCode}");
        Assert.Equal("fine", await client.GetStringAsync(_f.Url(site, "/good")));
    }
}

/// <summary>One request as the raw upstream received it.</summary>
internal sealed record RawRequest(string Method, string Target, string Version, List<(string Name, string Value)> Headers, byte[] Body, bool Chunked)
{
    public string[] Values(string name) =>
        Headers.Where(h => h.Name.Equals(name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value).ToArray();
}

/// <summary>
/// A VM stand-in at the TCP level: a listener on 127.0.0.1 whose connections are served by a test's script,
/// which reads requests with an independent minimal HTTP/1.1 parser and writes whatever bytes it likes.
/// </summary>
internal sealed class RawUpstream : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly Func<RawConnection, Task> _serve;
    private readonly TimeSpan _bound;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<RawConnection> _connections = new();
    private readonly ConcurrentQueue<Task> _tasks = new();
    private readonly Task _acceptLoop;
    private int _accepted;

    public RawUpstream(Func<RawConnection, Task> serve, TimeSpan bound)
    {
        _serve = serve;
        _bound = bound;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _acceptLoop = AcceptLoopAsync();
    }

    public int Port { get; }

    /// <summary>Connections accepted so far.</summary>
    public int Accepted => Volatile.Read(ref _accepted);

    /// <summary>Requests read so far, in arrival order.</summary>
    public ConcurrentQueue<RawRequest> Requests { get; } = new();

    /// <summary>Exceptions of connection scripts (other than the connection going away).</summary>
    public ConcurrentQueue<Exception> Errors { get; } = new();

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception)
            {
                return;
            }
            int index = Interlocked.Increment(ref _accepted) - 1;
            var connection = new RawConnection(socket, index, this, _bound, _stop.Token);
            _connections.Enqueue(connection);
            _tasks.Enqueue(Task.Run(async () =>
            {
                try
                {
                    await _serve(connection);
                }
                catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
                {
                    // The front door closed the connection, or the upstream was stopped.
                }
                catch (Exception ex)
                {
                    Errors.Enqueue(ex);
                }
                finally
                {
                    connection.Close();
                }
            }));
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        foreach (var c in _connections)
            c.Close();
        await Task.WhenAny(Task.WhenAll(_tasks.Append(_acceptLoop)), Task.Delay(_bound));
        _stop.Dispose();
    }
}

internal sealed class RawConnection
{
    private readonly Socket _socket;
    private readonly RawUpstream _owner;
    private readonly CancellationToken _ct;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start, _end;

    public RawConnection(Socket socket, int index, RawUpstream owner, TimeSpan bound, CancellationToken stop)
    {
        _socket = socket;
        _owner = owner;
        Index = index;
        // Every read and write of the connection ends within the bound, whatever the front door does.
        var cts = CancellationTokenSource.CreateLinkedTokenSource(stop);
        cts.CancelAfter(bound);
        _ct = cts.Token;
    }

    /// <summary>0 for the upstream's first connection, 1 for the next…</summary>
    public int Index { get; }

    public Task WriteAsync(string ascii) => WriteAsync(Encoding.Latin1.GetBytes(ascii));

    public async Task WriteAsync(ReadOnlyMemory<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            int n = await _socket.SendAsync(bytes, SocketFlags.None, _ct);
            bytes = bytes[n..];
        }
    }

    public void Close()
    {
        try
        {
            _socket.Dispose();
        }
        catch (Exception)
        {
        }
    }

    /// <summary>Half-closes, then reads and discards up to <paramref name="maxBytes"/> until the peer closes.</summary>
    public async Task ShutdownSendAndDrainAsync(long maxBytes)
    {
        _socket.Shutdown(SocketShutdown.Send);
        long total = 0;
        var scratch = new byte[64 * 1024];
        while (total < maxBytes)
        {
            int n = await _socket.ReceiveAsync(scratch, SocketFlags.None, _ct);
            if (n == 0)
                break;
            total += n;
        }
        Close();
    }

    private async Task<bool> FillAsync()
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
            throw new InvalidDataException("request head too large for the test upstream");
        int n = await _socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, _ct);
        _end += n;
        return n > 0;
    }

    private async Task<string> ReadLineAsync()
    {
        while (true)
        {
            int lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (lf >= 0)
            {
                if (lf == _start || _buffer[lf - 1] != (byte)'\r')
                    throw new InvalidDataException("the front door sent a line without CRLF");
                string line = Encoding.Latin1.GetString(_buffer, _start, lf - 1 - _start);
                _start = lf + 1;
                return line;
            }
            if (!await FillAsync())
                throw new EndOfStreamException("connection closed inside a line");
        }
    }

    private async Task<byte[]> ReadExactlyAsync(long count)
    {
        var result = new byte[count];
        long filled = 0;
        while (filled < count)
        {
            if (_start == _end && !await FillAsync())
                throw new EndOfStreamException("connection closed inside a body");
            int take = (int)Math.Min(count - filled, _end - _start);
            Buffer.BlockCopy(_buffer, _start, result, (int)filled, take);
            _start += take;
            filled += take;
        }
        return result;
    }

    /// <summary>Reads one request (its body too unless told not to); null when the front door closed the connection between requests.</summary>
    public async Task<RawRequest?> ReadRequestAsync(bool readBody = true)
    {
        if (_start == _end && !await FillAsync())
            return null;
        string requestLine = await ReadLineAsync();
        var parts = requestLine.Split(' ');
        if (parts.Length != 3)
            throw new InvalidDataException($"bad request line: {requestLine}");
        var headers = new List<(string, string)>();
        while (true)
        {
            string line = await ReadLineAsync();
            if (line.Length == 0)
                break;
            int colon = line.IndexOf(':');
            if (colon <= 0)
                throw new InvalidDataException($"bad header line: {line}");
            headers.Add((line[..colon], line[(colon + 1)..].Trim(' ', '\t')));
        }
        var request = new RawRequest(parts[0], parts[1], parts[2], headers, Array.Empty<byte>(), false);
        bool chunked = request.Values("Transfer-Encoding").Any(v => v.Equals("chunked", StringComparison.OrdinalIgnoreCase));
        var lengths = request.Values("Content-Length");
        if (chunked && lengths.Length > 0)
            throw new InvalidDataException("the front door sent both Transfer-Encoding and Content-Length");
        if (readBody)
        {
            if (chunked)
                request = request with { Body = await ReadChunkedAsync(), Chunked = true };
            else if (lengths.Length == 1)
                request = request with { Body = await ReadExactlyAsync(long.Parse(lengths[0], System.Globalization.CultureInfo.InvariantCulture)) };
            else if (lengths.Length > 1)
                throw new InvalidDataException("the front door sent two Content-Length fields");
        }
        else
        {
            request = request with { Chunked = chunked };
        }
        _owner.Requests.Enqueue(request);
        return request;
    }

    private async Task<byte[]> ReadChunkedAsync()
    {
        var body = new MemoryStream();
        while (true)
        {
            string sizeLine = await ReadLineAsync();
            int semicolon = sizeLine.IndexOf(';');
            string hex = semicolon >= 0 ? sizeLine[..semicolon] : sizeLine;
            long size = long.Parse(hex, System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture);
            if (size == 0)
            {
                while ((await ReadLineAsync()).Length > 0)
                {
                    // trailer fields: ignored
                }
                return body.ToArray();
            }
            body.Write(await ReadExactlyAsync(size));
            if ((await ReadLineAsync()).Length != 0)
                throw new InvalidDataException("chunk data not followed by CRLF");
        }
    }
}
