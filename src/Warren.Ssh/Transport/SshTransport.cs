using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Channels;
using Warren.Ssh.Crypto;
using Warren.Ssh.Keys;
using Warren.Ssh.Wire;

using Warren.Ssh.Threading;

namespace Warren.Ssh.Transport;

/// <summary>
/// The SSH transport layer (RFC 4253) over a byte stream, either end: version
/// exchange, binary packet protocol, key exchange and rekeying, strict kex
/// (OpenSSH PROTOCOL §1.10), ext-info (RFC 8308) and ping@openssh.com.
/// </summary>
/// <remarks>
/// <para>Threads of control:</para>
/// <list type="number">
/// <item>One read loop owns the receive buffer and the inbound cipher. It handles
/// transport messages itself and queues everything else for <see cref="ReceiveAsync"/>.
/// It never writes to the stream: replies (KEXINIT, kex replies, NEWKEYS, PONG,
/// UNIMPLEMENTED) go to a control queue that a writer drains, so a peer that stops
/// reading cannot stall our reading.</item>
/// <item>Writers (<see cref="SendAsync"/> and control flushes) are serialized by
/// <c>_writeLock</c>, which guards the outbound cipher, sequence number and the
/// queue of upper-layer packets held back during a key exchange.</item>
/// </list>
/// The transport owns the stream and disposes it when the connection ends.
/// </remarks>
public sealed class SshTransport : ISshPacketChannel
{
    /// <summary>
    /// Largest packet_length accepted or sent: OpenSSH's PACKET_MAX_SIZE (256 KiB).
    /// RFC 4253 §6.1 requires at least 35000. Checked before any buffer grows, which
    /// also keeps <c>4 + length + tag</c> far from int overflow.
    /// </summary>
    public const int MaxPacketLength = 256 * 1024;

    /// <summary>RFC 4253 §6: at least four bytes of random padding.</summary>
    private const int MinPaddingLength = 4;

    /// <summary>Largest block size of any cipher we implement (AES), for the worst-case padding.</summary>
    private const int MaxCipherBlockSize = 16;

    /// <summary>Largest payload <see cref="SendAsync"/> accepts: the packet limit less padding_length and worst-case padding.</summary>
    public const int MaxPayloadLength = MaxPacketLength - 1 - (MaxCipherBlockSize + MinPaddingLength - 1);

    /// <summary>Initial receive buffer: a 32 KiB channel packet with headers fits, and reads are large enough to amortize syscalls. Grows up to the packet limit on demand.</summary>
    private const int InitialReceiveBufferLength = 64 * 1024;

    /// <summary>Bounded wait for sending DISCONNECT to a peer that might not be reading.</summary>
    private static readonly TimeSpan DisconnectSendTimeout = TimeSpan.FromSeconds(5);

    /// <summary>RFC 8308 §3.1 extension name.</summary>
    private const string ServerSigAlgsExtension = "server-sig-algs";

    /// <summary>OpenSSH PROTOCOL §1.9 extension name; value "0".</summary>
    private const string PingExtension = "ping@openssh.com";

    /// <summary>Bound on the number of EXT_INFO extensions we parse (RFC 8308 defines four; OpenSSH sends at most a handful).</summary>
    private const int MaxExtInfoExtensions = 64;

    /// <summary>Peer text (DISCONNECT descriptions) is truncated to this many characters before it becomes an exception message.</summary>
    private const int MaxPeerTextInMessages = 256;

    private readonly Stream _stream;
    private readonly SshTransportOptions _options;
    private readonly SshTransportServerOptions? _serverOptions;
    private readonly SshTransportClientOptions? _clientOptions;
    private readonly bool _isServer;
    private readonly string _localVersion;
    private readonly TimeProvider _time;
    private readonly ISshRandom _random;
    private readonly CancellationTokenSource _closeCts = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _firstKexDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Channel<SshPacket> _inbox = Channel.CreateUnbounded<SshPacket>(new UnboundedChannelOptions { SingleWriter = true });

    // ---- Read side: owned by the read loop. ----
    private PacketCipher _incoming = NonePacketCipher.Instance;
    private uint _inSequence;
    private long _inBytesSinceKex;
    private long _inPacketsSinceKex;
    /// <summary>Receive buffer; owner: the read loop, returned to the pool when it exits.</summary>
    private byte[] _inBuffer;
    private int _inStart;
    private int _inEnd;
    private bool _initialKexIncomingDone;
    private long _inPacketsTotal;

    // ---- Write side: guarded by _writeLock. ----
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private PacketCipher _outgoing = NonePacketCipher.Instance;
    private uint _outSequence;
    private long _outBytesSinceKex;
    private long _outPacketsSinceKex;
    private bool _outKexInProgress;
    private TaskCompletionSource _outKexDone = CompletedSource();
    /// <summary>Upper-layer payloads held back during a key exchange; each array is rented and owned by this queue until written.</summary>
    private readonly Queue<(byte[] Buffer, int Length)> _pending = new();

    // ---- Control queue: filled by the read loop / timer, drained by writers. ----
    private readonly object _controlGate = new();
    private readonly Queue<ControlItem> _control = new();

    // ---- Key exchange state. ----
    private readonly object _kexGate = new();
    /// <summary>The key exchange in progress; created under _kexGate, then used by the read loop.</summary>
    private KexRound? _round;
    private volatile bool _strictKex;
    private bool _peerWantsExtInfo;
    private volatile bool _peerSupportsPing;
    private byte[]? _sessionId;
    private SshPublicKey? _serverHostKey;
    private volatile IReadOnlyList<string> _peerServerSigAlgs = [];
    private int _kexCount;
    private long _lastKexTimestamp;

    private int _pongsReceived;
    private int _unimplementedReceived;
    /// <summary>ping@openssh.com PONGs received (for tests and diagnostics).</summary>
    internal int PongsReceived => Volatile.Read(ref _pongsReceived);
    /// <summary>SSH_MSG_UNIMPLEMENTED received (for tests and diagnostics).</summary>
    internal int UnimplementedReceived => Volatile.Read(ref _unimplementedReceived);

    private ITimer? _timer;
    private long _packetsAtLastTick;
    private int _unansweredPings;
    private int _closed;
    private Exception? _closeReason;
    private Task? _readLoop;

    private SshTransport(Stream stream, SshTransportOptions options, bool isServer, string remoteVersion)
    {
        _stream = stream;
        _options = options;
        _serverOptions = options as SshTransportServerOptions;
        _clientOptions = options as SshTransportClientOptions;
        _isServer = isServer;
        _localVersion = options.Version;
        RemoteVersion = remoteVersion;
        _time = options.TimeProvider;
        _random = options.Random;
        _inBuffer = ArrayPool<byte>.Shared.Rent(InitialReceiveBufferLength);
        _lastKexTimestamp = _time.GetTimestamp();
    }

    /// <summary>Server side: exchanges versions, runs the first key exchange and returns. The transport owns <paramref name="stream"/> from here on.</summary>
    public static async Task<SshTransport> AcceptAsync(Stream stream, SshTransportServerOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(options);
        SshVersionExchange.Validate(options.Version);
        if (options.HostKeys.Count == 0) throw new ArgumentException("At least one host key is required.", nameof(options));
        return await StartAsync(stream, options, isServer: true, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Client side: exchanges versions, runs the first key exchange (including
    /// <see cref="SshTransportClientOptions.HostKeyValidator"/>) and returns.
    /// The transport owns <paramref name="stream"/> from here on.
    /// </summary>
    public static async Task<SshTransport> ConnectAsync(Stream stream, SshTransportClientOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(options);
        SshVersionExchange.Validate(options.Version);
        if (options.HostKeyValidator is null) throw new ArgumentException("HostKeyValidator is required.", nameof(options));
        return await StartAsync(stream, options, isServer: false, ct).ConfigureAwait(false);
    }

    private static async Task<SshTransport> StartAsync(Stream stream, SshTransportOptions options, bool isServer, CancellationToken ct)
    {
        string remote;
        try
        {
            await SshVersionExchange.WriteAsync(stream, options.Version, ct).ConfigureAwait(false);
            remote = await SshVersionExchange.ReadAsync(stream, allowBanner: !isServer, ct).ConfigureAwait(false);
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        var transport = new SshTransport(stream, options, isServer, remote);
        try
        {
            transport._readLoop = Task.Run(transport.ReadLoopAsync, CancellationToken.None);
            transport.InitiateKex();
            transport.ScheduleFlush();
            await transport._firstKexDone.Task.WaitAsync(ct).ConfigureAwait(false);
            transport.StartTimer();
            return transport;
        }
        catch
        {
            await transport.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    // ------------------------------------------------------------------ public surface

    public ReadOnlyMemory<byte> SessionId => _sessionId;
    public string RemoteVersion { get; }
    /// <summary>Our own identification line.</summary>
    public string LocalVersion => _localVersion;
    public SshPublicKey? ServerHostKey => _isServer ? null : _serverHostKey;
    public IReadOnlyList<string> PeerServerSigAlgs => _peerServerSigAlgs;
    public Task Completion => _completion.Task;
    public bool IsServer => _isServer;

    /// <summary>Algorithms of the most recent completed key exchange.</summary>
    public SshNegotiatedAlgorithms? Algorithms { get; private set; }

    /// <summary>Completed key exchanges, the first included.</summary>
    public int KeyExchangeCount => Volatile.Read(ref _kexCount);

    /// <summary>True when strict key exchange (OpenSSH PROTOCOL §1.10) was negotiated.</summary>
    public bool IsStrictKex => _strictKex;

    /// <summary>Why the connection ended: null while open or after a clean close; the protocol or I/O error otherwise.</summary>
    public Exception? CloseReason => Volatile.Read(ref _closeReason);

    public async ValueTask<SshPacket> ReceiveAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await _inbox.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            throw new SshConnectionClosedException("connection closed", CloseReason);
        }
    }

    public async ValueTask SendAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        if (payload.IsEmpty || payload.Length > MaxPayloadLength)
            throw new ArgumentOutOfRangeException(nameof(payload), $"Payload must be 1..{MaxPayloadLength} bytes.");
        while (true)
        {
            ThrowIfClosed();
            Task wait;
            await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                ThrowIfClosed();
                await DrainLockedAsync().ConfigureAwait(false);
                if (!_outKexInProgress && _pending.Count == 0)
                {
                    await WritePacketLockedAsync(payload).ConfigureAwait(false);
                    await DrainLockedAsync().ConfigureAwait(false);
                    await _stream.FlushAsync(_closeCts.Token).ConfigureAwait(false);
                    return;
                }
                if (_pending.Count < _options.MaxQueuedPacketsDuringKex)
                {
                    var copy = ArrayPool<byte>.Shared.Rent(payload.Length);
                    payload.CopyTo(copy);
                    _pending.Enqueue((copy, payload.Length));
                    return;
                }
                wait = _outKexDone.Task;
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                Close(new SshConnectionClosedException("write failed", e));
                throw new SshConnectionClosedException("connection closed", e);
            }
            finally
            {
                _writeLock.Release();
            }
            await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisconnectAsync(SshDisconnectReason reason, string description, CancellationToken cancellationToken = default)
    {
        if (Volatile.Read(ref _closed) != 0) return;
        await SendDisconnectAsync(reason, description).ConfigureAwait(false);
        Close(null);
    }

    /// <summary>Starts a key exchange now (RFC 4253 §9); returns once our KEXINIT is queued. No-op while one is already running.</summary>
    public void StartRekey()
    {
        ThrowIfClosed();
        if (InitiateKex()) ScheduleFlush();
    }

    public async ValueTask DisposeAsync()
    {
        if (Volatile.Read(ref _closed) == 0)
        {
            await SendDisconnectAsync(SshDisconnectReason.ByApplication, "closed").ConfigureAwait(false);
            Close(null);
        }
        if (_readLoop is not null)
        {
            try { await _readLoop.ConfigureAwait(false); } catch { /* the loop records its own errors */ }
        }
        while (_inbox.Reader.TryRead(out var packet)) packet.Dispose();
        if (await _writeLock.WaitAsync(DisconnectSendTimeout).ConfigureAwait(false))
        {
            try
            {
                while (_pending.TryDequeue(out var p)) ArrayPool<byte>.Shared.Return(p.Buffer);
                if (_outgoing != NonePacketCipher.Instance) _outgoing.Dispose();
                _outgoing = NonePacketCipher.Instance;
            }
            finally { _writeLock.Release(); }
        }
    }

    // ------------------------------------------------------------------ closing

    private void ThrowIfClosed()
    {
        if (Volatile.Read(ref _closed) != 0) throw new SshConnectionClosedException("connection closed", CloseReason);
    }

    /// <summary>Ends the connection once; <paramref name="reason"/> null means a clean close.</summary>
    private void Close(Exception? reason)
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        Volatile.Write(ref _closeReason, reason);
        _timer?.Dispose();
        try { _closeCts.Cancel(); } catch (AggregateException) { }
        try { _stream.Dispose(); } catch (Exception) { /* already broken */ }
        _inbox.Writer.TryComplete();
        _firstKexDone.TrySetException(reason ?? new SshConnectionClosedException("connection closed during key exchange"));
        _ = _firstKexDone.Task.Exception; // observed: callers may have stopped waiting
        _outKexDone.TrySetResult();
        _completion.TrySetResult();
    }

    private async Task SendDisconnectAsync(SshDisconnectReason reason, string description)
    {
        if (Volatile.Read(ref _closed) != 0) return;
        var payload = new SshWriter(64 + description.Length)
            .WriteByte(SshMessageNumbers.Disconnect).WriteUInt32((uint)reason).WriteString(description).WriteString("")
            .ToArray();
        try
        {
            if (!await _writeLock.WaitAsync(DisconnectSendTimeout, _closeCts.Token).ConfigureAwait(false)) return;
            try
            {
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(_closeCts.Token);
                cts.CancelAfter(DisconnectSendTimeout);
                await WritePacketLockedAsync(payload, cts.Token).ConfigureAwait(false);
                await _stream.FlushAsync(cts.Token).ConfigureAwait(false);
            }
            finally { _writeLock.Release(); }
        }
        catch (Exception) { /* best effort: the connection is ending anyway */ }
    }

    // ------------------------------------------------------------------ writing

    private sealed record ControlItem(byte[] Payload, bool IsKexMessage, Action? AfterWrite = null);

    private void EnqueueControl(params ControlItem[] items)
    {
        lock (_controlGate)
            foreach (var i in items) _control.Enqueue(i);
    }

    /// <summary>Writes queued control messages from outside any writer; never blocks the caller.</summary>
    private void ScheduleFlush() => _ = FlushControlAsync();

    private async Task FlushControlAsync()
    {
        try
        {
            await _writeLock.WaitAsync(_closeCts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) { return; }
        try
        {
            await DrainLockedAsync().ConfigureAwait(false);
            await _stream.FlushAsync(_closeCts.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            Close(e is SshProtocolException ? e : new SshConnectionClosedException("write failed", e));
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Writes control messages in order, then held-back upper-layer packets once no key exchange blocks them. Caller holds _writeLock.</summary>
    private async ValueTask DrainLockedAsync()
    {
        while (true)
        {
            ControlItem? item;
            lock (_controlGate) _control.TryDequeue(out item);
            if (item is null) break;
            if (!item.IsKexMessage && _outKexInProgress)
            {
                // RFC 4253 §7.1: after our KEXINIT only kex messages until our NEWKEYS.
                if (_pending.Count < _options.MaxQueuedPacketsDuringKex)
                {
                    var copy = ArrayPool<byte>.Shared.Rent(item.Payload.Length);
                    item.Payload.CopyTo(copy, 0);
                    _pending.Enqueue((copy, item.Payload.Length));
                }
                continue;
            }
            await WritePacketLockedAsync(item.Payload).ConfigureAwait(false);
            item.AfterWrite?.Invoke();
            if (!_outKexInProgress) await FlushPendingLockedAsync().ConfigureAwait(false);
        }
        if (!_outKexInProgress) await FlushPendingLockedAsync().ConfigureAwait(false);
    }

    private async ValueTask FlushPendingLockedAsync()
    {
        while (!_outKexInProgress && _pending.TryPeek(out var p))
        {
            await WritePacketLockedAsync(p.Buffer.AsMemory(0, p.Length)).ConfigureAwait(false);
            _pending.Dequeue();
            ArrayPool<byte>.Shared.Return(p.Buffer);
            if (HasControlWaiting()) return; // a rekey was triggered: KEXINIT goes out next
        }
    }

    private bool HasControlWaiting()
    {
        lock (_controlGate) return _control.Count > 0;
    }

    private ValueTask WritePacketLockedAsync(ReadOnlyMemory<byte> payload) => WritePacketLockedAsync(payload, _closeCts.Token);

    /// <summary>Builds, protects and writes one packet (RFC 4253 §6). Caller holds _writeLock.</summary>
    private async ValueTask WritePacketLockedAsync(ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        var cipher = _outgoing;
        int total = BuildPacketLength(cipher, payload.Length, out int packetLength, out int padding);
        // Owner: this call; returned in finally.
        var buffer = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            FillPacket(cipher, _outSequence, payload.Span, buffer.AsSpan(0, total), packetLength, padding);
            _outSequence = unchecked(_outSequence + 1);
            await _stream.WriteAsync(buffer.AsMemory(0, total), ct).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        _outBytesSinceKex += total;
        _outPacketsSinceKex++;
        if (!_outKexInProgress && _kexCount > 0
            && (_outBytesSinceKex >= RekeyByteLimit(cipher) || _outPacketsSinceKex >= _options.RekeyPackets))
            InitiateKex();
    }

    private long RekeyByteLimit(PacketCipher cipher) => Math.Min(_options.RekeyBytes, cipher.MaxBytesBeforeRekey);

    /// <summary>Sizes a packet: returns the bytes on the wire (length field, packet, tag).</summary>
    internal static int BuildPacketLength(PacketCipher cipher, int payloadLength, out int packetLength, out int padding)
    {
        int blockSize = Math.Max(NonePacketCipher.MinimumBlockSize, cipher.BlockSize);
        int unpadded = 1 + payloadLength + (cipher.AlignsWithoutLength ? 0 : PacketCipher.LengthFieldSize);
        padding = blockSize - unpadded % blockSize;
        if (padding < MinPaddingLength) padding += blockSize;
        packetLength = 1 + payloadLength + padding;
        return PacketCipher.LengthFieldSize + packetLength + cipher.TagLength;
    }

    private void FillPacket(PacketCipher cipher, uint sequence, ReadOnlySpan<byte> payload, Span<byte> packet, int packetLength, int padding)
    {
        BinaryPrimitives.WriteUInt32BigEndian(packet, (uint)packetLength);
        packet[PacketCipher.LengthFieldSize] = (byte)padding;
        payload.CopyTo(packet[(PacketCipher.LengthFieldSize + 1)..]);
        // Padding (RFC 4253 §6: random bytes) comes from the system generator, never from options.Random: packets are
        // sent from several tasks, so drawing padding from the injected generator would interleave with the kex
        // draws in a timing-dependent order and make a seeded handshake (the session id) irreproducible.
        SshRandom.Default.Fill(packet.Slice(PacketCipher.LengthFieldSize + 1 + payload.Length, padding));
        int end = PacketCipher.LengthFieldSize + packetLength;
        cipher.Encrypt(sequence, packet[..end], packet[end..]);
    }

    // ------------------------------------------------------------------ reading

    private async Task ReadLoopAsync()
    {
        try
        {
            while (Volatile.Read(ref _closed) == 0)
            {
                var (offset, length, sequence) = await ReadPacketAsync().ConfigureAwait(false);
                await DispatchAsync(offset, length, sequence).ConfigureAwait(false);
            }
        }
        catch (SshProtocolException e)
        {
            await SendDisconnectAsync(e.Reason, e.Message.StartsWith("ssh: ", StringComparison.Ordinal) ? e.Message[5..] : e.Message).ConfigureAwait(false);
            Close(e);
        }
        catch (SshConnectionClosedException e)
        {
            Close(e.InnerException is null && e.Message.Contains("by peer", StringComparison.Ordinal) && Volatile.Read(ref _kexCount) > 0 ? null : e);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            Close(Volatile.Read(ref _closed) != 0 ? null : new SshConnectionClosedException("read failed", e));
        }
        catch (Exception e)
        {
            // Our own bug (or a host key validator that threw): end this connection, never the process.
            await SendDisconnectAsync(SshDisconnectReason.ByApplication, "internal error").ConfigureAwait(false);
            Close(e);
        }
        finally
        {
            if (_incoming != NonePacketCipher.Instance) _incoming.Dispose();
            if (_inBuffer.Length > 0) ArrayPool<byte>.Shared.Return(_inBuffer);
            _inBuffer = [];
        }
    }

    /// <summary>Makes at least <paramref name="count"/> unread bytes available in _inBuffer.</summary>
    private async ValueTask EnsureBufferedAsync(int count)
    {
        if (_inStart == _inEnd) _inStart = _inEnd = 0;
        if (_inEnd - _inStart >= count) return;
        if (_inEnd == 0 && _inBuffer.Length > 0)
        {
            // Nothing buffered: wait for the peer without holding the receive buffer, so an idle
            // connection costs no 64 KiB array (zero-byte read, then rent; STYLE habit 6). A stream
            // that cannot wait on a zero-byte read returns at once and we simply rent again.
            ArrayPool<byte>.Shared.Return(_inBuffer);
            _inBuffer = [];
            await _stream.ReadAsync(Memory<byte>.Empty, _closeCts.Token).ConfigureAwait(false);
            await SocketThread.Leave(); // see SocketThread: handshakes and handlers never hold a socket engine thread
            _inBuffer = ArrayPool<byte>.Shared.Rent(Math.Max(InitialReceiveBufferLength, count));
        }
        if (_inBuffer.Length - _inStart < count)
        {
            int have = _inEnd - _inStart;
            if (_inBuffer.Length < count)
            {
                // count was checked against MaxPacketLength by the caller before we get here.
                var bigger = ArrayPool<byte>.Shared.Rent(count);
                Buffer.BlockCopy(_inBuffer, _inStart, bigger, 0, have);
                ArrayPool<byte>.Shared.Return(_inBuffer);
                _inBuffer = bigger;
            }
            else
            {
                Buffer.BlockCopy(_inBuffer, _inStart, _inBuffer, 0, have);
            }
            _inStart = 0;
            _inEnd = have;
        }
        while (_inEnd - _inStart < count)
        {
            int n = await _stream.ReadAsync(_inBuffer.AsMemory(_inEnd), _closeCts.Token).ConfigureAwait(false);
            await SocketThread.Leave(); // see SocketThread: handshakes and handlers never hold a socket engine thread
            if (n == 0) throw new SshConnectionClosedException("connection closed by peer");
            _inEnd += n;
        }
    }

    /// <summary>Reads, decrypts and verifies one packet; returns where its payload lies in _inBuffer (valid until the next read).</summary>
    private async ValueTask<(int Offset, int Length, uint Sequence)> ReadPacketAsync()
    {
        var cipher = _incoming;
        int first = cipher.FirstBlockLength;
        await EnsureBufferedAsync(first).ConfigureAwait(false);
        uint sequence = _inSequence;
        uint packetLength = cipher.DecryptLength(sequence, _inBuffer.AsSpan(_inStart, first));
        ValidatePacketLength(cipher, packetLength);
        int bodyEnd = PacketCipher.LengthFieldSize + (int)packetLength;
        int total = bodyEnd + cipher.TagLength;
        await EnsureBufferedAsync(total).ConfigureAwait(false);
        if (!cipher.Decrypt(sequence, _inBuffer.AsSpan(_inStart, bodyEnd), _inBuffer.AsSpan(_inStart + bodyEnd, cipher.TagLength)))
            throw new SshProtocolException(SshDisconnectReason.MacError, "corrupted MAC on input");
        int padding = _inBuffer[_inStart + PacketCipher.LengthFieldSize];
        int payloadLength = (int)packetLength - 1 - padding;
        if (padding < MinPaddingLength || payloadLength < 1)
            throw new SshProtocolException(SshDisconnectReason.ProtocolError, "invalid padding length");
        int offset = _inStart + PacketCipher.LengthFieldSize + 1;
        _inStart += total;
        _inSequence = unchecked(sequence + 1);
        if (_inSequence == 0 && _strictKex && !_initialKexIncomingDone)
            throw new SshProtocolException(SshDisconnectReason.ProtocolError, "sequence number wrapped during strict initial key exchange");
        _inBytesSinceKex += total;
        _inPacketsSinceKex++;
        _inPacketsTotal++;
        return (offset, payloadLength, sequence);
    }

    private static void ValidatePacketLength(PacketCipher cipher, uint packetLength)
    {
        // OpenSSH packet.c: "Bad packet length" when < 1 + 4 or > PACKET_MAX_SIZE.
        if (packetLength < 1 + MinPaddingLength || packetLength > MaxPacketLength)
            throw new SshProtocolException(SshDisconnectReason.ProtocolError, "bad packet length");
        int blockSize = Math.Max(NonePacketCipher.MinimumBlockSize, cipher.BlockSize);
        long aligned = cipher.AlignsWithoutLength ? packetLength : packetLength + PacketCipher.LengthFieldSize;
        if (aligned % blockSize != 0)
            throw new SshProtocolException(SshDisconnectReason.ProtocolError, "packet length is not a multiple of the block size");
        if (PacketCipher.LengthFieldSize + packetLength < cipher.FirstBlockLength)
            throw new SshProtocolException(SshDisconnectReason.ProtocolError, "bad packet length");
    }

    // ------------------------------------------------------------------ dispatch

    private static SshProtocolException Protocol(string message) => new(SshDisconnectReason.ProtocolError, message);

    private async ValueTask DispatchAsync(int offset, int length, uint sequence)
    {
        byte type = _inBuffer[offset];
        bool strictInitial = _strictKex && !_initialKexIncomingDone;
        var round = _round;

        // A wrongly guessed first kex packet is dropped (RFC 4253 §7).
        if (round is { IgnoreNextKexPacket: true } && type >= SshMessageNumbers.KexEcdhInit && type <= SshMessageNumbers.KexMethodLast)
        {
            round.IgnoreNextKexPacket = false;
            return;
        }

        switch (type)
        {
            case SshMessageNumbers.Disconnect:
                HandleDisconnect(_inBuffer.AsSpan(offset, length));
                return;
            case SshMessageNumbers.Ignore:
            case SshMessageNumbers.Debug:
                if (strictInitial) throw Protocol("strict KEX violation: unexpected message during initial key exchange");
                return;
            case SshMessageNumbers.Unimplemented:
                if (strictInitial) throw Protocol("strict KEX violation: unexpected message during initial key exchange");
                HandleUnimplemented(_inBuffer.AsSpan(offset, length), round);
                return;
            case SshMessageNumbers.KexInit:
                HandleKexInit(_inBuffer.AsSpan(offset, length), sequence);
                ScheduleFlush();
                return;
            case SshMessageNumbers.NewKeys:
                HandleNewKeys();
                return;
            case SshMessageNumbers.KexEcdhInit:
                if (!_isServer) throw Protocol("unexpected key exchange message");
                HandleKexInitValue(_inBuffer.AsSpan(offset, length));
                ScheduleFlush();
                return;
            case SshMessageNumbers.KexEcdhReply:
                if (_isServer) throw Protocol("unexpected key exchange message");
                await HandleKexReplyAsync(_inBuffer.AsMemory(offset, length)).ConfigureAwait(false);
                ScheduleFlush();
                return;
        }

        if (type > SshMessageNumbers.NewKeys && type <= SshMessageNumbers.KexMethodLast)
            throw Protocol("unexpected key exchange message");
        if (!_initialKexIncomingDone)
            throw Protocol(strictInitial ? "strict KEX violation: unexpected message during initial key exchange" : "unexpected message before key exchange completed");
        if (round?.PeerInit is not null)
            throw Protocol("non-kex message during key exchange");

        switch (type)
        {
            case SshMessageNumbers.ExtInfo:
                HandleExtInfo(_inBuffer.AsSpan(offset, length));
                return;
            case SshMessageNumbers.Ping:
                HandlePing(_inBuffer.AsSpan(offset, length));
                return;
            case SshMessageNumbers.Pong:
                _unansweredPings = 0;
                Interlocked.Increment(ref _pongsReceived);
                return;
        }

        if (type < SshMessageNumbers.FirstUpperLayer && type != SshMessageNumbers.ServiceRequest && type != SshMessageNumbers.ServiceAccept)
        {
            // RFC 4253 §11.4: unrecognized message → SSH_MSG_UNIMPLEMENTED with its sequence number.
            var reply = new byte[1 + sizeof(uint)];
            reply[0] = SshMessageNumbers.Unimplemented;
            BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(1), sequence);
            EnqueueControl(new ControlItem(reply, IsKexMessage: false));
            ScheduleFlush();
            return;
        }

        // Owner: the SshPacket handed to the upper layer; it returns the array on Dispose.
        var rented = ArrayPool<byte>.Shared.Rent(length);
        Buffer.BlockCopy(_inBuffer, offset, rented, 0, length);
        var packet = new SshPacket(rented.AsMemory(0, length), rented);
        if (!_inbox.Writer.TryWrite(packet)) packet.Dispose();

        if (_inBytesSinceKex >= RekeyByteLimit(_incoming) || _inPacketsSinceKex >= _options.RekeyPackets)
        {
            if (InitiateKex()) ScheduleFlush();
        }
    }

    private void HandleDisconnect(ReadOnlySpan<byte> payload)
    {
        var r = new SshReader(payload[1..]);
        string text = "";
        if (r.TryReadUInt32(out uint code))
        {
            r.TryReadUtf8(out text, MaxPacketLength);
        }
        var reason = (SshDisconnectReason)code;
        if (reason == SshDisconnectReason.ByApplication && Volatile.Read(ref _kexCount) > 0)
        {
            Close(null);
            return;
        }
        Close(new SshConnectionClosedException($"peer disconnected ({reason}): {Escape(text)}"));
    }

    /// <summary>Peer text made safe for messages: printable ASCII only, bounded.</summary>
    internal static string Escape(string text)
    {
        var sb = new StringBuilder(Math.Min(text.Length, MaxPeerTextInMessages));
        foreach (var c in text)
        {
            if (sb.Length >= MaxPeerTextInMessages) { sb.Append('…'); break; }
            sb.Append(c >= 0x20 && c < 0x7f ? c : '?');
        }
        return sb.ToString();
    }

    private void HandleUnimplemented(ReadOnlySpan<byte> payload, KexRound? round)
    {
        Interlocked.Increment(ref _unimplementedReceived);
        var r = new SshReader(payload[1..]);
        if (!r.TryReadUInt32(out uint rejected)) throw Protocol("malformed UNIMPLEMENTED");
        // OpenSSH's sshd answers a KEXINIT sent before user authentication this way; waiting would hang forever.
        if (round is not null && round.LocalInitSequence == rejected)
            throw KexFailed("peer refused key re-exchange");
    }

    private void HandlePing(ReadOnlySpan<byte> payload)
    {
        var r = new SshReader(payload[1..]);
        if (!r.TryReadString(out var data)) throw Protocol("malformed PING");
        // PROTOCOL §1.9: answer with PONG carrying the same data; it waits out any key exchange like other non-kex traffic.
        var pong = new SshWriter(data.Length + 8).WriteByte(SshMessageNumbers.Pong).WriteString(data).ToArray();
        EnqueueControl(new ControlItem(pong, IsKexMessage: false));
        ScheduleFlush();
    }

    private void HandleExtInfo(ReadOnlySpan<byte> payload)
    {
        var r = new SshReader(payload[1..]);
        if (!r.TryReadUInt32(out uint count) || count > MaxExtInfoExtensions) throw Protocol("malformed EXT_INFO");
        for (uint i = 0; i < count; i++)
        {
            if (!r.TryReadUtf8(out var name, NameList.MaxBytes) || !r.TryReadString(out var value)) throw Protocol("malformed EXT_INFO");
            if (name == ServerSigAlgsExtension && !_isServer)
            {
                // The value is a name-list's contents (RFC 8308 §3.1).
                var w = new SshWriter(value.Length + 4).WriteString(value);
                var vr = new SshReader(w.WrittenSpan);
                if (!vr.TryReadNameList(out var algs)) throw Protocol("malformed server-sig-algs");
                _peerServerSigAlgs = algs;
            }
            else if (name == PingExtension)
            {
                _peerSupportsPing = true;
            }
        }
    }

    // ------------------------------------------------------------------ key exchange

    private sealed class KexRound(byte[] localInit, SshKexInit localParsed)
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

    /// <summary>Queues our KEXINIT unless a key exchange is already running. Thread-safe.</summary>
    private bool InitiateKex()
    {
        lock (_kexGate)
        {
            if (_round is not null || Volatile.Read(ref _closed) != 0) return false;
            var parsed = BuildKexInit(Volatile.Read(ref _kexCount) == 0);
            var payload = parsed.ToPayload();
            var round = new KexRound(payload, parsed) { IsFirst = Volatile.Read(ref _kexCount) == 0 };
            _round = round;
            EnqueueControl(new ControlItem(payload, IsKexMessage: true, AfterWrite: () =>
            {
                round.LocalInitSequenceBox = unchecked(_outSequence - 1);
                _outKexInProgress = true;
                _outKexDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }));
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

    private static SshProtocolException KexFailed(string message) => new(SshDisconnectReason.KeyExchangeFailed, message);

    private void HandleKexInit(ReadOnlySpan<byte> payload, uint sequence)
    {
        if (!SshKexInit.TryParse(payload, out var peer)) throw Protocol("malformed KEXINIT");
        InitiateKex();
        var round = _round!;
        if (round.PeerInit is not null) throw Protocol("unexpected KEXINIT during key exchange");
        round.PeerInit = payload.ToArray();

        if (round.IsFirst)
        {
            _strictKex = _options.StrictKex && peer!.KexAlgorithms.Contains(_isServer ? SshAlgorithms.StrictKexClient : SshAlgorithms.StrictKexServer);
            // PROTOCOL §1.10: with strict kex, KEXINIT must be the very first packet.
            if (_strictKex && sequence != 0) throw Protocol("strict KEX violation: KEXINIT was not the first packet");
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
            EnqueueControl(new ControlItem(init, IsKexMessage: true));
        }
    }

    /// <summary>Server: SSH_MSG_KEX*_INIT → reply, NEWKEYS (and EXT_INFO after the first).</summary>
    private void HandleKexInitValue(ReadOnlySpan<byte> payload)
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
        var h = ExchangeHash(round.Kex, RemoteVersion, _localVersion, round.PeerInit!, round.LocalInit, ks, clientValue, serverValue, k);
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
            new([SshMessageNumbers.NewKeys], IsKexMessage: true, AfterWrite: () => SwitchOutgoing(outgoing)),
        };
        // RFC 8308 §2.4: EXT_INFO is the next packet after the server's first NEWKEYS.
        if (round.IsFirst && _peerWantsExtInfo) items.Add(new ControlItem(BuildExtInfo(), IsKexMessage: false));
        EnqueueControl([.. items]);
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
    private async ValueTask HandleKexReplyAsync(ReadOnlyMemory<byte> payload)
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
            h = ExchangeHash(round.Kex, _localVersion, RemoteVersion, round.LocalInit, round.PeerInit!, ks, round.ClientValue, serverValue, k);
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
        EnqueueControl(new ControlItem([SshMessageNumbers.NewKeys], IsKexMessage: true, AfterWrite: () => SwitchOutgoing(outgoing)));
    }

    /// <summary>After our NEWKEYS is on the wire (RFC 4253 §7.3). Runs under _writeLock.</summary>
    private void SwitchOutgoing(PacketCipher cipher)
    {
        var old = _outgoing;
        _outgoing = cipher;
        if (old != NonePacketCipher.Instance) old.Dispose();
        if (_strictKex) _outSequence = 0; // PROTOCOL §1.10
        _outBytesSinceKex = 0;
        _outPacketsSinceKex = 0;
        _outKexInProgress = false;
        _outKexDone.TrySetResult();
    }

    private void HandleNewKeys()
    {
        var round = _round;
        if (round?.IncomingCipher is null) throw Protocol("unexpected NEWKEYS");
        var old = _incoming;
        _incoming = round.IncomingCipher;
        if (old != NonePacketCipher.Instance) old.Dispose();
        if (_strictKex) _inSequence = 0; // PROTOCOL §1.10
        _inBytesSinceKex = 0;
        _inPacketsSinceKex = 0;
        _initialKexIncomingDone = true;
        Algorithms = round.Algorithms;
        round.Kex?.Dispose();
        Interlocked.Exchange(ref _lastKexTimestamp, _time.GetTimestamp());
        lock (_kexGate)
        {
            _round = null;
            Interlocked.Increment(ref _kexCount);
        }
        if (round.IsFirst) _firstKexDone.TrySetResult();
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

    // ------------------------------------------------------------------ housekeeping

    private void StartTimer()
    {
        var period = _options.KeepAliveInterval is { } k && k > TimeSpan.Zero && k < _options.RekeyInterval ? k : _options.RekeyInterval;
        if (period <= TimeSpan.Zero || period == Timeout.InfiniteTimeSpan) return;
        _packetsAtLastTick = Interlocked.Read(ref _inPacketsTotal);
        _timer = _time.CreateTimer(_ => OnTick(), null, period, period);
        if (Volatile.Read(ref _closed) != 0) _timer.Dispose();
    }

    /// <summary>Periodic: time-based rekey (RFC 4253 §9) and keepalive.</summary>
    private void OnTick()
    {
        if (Volatile.Read(ref _closed) != 0) return;
        try
        {
            if (_time.GetElapsedTime(Interlocked.Read(ref _lastKexTimestamp)) >= _options.RekeyInterval && InitiateKex())
                ScheduleFlush();
            if (_options.KeepAliveInterval is null) return;
            long packets = Interlocked.Read(ref _inPacketsTotal);
            if (packets != _packetsAtLastTick)
            {
                _packetsAtLastTick = packets;
                _unansweredPings = 0;
                return;
            }
            if (_peerSupportsPing)
            {
                if (++_unansweredPings > _options.KeepAliveCountMax)
                {
                    _ = SendDisconnectAsync(SshDisconnectReason.ConnectionLost, "keepalive timeout")
                        .ContinueWith(_ => Close(new SshConnectionClosedException("keepalive timeout")), TaskScheduler.Default);
                    return;
                }
                EnqueueControl(new ControlItem(new SshWriter(16).WriteByte(SshMessageNumbers.Ping).WriteString("keepalive").ToArray(), IsKexMessage: false));
            }
            else
            {
                EnqueueControl(new ControlItem(new SshWriter(8).WriteByte(SshMessageNumbers.Ignore).WriteString("").ToArray(), IsKexMessage: false));
            }
            ScheduleFlush();
        }
        catch (Exception e)
        {
            Close(e);
        }
    }

    private static TaskCompletionSource CompletedSource()
    {
        var t = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        t.SetResult();
        return t;
    }
}

internal static class MemoryMarshalHelper
{
    /// <summary>For wiping our own scratch buffers after hashing secrets.</summary>
    public static Span<byte> AsWritable(ReadOnlySpan<byte> span) =>
        System.Runtime.InteropServices.MemoryMarshal.CreateSpan(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(span), span.Length);
}
