using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Warren.Edge.Http;
using Warren.Edge.Tests.Support;
using Warren.Ssh.Server;

namespace Warren.Edge.Tests.Http;

/// <summary>The front door with a low per-source connection cap and a short first-request timeout.</summary>
public class ConnectionCapFrontDoorFixture : FrontDoorFixture
{
    public const int Cap = 20;
    public static readonly TimeSpan FirstRequest = TimeSpan.FromSeconds(2);

    protected override void ConfigureFrontDoor(HttpFrontDoorOptions options)
    {
        options.MaxConnectionsPerSource = Cap;
        options.FirstRequestTimeout = FirstRequest;
    }
}

/// <summary><see cref="ConnectionCapFrontDoorFixture"/> on Kestrel's transport.</summary>
public sealed class ConnectionCapKestrelTransportFixture : ConnectionCapFrontDoorFixture
{
    protected override void ConfigureFrontDoor(HttpFrontDoorOptions options)
    {
        base.ConfigureFrontDoor(options);
        options.Transport = HttpsTransport.Kestrel;
    }
}

public sealed class ConnectionLimitTests(ConnectionCapFrontDoorFixture fixture)
    : ConnectionLimitTestsBase(fixture), IClassFixture<ConnectionCapFrontDoorFixture>;

public sealed class ConnectionLimitKestrelTransportTests(ConnectionCapKestrelTransportFixture fixture)
    : ConnectionLimitTestsBase(fixture), IClassFixture<ConnectionCapKestrelTransportFixture>;

/// <summary>
/// Per-source connection caps and the first-request deadline, on both transports, with real sockets, TLS and curl.
/// Each test uses its own loopback source address (127.0.0.x), so the caps of one never touch another.
/// </summary>
public abstract class ConnectionLimitTestsBase(FrontDoorFixture fixture)
{
    /// <summary>The most any wait here may take; nothing should come close.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private const int Flood = 300;

    private SourceConnectionLimit Limit => fixture.Services.GetRequiredService<SourceConnectionLimit>();

    private static async Task<Socket> ConnectFromAsync(IPAddress source, int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(new IPEndPoint(source, 0));
            using var timeout = new CancellationTokenSource(Bound);
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), timeout.Token);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>True once the server has closed <paramref name="socket"/> (EOF or reset), false if still open at the bound.</summary>
    private static async Task<bool> ClosedByServerAsync(Socket socket, TimeSpan bound)
    {
        var buffer = new byte[64];
        using var timeout = new CancellationTokenSource(bound);
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
                if (n == 0)
                    return true;
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    private Task<ExternalTool.Result> CurlFromAsync(IPAddress source, params string[] extra)
    {
        var args = new List<string> { "--interface", source.ToString() };
        args.AddRange(extra);
        args.Add(fixture.Url("pub"));
        return fixture.CurlSiteAsync("pub", args.ToArray());
    }

    [Fact]
    public async Task Flood_FromOneSource_IsCapped_WhileAnotherSourceIsServed()
    {
        var flooder = IPAddress.Parse("127.0.0.21");
        var other = IPAddress.Parse("127.0.0.22");
        var sockets = new List<Socket>();
        try
        {
            int refusedAtConnect = 0;
            for (int i = 0; i < Flood; i++)
            {
                try
                {
                    sockets.Add(await ConnectFromAsync(flooder, fixture.HttpsPort));
                }
                catch (SocketException)
                {
                    refusedAtConnect++; // the server's reset overtook the handshake's completion on this side
                }
            }
            // Every connection past the cap is closed by the server as it is accepted.
            var closed = await Task.WhenAll(sockets.Select(s => ClosedByServerAsync(s, TimeSpan.FromSeconds(5))));
            int open = closed.Count(c => !c);
            Assert.Equal(Flood, sockets.Count + refusedAtConnect);
            Assert.True(open <= ConnectionCapFrontDoorFixture.Cap, $"{open} of {Flood} connections stayed open");
            Assert.True(Limit.OpenConnections(SourceNetwork.Of(flooder)) <= ConnectionCapFrontDoorFixture.Cap);

            // Another source is served meanwhile, over HTTP/1.1 and HTTP/2; the flooder is not.
            var served = await CurlFromAsync(other, "--http1.1");
            Assert.True(served.ExitCode == 0, served.Stderr);
            var served2 = await CurlFromAsync(other, "--http2");
            Assert.True(served2.ExitCode == 0, served2.Stderr);
            if (open == ConnectionCapFrontDoorFixture.Cap)
                Assert.NotEqual(0, (await CurlFromAsync(flooder, "--http1.1")).ExitCode);
        }
        finally
        {
            foreach (var socket in sockets)
                socket.Dispose();
        }
        // Once its connections close, the source is served again (the server notices the closes on its own time).
        ExternalTool.Result again = default!;
        var until = DateTime.UtcNow + Bound;
        do
        {
            again = await CurlFromAsync(flooder, "--http1.1");
        }
        while (again.ExitCode != 0 && DateTime.UtcNow < until && await Task.Delay(200).ContinueWith(_ => true));
        Assert.True(again.ExitCode == 0, again.Stderr);
    }

    private async Task<SslStream> HandshakeFromAsync(IPAddress source, SslApplicationProtocol protocol)
    {
        var socket = await ConnectFromAsync(source, fixture.HttpsPort);
        var tls = new SslStream(new NetworkStream(socket, ownsSocket: true), leaveInnerStreamOpen: false, (_, _, _, _) => true);
        using var timeout = new CancellationTokenSource(Bound);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = $"pub.{FrontDoorFixture.Domain}",
            ApplicationProtocols = [protocol],
        }, timeout.Token);
        Assert.Equal(protocol, tls.NegotiatedApplicationProtocol);
        return tls;
    }

    private static async Task<bool> TlsClosedByServerAsync(SslStream tls, TimeSpan bound)
    {
        var buffer = new byte[16 * 1024];
        using var timeout = new CancellationTokenSource(bound);
        try
        {
            while (true)
            {
                if (await tls.ReadAsync(buffer, timeout.Token) == 0)
                    return true;
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }

    [Theory]
    [InlineData("http/1.1")]
    [InlineData("h2")]
    public async Task IdleTlsConnection_WithoutARequest_IsClosed(string alpn)
    {
        var protocol = alpn == "h2" ? SslApplicationProtocol.Http2 : SslApplicationProtocol.Http11;
        var source = IPAddress.Parse(alpn == "h2" ? "127.0.0.23" : "127.0.0.24");
        await using var tls = await HandshakeFromAsync(source, protocol);
        // Closed by the first-request deadline (2 s here), long before Kestrel's 130 s keep-alive timeout.
        Assert.True(await TlsClosedByServerAsync(tls, Bound), "the idle TLS connection was still open");
    }

    [Fact]
    public async Task ConnectionThatServedARequest_OutlivesTheFirstRequestDeadline()
    {
        var source = IPAddress.Parse("127.0.0.25");
        await using var tls = await HandshakeFromAsync(source, SslApplicationProtocol.Http11);
        string head = $"HEAD / HTTP/1.1\r\nHost: pub.{FrontDoorFixture.Domain}:{fixture.HttpsPort}\r\n\r\n";
        for (int i = 0; i < 2; i++)
        {
            await tls.WriteAsync(Encoding.ASCII.GetBytes(head));
            Assert.StartsWith("HTTP/1.1 200", await ReadResponseAsync(tls));
            if (i == 0)
                await Task.Delay(ConnectionCapFrontDoorFixture.FirstRequest * 2); // past the first-request deadline
        }
    }

    /// <summary>HTTP/2 too: a connection whose streams have begun keeps going past the first-request deadline.</summary>
    [Fact]
    public async Task Http2ConnectionThatServedARequest_OutlivesTheFirstRequestDeadline()
    {
        var source = IPAddress.Parse("127.0.0.26");
        int connections = 0;
        using var handler = fixture.CreateHandler();
        handler.ConnectCallback = async (context, ct) =>
        {
            Interlocked.Increment(ref connections);
            return new NetworkStream(await ConnectFromAsync(source, fixture.HttpsPort), ownsSocket: true);
        };
        using var client = new HttpClient(handler) { Timeout = Bound };
        for (int i = 0; i < 2; i++)
        {
            var request = new HttpRequestMessage(HttpMethod.Get, fixture.Url("pub"))
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HttpVersion.Version20, response.Version);
            if (i == 0)
                await Task.Delay(ConnectionCapFrontDoorFixture.FirstRequest * 2); // past the first-request deadline
        }
        Assert.Equal(1, connections);
    }

    /// <summary>One response to a HEAD request (a head alone), as text.</summary>
    private static async Task<string> ReadResponseAsync(SslStream tls)
    {
        var received = new MemoryStream();
        var buffer = new byte[16 * 1024];
        using var timeout = new CancellationTokenSource(Bound);
        while (true)
        {
            int n = await tls.ReadAsync(buffer, timeout.Token);
            Assert.True(n > 0, "the connection closed before the response ended");
            received.Write(buffer, 0, n);
            string text = Encoding.Latin1.GetString(received.ToArray());
            int end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (end >= 0)
                return text[..end];
        }
    }
}
