using Warren.Ssh.Auth;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Client;

/// <summary>A connection to a forwarded port (RFC 4254 §7.2 "forwarded-tcpip").</summary>
public sealed record SshForwardedConnection(SshChannel Channel, string ConnectedAddress, uint ConnectedPort, string OriginatorAddress, uint OriginatorPort);

/// <summary>A channel request the server refused.</summary>
public sealed class SshRequestFailedException(string requestType) : Exception("ssh: the server refused " + requestType)
{
    public string RequestType { get; } = requestType;
}

/// <summary>
/// An SSH client connection: host key check, authentication, and channels.
/// </summary>
public sealed partial class SshClient : IAsyncDisposable
{
    private readonly ChannelMux _mux;
    private readonly object _gate = new();
    private readonly List<SshRemoteForward> _forwards = [];

    private SshClient(ChannelMux mux, SshPublicKey? authenticatedKey)
    {
        _mux = mux;
        AuthenticatedKey = authenticatedKey;
    }

    public SshPublicKey? ServerHostKey => _mux.Transport.ServerHostKey;
    public string ServerVersion => _mux.Transport.RemoteVersion;

    /// <summary>The key that authenticated us; null when another method did.</summary>
    public SshPublicKey? AuthenticatedKey { get; }

    /// <summary>Completes when the connection is over.</summary>
    public Task Completion => _mux.Completion;

    /// <summary>
    /// Authenticates over a transport whose key exchange is complete, checking the
    /// host key with <see cref="SshClientOptions.HostKeyValidator"/> first.
    /// </summary>
    public static async Task<SshClient> ConnectAsync(ISshPacketChannel transport, SshClientOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(options);
        try
        {
            if (transport.ServerHostKey is not { } hostKey || !await options.HostKeyValidator(hostKey).ConfigureAwait(false))
            {
                try { await transport.DisconnectAsync(SshDisconnectReason.HostKeyNotVerifiable, "host key not trusted", cancellationToken).ConfigureAwait(false); }
                catch (Exception) { }
                throw new SshAuthenticationException("host key not trusted");
            }
            var key = await ClientAuthenticator.RunAsync(transport, options, cancellationToken).ConfigureAwait(false);
            var mux = new ChannelMux(transport, isServer: false, options.ConnectionLimits);
            var client = new SshClient(mux, key);
            mux.Start();
            _ = Task.Run(client.DispatchIncomingChannelsAsync);
            return client;
        }
        catch (SshProtocolException ex)
        {
            try { await transport.DisconnectAsync(ex.Reason, ex.Message, CancellationToken.None).ConfigureAwait(false); } catch (Exception) { }
            await transport.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        catch (Exception)
        {
            await transport.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Opens a "session" channel (RFC 4254 §6.1) without starting anything.</summary>
    public Task<SshChannel> OpenSessionAsync(CancellationToken cancellationToken = default)
        => _mux.OpenChannelAsync(SshChannelTypes.Session, default, cancellationToken);

    /// <summary>Runs a command ("exec", RFC 4254 §6.5). Read its output from the channel; <see cref="SshChannel.WaitForExitAsync"/> gives the exit status.</summary>
    public async Task<SshChannel> ExecAsync(string command, CancellationToken cancellationToken = default)
    {
        var w = new SshWriter();
        w.WriteString(command);
        return await StartSessionAsync(SshChannelRequestTypes.Exec, w.WrittenMemory, null, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Starts a shell ("shell", RFC 4254 §6.5), after "pty-req" (§6.2) when <paramref name="tty"/> is given.</summary>
    public Task<SshChannel> OpenShellAsync(SshTtySpec? tty = null, CancellationToken cancellationToken = default)
        => StartSessionAsync(SshChannelRequestTypes.Shell, default, tty, cancellationToken);

    /// <summary>Starts a subsystem such as "sftp" ("subsystem", RFC 4254 §6.5).</summary>
    public async Task<SshChannel> OpenSubsystemAsync(string name, CancellationToken cancellationToken = default)
    {
        var w = new SshWriter();
        w.WriteString(name);
        return await StartSessionAsync(SshChannelRequestTypes.Subsystem, w.WrittenMemory, null, cancellationToken).ConfigureAwait(false);
    }

    private async Task<SshChannel> StartSessionAsync(string requestType, ReadOnlyMemory<byte> data, SshTtySpec? tty, CancellationToken cancellationToken)
    {
        var channel = await OpenSessionAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (tty is not null)
            {
                var p = new SshWriter();
                p.WriteString(tty.Term).WriteUInt32(tty.WidthChars).WriteUInt32(tty.HeightRows).WriteUInt32(tty.WidthPixels)
                 .WriteUInt32(tty.HeightPixels).WriteString(SshTerminalModes.Encode(tty.Modes));
                if (!await channel.SendRequestAsync(SshChannelRequestTypes.PtyReq, true, p.WrittenMemory, cancellationToken).ConfigureAwait(false))
                    throw new SshRequestFailedException(SshChannelRequestTypes.PtyReq);
            }
            if (!await channel.SendRequestAsync(requestType, true, data, cancellationToken).ConfigureAwait(false))
                throw new SshRequestFailedException(requestType);
            return channel;
        }
        catch
        {
            await channel.CloseAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Opens "direct-tcpip" (RFC 4254 §7.2): a TCP connection made by the server.</summary>
    public Task<SshChannel> OpenDirectTcpIpAsync(string host, uint port, string originatorAddress = "127.0.0.1", uint originatorPort = 0, CancellationToken cancellationToken = default)
    {
        var w = new SshWriter();
        w.WriteString(host).WriteUInt32(port).WriteString(originatorAddress).WriteUInt32(originatorPort);
        return _mux.OpenChannelAsync(SshChannelTypes.DirectTcpIp, w.WrittenMemory, cancellationToken);
    }

    /// <summary>
    /// Asks the server to listen ("tcpip-forward", RFC 4254 §7.1). Each connection
    /// arrives as a forwarded-tcpip channel passed to <paramref name="onConnection"/>.
    /// With port 0 the server picks one: see <see cref="SshRemoteForward.Port"/>.
    /// </summary>
    public async Task<SshRemoteForward> RequestRemoteForwardAsync(string bindHost, uint port, Func<SshForwardedConnection, Task> onConnection, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(onConnection);
        var w = new SshWriter();
        w.WriteString(bindHost).WriteUInt32(port);
        var forward = new SshRemoteForward(this, bindHost, port, onConnection);
        lock (_gate) _forwards.Add(forward);
        var reply = await _mux.SendGlobalRequestAsync("tcpip-forward", true, w.WrittenMemory, cancellationToken).ConfigureAwait(false);
        if (!reply.Success)
        {
            lock (_gate) _forwards.Remove(forward);
            throw new SshRequestFailedException("tcpip-forward");
        }
        if (port == 0)
        {
            var r = new SshReader(reply.Data);
            if (!r.TryReadUInt32(out var bound))
            {
                lock (_gate) _forwards.Remove(forward);
                throw new SshProtocolException(SshDisconnectReason.ProtocolError, "tcpip-forward reply without a port");
            }
            forward.Port = bound;
        }
        return forward;
    }

    internal async Task CancelForwardAsync(SshRemoteForward forward, CancellationToken cancellationToken)
    {
        lock (_gate) if (!_forwards.Remove(forward)) return;
        var w = new SshWriter();
        w.WriteString(forward.BindHost).WriteUInt32(forward.Port);
        await _mux.SendGlobalRequestAsync("cancel-tcpip-forward", true, w.WrittenMemory, cancellationToken).ConfigureAwait(false);
    }

    private async Task DispatchIncomingChannelsAsync()
    {
        try
        {
            await foreach (var open in _mux.AcceptChannelsAsync(CancellationToken.None).ConfigureAwait(false))
            {
                SshRemoteForward? match = null;
                if (open.ChannelType == SshChannelTypes.ForwardedTcpIp)
                    lock (_gate) match = _forwards.FirstOrDefault(f => f.Port == open.Port);
                if (match is null)
                {
                    // Agent forwarding is not offered by this client; unrequested forwards are refused.
                    await open.RejectAsync(SshChannelOpenFailureReason.AdministrativelyProhibited, "not requested").ConfigureAwait(false);
                    continue;
                }
                var channel = await open.AcceptAsync().ConfigureAwait(false);
                var connection = new SshForwardedConnection(channel, open.Host ?? "", open.Port, open.OriginatorAddress ?? "", open.OriginatorPort);
                _ = Task.Run(async () =>
                {
                    try { await match.OnConnection(connection).ConfigureAwait(false); }
                    catch (Exception) { await channel.CloseAsync().ConfigureAwait(false); }
                });
            }
        }
        catch (Exception) { /* connection ended */ }
    }

    /// <summary>Sends DISCONNECT (after what is queued) and ends the connection.</summary>
    public async Task DisconnectAsync(CancellationToken cancellationToken = default)
    {
        await _mux.DisconnectAsync(SshDisconnectReason.ByApplication, "", cancellationToken).ConfigureAwait(false);
        await _mux.Completion.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync() => await DisconnectAsync().ConfigureAwait(false);
}

/// <summary>A remote forwarding the server accepted; dispose to cancel it ("cancel-tcpip-forward").</summary>
public sealed class SshRemoteForward : IAsyncDisposable
{
    private readonly SshClient _client;

    internal SshRemoteForward(SshClient client, string bindHost, uint port, Func<SshForwardedConnection, Task> onConnection)
    {
        _client = client;
        BindHost = bindHost;
        Port = port;
        OnConnection = onConnection;
    }

    public string BindHost { get; }

    /// <summary>The bound port (the server's choice when 0 was requested).</summary>
    public uint Port { get; internal set; }

    internal Func<SshForwardedConnection, Task> OnConnection { get; }

    public Task CancelAsync(CancellationToken cancellationToken = default) => _client.CancelForwardAsync(this, cancellationToken);

    public async ValueTask DisposeAsync() => await CancelAsync().ConfigureAwait(false);
}
