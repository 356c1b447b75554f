using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using CsCheck;
using Warren.Edge.Http.EventLoop;
using Warren.Edge.Tests.Support;
using Warren.Edge.Tls;

namespace Warren.Edge.Tests.Http.EventLoop;

/// <summary>
/// <see cref="TlsServerContext"/>/<see cref="TlsSession"/> on real loopback sockets against real clients: SslStream,
/// openssl s_client and curl. The server side is driven by bounded polling loops on the test thread, like the
/// event loop drives it (call, and on WantRead/WantWrite wait for the socket).
/// </summary>
public sealed class TlsSessionTests : IDisposable
{
    /// <summary>Upper bound for one drive loop (handshake, one read, one write); loopback needs milliseconds.</summary>
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(15);

    /// <summary>Socket.Poll wait per WantRead/WantWrite: short, so a stuck loop still ends within <see cref="StepTimeout"/>.</summary>
    private const int PollMicroseconds = 20_000;

    /// <summary>Fuzz cases per property: each is one TCP connection and one handshake attempt.</summary>
    private const int FuzzIterations = 60;

    private const string BoxName = "web.box.localhost";
    private const string OtherName = "web.other.example";

    private readonly string _dir = Directory.CreateTempSubdirectory("warren-tlssession-").FullName;
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly List<IDisposable> _cleanup = new();

    public TlsSessionTests()
    {
        Assert.True(TlsServerContext.IsSupported, "libssl.so.3 (OpenSSL 3) is required");
        _listener.Start();
    }

    public void Dispose()
    {
        foreach (var d in Enumerable.Reverse(_cleanup))
            d.Dispose();
        _listener.Stop();
        Directory.Delete(_dir, recursive: true);
    }

    private int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    // ---------------------------------------------------------------- SslStream client

    [Theory]
    [InlineData(SslProtocols.Tls13)]
    [InlineData(SslProtocols.Tls12)]
    public async Task Handshake_EchoesBothWays(SslProtocols protocol)
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: true);
        using var pair = await ConnectAsync(context);
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false));
            await ssl.AuthenticateAsClientAsync(ClientOptions(BoxName, provider.CaCertificatePath!, protocol));
            await ssl.WriteAsync("ping from client"u8.ToArray());
            var reply = await ReadExactlyAsync(ssl, "pong: ping from client".Length);
            return (ssl.SslProtocol, ssl.NegotiatedCipherSuite, Encoding.ASCII.GetString(reply));
        });

        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
        var received = ReadExactly(pair, "ping from client".Length);
        Assert.Equal("ping from client", Encoding.ASCII.GetString(received));
        WriteAll(pair, Encoding.ASCII.GetBytes("pong: " + Encoding.ASCII.GetString(received)));

        var (clientProtocol, clientCipher, reply) = await client.WaitAsync(StepTimeout);
        Assert.Equal("pong: ping from client", reply);
        Assert.Equal(protocol, clientProtocol);
        Assert.Equal(protocol, pair.Session.Protocol);
        Assert.Equal(clientCipher, pair.Session.CipherSuite);
        Assert.Equal(BoxName, pair.Session.ServerName);
        Assert.Null(pair.Session.LastError);
    }

    [Theory]
    [InlineData(true, "h2,http/1.1", "h2")]
    [InlineData(true, "http/1.1,h2", "h2")] // the server's preference wins (RFC 7301 §3.2: the server selects)
    [InlineData(true, "http/1.1", "http/1.1")]
    [InlineData(false, "h2,http/1.1", "http/1.1")]
    [InlineData(true, "", "")]
    [InlineData(false, "", "")]
    public async Task Alpn_SelectsH2OnlyWhenEnabled(bool http2, string offered, string expected)
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2);
        using var pair = await ConnectAsync(context);
        var protocols = offered.Length == 0 ? null
            : offered.Split(',').Select(p => new SslApplicationProtocol(p)).ToList();
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false));
            var options = ClientOptions(BoxName, provider.CaCertificatePath!);
            options.ApplicationProtocols = protocols;
            await ssl.AuthenticateAsClientAsync(options);
            return ssl.NegotiatedApplicationProtocol;
        });

        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
        var clientSees = await client.WaitAsync(StepTimeout);
        var expectedProtocol = expected.Length == 0 ? default : new SslApplicationProtocol(expected);
        Assert.Equal(expectedProtocol, pair.Session.ApplicationProtocol);
        Assert.Equal(expectedProtocol, clientSees);
    }

    [Fact]
    public async Task Alpn_NoCommonProtocol_FailsWithNoApplicationProtocol()
    {
        // RFC 7301 §3.2, and what Kestrel (SslStream) does today: a fatal no_application_protocol alert.
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: false);
        using var pair = await ConnectAsync(context);
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false));
            var options = ClientOptions(BoxName, provider.CaCertificatePath!);
            options.ApplicationProtocols = [SslApplicationProtocol.Http2];
            await ssl.AuthenticateAsClientAsync(options);
        });

        Assert.Equal(TlsStatus.Failed, Drive(pair.Server, pair.Session.Handshake));
        Assert.Contains("no application protocol", pair.Session.LastError);
        await Assert.ThrowsAnyAsync<Exception>(() => client.WaitAsync(StepTimeout));
        AssertErrorQueueEmpty();
    }

    [Fact]
    public async Task Sni_SelectsCertificateByName()
    {
        var provider = TwoCertificateProvider(out var boxCa, out var otherCa);
        using var context = new TlsServerContext(provider, http2: true);

        foreach (var (name, ca, expectedSubject) in new[]
        {
            (OtherName, otherCa, "other.example"),
            (BoxName, boxCa, "box.localhost"),
            ("unknown.example", boxCa, "box.localhost"), // no match: the first certificate
        })
        {
            using var pair = await ConnectAsync(context);
            var client = Task.Run(async () =>
            {
                using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false), false, (_, _, _, _) => true);
                await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = name });
                return ssl.RemoteCertificate!.Subject;
            });
            Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
            Assert.Contains(expectedSubject, await client.WaitAsync(StepTimeout));
            Assert.Equal(name, pair.Session.ServerName);
        }
    }

    [Fact]
    public async Task Sni_Absent_UsesDefaultCertificate_AndReportsNoName()
    {
        var provider = TwoCertificateProvider(out _, out _);
        using var context = new TlsServerContext(provider, http2: true);
        using var pair = await ConnectAsync(context);
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false), false, (_, _, _, _) => true);
            // SslStream sends no SNI for an IP address (RFC 6066 §3: literal addresses are not permitted).
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "127.0.0.1" });
            return ssl.RemoteCertificate!.Subject;
        });
        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
        Assert.Contains("box.localhost", await client.WaitAsync(StepTimeout));
        Assert.Null(pair.Session.ServerName);
    }

    [Fact]
    public async Task ReloadedCertificate_IsServedToTheNextHandshake()
    {
        var provider = TwoCertificateProvider(out _, out _);
        using var context = new TlsServerContext(provider, http2: true);
        Assert.Contains("box.localhost", await HandshakeSubjectAsync(context, BoxName));

        // Replace the first certificate's files with the other.example pair: the provider hands out a new context.
        File.Copy(Path.Combine(_dir, "b", "tls", "server.crt"), Path.Combine(_dir, "a", "tls", "server.crt"), overwrite: true);
        File.Copy(Path.Combine(_dir, "b", "tls", "server.key"), Path.Combine(_dir, "a", "tls", "server.key"), overwrite: true);
        Assert.True(provider.Reload());
        Assert.Contains("other.example", await HandshakeSubjectAsync(context, "127.0.0.1"));
    }

    [Fact]
    public async Task Chain_IncludesConfiguredIntermediate_WithRsaLeaf()
    {
        using var root = CreateCa("CN=Test Root", null);
        using var intermediate = CreateCa("CN=Test Intermediate", root);
        using var leafKey = RSA.Create(2048);
        var request = new CertificateRequest("CN=chain.example", leafKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("chain.example");
        request.CertificateExtensions.Add(san.Build());
        using var intermediateKey = intermediate.GetECDsaPrivateKey()!;
        // An RSA leaf under an ECDSA intermediate: both key types of ExportPrivateKey get exercised across the tests.
        using var leaf = request.Create(intermediate.SubjectName, X509SignatureGenerator.CreateForECDsa(intermediateKey),
            DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), RandomNumberGenerator.GetBytes(16));
        string certPath = Path.Combine(_dir, "chain.crt"), keyPath = Path.Combine(_dir, "chain.key");
        File.WriteAllText(certPath, leaf.ExportCertificatePem() + "\n" + intermediate.ExportCertificatePem() + "\n");
        File.WriteAllText(keyPath, leafKey.ExportPkcs8PrivateKeyPem() + "\n");
        var provider = Track(TlsCertificateProvider.Create(new TlsOptions { Certificates = { new TlsCertificateFiles(certPath, keyPath) } }));
        using var context = new TlsServerContext(provider, http2: true);
        using var pair = await ConnectAsync(context);

        var client = Task.Run(async () =>
        {
            string[] sent = [];
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false), false, (_, _, chain, _) =>
            {
                sent = chain!.ChainPolicy.ExtraStore.Select(c => c.Thumbprint).ToArray();
                return true;
            });
            var options = new SslClientAuthenticationOptions
            {
                TargetHost = "chain.example",
                // Trusting only the root: the chain builds only if the server sent the intermediate.
                CertificateChainPolicy = new X509ChainPolicy
                {
                    TrustMode = X509ChainTrustMode.CustomRootTrust,
                    CustomTrustStore = { root },
                    RevocationMode = X509RevocationMode.NoCheck,
                },
            };
            await ssl.AuthenticateAsClientAsync(options);
            return sent;
        });
        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
        Assert.Contains(intermediate.Thumbprint, await client.WaitAsync(StepTimeout));

        // The same through the real CLI: s_client verifies against the root alone.
        string rootPath = Path.Combine(_dir, "root.crt");
        File.WriteAllText(rootPath, root.ExportCertificatePem() + "\n");
        var server = ServeOneHttpRequest(context, "chain ok");
        var result = await ExternalTool.RunAsync("sh", ["-c",
            $"printf 'GET / HTTP/1.1\\r\\nHost: chain.example\\r\\n\\r\\n' | openssl s_client -connect 127.0.0.1:{Port} " +
            $"-servername chain.example -CAfile {rootPath} -verify_return_error -ign_eof -showcerts"]);
        await server.WaitAsync(StepTimeout);
        Assert.Contains("Verify return code: 0 (ok)", result.Stdout);
        Assert.Contains("1 s:CN = Test Intermediate", result.Stdout); // the second certificate sent
    }

    [Fact]
    public async Task CloseNotify_ReadsClosed()
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: false);
        using var pair = await ConnectAsync(context);
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false));
            await ssl.AuthenticateAsClientAsync(ClientOptions(BoxName, provider.CaCertificatePath!));
            await ssl.ShutdownAsync();
            // The server answers with its own close_notify: the client then reads end of stream.
            return await ssl.ReadAsync(new byte[16]);
        });
        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
        var buffer = new byte[64];
        Assert.Equal(TlsStatus.Closed, Drive(pair.Server, () => pair.Session.Read(buffer, out _)));
        pair.Session.Shutdown();
        Assert.Equal(0, await client.WaitAsync(StepTimeout));
        AssertErrorQueueEmpty();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AbruptClientClose_ReadsClosed_WithoutExceptions(bool reset)
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: false);
        using var pair = await ConnectAsync(context);
        var client = Task.Run(async () =>
        {
            var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false));
            await ssl.AuthenticateAsClientAsync(ClientOptions(BoxName, provider.CaCertificatePath!));
            if (reset)
                pair.Client.LingerState = new LingerOption(true, 0); // close sends RST
            pair.Client.Close(); // no close_notify
        });
        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
        await client.WaitAsync(StepTimeout);
        var buffer = new byte[64];
        var status = Drive(pair.Server, () => pair.Session.Read(buffer, out _));
        Assert.True(status is TlsStatus.Closed or TlsStatus.Failed, status.ToString());
        // Writing to the vanished peer reports, never throws (EPIPE/ECONNRESET; SIGPIPE is ignored by .NET).
        var write = Drive(pair.Server, () => pair.Session.Write("late"u8, out _));
        Assert.True(write is TlsStatus.Closed or TlsStatus.Failed or TlsStatus.Done, write.ToString());
        pair.Session.Shutdown();
        AssertErrorQueueEmpty();
    }

    [Fact]
    public async Task LargeWrite_CompletesThroughPartialWrites()
    {
        const int Size = 1024 * 1024;
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: false);
        using var pair = await ConnectAsync(context);
        var payload = RandomNumberGenerator.GetBytes(Size);
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false));
            await ssl.AuthenticateAsClientAsync(ClientOptions(BoxName, provider.CaCertificatePath!));
            return await ReadExactlyAsync(ssl, Size);
        });
        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));

        int offset = 0, partial = 0;
        while (offset < Size)
        {
            int n = 0;
            Assert.Equal(TlsStatus.Done, Drive(pair.Server, () => pair.Session.Write(payload.AsSpan(offset), out n)));
            offset += n;
            if (offset < Size)
                partial++;
        }
        Assert.True(partial > 0, "SSL_MODE_ENABLE_PARTIAL_WRITE should return after a record, not the whole megabyte");
        Assert.Equal(SHA256.HashData(payload), SHA256.HashData(await client.WaitAsync(StepTimeout)));
    }

    [Fact]
    public async Task DetachWriteSide_CiphertextGoesToMemory_ReadsStayOnTheSocket()
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: false);
        using var pair = await ConnectAsync(context);
        var clientReady = new TaskCompletionSource();
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false));
            await ssl.AuthenticateAsClientAsync(ClientOptions(BoxName, provider.CaCertificatePath!));
            await ssl.WriteAsync("first"u8.ToArray());
            var reply = await ReadExactlyAsync(ssl, "from memory".Length);
            await ssl.WriteAsync("second"u8.ToArray());
            int eof = await ssl.ReadAsync(new byte[16]); // the close_notify the server sends through the BIO
            return (Encoding.ASCII.GetString(reply), eof);
        });
        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
        Assert.Equal("first", Encoding.ASCII.GetString(ReadExactly(pair, 5)));

        Assert.Equal(0, pair.Session.PendingCiphertext);
        pair.Session.DetachWriteSide();
        Assert.Equal(TlsStatus.Done, pair.Session.Write("from memory"u8, out int written));
        Assert.Equal("from memory".Length, written);
        Assert.True(pair.Session.PendingCiphertext > 0);
        SendCiphertext(pair);
        Assert.Equal(0, pair.Session.PendingCiphertext);

        Assert.Equal("second", Encoding.ASCII.GetString(ReadExactly(pair, 6)));
        pair.Session.Shutdown();
        SendCiphertext(pair);
        var (reply, eof) = await client.WaitAsync(StepTimeout);
        Assert.Equal("from memory", reply);
        Assert.Equal(0, eof);
        Assert.Throws<InvalidOperationException>(pair.Session.DetachWriteSide);
    }

    // ---------------------------------------------------------------- real CLI clients

    [Theory]
    [InlineData("-tls1_3", "TLSv1.3")]
    [InlineData("-tls1_2", "TLSv1.2")]
    public async Task OpenSslSClient_HandshakesAndGetsTheResponse(string versionFlag, string expectedVersion)
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: true);
        var server = ServeOneHttpRequest(context, "hello s_client");
        var result = await ExternalTool.RunAsync("sh", ["-c",
            $"printf 'GET / HTTP/1.1\\r\\nHost: {BoxName}\\r\\n\\r\\n' | openssl s_client -connect 127.0.0.1:{Port} " +
            $"-servername {BoxName} -alpn h2,http/1.1 {versionFlag} -CAfile {provider.CaCertificatePath} -verify_return_error -ign_eof"]);
        var seen = await server.WaitAsync(StepTimeout);
        Assert.True(result.ExitCode == 0, result.Stderr + result.Stdout);
        Assert.Contains("hello s_client", result.Stdout);
        Assert.Contains("ALPN protocol: h2", result.Stdout);
        Assert.Contains("Verify return code: 0 (ok)", result.Stdout);
        Assert.Contains(expectedVersion, result.Stdout);
        Assert.Equal(BoxName, seen.ServerName);
        Assert.Equal(SslApplicationProtocol.Http2, seen.Protocol);
    }

    [Fact]
    public async Task Curl_GetsHttp11Response()
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: false);
        var server = ServeOneHttpRequest(context, "hello curl");
        var result = await ExternalTool.RunAsync("curl", ["-k", "-sS", "--max-time", "20",
            "--resolve", $"{BoxName}:{Port}:127.0.0.1", $"https://{BoxName}:{Port}/"]);
        var seen = await server.WaitAsync(StepTimeout);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal("hello curl", result.Stdout);
        Assert.StartsWith("GET / HTTP/1.1", seen.Request);
        Assert.Equal(SslApplicationProtocol.Http11, seen.Protocol); // curl offers h2 too; http2 is off here
        Assert.Equal(BoxName, seen.ServerName);
    }

    // ---------------------------------------------------------------- hostile input

    [Fact]
    public void GarbageBytes_FailOrWait_NeverThrow_AndLeaveTheErrorQueueClean()
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: true);
        Gen.Byte.Array[1, 4096].Sample(bytes => HandshakeOnHostileBytes(context, bytes), iter: FuzzIterations, threads: 1);
        AssertFreshHandshakeWorks(context, provider);
    }

    [Fact]
    public void TruncatedOrCorruptedClientHello_FailsOrWaits_NeverThrows()
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: true);
        byte[] hello = CaptureClientHello();
        Assert.Equal(0x16, hello[0]); // a TLS handshake record (RFC 8446 §5.1)
        var cut = Gen.Int[1, hello.Length - 1].Select(n => hello[..n]);
        var corrupted = Gen.Select(Gen.Int[0, hello.Length - 1], Gen.Byte).Select((at, value) =>
        {
            var copy = (byte[])hello.Clone();
            copy[at] ^= (byte)(value | 1); // always changes the byte
            return copy;
        });
        Gen.OneOf(cut, corrupted).Sample(bytes => HandshakeOnHostileBytes(context, bytes), iter: FuzzIterations, threads: 1);
        AssertFreshHandshakeWorks(context, provider);
    }

    // ---------------------------------------------------------------- lifetime

    [Fact]
    public async Task ContextDispose_OpenSessionsKeepWorking_NewHandshakesAreRefused()
    {
        var provider = DevProvider();
        var context = new TlsServerContext(provider, http2: false);
        using var open = await ConnectAsync(context);
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(open.Client, ownsSocket: false));
            await ssl.AuthenticateAsClientAsync(ClientOptions(BoxName, provider.CaCertificatePath!));
            return await ReadExactlyAsync(ssl, 5);
        });
        Assert.Equal(TlsStatus.Done, Drive(open.Server, open.Session.Handshake));
        using var waiting = await ConnectAsync(context); // SSL made, handshake not started

        context.Dispose();
        context.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => context.NewSession(open.Server.Handle.ToInt32()));

        // The SSL holds its own SSL_CTX reference: the open connection is unaffected.
        WriteAll(open, "after"u8.ToArray());
        Assert.Equal("after", Encoding.ASCII.GetString(await client.WaitAsync(StepTimeout)));

        // A handshake reaching the servername callback after Dispose is refused cleanly.
        var refused = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(waiting.Client, ownsSocket: false));
            await ssl.AuthenticateAsClientAsync(ClientOptions(BoxName, provider.CaCertificatePath!));
        });
        Assert.Equal(TlsStatus.Failed, Drive(waiting.Server, waiting.Session.Handshake));
        Assert.False(string.IsNullOrEmpty(waiting.Session.LastError));
        await Assert.ThrowsAnyAsync<Exception>(() => refused.WaitAsync(StepTimeout));
        AssertErrorQueueEmpty();
    }

    [Fact]
    public async Task Session_EmptyBuffers_AndDispose_AreHarmless()
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: false);
        var pair = await ConnectAsync(context);
        Assert.Equal(TlsStatus.Done, pair.Session.Read(Span<byte>.Empty, out int read));
        Assert.Equal(0, read);
        Assert.Equal(TlsStatus.Done, pair.Session.Write(ReadOnlySpan<byte>.Empty, out int written));
        Assert.Equal(0, written);
        Assert.Equal(SslProtocols.None, pair.Session.Protocol);
        Assert.Equal(default, pair.Session.ApplicationProtocol);
        Assert.Equal(0, pair.Session.PendingCiphertext);
        Assert.Equal(0, pair.Session.TakeCiphertext(new byte[16]));
        pair.Session.Shutdown(); // before the handshake: skipped, no throw
        pair.Dispose();
        pair.Session.Dispose(); // idempotent
        pair.Session.Shutdown(); // after Dispose: no throw
        Assert.Throws<ObjectDisposedException>(() => pair.Session.Handshake());
    }

    [Fact]
    public async Task Session_DoesNotCloseTheFd()
    {
        var provider = DevProvider();
        using var context = new TlsServerContext(provider, http2: false);
        using var pair = await ConnectAsync(context);
        pair.Session.Dispose();
        // The socket still works after SSL_free: plain bytes still flow.
        pair.Server.Blocking = true;
        Assert.Equal(5, pair.Server.Send("plain"u8));
        var buffer = new byte[5];
        Assert.Equal(5, await pair.Client.ReceiveAsync(buffer));
        Assert.Equal("plain", Encoding.ASCII.GetString(buffer));
    }

    // ---------------------------------------------------------------- helpers

    private sealed class Pair(Socket server, Socket client, TlsSession session) : IDisposable
    {
        public Socket Server { get; } = server;
        public Socket Client { get; } = client;
        public TlsSession Session { get; } = session;

        public void Dispose()
        {
            Session.Dispose();
            Client.Dispose();
            Server.Dispose();
        }
    }

    private sealed record Served(string? ServerName, SslApplicationProtocol Protocol, string Request);

    private T Track<T>(T disposable) where T : IDisposable
    {
        _cleanup.Add(disposable);
        return disposable;
    }

    private TlsCertificateProvider DevProvider() =>
        Track(TlsCertificateProvider.Create(new TlsOptions
        {
            DataDirectory = Path.Combine(_dir, "dev"),
            VmDomain = "box.localhost",
            ControlHost = "warren.localhost",
        }));

    /// <summary>Two configured certificates (box.localhost first, other.example second), as the provider tests make them.</summary>
    private TlsCertificateProvider TwoCertificateProvider(out string boxCa, out string otherCa)
    {
        var a = new TlsOptions { DataDirectory = Path.Combine(_dir, "a"), VmDomain = "box.localhost", ControlHost = "warren.localhost" };
        var b = new TlsOptions { DataDirectory = Path.Combine(_dir, "b"), VmDomain = "other.example", ControlHost = "ctl.other.example" };
        using (var pa = TlsCertificateProvider.Create(a))
            boxCa = pa.CaCertificatePath!;
        using (var pb = TlsCertificateProvider.Create(b))
            otherCa = pb.CaCertificatePath!;
        return Track(TlsCertificateProvider.Create(new TlsOptions
        {
            Certificates =
            {
                new TlsCertificateFiles(Path.Combine(a.DataDirectory, "tls", "server.crt"), Path.Combine(a.DataDirectory, "tls", "server.key")),
                new TlsCertificateFiles(Path.Combine(b.DataDirectory, "tls", "server.crt"), Path.Combine(b.DataDirectory, "tls", "server.key")),
            },
        }));
    }

    private static X509Certificate2 CreateCa(string subject, X509Certificate2? issuer)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        if (issuer is null)
            return request.CreateSelfSigned(now.AddMinutes(-5), now.AddDays(2));
        // Not past the issuer's end, which X.509 keeps to whole seconds (a later "now" can pass it by a fraction).
        var notAfter = new DateTimeOffset(issuer.NotAfter.ToUniversalTime(), TimeSpan.Zero);
        using var unkeyed = request.Create(issuer, now.AddMinutes(-5), notAfter, RandomNumberGenerator.GetBytes(16));
        using var withKey = unkeyed.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), password: null);
    }

    private static SslClientAuthenticationOptions ClientOptions(string host, string caPath, SslProtocols protocols = SslProtocols.None)
    {
        var ca = X509CertificateLoader.LoadCertificateFromFile(caPath);
        return new SslClientAuthenticationOptions
        {
            TargetHost = host,
            EnabledSslProtocols = protocols,
            CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                CustomTrustStore = { ca },
                RevocationMode = X509RevocationMode.NoCheck,
            },
        };
    }

    /// <summary>A connected pair: the accepted server socket (non-blocking, owning the fd) with a session on its fd.</summary>
    private async Task<Pair> ConnectAsync(TlsServerContext context)
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        var connect = client.ConnectAsync(IPAddress.Loopback, Port);
        var server = await _listener.AcceptSocketAsync().WaitAsync(StepTimeout);
        await connect.WaitAsync(StepTimeout);
        server.Blocking = false;
        return new Pair(server, client, context.NewSession(server.Handle.ToInt32()));
    }

    /// <summary>Calls <paramref name="step"/> until it is neither WantRead nor WantWrite, waiting on the socket between.</summary>
    private static TlsStatus Drive(Socket socket, Func<TlsStatus> step)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var status = step();
            if (status is not (TlsStatus.WantRead or TlsStatus.WantWrite))
                return status;
            if (clock.Elapsed > StepTimeout)
                throw new TimeoutException($"still {status} after {StepTimeout}");
            socket.Poll(PollMicroseconds, status == TlsStatus.WantRead ? SelectMode.SelectRead : SelectMode.SelectWrite);
        }
    }

    private static byte[] ReadExactly(Pair pair, int count) => ReadExactly(pair.Server, pair.Session, count);

    private static byte[] ReadExactly(Socket socket, TlsSession session, int count)
    {
        var buffer = new byte[count];
        int filled = 0;
        while (filled < count)
        {
            int n = 0;
            var status = Drive(socket, () => session.Read(buffer.AsSpan(filled), out n));
            Assert.Equal(TlsStatus.Done, status);
            filled += n;
        }
        return buffer;
    }

    private static void WriteAll(Pair pair, byte[] data) => WriteAll(pair.Server, pair.Session, data);

    private static void WriteAll(Socket socket, TlsSession session, byte[] data)
    {
        int offset = 0;
        while (offset < data.Length)
        {
            int n = 0;
            Assert.Equal(TlsStatus.Done, Drive(socket, () => session.Write(data.AsSpan(offset), out n)));
            offset += n;
        }
    }

    /// <summary>Moves everything the detached write side produced onto the socket, as the hand-off stream would.</summary>
    private static void SendCiphertext(Pair pair)
    {
        var buffer = new byte[16 * 1024];
        int n;
        while ((n = pair.Session.TakeCiphertext(buffer)) > 0)
        {
            int sent = 0;
            var clock = Stopwatch.StartNew();
            while (sent < n)
            {
                Assert.True(clock.Elapsed < StepTimeout, "send did not finish");
                try
                {
                    sent += pair.Server.Send(buffer, sent, n - sent, SocketFlags.None);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    pair.Server.Poll(PollMicroseconds, SelectMode.SelectWrite);
                }
            }
        }
    }

    private static async Task<byte[]> ReadExactlyAsync(Stream stream, int count)
    {
        var buffer = new byte[count];
        await stream.ReadExactlyAsync(buffer);
        return buffer;
    }

    private async Task<string> HandshakeSubjectAsync(TlsServerContext context, string host)
    {
        using var pair = await ConnectAsync(context);
        var client = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(pair.Client, ownsSocket: false), false, (_, _, _, _) => true);
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = host });
            return ssl.RemoteCertificate!.Subject;
        });
        Assert.Equal(TlsStatus.Done, Drive(pair.Server, pair.Session.Handshake));
        return await client.WaitAsync(StepTimeout);
    }

    /// <summary>
    /// A one-shot HTTP/1.1 server on a TlsSession: accepts one connection, reads the request head, answers with
    /// <paramref name="body"/> and Connection: close, sends close_notify and closes.
    /// </summary>
    private Task<Served> ServeOneHttpRequest(TlsServerContext context, string body) => Task.Run(async () =>
    {
        using var server = await _listener.AcceptSocketAsync().WaitAsync(StepTimeout);
        server.Blocking = false;
        using var session = context.NewSession(server.Handle.ToInt32());
        Assert.Equal(TlsStatus.Done, Drive(server, session.Handshake));
        var request = new List<byte>();
        var buffer = new byte[4096];
        while (request.Count < 64 * 1024 && !Encoding.ASCII.GetString(request.ToArray()).Contains("\r\n\r\n"))
        {
            int n = 0;
            Assert.Equal(TlsStatus.Done, Drive(server, () => session.Read(buffer, out n)));
            request.AddRange(buffer.AsSpan(0, n));
        }
        var response = Encoding.ASCII.GetBytes(
            $"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}");
        WriteAll(server, session, response);
        session.Shutdown();
        return new Served(session.ServerName, session.ApplicationProtocol, Encoding.ASCII.GetString(request.ToArray()));
    });

    /// <summary>
    /// Sends <paramref name="bytes"/> then FIN, and drives the handshake: it must end Failed (with a reason), Closed,
    /// or still wait for more; never Done, never throw; and the thread's OpenSSL error queue must be empty after.
    /// </summary>
    private void HandshakeOnHostileBytes(TlsServerContext context, byte[] bytes)
    {
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(IPAddress.Loopback, Port);
        using var server = _listener.AcceptSocket();
        server.Blocking = false;
        using var session = context.NewSession(server.Handle.ToInt32());
        client.Send(bytes);
        client.Shutdown(SocketShutdown.Send);
        var status = Drive(server, session.Handshake);
        Assert.True(status is TlsStatus.Failed or TlsStatus.Closed, $"{status} for {Convert.ToHexString(bytes.AsSpan(0, Math.Min(bytes.Length, 32)))}");
        if (status == TlsStatus.Failed)
            Assert.False(string.IsNullOrEmpty(session.LastError));
        AssertErrorQueueEmpty();
    }

    private void AssertFreshHandshakeWorks(TlsServerContext context, TlsCertificateProvider provider)
    {
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(IPAddress.Loopback, Port);
        using var server = _listener.AcceptSocket();
        server.Blocking = false;
        using var session = context.NewSession(server.Handle.ToInt32());
        var handshake = Task.Run(async () =>
        {
            using var ssl = new SslStream(new NetworkStream(client, ownsSocket: false));
            await ssl.AuthenticateAsClientAsync(ClientOptions(BoxName, provider.CaCertificatePath!));
        });
        Assert.Equal(TlsStatus.Done, Drive(server, session.Handshake));
        handshake.Wait(StepTimeout);
        Assert.True(handshake.IsCompletedSuccessfully);
        AssertErrorQueueEmpty();
    }

    /// <summary>A real ClientHello as SslStream sends it, read off a plain socket (the handshake is then abandoned).</summary>
    private byte[] CaptureClientHello()
    {
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(IPAddress.Loopback, Port);
        using var server = _listener.AcceptSocket();
        var ssl = new SslStream(new NetworkStream(client, ownsSocket: false), false, (_, _, _, _) => true);
        var handshake = ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = BoxName,
            ApplicationProtocols = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11],
        });
        // TLS record header (RFC 8446 §5.1): type, version, 2-byte length.
        var header = new byte[5];
        server.ReceiveTimeout = (int)StepTimeout.TotalMilliseconds;
        ReceiveExactly(server, header);
        var hello = new byte[5 + (header[3] << 8 | header[4])];
        header.CopyTo(hello, 0);
        ReceiveExactly(server, hello.AsSpan(5));
        server.Close();
        try
        {
            handshake.Wait(StepTimeout);
        }
        catch (AggregateException)
        {
            // expected: the server went away
        }
        ssl.Dispose();
        return hello;
    }

    private static void ReceiveExactly(Socket socket, Span<byte> into)
    {
        for (int filled = 0; filled < into.Length;)
        {
            int n = socket.Receive(into[filled..]);
            Assert.True(n > 0, "peer closed early");
            filled += n;
        }
    }

    private static void AssertErrorQueueEmpty() => Assert.Equal(0UL, OpenSsl.ERR_get_error());
}
