using Xunit;
using System.Net;
using System.Net.Sockets;
using Warren.Ssh.Crypto;
using Warren.Ssh.Keys;
using Warren.Ssh.Transport;

namespace Warren.Ssh.Tests.Transport;

/// <summary>Deterministic randomness for tests: a seeded, non-cryptographic generator.</summary>
internal sealed class SeededRandom(int seed) : ISshRandom
{
    private readonly Random _random = new(seed);
    public void Fill(Span<byte> destination)
    {
        lock (_random) _random.NextBytes(destination);
    }
}

internal static class TestHostKeys
{
    private static readonly Lazy<SshPrivateKey> s_ed25519 = new(() => Ed25519PrivateKey.Generate());
    private static readonly Lazy<SshPrivateKey> s_p256 = new(() => EcdsaPrivateKey.Generate(EcdsaCurve.NistP256));
    private static readonly Lazy<SshPrivateKey> s_p384 = new(() => EcdsaPrivateKey.Generate(EcdsaCurve.NistP384));
    private static readonly Lazy<SshPrivateKey> s_p521 = new(() => EcdsaPrivateKey.Generate(EcdsaCurve.NistP521));
    private static readonly Lazy<SshPrivateKey> s_rsa = new(() => RsaPrivateKey.Generate(2048));

    public static SshPrivateKey Ed25519 => s_ed25519.Value;
    public static IReadOnlyList<SshPrivateKey> All => [s_ed25519.Value, s_p256.Value, s_p384.Value, s_p521.Value, s_rsa.Value];

    public static SshPrivateKey For(string algorithm) => algorithm switch
    {
        SshAlgorithms.HostKeyEd25519 => s_ed25519.Value,
        SshAlgorithms.HostKeyEcdsaNistP256 => s_p256.Value,
        SshAlgorithms.HostKeyEcdsaNistP384 => s_p384.Value,
        SshAlgorithms.HostKeyEcdsaNistP521 => s_p521.Value,
        _ => s_rsa.Value,
    };
}

internal static class TransportPair
{
    /// <summary>Bound for every handshake or exchange in these tests; they finish in well under a second normally.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    public static async Task<(Stream Server, Stream Client)> LoopbackStreamsAsync()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var client = new TcpClient();
        var connect = client.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);
        var server = await listener.AcceptTcpClientAsync().WaitAsync(Timeout);
        await connect.WaitAsync(Timeout);
        server.NoDelay = client.NoDelay = true;
        return (server.GetStream(), client.GetStream());
    }

    public static async Task<(SshTransport Server, SshTransport Client)> CreateAsync(SshTransportServerOptions serverOptions, SshTransportClientOptions clientOptions)
    {
        var (s, c) = await LoopbackStreamsAsync();
        using var cts = new CancellationTokenSource(Timeout);
        var serverTask = SshTransport.AcceptAsync(s, serverOptions, cts.Token);
        var clientTask = SshTransport.ConnectAsync(c, clientOptions, cts.Token);
        try
        {
            await Task.WhenAll(serverTask, clientTask);
        }
        catch
        {
            if (serverTask.IsCompletedSuccessfully) await serverTask.Result.DisposeAsync();
            if (clientTask.IsCompletedSuccessfully) await clientTask.Result.DisposeAsync();
            throw;
        }
        return (serverTask.Result, clientTask.Result);
    }

    public static SshTransportServerOptions Server(Action<SshTransportServerOptions>? configure = null)
    {
        var o = new SshTransportServerOptions { HostKeys = TestHostKeys.All };
        configure?.Invoke(o);
        return o;
    }

    public static SshTransportClientOptions Client(Action<SshTransportClientOptions>? configure = null)
    {
        var o = new SshTransportClientOptions { HostKeyValidator = _ => ValueTask.FromResult(true) };
        configure?.Invoke(o);
        return o;
    }

    public static bool RequireExternal(string path)
    {
        if (File.Exists(path)) return true;
        if (string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase))
            Assert.Fail($"{path} is required under CI=true but is not installed.");
        return false;
    }
}
