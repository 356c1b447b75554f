using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http.EventLoop;
using Warren.Edge.Tests.Support;
using Warren.Edge.Tls;

namespace Warren.Edge.Tests.Http.EventLoop;

/// <summary>
/// A real Kestrel app with a <see cref="HandOffEndPoint"/> listener, fed by a miniature event loop: real TCP accepts on
/// 127.0.0.1, the TLS handshake done by <see cref="TlsSession"/> (non-blocking fd, bounded poll loop), then
/// <see cref="HandOffConnectionListenerFactory.HandOff"/>. One port hands off right after the handshake; the other
/// first reads the request head with <see cref="TlsSession.Read"/> and hands it off as already decrypted bytes
/// (what the loop does with a request it decides not to serve).
/// </summary>
public sealed class HandOffFixture : IAsyncLifetime
{
    public const string Host = "web.box.localhost";

    /// <summary>Upper bound of one test-side handshake or head read (they take milliseconds).</summary>
    private static readonly TimeSpan TlsStepDeadline = TimeSpan.FromSeconds(10);
    private const int PollMicroseconds = 100_000;
    /// <summary>Largest request head the head-first port reads before handing off.</summary>
    private const int MaxHeadBytes = 64 * 1024;

    private readonly string _dir = Directory.CreateTempSubdirectory("warren-handoff-").FullName;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _acceptLoops = new();
    private TlsCertificateProvider _certificates = null!;
    private TlsServerContext _tls = null!;
    private WebApplication _app = null!;
    private Socket _handOffListener = null!;
    private Socket _headFirstListener = null!;

    internal HandOffEndPoint EndPoint { get; } = new("test");
    internal HandOffConnectionListenerFactory Factory { get; private set; } = null!;
    internal TlsServerContext Tls => _tls;
    public int Port { get; private set; }
    public int HeadFirstPort { get; private set; }
    public int SocketPort { get; private set; }
    public string DataDirectory => _dir;

    /// <summary>/wait/{id} requests: started when the handler runs, aborted when RequestAborted fires.</summary>
    public ConcurrentDictionary<string, (TaskCompletionSource Started, TaskCompletionSource Aborted)> Waits { get; } = new();

    public async Task InitializeAsync()
    {
        _certificates = TlsCertificateProvider.Create(new TlsOptions { DataDirectory = _dir, VmDomain = "box.localhost", ControlHost = "warren.localhost" });
        _tls = new TlsServerContext(_certificates, http2: true);

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        HandOffConnectionListenerFactory.AddHandOffTransport(builder.Services);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(EndPoint, listen => listen.Protocols = HttpProtocols.Http1AndHttp2);
            // A plain socket listener next to it: the hand-off transport must not take over Kestrel's sockets.
            kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http1);
        });
        _app = builder.Build();
        _app.UseWebSockets();
        _app.MapGet("/", context =>
        {
            var tls = context.Features.Get<ITlsHandshakeFeature>();
            return context.Response.WriteAsync($"hello {context.Request.Protocol} {context.Request.Scheme} {tls?.HostName} {tls?.Protocol}");
        });
        _app.MapPost("/echo", async context =>
        {
            context.Response.ContentType = "application/octet-stream";
            await context.Request.Body.CopyToAsync(context.Response.Body);
        });
        _app.MapPost("/hash", async context =>
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[64 * 1024];
            long total = 0;
            int n;
            while ((n = await context.Request.Body.ReadAsync(buffer)) > 0)
            {
                hash.AppendData(buffer, 0, n);
                total += n;
            }
            await context.Response.WriteAsync($"{Convert.ToHexStringLower(hash.GetHashAndReset())} {total}");
        });
        _app.MapGet("/wait/{id}", async context =>
        {
            var wait = Waits.GetOrAdd((string)context.Request.RouteValues["id"]!, _ => (new(TaskCreationOptions.RunContinuationsAsynchronously), new(TaskCreationOptions.RunContinuationsAsynchronously)));
            wait.Started.TrySetResult();
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(60), context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                wait.Aborted.TrySetResult();
            }
        });
        _app.Map("/ws", async context =>
        {
            if (!context.WebSockets.IsWebSocketRequest)
            {
                context.Response.StatusCode = StatusCodes.Status400BadRequest;
                return;
            }
            using var socket = await context.WebSockets.AcceptWebSocketAsync();
            var buffer = new byte[256 * 1024];
            while (true)
            {
                var result = await socket.ReceiveAsync(buffer, context.RequestAborted);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", context.RequestAborted);
                    return;
                }
                await socket.SendAsync(buffer.AsMemory(0, result.Count), result.MessageType, result.EndOfMessage, context.RequestAborted);
            }
        });
        await _app.StartAsync();
        Factory = _app.Services.GetRequiredService<HandOffConnectionListenerFactory>();
        SocketPort = _app.Urls.Select(u => u.StartsWith("http://127.0.0.1:", StringComparison.Ordinal) ? new Uri(u).Port : 0).Single(p => p != 0);

        _handOffListener = Listen();
        _headFirstListener = Listen();
        Port = ((IPEndPoint)_handOffListener.LocalEndPoint!).Port;
        HeadFirstPort = ((IPEndPoint)_headFirstListener.LocalEndPoint!).Port;
        _acceptLoops.Add(AcceptLoopAsync(_handOffListener, readHeadFirst: false));
        _acceptLoops.Add(AcceptLoopAsync(_headFirstListener, readHeadFirst: true));
    }

    private static Socket Listen()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        socket.Listen();
        return socket;
    }

    private async Task AcceptLoopAsync(Socket listener, bool readHeadFirst)
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket accepted;
            try
            {
                accepted = await listener.AcceptAsync(_stop.Token);
            }
            catch (Exception)
            {
                return;
            }
            _ = Task.Run(() => Serve(accepted, readHeadFirst));
        }
    }

    /// <summary>What the event loop does with one connection, synchronously on a non-blocking fd.</summary>
    private void Serve(Socket socket, bool readHeadFirst)
    {
        TlsSession? session = null;
        try
        {
            socket.Blocking = false;
            socket.NoDelay = true;
            session = _tls.NewSession((int)socket.Handle);
            Handshake(socket, session);
            byte[] head = readHeadFirst ? ReadHead(socket, session) : [];
            if (Factory.HandOff(EndPoint, socket, session, head, (IPEndPoint)socket.LocalEndPoint!, (IPEndPoint)socket.RemoteEndPoint!))
                return;
        }
        catch (Exception)
        {
            // The client went away mid-handshake, or similar: close like the loop would.
        }
        session?.Dispose();
        socket.Dispose();
    }

    private static void Handshake(Socket socket, TlsSession session)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TlsStepDeadline)
        {
            switch (session.Handshake())
            {
                case TlsStatus.Done:
                    return;
                case TlsStatus.WantRead:
                    socket.Poll(PollMicroseconds, SelectMode.SelectRead);
                    break;
                case TlsStatus.WantWrite:
                    socket.Poll(PollMicroseconds, SelectMode.SelectWrite);
                    break;
                default:
                    throw new IOException($"handshake failed: {session.LastError}");
            }
        }
        throw new TimeoutException("TLS handshake did not finish");
    }

    /// <summary>Reads until the end of the request head (or the HTTP/2 preface's first blank line).</summary>
    private static byte[] ReadHead(Socket socket, TlsSession session)
    {
        var buffer = new byte[MaxHeadBytes];
        int filled = 0;
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TlsStepDeadline && filled < buffer.Length)
        {
            var status = session.Read(buffer.AsSpan(filled), out int read);
            if (status == TlsStatus.Done)
            {
                filled += read;
                if (buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8) >= 0)
                    return buffer[..filled];
            }
            else if (status == TlsStatus.WantRead)
                socket.Poll(PollMicroseconds, SelectMode.SelectRead);
            else
                throw new IOException($"head read ended: {status} {session.LastError}");
        }
        throw new TimeoutException("no complete request head");
    }

    public async Task DisposeAsync()
    {
        _stop.Cancel();
        _handOffListener.Dispose();
        _headFirstListener.Dispose();
        await Task.WhenAll(_acceptLoops);
        await _app.StopAsync();
        await _app.DisposeAsync();
        _tls.Dispose();
        _certificates.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>An HttpClient that connects every name to 127.0.0.1 (so SNI carries <see cref="Host"/>) and accepts the dev certificate.</summary>
    public static SocketsHttpHandler CreateHandler() => new()
    {
        UseProxy = false,
        ConnectCallback = async (context, ct) =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, context.DnsEndPoint.Port), ct);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
        SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
    };

    public string Url(string path, int? port = null) => $"https://{Host}:{port ?? Port}{path}";
}

public sealed class HandOffTransportTests(HandOffFixture f) : IClassFixture<HandOffFixture>
{
    /// <summary>Bound on every wait for something the server should do promptly.</summary>
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private static HttpRequestMessage Request(HttpMethod method, string url, Version version, HttpContent? content = null) => new(method, url)
    {
        Version = version,
        VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        Content = content,
    };

    [Theory]
    [InlineData("1.1", false)]
    [InlineData("2.0", false)]
    [InlineData("1.1", true)]
    [InlineData("2.0", true)]
    public async Task HttpClientGet_IsServedOverTheSessionsTls(string version, bool headFirst)
    {
        using var client = new HttpClient(HandOffFixture.CreateHandler()) { Timeout = Patience };
        int port = headFirst ? f.HeadFirstPort : f.Port;
        for (int i = 0; i < 3; i++) // several requests on the same connection
        {
            using var response = await client.SendAsync(Request(HttpMethod.Get, f.Url("/", port), Version.Parse(version)));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(Version.Parse(version), response.Version);
            string protocol = version == "2.0" ? "HTTP/2" : "HTTP/1.1";
            Assert.Equal($"hello {protocol} https {HandOffFixture.Host} {SslProtocols.Tls13}", await response.Content.ReadAsStringAsync());
        }
    }

    [Theory]
    [InlineData("1.1", false)]
    [InlineData("2.0", false)]
    [InlineData("1.1", true)]
    [InlineData("2.0", true)]
    public async Task HttpClientPost_LargeBodyArrives_AndEchoComesBack(string version, bool headFirst)
    {
        int port = headFirst ? f.HeadFirstPort : f.Port;
        using var client = new HttpClient(HandOffFixture.CreateHandler()) { Timeout = Patience };

        var large = RandomNumberGenerator.GetBytes(3 * 1024 * 1024 + 17);
        using (var response = await client.SendAsync(Request(HttpMethod.Post, f.Url("/hash", port), Version.Parse(version), new ByteArrayContent(large))))
            Assert.Equal($"{Convert.ToHexStringLower(SHA256.HashData(large))} {large.Length}", await response.Content.ReadAsStringAsync());

        // Echo size: HttpClient does not read an HTTP/2 response before it has sent a (non-duplex) request body, so an
        // echo must fit Kestrel's request-body window (768 KiB); checked against Kestrel's own HTTPS, which behaves the same.
        var echoed = RandomNumberGenerator.GetBytes(512 * 1024 + 3);
        using (var response = await client.SendAsync(Request(HttpMethod.Post, f.Url("/echo", port), Version.Parse(version), new ByteArrayContent(echoed))))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(echoed, await response.Content.ReadAsByteArrayAsync());
        }
    }

    [Fact]
    public async Task Http1Echo_OfThreeMebibytes_ReadsAndWritesAtOnce()
    {
        // HTTP/1.1 streams the echo while the upload is still arriving: concurrent read and write on one TlsSession.
        var body = RandomNumberGenerator.GetBytes(3 * 1024 * 1024 + 17);
        using var client = new HttpClient(HandOffFixture.CreateHandler()) { Timeout = Patience };
        using var response = await client.SendAsync(Request(HttpMethod.Post, f.Url("/echo"), HttpVersion.Version11, new ByteArrayContent(body)));
        Assert.Equal(body, await response.Content.ReadAsByteArrayAsync());
    }

    [Theory]
    [InlineData("--http1.1", "HTTP/1.1", false)]
    [InlineData("--http2", "HTTP/2", false)]
    [InlineData("--http1.1", "HTTP/1.1", true)]
    [InlineData("--http2", "HTTP/2", true)]
    public async Task CurlGet_NegotiatesTheProtocolByAlpn(string flag, string protocol, bool headFirst)
    {
        int port = headFirst ? f.HeadFirstPort : f.Port;
        var result = await ExternalTool.RunAsync("curl", ["-sS", "-k", flag, "--max-time", "30",
            "--resolve", $"{HandOffFixture.Host}:{port}:127.0.0.1", f.Url("/", port)]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal($"hello {protocol} https {HandOffFixture.Host} {SslProtocols.Tls13}", result.Stdout);
    }

    [Theory]
    [InlineData("--http1.1")]
    [InlineData("--http2")]
    public async Task CurlUpload_FiveMebibytes_ArrivesIntact(string flag)
    {
        var body = RandomNumberGenerator.GetBytes(5 * 1024 * 1024);
        var file = Path.Combine(f.DataDirectory, $"upload-{Guid.NewGuid():N}");
        await File.WriteAllBytesAsync(file, body);
        var result = await ExternalTool.RunAsync("curl", ["-sS", "-k", flag, "--max-time", "30", "--data-binary", $"@{file}",
            "--resolve", $"{HandOffFixture.Host}:{f.Port}:127.0.0.1", f.Url("/hash")]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal($"{Convert.ToHexStringLower(SHA256.HashData(body))} {body.Length}", result.Stdout);
    }

    [Theory]
    [InlineData("1.1")]
    [InlineData("2.0")]
    public async Task WebSocket_EchoesMessages(string version)
    {
        using var handler = HandOffFixture.CreateHandler();
        using var invoker = new HttpMessageInvoker(handler);
        using var socket = new ClientWebSocket();
        socket.Options.HttpVersion = Version.Parse(version);
        socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        using var timeout = new CancellationTokenSource(Patience);
        await socket.ConnectAsync(new Uri($"wss://{HandOffFixture.Host}:{f.Port}/ws"), invoker, timeout.Token);
        var receive = new byte[512 * 1024];
        foreach (int size in new[] { 1, 1000, 200 * 1024 })
        {
            var message = RandomNumberGenerator.GetBytes(size);
            // Sent and received concurrently: a large message is echoed while it is still arriving.
            var send = socket.SendAsync(message, WebSocketMessageType.Binary, endOfMessage: true, timeout.Token);
            int filled = 0;
            while (true)
            {
                var result = await socket.ReceiveAsync(receive.AsMemory(filled), timeout.Token);
                filled += result.Count;
                if (result.EndOfMessage)
                    break;
            }
            await send;
            Assert.Equal(message, receive[..filled]);
        }
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", timeout.Token);
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
    }

    [Fact]
    public async Task ClientReset_AbortsTheRequest_AndLaterConnectionsWork()
    {
        var id = Guid.NewGuid().ToString("N");
        var wait = f.Waits.GetOrAdd(id, _ => (new(TaskCreationOptions.RunContinuationsAsynchronously), new(TaskCreationOptions.RunContinuationsAsynchronously)));
        using (var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await tcp.ConnectAsync(new IPEndPoint(IPAddress.Loopback, f.Port));
            var tls = new SslStream(new NetworkStream(tcp, ownsSocket: false));
            await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = HandOffFixture.Host,
                ApplicationProtocols = [SslApplicationProtocol.Http11],
                RemoteCertificateValidationCallback = (_, _, _, _) => true,
            });
            await tls.WriteAsync(Encoding.ASCII.GetBytes($"GET /wait/{id} HTTP/1.1\r\nHost: {HandOffFixture.Host}\r\n\r\n"));
            await wait.Started.Task.WaitAsync(Patience);
            tcp.LingerState = new LingerOption(true, 0); // close with RST
        }
        // Kestrel noticed through the transport (ConnectionClosed / input end) that the client is gone.
        await wait.Aborted.Task.WaitAsync(Patience);

        // An upload cut off mid-body.
        using (var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await tcp.ConnectAsync(new IPEndPoint(IPAddress.Loopback, f.Port));
            var tls = new SslStream(new NetworkStream(tcp, ownsSocket: false));
            await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = HandOffFixture.Host,
                RemoteCertificateValidationCallback = (_, _, _, _) => true,
            });
            await tls.WriteAsync(Encoding.ASCII.GetBytes($"POST /hash HTTP/1.1\r\nHost: {HandOffFixture.Host}\r\nContent-Length: 1000000\r\n\r\n"));
            await tls.WriteAsync(new byte[100_000]);
            tcp.LingerState = new LingerOption(true, 0);
        }

        using var client = new HttpClient(HandOffFixture.CreateHandler()) { Timeout = Patience };
        using var response = await client.GetAsync(f.Url("/"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task SocketListener_NextToTheHandOffListener_StillUsesSockets()
    {
        using var client = new HttpClient { Timeout = Patience };
        Assert.Equal("hello HTTP/1.1 http  ", await client.GetStringAsync($"http://127.0.0.1:{f.SocketPort}/"));
    }

    [Fact]
    public async Task Unbind_EndsAcceptAsync_AndRefusesLaterHandOffs()
    {
        var factory = new HandOffConnectionListenerFactory();
        var endpoint = new HandOffEndPoint("unbind", [new IPEndPoint(IPAddress.Loopback, 443)]);
        Assert.True(factory.CanBind(endpoint));
        Assert.False(factory.CanBind(new IPEndPoint(IPAddress.Loopback, 443)));
        Assert.Equal("handoff:unbind (127.0.0.1:443)", endpoint.ToString());

        var listener = await factory.BindAsync(endpoint);
        var accept = listener.AcceptAsync().AsTask();
        Assert.False(accept.IsCompleted);
        await listener.UnbindAsync();
        Assert.Null(await accept.WaitAsync(Patience));
        Assert.Null(await listener.AcceptAsync());

        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var session = f.Tls.NewSession((int)socket.Handle);
        var any = new IPEndPoint(IPAddress.Loopback, 0);
        Assert.False(factory.HandOff(endpoint, socket, session, ReadOnlyMemory<byte>.Empty, any, any));
        Assert.False(socket.SafeHandle.IsClosed); // refused: still the caller's

        // The name is free again (Kestrel rebinds on configuration reload).
        await using var again = await factory.BindAsync(new HandOffEndPoint("unbind"));
    }

    [Fact]
    public void HandOff_ToAnEndPointNeverBound_ReturnsFalse_AndLeavesTheConnectionToTheCaller()
    {
        var factory = new HandOffConnectionListenerFactory();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var session = f.Tls.NewSession((int)socket.Handle);
        var any = new IPEndPoint(IPAddress.Loopback, 0);
        Assert.False(factory.HandOff(new HandOffEndPoint("nobody"), socket, session, "GET / HTTP/1.1\r\n\r\n"u8.ToArray(), any, any));
        Assert.False(socket.SafeHandle.IsClosed);
        Assert.Equal(0, session.PendingCiphertext); // the write side was not detached
    }

    [Fact]
    public async Task Unbind_ClosesConnectionsQueuedButNotAccepted()
    {
        var factory = new HandOffConnectionListenerFactory();
        var endpoint = new HandOffEndPoint("queued");
        var listener = await factory.BindAsync(endpoint);
        using var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        server.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        server.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(server.LocalEndPoint!);
        var accepted = await server.AcceptAsync();
        var session = f.Tls.NewSession((int)accepted.Handle);
        Assert.True(factory.HandOff(endpoint, accepted, session, ReadOnlyMemory<byte>.Empty,
            (IPEndPoint)accepted.LocalEndPoint!, (IPEndPoint)accepted.RemoteEndPoint!));

        await listener.UnbindAsync();
        Assert.True(accepted.SafeHandle.IsClosed);
        using var timeout = new CancellationTokenSource(Patience);
        Assert.Equal(0, await client.ReceiveAsync(new byte[16], SocketFlags.None, timeout.Token)); // EOF
    }
}
