using Warren.Ssh.Auth;
using Warren.Ssh.Keys;

namespace Warren.Ssh.Server;

/// <summary>
/// What a platform plugs into <see cref="SshServer"/>: authentication decisions, each of which yields the
/// connection's <see cref="SshPermissions"/> (the identity it carries), and a handler per authenticated
/// connection. golang.org/x/crypto/ssh works the same way: its auth callbacks return <c>*Permissions</c>, which
/// the <c>ServerConn</c> keeps; ContainerSSH hands each connection its own handler after the handshake.
/// Called concurrently for different connections; calls for one connection never overlap during auth.
/// </summary>
public interface ISshServerApplication
{
    /// <summary>
    /// Would <paramref name="key"/> let <paramref name="user"/> in, and as whom? Return the permissions the
    /// connection gets, or null to refuse. Asked for the query form (non-null → PK_OK, RFC 4252 §7) and for a
    /// signed request only after its signature VERIFIED; the server remembers the last answer for the same user
    /// and key (as x/crypto/ssh's <c>cachedPubKeys</c>), so a query followed by the signed request costs one
    /// decision. An answer to a query proves nothing about the client: the permissions reach
    /// <see cref="SshServerConnection.Permissions"/> only with a key whose signature verified.
    /// </summary>
    ValueTask<SshPermissions?> AuthorizePublicKeyAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken cancellationToken);

    /// <summary>
    /// Keyboard-interactive (RFC 4256), called only when
    /// <see cref="SshServerOptions.AuthenticationMethods"/> includes it. Use the
    /// prompter to ask questions; return the permissions to let the user in, null to refuse.
    /// </summary>
    ValueTask<SshPermissions?> AuthenticateKeyboardInteractiveAsync(SshAuthContext context, string user, IKeyboardInteractivePrompter prompter, CancellationToken cancellationToken)
        => ValueTask.FromResult<SshPermissions?>(null);

    /// <summary>Password (RFC 4252 §8), called only when configured. Never log the password.</summary>
    ValueTask<SshPermissions?> AuthenticatePasswordAsync(SshAuthContext context, string user, string password, CancellationToken cancellationToken)
        => ValueTask.FromResult<SshPermissions?>(null);

    /// <summary>
    /// The handler of one authenticated connection, made after authentication and before the connection layer
    /// (RFC 4254) reads anything: global requests such as "tcpip-forward" go to this handler and cannot arrive
    /// before it exists. Decide here what the connection leads to; do no channel I/O (that is
    /// <see cref="ISshConnectionHandler.RunAsync"/>'s). A throw disconnects the client.
    /// </summary>
    ValueTask<ISshConnectionHandler> OpenConnectionAsync(SshServerConnection connection);
}

/// <summary>
/// One authenticated connection's own object: its channels, its global requests and whatever state they share
/// (forwardings, sockets). Disposed once the connection is over.
/// </summary>
public interface ISshConnectionHandler : IAsyncDisposable
{
    /// <summary>
    /// Runs the connection: accept channels, serve them. When it returns the server disconnects.
    /// <see cref="SshServerConnection.Closing"/> is cancelled when the peer goes away.
    /// </summary>
    ValueTask RunAsync();

    /// <summary>
    /// "tcpip-forward" (RFC 4254 §7.1). Return null to refuse, otherwise the bound
    /// port (the chosen one when <paramref name="bindPort"/> is 0). Forwarded
    /// connections are then offered with <see cref="SshServerConnection.OpenForwardedTcpIpChannelAsync"/>.
    /// </summary>
    ValueTask<uint?> RequestTcpipForwardAsync(string bindAddress, uint bindPort, CancellationToken cancellationToken)
        => ValueTask.FromResult<uint?>(null);

    /// <summary>"cancel-tcpip-forward" (RFC 4254 §7.1); true if a forwarding was removed.</summary>
    ValueTask<bool> CancelTcpipForwardAsync(string bindAddress, uint bindPort, CancellationToken cancellationToken)
        => ValueTask.FromResult(false);

    ValueTask IAsyncDisposable.DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>
/// What an authentication decision grants: the identity a connection carries from authentication to its
/// handler (golang.org/x/crypto/ssh's <c>Permissions</c>). Applications derive from it to carry their own
/// account, key and limits; <see cref="Granted"/> carries nothing.
/// </summary>
public class SshPermissions
{
    /// <summary>Permission to enter, with nothing more to carry.</summary>
    public static SshPermissions Granted { get; } = new();
}
