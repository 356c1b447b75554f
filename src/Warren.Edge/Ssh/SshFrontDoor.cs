using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Warren.Edge.Limits;
using Warren.Edge.ProxyProtocol;
using Warren.Platform;
using Warren.Ssh.Server;

namespace Warren.Edge.Ssh;

/// <summary>
/// The SSH listeners: one on the control address and one per shared slot address, all on
/// the same port. Each accepted socket passes the connection-rate guard and the PROXY
/// protocol policy, then goes to <see cref="SshServer"/> with the local endpoint that counts
/// for routing (the header's destination when a trusted proxy sent one).
/// </summary>
public sealed class SshFrontDoor(
    SshServer server,
    PlatformOptions platform,
    SshFrontDoorOptions options,
    TimeProvider time,
    ILogger<SshFrontDoor> logger) : BackgroundService
{
    private readonly ProxyProtocolPolicy _proxyPolicy = ProxyProtocolPolicy.Parse(options.TrustedProxies);
    /// <summary>New connections per source network (an IPv4 address or an IPv6 /64: one client holds a whole /64).</summary>
    private readonly KeyedTokenBucket<SourceNetwork> _connectionLimiter = new(time, options.ConnectionBurstPerSource, options.ConnectionsPerSecondPerSource, overdraft: 0);
    private readonly SourceRefusalLog _rateRefusals = new(logger,
        "SSH connection rate limit ({Limit} new connections per source, then a steady rate) reached for {Source}; connections refused", options.ConnectionBurstPerSource, time);
    private readonly List<Socket> _listeners = [];

    /// <summary>Every address the front door listens on: control first, then the slots.</summary>
    public IReadOnlyList<IPEndPoint> Endpoints =>
        [new IPEndPoint(IPAddress.Parse(platform.ControlLocalIp), platform.SshPort),
         .. platform.EffectiveSlots.Select(s => new IPEndPoint(IPAddress.Parse(s.LocalIp), platform.SshPort))];

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        // Bind synchronously so a port conflict fails the start instead of a background task.
        foreach (var ep in Endpoints)
        {
            var socket = new Socket(ep.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(ep);
            socket.Listen(SshServer.ListenBacklog);
            _listeners.Add(socket);
            logger.LogInformation("SSH listening on {Endpoint}", ep);
        }
        return base.StartAsync(cancellationToken);
    }

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Task.WhenAll(_listeners.Select(l => AcceptLoopAsync(l, stoppingToken)));

    private async Task AcceptLoopAsync(Socket listener, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Socket socket;
            try { socket = await listener.AcceptAsync(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { break; }
            catch (SocketException e) { logger.LogWarning("accept failed: {Error}", e.SocketErrorCode); continue; }
            _ = HandleAsync(socket, ct);
        }
    }

    private async Task HandleAsync(Socket socket, CancellationToken ct)
    {
        var remote = (IPEndPoint)socket.RemoteEndPoint!;
        var local = (IPEndPoint)socket.LocalEndPoint!;
        socket.NoDelay = true;
        var stream = new NetworkStream(socket, ownsSocket: true);
        try
        {
            var source = SourceNetwork.Of(remote.Address);
            if (!_connectionLimiter.TryAcquire(source, out _))
            {
                _rateRefusals.Refused(source); // once per source per minute: a flood must not flood the log
                return;
            }
            var accepted = await _proxyPolicy.AcceptAsync(stream, remote, local, ProxyProtocolOptions.Default, ct).ConfigureAwait(false);
            // The SSH server swallows read errors during version exchange; the observer keeps the
            // reason when an untrusted peer's first bytes were a PROXY header, so it can be logged.
            var observed = new ProxyRefusalObserver(accepted.Stream);
            await server.HandleConnectionAsync(observed, accepted.LocalEndPoint, accepted.RemoteEndPoint, ct).ConfigureAwait(false);
            if (observed.Refusal is { } refusal) throw refusal;
        }
        catch (ProxyProtocolException e)
        {
            logger.LogWarning("PROXY protocol from {Source} refused: {Error}", remote, e.Error);
        }
        catch (OperationCanceledException) { }
        catch (Exception e) when (e is IOException or SocketException)
        {
            logger.LogDebug("connection from {Source} ended: {Error}", remote, e.Message);
        }
        catch (Exception e)
        {
            logger.LogError(e, "SSH connection from {Source} failed", remote);
        }
        finally
        {
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        foreach (var l in _listeners) l.Dispose();
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>
/// Passes a connection's stream through and remembers a <see cref="ProxyProtocolException"/> thrown by
/// its first reads (the untrusted-header guard decides within the first bytes). After
/// <see cref="ObservedBytes"/> bytes it stops looking, so the data path costs one delegating call.
/// </summary>
internal sealed class ProxyRefusalObserver(Stream inner) : ReadInterceptingStream(inner)
{
    /// <summary>Bytes after which no PROXY verdict can come: the v2 signature (12) is the longest prefix the guard inspects.</summary>
    private const int ObservedBytes = 16;

    private int _seen;

    public ProxyProtocolException? Refusal { get; private set; }

    public override int Read(Span<byte> buffer)
    {
        if (_seen >= ObservedBytes) return Inner.Read(buffer);
        try { int n = Inner.Read(buffer); _seen += n; return n; }
        catch (ProxyProtocolException e) { Refusal = e; throw; }
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        => _seen >= ObservedBytes ? Inner.ReadAsync(buffer, cancellationToken) : ObserveAsync(buffer, cancellationToken);

    private async ValueTask<int> ObserveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        try { int n = await Inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false); _seen += n; return n; }
        catch (ProxyProtocolException e) { Refusal = e; throw; }
    }
}
