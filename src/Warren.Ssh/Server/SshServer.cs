using System.Net;
using Warren.Ssh.Auth;
using Warren.Ssh.Connection;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Server;

/// <summary>
/// An SSH server: transport, authentication (RFC 4252/4256) and the connection
/// protocol (RFC 4254), with an <see cref="ISshServerApplication"/> deciding who
/// gets in and what their channels do.
/// </summary>
public sealed partial class SshServer
{
    private readonly SshServerOptions _options;
    private readonly ISshServerApplication _application;
    private readonly object _gate = new();
    /// <summary>Unauthenticated connections per source: an IPv4 address or an IPv6 /64, so an IPv6 client cannot rotate past the limit.</summary>
    private readonly Dictionary<SourceNetwork, int> _unauthenticatedPerSource = [];
    private int _unauthenticated;

    public SshServer(SshServerOptions options, ISshServerApplication application)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(application);
        if (options.MaxAuthAttempts < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxAuthAttempts must be at least 1.");
        _options = options;
        _application = application;
        var transport = options.Transport ?? new SshTransportServerOptions { TimeProvider = options.TimeProvider };
        if (transport.HostKeys.Count == 0) transport.HostKeys = options.HostKeys;
        _transportOptions = transport;
    }

    private readonly SshTransportServerOptions _transportOptions;

    public SshServerOptions Options => _options;

    /// <summary>Connections accepted but not yet authenticated.</summary>
    public int UnauthenticatedConnectionCount { get { lock (_gate) return _unauthenticated; } }

    /// <summary>
    /// Serves one connection over a transport that has finished its first key
    /// exchange: authentication, then the connection's handler (<see cref="ISshServerApplication.OpenConnectionAsync"/>).
    /// Completes when the connection is over; does not throw for peer errors.
    /// </summary>
    public async Task HandleConnectionAsync(ISshPacketChannel transport, EndPoint localEndPoint, EndPoint remoteEndPoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transport);
        var source = SourceNetwork.Of(remoteEndPoint);
        if (!TryEnterUnauthenticated(source))
        {
            await SafeDisconnectAsync(transport, SshDisconnectReason.TooManyConnections, TooManyConnectionsMessage).ConfigureAwait(false);
            return;
        }
        bool slotHeld = true;
        try
        {
            using var grace = new CancellationTokenSource(_options.LoginGraceTime, _options.TimeProvider);
            await ServeAuthenticatedAsync(transport, localEndPoint, remoteEndPoint, grace, () =>
            {
                if (slotHeld) { slotHeld = false; LeaveUnauthenticated(source); }
            }, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (slotHeld) LeaveUnauthenticated(source);
        }
    }

    private async Task ServeAuthenticatedAsync(ISshPacketChannel transport, EndPoint local, EndPoint remote, CancellationTokenSource grace, Action authenticated, CancellationToken cancellationToken)
    {
        AuthOutcome outcome;
        using (var linked = CancellationTokenSource.CreateLinkedTokenSource(grace.Token, cancellationToken))
        {
            var context = new SshAuthContext(local, remote, transport.SessionId, transport.RemoteVersion);
            try
            {
                outcome = await ServerAuthenticator.RunAsync(transport, context, _application, _options, linked.Token).ConfigureAwait(false);
            }
            catch (SshProtocolException ex)
            {
                await SafeDisconnectAsync(transport, ex.Reason, ex.Message).ConfigureAwait(false);
                return;
            }
            catch (OperationCanceledException) when (grace.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                await SafeDisconnectAsync(transport, SshDisconnectReason.ByApplication, "login grace time exceeded").ConfigureAwait(false);
                return;
            }
            catch (OperationCanceledException)
            {
                await SafeDisconnectAsync(transport, SshDisconnectReason.ByApplication, "server shutting down").ConfigureAwait(false);
                return;
            }
            catch (SshConnectionClosedException)
            {
                await SafeDisposeAsync(transport).ConfigureAwait(false);
                return;
            }
        }
        authenticated();

        var mux = new ChannelMux(transport, isServer: true, _options.ConnectionLimits);
        var connection = new SshServerConnection(mux, outcome.User, outcome.VerifiedKey, outcome.Method, outcome.Permissions,
            local, remote, transport.RemoteVersion, transport.SessionId);
        // The handler exists before the connection layer reads anything, so a global request never waits for it.
        ISshConnectionHandler handler;
        try
        {
            handler = await _application.OpenConnectionAsync(connection).ConfigureAwait(false);
        }
        catch
        {
            mux.Start();
            await mux.DisconnectAsync(SshDisconnectReason.ByApplication, "").ConfigureAwait(false);
            await mux.Completion.ConfigureAwait(false);
            throw;
        }
        await using (handler.ConfigureAwait(false))
        {
            mux.GlobalRequestHandler = (req, ct) => HandleGlobalRequestAsync(handler, req, ct);
            mux.Start();
            using var stop = cancellationToken.Register(() => _ = mux.DisconnectAsync(SshDisconnectReason.ByApplication, "server shutting down"));
            try
            {
                await handler.RunAsync().ConfigureAwait(false);
            }
            finally
            {
                await mux.DisconnectAsync(SshDisconnectReason.ByApplication, "").ConfigureAwait(false);
                await mux.Completion.ConfigureAwait(false);
            }
        }
    }

    private static async ValueTask<GlobalReply> HandleGlobalRequestAsync(ISshConnectionHandler handler, GlobalRequest request, CancellationToken ct)
    {
        switch (request.Name)
        {
            case "tcpip-forward":
            case "cancel-tcpip-forward":
                {
                    // RFC 4254 §7.1: string address to bind, uint32 port number to bind.
                    if (!TryParseForward(request.Data, out var address, out var port)) return GlobalReply.Failure;
                    if (request.Name == "tcpip-forward")
                    {
                        var bound = await handler.RequestTcpipForwardAsync(address, port, ct).ConfigureAwait(false);
                        if (bound is not { } p) return GlobalReply.Failure;
                        // Only a request for port 0 gets the chosen port back.
                        if (port != 0) return new GlobalReply(true);
                        var w = new SshWriter(4);
                        w.WriteUInt32(p);
                        return new GlobalReply(true, w.ToArray());
                    }
                    return new GlobalReply(await handler.CancelTcpipForwardAsync(address, port, ct).ConfigureAwait(false));
                }
            default:
                // keepalive@openssh.com, no-more-sessions@openssh.com, hostkeys-prove... and unknowns.
                return GlobalReply.Failure;
        }
    }

    private static bool TryParseForward(byte[] data, out string address, out uint port)
    {
        var r = new SshReader(data);
        port = 0;
        return r.TryReadUtf8(out address, SshChannel.MaxHostBytes) && r.TryReadUInt32(out port);
    }

    /// <summary>The DISCONNECT description past the unauthenticated-connection limits (RFC 4253 §11.1, reason 12).</summary>
    public const string TooManyConnectionsMessage = "too many unauthenticated connections from your network; try again later";

    private bool TryEnterUnauthenticated(SourceNetwork source)
    {
        lock (_gate)
        {
            if (_unauthenticated >= _options.MaxUnauthenticatedConnections) return false;
            _unauthenticatedPerSource.TryGetValue(source, out var n);
            if (n >= _options.MaxUnauthenticatedConnectionsPerSource) return false;
            _unauthenticatedPerSource[source] = n + 1;
            _unauthenticated++;
            return true;
        }
    }

    private void LeaveUnauthenticated(SourceNetwork source)
    {
        lock (_gate)
        {
            _unauthenticated--;
            if (_unauthenticatedPerSource.TryGetValue(source, out var n))
            {
                if (n <= 1) _unauthenticatedPerSource.Remove(source);
                else _unauthenticatedPerSource[source] = n - 1;
            }
        }
    }

    private static async Task SafeDisconnectAsync(ISshPacketChannel transport, SshDisconnectReason reason, string description)
    {
        try { await transport.DisconnectAsync(reason, description).ConfigureAwait(false); }
        catch (Exception) { /* peer already gone */ }
        await SafeDisposeAsync(transport).ConfigureAwait(false);
    }

    private static async Task SafeDisposeAsync(ISshPacketChannel transport)
    {
        try { await transport.DisposeAsync().ConfigureAwait(false); }
        catch (Exception) { }
    }
}
