using Warren.Ssh.Auth;
using Warren.Ssh.Keys;

namespace Warren.Ssh.Server;

/// <summary>
/// What a platform plugs into <see cref="SshServer"/>: authentication decisions
/// and the authenticated connection's lifetime. Called concurrently for
/// different connections; calls for one connection never overlap during auth.
/// </summary>
public interface ISshServerApplication
{
    /// <summary>
    /// Would <paramref name="key"/> let <paramref name="user"/> in? Called for the
    /// query form (answer true → PK_OK, RFC 4252 §7) and again after a signature
    /// has VERIFIED, before success. A true answer for a query proves nothing:
    /// do not remember the key as the identity. The identity is
    /// <see cref="SshServerConnection.AuthenticatedKey"/>.
    /// </summary>
    ValueTask<bool> IsPublicKeyAcceptableAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken cancellationToken);

    /// <summary>
    /// Keyboard-interactive (RFC 4256), called only when
    /// <see cref="SshServerOptions.AuthenticationMethods"/> includes it. Use the
    /// prompter to ask questions; return true to let the user in.
    /// </summary>
    ValueTask<bool> AuthenticateKeyboardInteractiveAsync(SshAuthContext context, string user, IKeyboardInteractivePrompter prompter, CancellationToken cancellationToken)
        => ValueTask.FromResult(false);

    /// <summary>Password (RFC 4252 §8), called only when configured. Never log the password.</summary>
    ValueTask<bool> AuthenticatePasswordAsync(SshAuthContext context, string user, string password, CancellationToken cancellationToken)
        => ValueTask.FromResult(false);

    /// <summary>
    /// "tcpip-forward" (RFC 4254 §7.1). Return null to refuse, otherwise the bound
    /// port (the chosen one when <paramref name="bindPort"/> is 0). Forwarded
    /// connections are then offered with <see cref="SshServerConnection.OpenForwardedTcpIpChannelAsync"/>.
    /// </summary>
    ValueTask<uint?> RequestTcpipForwardAsync(SshServerConnection connection, string bindAddress, uint bindPort, CancellationToken cancellationToken)
        => ValueTask.FromResult<uint?>(null);

    /// <summary>"cancel-tcpip-forward" (RFC 4254 §7.1); true if a forwarding was removed.</summary>
    ValueTask<bool> CancelTcpipForwardAsync(SshServerConnection connection, string bindAddress, uint bindPort, CancellationToken cancellationToken)
        => ValueTask.FromResult(false);

    /// <summary>
    /// Runs the authenticated connection: accept channels, serve them. When it
    /// returns the server disconnects. <see cref="SshServerConnection.Closing"/>
    /// is cancelled when the peer goes away.
    /// </summary>
    ValueTask RunConnectionAsync(SshServerConnection connection);
}
