using System.Security.Cryptography;
using System.Text;
using Warren.Ssh.Crypto;
using Warren.Ssh.Keys;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Transport;

/// <summary>
/// A message for the packet layer's write queue. <paramref name="BeforeWrite"/> learns the sequence number the packet
/// is about to go out with (set before the peer can possibly answer it); <paramref name="AfterWrite"/> runs once it is on the wire.
/// </summary>
internal sealed record ControlItem(byte[] Payload, bool IsKexMessage, Action? AfterWrite = null, Action<uint>? BeforeWrite = null);

/// <summary>What the key exchange needs from the packet layer underneath it (<see cref="SshTransport"/>).</summary>
internal interface IKexPacketLayer
{
    /// <summary>Queues messages for the writer, in order.</summary>
    void Enqueue(params ControlItem[] items);

    /// <summary>Called by the writer right after our KEXINIT: holds back non-kex packets (RFC 4253 §7.1).</summary>
    void BeginOutgoingKex();

    /// <summary>Called by the writer right after our NEWKEYS (RFC 4253 §7.3): the new keys protect everything after it.</summary>
    void SwitchOutgoing(PacketCipher cipher);
}

/// <summary>
/// The key-exchange state machine (RFC 4253 §7, §8) and rekeying (RFC 4253 §9), apart from the packet layer
/// in <see cref="SshTransport"/>, as golang.org/x/crypto/ssh keeps handshake.go apart from transport.go:
/// KEXINIT negotiation, the ECDH/X25519 exchange, the exchange hash and key derivation (RFC 4253 §7.2),
/// strict kex (OpenSSH PROTOCOL §1.10) and the server's first EXT_INFO (RFC 8308 §2.4).
/// </summary>
/// <remarks>
/// Threads: the read loop calls the Handle* methods one at a time; <see cref="TryStartRound"/> may come from any
/// thread (rekey thresholds on the writer, the timer, <see cref="SshTransport.StartRekey"/>) and is guarded by a lock.
/// </remarks>
internal sealed class SshKeyExchange
{
    /// <summary>RFC 8308 §3.1 extension name.</summary>
    internal const string ServerSigAlgsExtension = "server-sig-algs";

    /// <summary>OpenSSH PROTOCOL §1.9 extension name; value "0".</summary>
    internal const string PingExtension = "ping@openssh.com";

    private readonly IKexPacketLayer _packets;
    private readonly SshTransportOptions _options;
    private readonly SshTransportServerOptions? _serverOptions;
    private readonly SshTransportClientOptions? _clientOptions;
    private readonly bool _isServer;
    private readonly string _localVersion;
    private readonly string _remoteVersion;
    private readonly ISshRandom _random;
    private readonly TimeProvider _time;

    private readonly object _gate = new();
    /// <summary>The key exchange in progress; created under _gate, then used by the read loop.</summary>
    private KexRound? _round;
    private volatile bool _strict;
    private bool _peerWantsExtInfo;
    private byte[]? _sessionId;
    private SshPublicKey? _serverHostKey;
    private int _count;
    private long _lastTimestamp;

    public SshKeyExchange(IKexPacketLayer packets, SshTransportOptions options, bool isServer, string localVersion, string remoteVersion)
    {
        _packets = packets;
        _options = options;
        _serverOptions = options as SshTransportServerOptions;
        _clientOptions = options as SshTransportClientOptions;
        _isServer = isServer;
        _localVersion = localVersion;
        _remoteVersion = remoteVersion;
        _random = options.Random;
        _time = options.TimeProvider;
        _lastTimestamp = _time.GetTimestamp();
    }

    /// <summary>H of the first key exchange (RFC 4253 §7.2); null before it completes.</summary>
    public byte[]? SessionId => _sessionId;

    /// <summary>The server's verified host key (client side).</summary>
    public SshPublicKey? ServerHostKey => _serverHostKey;

    /// <summary>True when strict key exchange (OpenSSH PROTOCOL §1.10) was negotiated.</summary>
    public bool IsStrict => _strict;

    /// <summary>Completed key exchanges, the first included.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Algorithms of the most recent completed key exchange.</summary>
    public SshNegotiatedAlgorithms? Algorithms { get; private set; }

    /// <summary>The exchange in progress, or null.</summary>
    public KexRound? Round => _round;

    /// <summary>Time since the last completed exchange (RFC 4253 §9: rekey after an hour).</summary>
    public TimeSpan SinceLast => _time.GetElapsedTime(Interlocked.Read(ref _lastTimestamp));

    internal sealed class KexRound(byte[] localInit, SshKexInit localParsed)
    {
        public byte[] LocalInit { get; } = localInit;
        public SshKexInit LocalParsed { get; } = localParsed;
        public byte[]? PeerInit;
        public KeyExchangeAlgorithm? Kex;
        public SshNegotiatedAlgorithms? Algorithms;
        public bool IgnoreNextKexPacket;
        public byte[]? ClientValue;
        public bool ReplyHandled;
        public PacketCipher? IncomingCipher;
        public bool IsFirst;
        /// <summary>Sequence number our KEXINIT went out with; set by the writer.</summary>
        public volatile object? LocalInitSequenceBox;
        public uint? LocalInitSequence => LocalInitSequenceBox as uint?;
    }

    /// <summary>Queues our KEXINIT unless a key exchange is already running (or <paramref name="closed"/>). Thread-safe.</summary>
    public bool TryStartRound(bool closed)
    {
        lock (_gate)
        {
            if (_round is not null || closed) return false;
            var parsed = BuildKexInit(Volatile.Read(ref _count) == 0);
            var payload = parsed.ToPayload();
            var round = new KexRound(payload, parsed) { IsFirst = Volatile.Read(ref _count) == 0 };
            _round = round;
            _packets.Enqueue(new ControlItem(payload, IsKexMessage: true,
                AfterWrite: _packets.BeginOutgoingKex,
                BeforeWrite: sequence => round.LocalInitSequenceBox = sequence));
            return true;
        }
    }

    private SshKexInit BuildKexInit(bool first)
    {
        var kex = _options.KexAlgorithms.Where(a => SshAlgorithms.SupportedKexAlgorithms.Contains(a)).ToList();
        if (first)
        {
            if (_isServer)
            {
                kex.Add(SshAlgorithms.ExtInfoServer);
                if (_options.StrictKex) kex.Add(SshAlgorithms.StrictKexServer);
            }
            else
            {
                if (_clientOptions!.RequestExtInfo) kex.Add(SshAlgorithms.ExtInfoClient);
                if (_options.StrictKex) kex.Add(SshAlgorithms.StrictKexClient);
            }
        }
        var hostKeys = _options.HostKeyAlgorithms.Where(a => SshAlgorithms.SupportedHostKeyAlgorithms.Contains(a));
        if (_isServer) hostKeys = hostKeys.Where(a => _serverOptions!.HostKeys.Any(k => k.SignatureAlgorithms.Contains(a)));
        var ciphers = _options.Ciphers.Where(a => SshAlgorithms.SupportedCiphers.Contains(a)).ToArray();
        var macs = _options.Macs.Where(a => SshAlgorithms.SupportedMacs.Contains(a)).ToArray();
        var cookie = new byte[SshKexInit.CookieLength];
        _random.Fill(cookie);
        return new SshKexInit
        {
            Cookie = cookie,
            KexAlgorithms = [.. kex],
            ServerHostKeyAlgorithms = [.. hostKeys],
            EncryptionAlgorithmsClientToServer = ciphers,
            EncryptionAlgorithmsServerToClient = ciphers,
            MacAlgorithmsClientToServer = macs,
            MacAlgorithmsServerToClient = macs,
            CompressionAlgorithmsClientToServer = [SshAlgorithms.CompressionNone],
            CompressionAlgorithmsServerToClient = [SshAlgorithms.CompressionNone],
        };
    }

    internal static SshProtocolException KexFailed(string message) => new(SshDisconnectReason.KeyExchangeFailed, message);

    private static SshProtocolException Protocol(string message) => new(SshDisconnectReason.ProtocolError, message);

    /// <summary>The peer's KEXINIT (RFC 4253 §7.1): negotiate, and on the client send our half of the exchange.</summary>
    public void HandleKexInit(ReadOnlySpan<byte> payload, uint sequence, bool closed)
    {
        if (!SshKexInit.TryParse(payload, out var peer)) throw Protocol("malformed KEXINIT");
        TryStartRound(closed);
        var round = _round ?? throw new SshConnectionClosedException("connection closed during key exchange");
        if (round.PeerInit is not null) throw Protocol("unexpected KEXINIT during key exchange");
        round.PeerInit = payload.ToArray();

        if (round.IsFirst)
        {
            _strict = _options.StrictKex && peer!.KexAlgorithms.Contains(_isServer ? SshAlgorithms.StrictKexClient : SshAlgorithms.StrictKexServer);
            // PROTOCOL §1.10: with strict kex, KEXINIT must be the very first packet.
            if (_strict && sequence != 0) throw Protocol("strict KEX violation: KEXINIT was not the first packet");
            if (_isServer) _peerWantsExtInfo = peer!.KexAlgorithms.Contains(SshAlgorithms.ExtInfoClient);
        }

        var client = _isServer ? peer! : round.LocalParsed;
        var server = _isServer ? round.LocalParsed : peer!;
        var kexName = SshKexInit.Choose(client.KexAlgorithms.Where(a => SshAlgorithms.SupportedKexAlgorithms.Contains(a)).ToArray(), server.KexAlgorithms)
            ?? throw KexFailed("no matching key exchange method");
        var hostKey = SshKexInit.Choose(client.ServerHostKeyAlgorithms, server.ServerHostKeyAlgorithms)
            ?? throw KexFailed("no matching host key algorithm");
        var encCs = SshKexInit.Choose(client.EncryptionAlgorithmsClientToServer, server.EncryptionAlgorithmsClientToServer)
            ?? throw KexFailed("no matching cipher (client to server)");
        var encSc = SshKexInit.Choose(client.EncryptionAlgorithmsServerToClient, server.EncryptionAlgorithmsServerToClient)
            ?? throw KexFailed("no matching cipher (server to client)");
        string? macCs = null, macSc = null;
        if (!PacketCiphers.GetCipher(encCs)!.IsAead)
            macCs = SshKexInit.Choose(client.MacAlgorithmsClientToServer, server.MacAlgorithmsClientToServer) ?? throw KexFailed("no matching MAC (client to server)");
        if (!PacketCiphers.GetCipher(encSc)!.IsAead)
            macSc = SshKexInit.Choose(client.MacAlgorithmsServerToClient, server.MacAlgorithmsServerToClient) ?? throw KexFailed("no matching MAC (server to client)");
        if (SshKexInit.Choose(client.CompressionAlgorithmsClientToServer, server.CompressionAlgorithmsClientToServer) is null
            || SshKexInit.Choose(client.CompressionAlgorithmsServerToClient, server.CompressionAlgorithmsServerToClient) is null)
            throw KexFailed("no matching compression method");

        // RFC 4253 §7: a guess is right only if both sides list the same kex and host key algorithm first.
        if (peer!.FirstKexPacketFollows)
            round.IgnoreNextKexPacket = peer.KexAlgorithms.FirstOrDefault() != client.KexAlgorithms.FirstOrDefault()
                || client.KexAlgorithms.FirstOrDefault() != server.KexAlgorithms.FirstOrDefault()
                || client.ServerHostKeyAlgorithms.FirstOrDefault() != server.ServerHostKeyAlgorithms.FirstOrDefault();

        round.Algorithms = new SshNegotiatedAlgorithms(kexName, hostKey, encCs, encSc, macCs, macSc);
        round.Kex = KeyExchangeAlgorithm.Create(kexName, _random)!;
        if (!_isServer)
        {
            round.ClientValue = round.Kex.CreateClientValue();
            var init = new SshWriter(round.ClientValue.Length + 8).WriteByte(SshMessageNumbers.KexEcdhInit).WriteString(round.ClientValue).ToArray();
            _packets.Enqueue(new ControlItem(init, IsKexMessage: true));
        }
    }

    /// <summary>Server: SSH_MSG_KEX*_INIT → reply, NEWKEYS (and EXT_INFO after the first).</summary>
    public void HandleKexInitValue(ReadOnlySpan<byte> payload)
    {
        var round = _round;
        if (round?.Kex is null || round.ReplyHandled) throw Protocol("unexpected key exchange message");
        var r = new SshReader(payload[1..]);
        if (!r.TryReadString(out var clientValue)) throw Protocol("malformed key exchange init");
        round.ReplyHandled = true;
        var algs = round.Algorithms!;
        var serverValue = round.Kex.ComputeServerReply(clientValue, out var k);
        var hostKey = _serverOptions!.HostKeys.First(h => h.SignatureAlgorithms.Contains(algs.HostKey));
        var ks = hostKey.PublicKey.Blob.Span;
        var h = ExchangeHash(round.Kex, _remoteVersion, _localVersion, round.PeerInit!, round.LocalInit, ks, clientValue, serverValue, k);
        _sessionId ??= h;
        var signature = hostKey.Sign(algs.HostKey, h);
        var reply = new SshWriter(ks.Length + serverValue.Length + signature.Length + 16)
            .WriteByte(SshMessageNumbers.KexEcdhReply).WriteString(ks).WriteString(serverValue).WriteString(signature).ToArray();
        var (incoming, outgoing) = DeriveCiphers(round, k, h);
        CryptographicOperations.ZeroMemory(k);
        round.IncomingCipher = incoming;
        var items = new List<ControlItem>
        {
            new(reply, IsKexMessage: true),
            new([SshMessageNumbers.NewKeys], IsKexMessage: true, AfterWrite: () => _packets.SwitchOutgoing(outgoing)),
        };
        // RFC 8308 §2.4: EXT_INFO is the next packet after the server's first NEWKEYS.
        if (round.IsFirst && _peerWantsExtInfo) items.Add(new ControlItem(BuildExtInfo(), IsKexMessage: false));
        _packets.Enqueue([.. items]);
    }

    private byte[] BuildExtInfo()
    {
        var sigAlgs = _serverOptions!.ServerSigAlgs;
        return new SshWriter(256).WriteByte(SshMessageNumbers.ExtInfo).WriteUInt32(2)
            .WriteString(ServerSigAlgsExtension).WriteString(string.Join(',', sigAlgs))
            .WriteString(PingExtension).WriteString("0")
            .ToArray();
    }

    /// <summary>Client: SSH_MSG_KEX*_REPLY → verify the server, NEWKEYS.</summary>
    public async ValueTask HandleKexReplyAsync(ReadOnlyMemory<byte> payload)
    {
        var round = _round;
        if (round?.Kex is null || round.ClientValue is null || round.ReplyHandled) throw Protocol("unexpected key exchange message");
        round.ReplyHandled = true;
        var algs = round.Algorithms!;
        SshPublicKey hostKey;
        byte[] k, h;
        {
            var r = new SshReader(payload.Span[1..]);
            if (!r.TryReadString(out var ks) || !r.TryReadString(out var serverValue) || !r.TryReadString(out var signature))
                throw Protocol("malformed key exchange reply");
            if (!SshPublicKey.TryParseBlob(ks, out var parsed)) throw KexFailed("unsupported or malformed host key");
            hostKey = parsed;
            if (!hostKey.SignatureAlgorithms.Contains(algs.HostKey)) throw KexFailed("host key does not match the negotiated algorithm");
            k = round.Kex.ComputeClientSecret(serverValue);
            h = ExchangeHash(round.Kex, _localVersion, _remoteVersion, round.LocalInit, round.PeerInit!, ks, round.ClientValue, serverValue, k);
            if (!hostKey.Verify(algs.HostKey, h, signature)) throw KexFailed("host key signature does not verify");
        }
        if (round.IsFirst)
        {
            if (!await _clientOptions!.HostKeyValidator!(hostKey).ConfigureAwait(false))
                throw new SshProtocolException(SshDisconnectReason.HostKeyNotVerifiable, "host key not accepted");
            _serverHostKey = hostKey;
        }
        else if (!hostKey.Equals(_serverHostKey))
        {
            throw KexFailed("host key changed during rekey");
        }
        _sessionId ??= h;
        var (incoming, outgoing) = DeriveCiphers(round, k, h);
        CryptographicOperations.ZeroMemory(k);
        round.IncomingCipher = incoming;
        _packets.Enqueue(new ControlItem([SshMessageNumbers.NewKeys], IsKexMessage: true, AfterWrite: () => _packets.SwitchOutgoing(outgoing)));
    }

    /// <summary>
    /// The peer's NEWKEYS (RFC 4253 §7.3): ends the round and returns the cipher for everything the peer sends
    /// next, and whether this was the first exchange.
    /// </summary>
    public (PacketCipher Incoming, bool WasFirst) CompleteRound()
    {
        var round = _round;
        if (round?.IncomingCipher is null) throw Protocol("unexpected NEWKEYS");
        Algorithms = round.Algorithms;
        round.Kex?.Dispose();
        Interlocked.Exchange(ref _lastTimestamp, _time.GetTimestamp());
        lock (_gate)
        {
            _round = null;
            Interlocked.Increment(ref _count);
        }
        return (round.IncomingCipher, round.IsFirst);
    }

    /// <summary>RFC 4253 §8 / RFC 5656 §4 / RFC 8731 §3: H = HASH(V_C || V_S || I_C || I_S || K_S || Q_C || Q_S || K).</summary>
    internal static byte[] ExchangeHash(KeyExchangeAlgorithm kex, string clientVersion, string serverVersion,
        ReadOnlySpan<byte> clientInit, ReadOnlySpan<byte> serverInit, ReadOnlySpan<byte> hostKey,
        ReadOnlySpan<byte> clientValue, ReadOnlySpan<byte> serverValue, ReadOnlySpan<byte> encodedSecret)
    {
        var w = new SshWriter(clientInit.Length + serverInit.Length + hostKey.Length + clientValue.Length + serverValue.Length + 512);
        w.WriteString(Encoding.ASCII.GetBytes(clientVersion)).WriteString(Encoding.ASCII.GetBytes(serverVersion))
            .WriteString(clientInit).WriteString(serverInit).WriteString(hostKey)
            .WriteString(clientValue).WriteString(serverValue).WriteRaw(encodedSecret);
        var h = kex.HashData(w.WrittenSpan);
        CryptographicOperations.ZeroMemory(MemoryMarshalHelper.AsWritable(w.WrittenSpan));
        return h;
    }

    /// <summary>RFC 4253 §7.2: key = HASH(K || H || X || session_id), extended with HASH(K || H || key so far).</summary>
    internal static byte[] DeriveKey(KeyExchangeAlgorithm kex, ReadOnlySpan<byte> encodedSecret, ReadOnlySpan<byte> h, char letter, ReadOnlySpan<byte> sessionId, int length)
    {
        if (length == 0) return [];
        var w = new SshWriter(encodedSecret.Length + h.Length + sessionId.Length + 1);
        w.WriteRaw(encodedSecret).WriteRaw(h).WriteByte((byte)letter).WriteRaw(sessionId);
        var key = kex.HashData(w.WrittenSpan);
        while (key.Length < length)
        {
            w.Clear();
            w.WriteRaw(encodedSecret).WriteRaw(h).WriteRaw(key);
            key = [.. key, .. kex.HashData(w.WrittenSpan)];
        }
        return key[..length];
    }

    private (PacketCipher Incoming, PacketCipher Outgoing) DeriveCiphers(KexRound round, byte[] k, byte[] h)
    {
        var algs = round.Algorithms!;
        var sid = _sessionId!;
        PacketCipher Build(string cipherName, string? macName, char ivLetter, char keyLetter, char macLetter)
        {
            var cipher = PacketCiphers.GetCipher(cipherName)!;
            var mac = cipher.IsAead || macName is null ? null : PacketCiphers.GetMac(macName);
            var iv = DeriveKey(round.Kex!, k, h, ivLetter, sid, cipher.IvLength);
            var key = DeriveKey(round.Kex!, k, h, keyLetter, sid, cipher.KeyLength);
            var macKey = mac is null ? [] : DeriveKey(round.Kex!, k, h, macLetter, sid, mac.KeyLength);
            try
            {
                return PacketCiphers.Create(cipher, mac, key, iv, macKey);
            }
            finally
            {
                CryptographicOperations.ZeroMemory(key);
                CryptographicOperations.ZeroMemory(iv);
                CryptographicOperations.ZeroMemory(macKey);
            }
        }
        var c2s = Build(algs.CipherClientToServer, algs.MacClientToServer, 'A', 'C', 'E');
        var s2c = Build(algs.CipherServerToClient, algs.MacServerToClient, 'B', 'D', 'F');
        return _isServer ? (c2s, s2c) : (s2c, c2s);
    }
}

internal static class MemoryMarshalHelper
{
    /// <summary>For wiping our own scratch buffers after hashing secrets.</summary>
    public static Span<byte> AsWritable(ReadOnlySpan<byte> span) =>
        System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(span), span.Length);
}
