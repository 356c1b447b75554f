using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Channels;
using Warren.Ssh.Crypto;
using Warren.Ssh.Keys;
using Warren.Ssh.Wire;
using Warren.Threading;

namespace Warren.Ssh.Transport;

/// <summary>
/// The SSH transport layer (RFC 4253) over a byte stream, either end: version
/// exchange, the binary packet protocol (RFC 4253 §6), ext-info (RFC 8308) and
/// ping@openssh.com. The key exchange and rekeying (RFC 4253 §7, §9, strict kex of
/// OpenSSH PROTOCOL §1.10) run in <see cref="SshKeyExchange"/>, which this packet
/// layer drives from its read loop and serves through <see cref="IKexPacketLayer"/>.
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
public sealed class SshTransport : ISshPacketChannel, IKexPacketLayer, ISshPacketDelivery
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

    /// <summary>
    /// Receive buffer while data flows: eight of OpenSSH's 32 KiB channel packets (with headers) fit, so a bulk
    /// sender's packets are taken off the socket several per read (one read, one hop off the socket thread per
    /// batch instead of per packet), and a packet cut at the buffer's end is moved to the front at most once per
    /// read. Grows up to the packet limit on demand; an idle connection holds none (see EnsureBufferedAsync).
    /// </summary>
    private const int InitialReceiveBufferLength = 256 * 1024;

    /// <summary>Bounded wait for sending DISCONNECT to a peer that might not be reading.</summary>
    private static readonly TimeSpan DisconnectSendTimeout = TimeSpan.FromSeconds(5);

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
    private readonly CancellationTokenSource _closeCts = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _firstKexDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Channel<SshPacket> _inbox = Channel.CreateUnbounded<SshPacket>(new UnboundedChannelOptions { SingleWriter = true });

    // ---- Direct delivery (ISshPacketDelivery): once set, upper-layer messages skip _inbox. ----
    /// <summary>Guards the switch from _inbox to the handler, so no message overtakes one still queued.</summary>
    private readonly object _deliveryGate = new();
    private ISshPacketHandler? _handler;
    private bool _handlerClosed;

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

    // ---- Key exchange: the state machine (RFC 4253 §7, §9) lives in its own class. ----
    private readonly SshKeyExchange _kex;
    private volatile bool _peerSupportsPing;
    private volatile IReadOnlyList<string> _peerServerSigAlgs = [];

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
        _inBuffer = ArrayPool<byte>.Shared.Rent(InitialReceiveBufferLength);
        _kex = new SshKeyExchange(this, options, isServer, _localVersion, remoteVersion);
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

    public ReadOnlyMemory<byte> SessionId => _kex.SessionId;
    public string RemoteVersion { get; }
    /// <summary>Our own identification line.</summary>
    public string LocalVersion => _localVersion;
    public SshPublicKey? ServerHostKey => _isServer ? null : _kex.ServerHostKey;
    public IReadOnlyList<string> PeerServerSigAlgs => _peerServerSigAlgs;
    public Task Completion => _completion.Task;
    public bool IsServer => _isServer;

    /// <summary>Algorithms of the most recent completed key exchange.</summary>
    public SshNegotiatedAlgorithms? Algorithms => _kex.Algorithms;

    /// <summary>Completed key exchanges, the first included.</summary>
    public int KeyExchangeCount => _kex.Count;

    /// <summary>True when strict key exchange (OpenSSH PROTOCOL §1.10) was negotiated.</summary>
    public bool IsStrictKex => _kex.IsStrict;

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

    void ISshPacketDelivery.StartDelivering(ISshPacketHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        lock (_deliveryGate)
        {
            if (_handler is not null) throw new InvalidOperationException("Delivery already started.");
            // The read loop waits on the gate meanwhile, so what it reads next comes after these.
            while (_inbox.Reader.TryRead(out var queued))
            {
                using (queued) handler.OnPacket(queued.Payload.Span);
            }
            Volatile.Write(ref _handler, handler);
        }
        if (Volatile.Read(ref _closed) != 0) NotifyHandlerClosed();
    }

    /// <summary>Tells the handler (if any, once) that the connection ended.</summary>
    private void NotifyHandlerClosed()
    {
        ISshPacketHandler? handler;
        lock (_deliveryGate)
        {
            handler = _handler;
            if (handler is null || _handlerClosed) return;
            _handlerClosed = true;
        }
        handler.OnClosed(new SshConnectionClosedException("connection closed", CloseReason));
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
        NotifyHandlerClosed();
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
            item.BeforeWrite?.Invoke(_outSequence);
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
        if (!_outKexInProgress && _kex.Count > 0
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
            Close(e.InnerException is null && e.Message.Contains("by peer", StringComparison.Ordinal) && _kex.Count > 0 ? null : e);
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
        if (_inSequence == 0 && _kex.IsStrict && !_initialKexIncomingDone)
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
        bool strictInitial = _kex.IsStrict && !_initialKexIncomingDone;
        var round = _kex.Round;

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
                _kex.HandleKexInit(_inBuffer.AsSpan(offset, length), sequence, Volatile.Read(ref _closed) != 0);
                ScheduleFlush();
                return;
            case SshMessageNumbers.NewKeys:
                HandleNewKeys();
                return;
            case SshMessageNumbers.KexEcdhInit:
                if (!_isServer) throw Protocol("unexpected key exchange message");
                _kex.HandleKexInitValue(_inBuffer.AsSpan(offset, length));
                ScheduleFlush();
                return;
            case SshMessageNumbers.KexEcdhReply:
                if (_isServer) throw Protocol("unexpected key exchange message");
                await _kex.HandleKexReplyAsync(_inBuffer.AsMemory(offset, length)).ConfigureAwait(false);
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

        Deliver(offset, length);

        if (_inBytesSinceKex >= RekeyByteLimit(_incoming) || _inPacketsSinceKex >= _options.RekeyPackets)
        {
            if (InitiateKex()) ScheduleFlush();
        }
    }

    /// <summary>An upper-layer message: straight to the handler once there is one, else queued for ReceiveAsync.</summary>
    private void Deliver(int offset, int length)
    {
        var handler = Volatile.Read(ref _handler);
        if (handler is null)
        {
            lock (_deliveryGate)
            {
                handler = _handler;
                if (handler is null)
                {
                    // Owner: the SshPacket handed to the upper layer; it returns the array on Dispose.
                    var rented = ArrayPool<byte>.Shared.Rent(length);
                    Buffer.BlockCopy(_inBuffer, offset, rented, 0, length);
                    var packet = new SshPacket(rented.AsMemory(0, length), rented);
                    if (!_inbox.Writer.TryWrite(packet)) packet.Dispose();
                    return;
                }
            }
        }
        // After the connection closed, the handler has been told so; nothing more reaches it.
        if (Volatile.Read(ref _closed) != 0) return;
        handler.OnPacket(_inBuffer.AsSpan(offset, length));
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
        if (reason == SshDisconnectReason.ByApplication && _kex.Count > 0)
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

    private void HandleUnimplemented(ReadOnlySpan<byte> payload, SshKeyExchange.KexRound? round)
    {
        Interlocked.Increment(ref _unimplementedReceived);
        var r = new SshReader(payload[1..]);
        if (!r.TryReadUInt32(out uint rejected)) throw Protocol("malformed UNIMPLEMENTED");
        // OpenSSH's sshd answers a KEXINIT sent before user authentication this way; waiting would hang forever.
        if (round is not null && round.LocalInitSequence == rejected)
            throw SshKeyExchange.KexFailed("peer refused key re-exchange");
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
            if (name == SshKeyExchange.ServerSigAlgsExtension && !_isServer)
            {
                // The value is a name-list's contents (RFC 8308 §3.1).
                var w = new SshWriter(value.Length + 4).WriteString(value);
                var vr = new SshReader(w.WrittenSpan);
                if (!vr.TryReadNameList(out var algs)) throw Protocol("malformed server-sig-algs");
                _peerServerSigAlgs = algs;
            }
            else if (name == SshKeyExchange.PingExtension)
            {
                _peerSupportsPing = true;
            }
        }
    }

    // ------------------------------------------------------------------ key exchange (state machine in SshKeyExchange)

    /// <summary>Queues our KEXINIT unless a key exchange is already running. Thread-safe.</summary>
    private bool InitiateKex() => _kex.TryStartRound(Volatile.Read(ref _closed) != 0);

    void IKexPacketLayer.Enqueue(params ControlItem[] items) => EnqueueControl(items);

    void IKexPacketLayer.BeginOutgoingKex()
    {
        _outKexInProgress = true;
        _outKexDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>After our NEWKEYS is on the wire (RFC 4253 §7.3). Runs under _writeLock.</summary>
    void IKexPacketLayer.SwitchOutgoing(PacketCipher cipher)
    {
        var old = _outgoing;
        _outgoing = cipher;
        if (old != NonePacketCipher.Instance) old.Dispose();
        if (_kex.IsStrict) _outSequence = 0; // PROTOCOL §1.10
        _outBytesSinceKex = 0;
        _outPacketsSinceKex = 0;
        _outKexInProgress = false;
        _outKexDone.TrySetResult();
    }

    /// <summary>The peer's NEWKEYS (RFC 4253 §7.3): its next packet uses the new keys.</summary>
    private void HandleNewKeys()
    {
        var (cipher, wasFirst) = _kex.CompleteRound();
        var old = _incoming;
        _incoming = cipher;
        if (old != NonePacketCipher.Instance) old.Dispose();
        if (_kex.IsStrict) _inSequence = 0; // PROTOCOL §1.10
        _inBytesSinceKex = 0;
        _inPacketsSinceKex = 0;
        _initialKexIncomingDone = true;
        if (wasFirst) _firstKexDone.TrySetResult();
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
            if (_kex.SinceLast >= _options.RekeyInterval && InitiateKex())
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
