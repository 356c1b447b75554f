namespace Warren.Edge.Ssh;

/// <summary>Front-door settings beyond <see cref="Warren.Platform.PlatformOptions"/> (config section "Warren:Ssh").</summary>
public sealed class SshFrontDoorOptions
{
    public const string SectionName = "Warren:Ssh";

    /// <summary>
    /// Source networks allowed to send a PROXY protocol v1/v2 header (e.g. a load balancer).
    /// A header from any other source is refused and the connection dropped (GHSA-4w53-6jvp-gg52).
    /// </summary>
    public List<string> TrustedProxies { get; set; } = [];

    /// <summary>New connections a source (an IPv4 address or an IPv6 /64) may open per second, after a burst (connection flood guard).</summary>
    public double ConnectionsPerSecondPerSource { get; set; } = 20;
    public int ConnectionBurstPerSource { get; set; } = 100;

    /// <summary>Failed authentications a source may accumulate per minute before it is refused for a while.</summary>
    public int FailedAuthBurstPerSource { get; set; } = 30;
    public double FailedAuthsPerSecondPerSource { get; set; } = 0.5;

    /// <summary>
    /// Connections still in key exchange or authentication, per source (an IPv4 address or an IPv6 /64) and in total
    /// (OpenSSH MaxStartups); past either the client gets DISCONNECT reason 12, too many connections (RFC 4253 §11.1).
    /// </summary>
    public int MaxUnauthenticatedConnectionsPerSource { get; set; } = Warren.Ssh.Server.SshServerOptions.DefaultMaxUnauthenticatedConnectionsPerSource;
    public int MaxUnauthenticatedConnections { get; set; } = Warren.Ssh.Server.SshServerOptions.DefaultMaxUnauthenticatedConnections;

    /// <summary>
    /// The key exchange, host key, cipher and MAC algorithms every SSH listener offers: <c>compatible</c> (the default,
    /// everything implemented) or <c>modern</c> (no NIST curves; Curve25519/sntrup761/ML-KEM key exchange, the Ed25519
    /// host key, ChaCha20-Poly1305 and AES-GCM, encrypt-then-MAC). Client keys of every kind are still accepted.
    /// </summary>
    public Warren.Ssh.Crypto.SshAlgorithmProfile AlgorithmProfile { get; set; } = Warren.Ssh.Crypto.SshAlgorithmProfile.Compatible;
}
