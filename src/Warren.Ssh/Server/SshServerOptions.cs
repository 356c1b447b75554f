using Warren.Ssh.Auth;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Transport;

namespace Warren.Ssh.Server;

/// <summary>Configuration of an <see cref="SshServer"/>.</summary>
public sealed class SshServerOptions
{
    /// <summary>OpenSSH sshd_config MaxAuthTries default.</summary>
    public const int DefaultMaxAuthAttempts = 6;

    /// <summary>OpenSSH sshd_config LoginGraceTime default.</summary>
    public static readonly TimeSpan DefaultLoginGraceTime = TimeSpan.FromSeconds(120);

    /// <summary>OpenSSH MaxStartups "10:30:100": beyond 100 unauthenticated connections all are refused.</summary>
    public const int DefaultMaxUnauthenticatedConnections = 100;

    /// <summary>OpenSSH PerSourceMaxStartups is unlimited by default; 10 (MaxStartups' start value) per source (an IPv4 address or an IPv6 /64, <see cref="SourceNetwork"/>) keeps one host from taking all slots.</summary>
    public const int DefaultMaxUnauthenticatedConnectionsPerSource = 10;

    /// <summary>Host keys, one per key type; the transport picks by negotiated algorithm.</summary>
    public required IReadOnlyList<SshPrivateKey> HostKeys { get; init; }

    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Failed authentication requests ("none" included) before DISCONNECT NO_MORE_AUTH_METHODS_AVAILABLE.</summary>
    public int MaxAuthAttempts { get; init; } = DefaultMaxAuthAttempts;

    /// <summary>Time from accept to successful authentication; the connection is dropped after it.</summary>
    public TimeSpan LoginGraceTime { get; init; } = DefaultLoginGraceTime;

    public int MaxUnauthenticatedConnections { get; init; } = DefaultMaxUnauthenticatedConnections;
    public int MaxUnauthenticatedConnectionsPerSource { get; init; } = DefaultMaxUnauthenticatedConnectionsPerSource;

    /// <summary>Window, packet size and channel-count limits of each connection.</summary>
    public SshConnectionLimits ConnectionLimits { get; init; } = new();

    /// <summary>Methods offered; password and keyboard-interactive must be switched on explicitly.</summary>
    public SshAuthMethodSet AuthenticationMethods { get; init; } = SshAuthMethodSet.PublicKey;

    /// <summary>Text sent as SSH_MSG_USERAUTH_BANNER (RFC 4252 §5.4), or null.</summary>
    public string? Banner { get; init; }

    /// <summary>
    /// Called by <see cref="SshServer.ServeAsync(System.Net.Sockets.Socket, CancellationToken)"/> when the
    /// connection handler's RunAsync throws (peer errors are handled and never reported here).
    /// </summary>
    public Action<System.Net.EndPoint, Exception>? ConnectionFailed { get; init; }

    /// <summary>
    /// Transport algorithms, version string, rekey and keepalive settings. When
    /// its HostKeys list is empty, <see cref="HostKeys"/> is used.
    /// </summary>
    public SshTransportServerOptions? Transport { get; init; }
}
