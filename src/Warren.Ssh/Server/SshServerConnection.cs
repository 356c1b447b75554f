using System.Net;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Server;

/// <summary>An authenticated server-side connection (RFC 4254).</summary>
public sealed class SshServerConnection
{
    private readonly ChannelMux _mux;

    internal SshServerConnection(ChannelMux mux, string user, SshPublicKey? authenticatedKey, string method, SshPermissions permissions,
        EndPoint localEndPoint, EndPoint remoteEndPoint, string clientVersion, ReadOnlyMemory<byte> sessionId)
    {
        _mux = mux;
        User = user;
        AuthenticatedKey = authenticatedKey;
        Permissions = permissions;
        AuthenticationMethod = method;
        LocalEndPoint = localEndPoint;
        RemoteEndPoint = remoteEndPoint;
        ClientVersion = clientVersion;
        SessionId = sessionId;
    }

    internal ChannelMux Mux => _mux;

    /// <summary>The user name the client authenticated as (peer-chosen text).</summary>
    public string User { get; }

    /// <summary>
    /// The public key whose signature over this session VERIFIED; null when
    /// another method (keyboard-interactive, password) succeeded. Never a key
    /// that was merely offered or queried.
    /// </summary>
    public SshPublicKey? AuthenticatedKey { get; }

    /// <summary>
    /// What the successful authentication decision granted (<see cref="ISshServerApplication.AuthorizePublicKeyAsync"/>
    /// for <see cref="AuthenticatedKey"/>, or the keyboard-interactive / password answer): the connection's identity.
    /// </summary>
    public SshPermissions Permissions { get; }

    /// <summary>"publickey", "keyboard-interactive" or "password".</summary>
    public string AuthenticationMethod { get; }

    public EndPoint LocalEndPoint { get; }
    public EndPoint RemoteEndPoint { get; }
    public string ClientVersion { get; }
    public ReadOnlyMemory<byte> SessionId { get; }

    /// <summary>
    /// True once the application accepted an <see cref="SshAuthAgentRequest"/> on some session of this
    /// connection; only then may <see cref="OpenAgentChannelAsync"/> be called.
    /// </summary>
    public bool AgentForwardingAccepted => _mux.AgentForwardingAccepted;

    /// <summary>Cancelled when the connection is closing.</summary>
    public CancellationToken Closing => _mux.Closing;

    /// <summary>Completes when the connection is over.</summary>
    public Task Completion => _mux.Completion;

    /// <summary>The next channel the client asked for; throws <see cref="SshConnectionClosedException"/> when the connection ends.</summary>
    public ValueTask<SshChannelOpenRequest> AcceptChannelAsync(CancellationToken cancellationToken = default)
        => _mux.AcceptChannelAsync(cancellationToken);

    /// <summary>Channels the client asks for, until the connection ends.</summary>
    public IAsyncEnumerable<SshChannelOpenRequest> AcceptChannelsAsync(CancellationToken cancellationToken = default)
        => _mux.AcceptChannelsAsync(cancellationToken);

    /// <summary>Opens "forwarded-tcpip" (RFC 4254 §7.2) for a connection to a remote-forwarded port.</summary>
    public Task<SshChannel> OpenForwardedTcpIpChannelAsync(string connectedAddress, uint connectedPort, string originatorAddress, uint originatorPort, CancellationToken cancellationToken = default)
    {
        var w = new SshWriter();
        w.WriteString(connectedAddress).WriteUInt32(connectedPort).WriteString(originatorAddress).WriteUInt32(originatorPort);
        return _mux.OpenChannelAsync(SshChannelTypes.ForwardedTcpIp, w.WrittenMemory, cancellationToken);
    }

    /// <summary>
    /// Opens "auth-agent@openssh.com" to the client's forwarded agent (OpenSSH PROTOCOL.agent).
    /// Only after the application accepted an <see cref="SshAuthAgentRequest"/>
    /// (<see cref="AgentForwardingAccepted"/>): a client that did not offer its agent treats such an
    /// open as an attack (OpenSSH warns "Warning: ssh server tried agent forwarding").
    /// </summary>
    /// <exception cref="InvalidOperationException">No agent forwarding request was accepted on this connection.</exception>
    public Task<SshChannel> OpenAgentChannelAsync(CancellationToken cancellationToken = default)
    {
        if (!_mux.AgentForwardingAccepted)
            throw new InvalidOperationException("No auth-agent-req@openssh.com was accepted on this connection.");
        return _mux.OpenChannelAsync(SshChannelTypes.AuthAgent, default, cancellationToken);
    }

    /// <summary>Sends DISCONNECT after everything already queued and ends the connection.</summary>
    public ValueTask DisconnectAsync(SshDisconnectReason reason = SshDisconnectReason.ByApplication, string description = "", CancellationToken cancellationToken = default)
        => _mux.DisconnectAsync(reason, description, cancellationToken);

    public override string ToString() => $"{User}@{RemoteEndPoint}";
}
