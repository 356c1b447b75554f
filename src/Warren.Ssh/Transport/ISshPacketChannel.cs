using Warren.Ssh.Keys;

namespace Warren.Ssh.Transport;

/// <summary>
/// The transport layer (RFC 4253) as the layers above it see it: an encrypted,
/// authenticated, ordered stream of message payloads. Key exchange, rekeying,
/// IGNORE/DEBUG/UNIMPLEMENTED and keepalives are handled underneath and never
/// surface here.
/// </summary>
public interface ISshPacketChannel : IAsyncDisposable
{
    /// <summary>H from the first key exchange (RFC 4253 §7.2); signed in publickey auth.</summary>
    ReadOnlyMemory<byte> SessionId { get; }

    /// <summary>The peer's version line without CR LF, e.g. "SSH-2.0-OpenSSH_9.2p1".</summary>
    string RemoteVersion { get; }

    /// <summary>Host key the server proved possession of (client side); null on the server.</summary>
    SshPublicKey? ServerHostKey { get; }

    /// <summary>Signature algorithms the peer listed in ext-info "server-sig-algs" (RFC 8308 §3.1), empty if none.</summary>
    IReadOnlyList<string> PeerServerSigAlgs { get; }

    /// <summary>
    /// Next message for the upper layers (message number 50 and above).
    /// Throws <see cref="SshConnectionClosedException"/> when the connection ended.
    /// The packet owns a pooled buffer: dispose it once read.
    /// </summary>
    ValueTask<SshPacket> ReceiveAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Sends one payload. During a key exchange the payload is queued; past the
    /// queue bound the call waits until the exchange completes.
    /// </summary>
    ValueTask SendAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default);

    /// <summary>Sends SSH_MSG_DISCONNECT (RFC 4253 §11.1) and closes the connection.</summary>
    ValueTask DisconnectAsync(SshDisconnectReason reason, string description, CancellationToken cancellationToken = default);

    /// <summary>Completes when the connection is closed, for whatever reason.</summary>
    Task Completion { get; }
}

/// <summary>
/// A packet channel that can hand upper-layer messages straight to one consumer on its read loop, in order,
/// without the queue and the copy that <see cref="ISshPacketChannel.ReceiveAsync"/> costs per message.
/// </summary>
internal interface ISshPacketDelivery
{
    /// <summary>
    /// From now on every upper-layer message goes to <paramref name="handler"/> (messages queued for
    /// <see cref="ISshPacketChannel.ReceiveAsync"/> first, in order); <see cref="ISshPacketHandler.OnClosed"/>
    /// follows the last one when the connection ends. Call once; ReceiveAsync is not used afterwards.
    /// </summary>
    void StartDelivering(ISshPacketHandler handler);
}

/// <summary>The consumer of <see cref="ISshPacketDelivery"/>: called one message at a time, never concurrently with itself.</summary>
internal interface ISshPacketHandler
{
    /// <summary>One message; <paramref name="payload"/> is valid only during the call. Must not block or throw.</summary>
    void OnPacket(ReadOnlySpan<byte> payload);

    /// <summary>
    /// The connection ended (as ReceiveAsync would have thrown). Once, after the last message when the read loop
    /// itself ends the connection; when another thread closes it, possibly while a last OnPacket still runs.
    /// </summary>
    void OnClosed(SshConnectionClosedException error);
}

/// <summary>One received payload; disposing returns its buffer to the pool.</summary>
public readonly struct SshPacket : IDisposable
{
    private readonly byte[]? _rented;

    public SshPacket(ReadOnlyMemory<byte> payload, byte[]? rented)
    {
        Payload = payload;
        _rented = rented;
    }

    public ReadOnlyMemory<byte> Payload { get; }
    public byte MessageNumber => Payload.Span[0];

    public void Dispose()
    {
        if (_rented is not null) System.Buffers.ArrayPool<byte>.Shared.Return(_rented);
    }
}

/// <summary>Disconnect reason codes, RFC 4253 §11.1 and RFC 4250 §4.2.2.</summary>
public enum SshDisconnectReason : uint
{
    HostNotAllowedToConnect = 1,
    ProtocolError = 2,
    KeyExchangeFailed = 3,
    Reserved = 4,
    MacError = 5,
    CompressionError = 6,
    ServiceNotAvailable = 7,
    ProtocolVersionNotSupported = 8,
    HostKeyNotVerifiable = 9,
    ConnectionLost = 10,
    ByApplication = 11,
    TooManyConnections = 12,
    AuthCancelledByUser = 13,
    NoMoreAuthMethodsAvailable = 14,
    IllegalUserName = 15,
}

/// <summary>The peer broke the protocol; the connection is ended with DISCONNECT carrying <see cref="Reason"/>.</summary>
public class SshProtocolException(SshDisconnectReason reason, string message) : Exception("ssh: " + message)
{
    public SshDisconnectReason Reason { get; } = reason;
}

/// <summary>The connection is closed (by the peer, by us, or by a transport error).</summary>
public sealed class SshConnectionClosedException(string message, Exception? inner = null) : Exception("ssh: " + message, inner);
