using Warren.Ssh.Crypto;
using Warren.Ssh.Keys;

namespace Warren.Ssh.Transport;

/// <summary>Settings shared by both ends of <see cref="SshTransport"/>.</summary>
public abstract class SshTransportOptions
{
    /// <summary>Default identification string (RFC 4253 §4.2).</summary>
    public const string DefaultVersion = "SSH-2.0-Warren_1.0";

    /// <summary>RFC 4253 §9: rekey after at most 1 GiB each way (OpenSSH's default RekeyLimit for modern ciphers).</summary>
    public const long DefaultRekeyBytes = 1L << 30;

    /// <summary>RFC 4344 §3.1: rekey well before the 32-bit sequence number wraps; 2^31 packets (OpenSSH uses the same).</summary>
    public const long DefaultRekeyPackets = 1L << 31;

    /// <summary>RFC 4253 §9: "after each hour of connection time".</summary>
    public static readonly TimeSpan DefaultRekeyInterval = TimeSpan.FromHours(1);

    /// <summary>
    /// Upper-layer packets buffered while a key exchange is in progress before
    /// <see cref="SshTransport.SendAsync"/> waits: 64 as in golang.org/x/crypto/ssh
    /// (maxPendingPackets); with 256 KiB packets that bounds the queue at 16 MiB.
    /// </summary>
    public const int DefaultMaxQueuedPacketsDuringKex = 64;

    /// <summary>Preferred first. Unknown names are ignored.</summary>
    public IReadOnlyList<string> KexAlgorithms { get; set; } = SshAlgorithms.DefaultKexAlgorithms;
    public IReadOnlyList<string> HostKeyAlgorithms { get; set; } = SshAlgorithms.DefaultHostKeyAlgorithms;
    public IReadOnlyList<string> Ciphers { get; set; } = SshAlgorithms.DefaultCiphers;
    public IReadOnlyList<string> Macs { get; set; } = SshAlgorithms.DefaultMacs;

    /// <summary>Our identification line without CR LF; must start with "SSH-2.0-".</summary>
    public string Version { get; set; } = DefaultVersion;

    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    public ISshRandom Random { get; set; } = SshRandom.Default;

    /// <summary>Bytes sent or received under one set of keys before a rekey starts.</summary>
    public long RekeyBytes { get; set; } = DefaultRekeyBytes;

    /// <summary>Packets sent or received under one set of keys before a rekey starts.</summary>
    public long RekeyPackets { get; set; } = DefaultRekeyPackets;

    /// <summary>Time under one set of keys before a rekey starts; checked on the housekeeping tick.</summary>
    public TimeSpan RekeyInterval { get; set; } = DefaultRekeyInterval;

    /// <summary>See <see cref="DefaultMaxQueuedPacketsDuringKex"/>.</summary>
    public int MaxQueuedPacketsDuringKex { get; set; } = DefaultMaxQueuedPacketsDuringKex;

    /// <summary>
    /// When set, a transport-level keepalive is sent after this much inbound silence:
    /// ping@openssh.com if the peer advertised it (RFC 8308 ext-info), SSH_MSG_IGNORE otherwise.
    /// Null (default) disables it; the connection layer's keepalive@openssh.com is the usual mechanism.
    /// </summary>
    public TimeSpan? KeepAliveInterval { get; set; }

    /// <summary>Unanswered pings (peer supports ping@openssh.com) before the connection is dropped with ConnectionLost.</summary>
    public int KeepAliveCountMax { get; set; } = 3;

    /// <summary>Offer strict key exchange (OpenSSH PROTOCOL §1.10, the Terrapin countermeasure). On by default.</summary>
    public bool StrictKex { get; set; } = true;
}

/// <summary>Server-side transport settings.</summary>
public sealed class SshTransportServerOptions : SshTransportOptions
{
    /// <summary>Host keys; the negotiated host key algorithm picks one (RFC 4253 §7.1).</summary>
    public IReadOnlyList<SshPrivateKey> HostKeys { get; set; } = [];

    /// <summary>RFC 8308 §3.1 "server-sig-algs" sent in EXT_INFO when the client offered ext-info-c.</summary>
    public IReadOnlyList<string> ServerSigAlgs { get; set; } = SshAlgorithms.DefaultHostKeyAlgorithms;
}

/// <summary>Client-side transport settings.</summary>
public sealed class SshTransportClientOptions : SshTransportOptions
{
    /// <summary>
    /// Decides whether the server's host key is acceptable (known_hosts check or
    /// similar). Called once, on the first key exchange, after the server proved
    /// possession of the key; a later rekey must present the same key.
    /// </summary>
    public Func<SshPublicKey, ValueTask<bool>>? HostKeyValidator { get; set; }

    /// <summary>Offer ext-info-c (RFC 8308 §2.1) so the server sends server-sig-algs.</summary>
    public bool RequestExtInfo { get; set; } = true;
}
