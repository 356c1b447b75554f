using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Connection;

/// <summary>Limits of the connection layer, shared by server and client.</summary>
public sealed record SshConnectionLimits
{
    /// <summary>
    /// Receive window we grant per channel. OpenSSH's CHAN_SES_WINDOW_DEFAULT
    /// (channels.h) is 2 MiB; matching it keeps bulk transfers fast.
    /// </summary>
    public uint InitialWindowSize { get; init; } = DefaultInitialWindowSize;

    /// <summary>
    /// Largest data payload we accept in one CHANNEL_DATA. OpenSSH's
    /// CHAN_SES_PACKET_DEFAULT (channels.h) is 32 KiB, which fits RFC 4253 §6.1's
    /// 35000-byte packet minimum every implementation must accept.
    /// </summary>
    public uint MaxPacketSize { get; init; } = DefaultMaxPacketSize;

    /// <summary>Open channels (plus opens awaiting an answer) allowed at once, both directions together.</summary>
    public int MaxChannels { get; init; } = DefaultMaxChannels;

    public const uint DefaultInitialWindowSize = 2 * 1024 * 1024;
    public const uint DefaultMaxPacketSize = 32 * 1024;

    /// <summary>
    /// OpenSSH's MaxSessions defaults to 10 sessions; forwarding channels come on
    /// top, so 64 of any kind bounds per-connection memory to 64 receive windows.
    /// </summary>
    public const int DefaultMaxChannels = 64;
}

/// <summary>A global request from the peer (SSH_MSG_GLOBAL_REQUEST, RFC 4254 §4).</summary>
internal readonly record struct GlobalRequest(string Name, bool WantReply, byte[] Data);

/// <summary>Answer to a global request: success with optional response data, or failure.</summary>
internal readonly record struct GlobalReply(bool Success, byte[]? Data = null)
{
    public static readonly GlobalReply Failure = new(false);
}

/// <summary>
/// The connection protocol (RFC 4254) over one authenticated transport: channel
/// table, flow control, requests. One read loop dispatches incoming messages and
/// never waits for the application; one writer drains a FIFO of outgoing
/// messages so everything leaves in the order it was queued.
/// </summary>
internal sealed class ChannelMux : ISshPacketHandler
{
    /// <summary>
    /// Global requests queued for the application callback. RFC 4254 §4 requires
    /// in-order replies, so they are handled one at a time; a peer that piles up
    /// more than this many is flooding. Compare golang.org/x/crypto/ssh's
    /// bounded request channels.
    /// </summary>
    public const int MaxPendingGlobalRequests = 64;

    /// <summary>
    /// Bytes of control messages (replies, adjusts, confirmations) queued but not
    /// yet written. They are produced by the peer's own messages; a peer that
    /// sends without ever reading would otherwise grow this without bound.
    /// </summary>
    public const long MaxQueuedControlBytes = 4 * 1024 * 1024;

    /// <summary>
    /// Largest data chunk we send in one message, whatever the peer allows: a
    /// 32 KiB payload plus headers fits RFC 4253 §6.1's 35000-byte packet minimum.
    /// </summary>
    public const uint MaxSendChunk = 32 * 1024;

    private readonly ISshPacketChannel _transport;
    private readonly object _gate = new();
    private readonly Dictionary<uint, SshChannel> _channels = [];
    private readonly Channel<SshChannelOpenRequest> _incomingOpens = Channel.CreateUnbounded<SshChannelOpenRequest>();
    private readonly Channel<GlobalRequest> _globalRequests = Channel.CreateBounded<GlobalRequest>(MaxPendingGlobalRequests);
    private readonly Queue<TaskCompletionSource<GlobalReply>> _globalReplyWaiters = new();
    private readonly Channel<Outbound> _outbound = Channel.CreateUnbounded<Outbound>(new UnboundedChannelOptions { SingleReader = true });
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _closing = new();
    private long _queuedControlBytes;
    private int _channelCount;
    private uint _nextLocalId;
    private Exception? _terminalError;
    private bool _started;

    private sealed class Outbound
    {
        public byte[]? Payload;
        public TaskCompletionSource? Sent;
        public bool IsControl;
        public SshDisconnectReason DisconnectReason;
        public string? DisconnectDescription;
    }

    public ChannelMux(ISshPacketChannel transport, bool isServer, SshConnectionLimits limits)
    {
        _transport = transport;
        IsServer = isServer;
        Limits = limits;
    }

    public bool IsServer { get; }
    public SshConnectionLimits Limits { get; }
    public ISshPacketChannel Transport => _transport;

    /// <summary>Handles the peer's global requests; null answers every one with failure.</summary>
    public Func<GlobalRequest, CancellationToken, ValueTask<GlobalReply>>? GlobalRequestHandler { get; set; }

    /// <summary>
    /// Set once the application accepted "auth-agent-req@openssh.com" on some session (server side);
    /// until then the server may not open "auth-agent@openssh.com" channels (OpenSSH PROTOCOL.agent).
    /// </summary>
    public bool AgentForwardingAccepted => Volatile.Read(ref _agentForwardingAccepted);
    private bool _agentForwardingAccepted;

    /// <summary>Completes when the connection is over; never faults.</summary>
    public Task Completion => _completion.Task;

    /// <summary>Cancelled when the connection starts to close.</summary>
    public CancellationToken Closing => _closing.Token;

    /// <summary>Why the connection ended, or null while it runs / after a clean end.</summary>
    public Exception? TerminalError => Volatile.Read(ref _terminalError);

    internal Task? ReaderTask { get; private set; }
    internal Task? WriterTask { get; private set; }
    internal Task? GlobalsTask { get; private set; }

    public void Start()
    {
        lock (_gate)
        {
            if (_started) throw new InvalidOperationException("Already started.");
            _started = true;
        }
        var reader = ReaderTask = _transport is ISshPacketDelivery delivery ? StartDelivery(delivery) : Task.Run(ReadLoopAsync);
        var writer = WriterTask = Task.Run(WriteLoopAsync);
        var globals = GlobalsTask = Task.Run(GlobalRequestLoopAsync);
        _ = Task.WhenAll(reader, writer, globals).ContinueWith(_ => _completion.TrySetResult(), TaskScheduler.Default);
    }

    // ---------------------------------------------------------------- outgoing queue

    /// <summary>Queues a control message; never waits.</summary>
    internal void EnqueueControl(byte[] payload)
    {
        if (Interlocked.Add(ref _queuedControlBytes, payload.Length) > MaxQueuedControlBytes)
        {
            Fail(new SshProtocolException(SshDisconnectReason.ProtocolError, "peer is not reading its control replies"));
            return;
        }
        if (!_outbound.Writer.TryWrite(new Outbound { Payload = payload, IsControl = true }))
            Interlocked.Add(ref _queuedControlBytes, -payload.Length);
    }

    /// <summary>Queues a message and waits until the transport took it (backpressure for data).</summary>
    internal async ValueTask SendAndWaitAsync(byte[] payload, CancellationToken cancellationToken)
    {
        var item = new Outbound { Payload = payload, Sent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) };
        if (!_outbound.Writer.TryWrite(item)) throw Closed();
        await item.Sent.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task WriteLoopAsync()
    {
        try
        {
            await foreach (var item in _outbound.Reader.ReadAllAsync().ConfigureAwait(false))
            {
                if (item.Payload is null)
                {
                    try { await _transport.DisconnectAsync(item.DisconnectReason, item.DisconnectDescription ?? "", CancellationToken.None).ConfigureAwait(false); }
                    catch (Exception) { /* the connection is going away regardless */ }
                    item.Sent?.TrySetResult();
                    _outbound.Writer.TryComplete();
                    break;
                }
                if (item.IsControl) Interlocked.Add(ref _queuedControlBytes, -item.Payload.Length);
                await _transport.SendAsync(item.Payload, CancellationToken.None).ConfigureAwait(false);
                item.Sent?.TrySetResult();
            }
        }
        catch (Exception ex)
        {
            Fail(ex is SshConnectionClosedException or SshProtocolException ? ex : new SshConnectionClosedException("send failed", ex));
        }
        finally
        {
            // Refuse new items first, then fail the ones left, so no item can be
            // queued after the drain and wait forever.
            _outbound.Writer.TryComplete();
            while (_outbound.Reader.TryRead(out var left)) left.Sent?.TrySetException(Closed());
            FailLocal(TerminalError ?? new SshConnectionClosedException("connection closed"));
            try { await _transport.DisposeAsync().ConfigureAwait(false); } catch (Exception) { }
        }
    }

    /// <summary>Sends SSH_MSG_DISCONNECT after everything already queued, then ends the connection.</summary>
    public async ValueTask DisconnectAsync(SshDisconnectReason reason, string description, CancellationToken cancellationToken = default)
    {
        var item = new Outbound { DisconnectReason = reason, DisconnectDescription = description, Sent = new(TaskCreationOptions.RunContinuationsAsynchronously) };
        if (!_outbound.Writer.TryWrite(item)) return;
        _closing.Cancel();
        // If the connection already ended (another DISCONNECT went first, or the
        // peer is gone), the item is dropped unsent: that is the goal reached anyway.
        try { await item.Sent.Task.WaitAsync(cancellationToken).ConfigureAwait(false); }
        catch (SshConnectionClosedException) { }
    }

    // ---------------------------------------------------------------- read loop

    private readonly TaskCompletionSource _deliveryEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// Messages are dispatched on the transport's own read loop (no queue, no copy, no thread hop per message);
    /// the returned task plays the read loop's part in <see cref="Completion"/>.
    /// </summary>
    private Task StartDelivery(ISshPacketDelivery delivery)
    {
        // As the queued read loop stops at a cancelled receive: closing ends reading here.
        _closing.Token.Register(static state =>
        {
            var mux = (ChannelMux)state!;
            mux.FailLocal(mux.TerminalError ?? new SshConnectionClosedException("connection closed"));
            mux._deliveryEnded.TrySetResult();
        }, this);
        delivery.StartDelivering(this);
        return _deliveryEnded.Task;
    }

    void ISshPacketHandler.OnPacket(ReadOnlySpan<byte> payload)
    {
        if (_deliveryEnded.Task.IsCompleted || _closing.IsCancellationRequested) return;
        try
        {
            Dispatch(payload);
        }
        catch (SshProtocolException ex)
        {
            Fail(ex);
            _deliveryEnded.TrySetResult();
        }
        catch (Exception ex)
        {
            FailLocal(ex is SshConnectionClosedException ? ex : new SshConnectionClosedException("receive failed", ex));
            _outbound.Writer.TryComplete();
            _deliveryEnded.TrySetResult();
        }
    }

    void ISshPacketHandler.OnClosed(SshConnectionClosedException error)
    {
        if (_deliveryEnded.Task.IsCompleted) return;
        FailLocal(error);
        _outbound.Writer.TryComplete();
        _deliveryEnded.TrySetResult();
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (true)
            {
                using var packet = await _transport.ReceiveAsync(_closing.Token).ConfigureAwait(false);
                Dispatch(packet.Payload.Span);
            }
        }
        catch (SshProtocolException ex)
        {
            Fail(ex);
        }
        catch (OperationCanceledException) when (_closing.IsCancellationRequested)
        {
            FailLocal(TerminalError ?? new SshConnectionClosedException("connection closed"));
        }
        catch (Exception ex)
        {
            FailLocal(ex is SshConnectionClosedException ? ex : new SshConnectionClosedException("receive failed", ex));
            _outbound.Writer.TryComplete();
        }
    }

    /// <summary>Handles one message. Runs on the read loop: queues sends, never awaits.</summary>
    internal void Dispatch(ReadOnlySpan<byte> payload)
    {
        if (payload.IsEmpty) throw Protocol("empty message");
        var r = new SshReader(payload[1..]);
        switch (payload[0])
        {
            case SshConnectionMessage.GlobalRequest: OnGlobalRequest(ref r); break;
            case SshConnectionMessage.RequestSuccess: OnGlobalReply(true, r.Remaining); break;
            case SshConnectionMessage.RequestFailure: OnGlobalReply(false, default); break;
            case SshConnectionMessage.ChannelOpen: OnChannelOpen(ref r); break;
            case SshConnectionMessage.ChannelOpenConfirmation: OnOpenConfirmation(ref r); break;
            case SshConnectionMessage.ChannelOpenFailure: OnOpenFailure(ref r); break;
            case SshConnectionMessage.ChannelWindowAdjust:
                {
                    var ch = ReadRecipient(ref r);
                    if (!r.TryReadUInt32(out var add)) throw Protocol("truncated CHANNEL_WINDOW_ADJUST");
                    ch.OnWindowAdjust(add);
                    break;
                }
            case SshConnectionMessage.ChannelData:
                {
                    var ch = ReadRecipient(ref r);
                    if (!r.TryReadString(out var data)) throw Protocol("truncated CHANNEL_DATA");
                    ch.OnData(null, data);
                    break;
                }
            case SshConnectionMessage.ChannelExtendedData:
                {
                    var ch = ReadRecipient(ref r);
                    if (!r.TryReadUInt32(out var code) || !r.TryReadString(out var data)) throw Protocol("truncated CHANNEL_EXTENDED_DATA");
                    ch.OnData(code, data);
                    break;
                }
            case SshConnectionMessage.ChannelEof: ReadRecipient(ref r).OnEof(); break;
            case SshConnectionMessage.ChannelClose: ReadRecipient(ref r).OnClose(); break;
            case SshConnectionMessage.ChannelRequest:
                {
                    var ch = ReadRecipient(ref r);
                    if (!r.TryReadUtf8(out var type, SshChannel.MaxRequestTypeBytes) || !r.TryReadBoolean(out var wantReply))
                        throw Protocol("malformed CHANNEL_REQUEST");
                    ch.OnRequest(type, wantReply, r.Remaining);
                    break;
                }
            case SshConnectionMessage.ChannelSuccess: ReadRecipient(ref r).OnReply(true); break;
            case SshConnectionMessage.ChannelFailure: ReadRecipient(ref r).OnReply(false); break;
            default:
                // RFC 4252 §5.1: authentication requests after success are silently
                // ignored; so are message numbers this layer does not define. The
                // transport, which knows sequence numbers, owns UNIMPLEMENTED.
                break;
        }
    }

    private SshChannel ReadRecipient(ref SshReader r)
    {
        if (!r.TryReadUInt32(out var id)) throw Protocol("truncated channel message");
        lock (_gate)
        {
            // RFC 4254 §5: the recipient is our channel number. A number we never
            // gave out (or already freed after both CLOSEs) is a protocol error.
            if (_channels.TryGetValue(id, out var ch)) return ch;
        }
        throw Protocol("message for unknown channel");
    }

    private void OnGlobalRequest(ref SshReader r)
    {
        if (!r.TryReadUtf8(out var name, SshChannel.MaxRequestTypeBytes) || !r.TryReadBoolean(out var wantReply))
            throw Protocol("malformed GLOBAL_REQUEST");
        if (!_globalRequests.Writer.TryWrite(new GlobalRequest(name, wantReply, r.Remaining.ToArray())))
            throw Protocol("too many outstanding global requests");
    }

    private async Task GlobalRequestLoopAsync()
    {
        try
        {
            await foreach (var req in _globalRequests.Reader.ReadAllAsync(_closing.Token).ConfigureAwait(false))
            {
                var reply = GlobalReply.Failure;
                var handler = GlobalRequestHandler;
                if (handler is not null)
                {
                    try { reply = await handler(req, _closing.Token).ConfigureAwait(false); }
                    catch (OperationCanceledException) when (_closing.IsCancellationRequested) { return; }
                    catch (Exception) { reply = GlobalReply.Failure; }
                }
                if (!req.WantReply) continue;
                if (reply.Success)
                {
                    var w = new SshWriter(1 + (reply.Data?.Length ?? 0));
                    w.WriteByte(SshConnectionMessage.RequestSuccess).WriteRaw(reply.Data);
                    EnqueueControl(w.ToArray());
                }
                else EnqueueControl([SshConnectionMessage.RequestFailure]);
            }
        }
        catch (OperationCanceledException) { }
    }

    private void OnGlobalReply(bool success, ReadOnlySpan<byte> data)
    {
        TaskCompletionSource<GlobalReply>? waiter;
        lock (_gate)
        {
            // Unsolicited replies (nothing outstanding) are dropped.
            if (!_globalReplyWaiters.TryDequeue(out waiter)) return;
        }
        waiter.TrySetResult(new GlobalReply(success, data.ToArray()));
    }

    /// <summary>Sends SSH_MSG_GLOBAL_REQUEST; with want-reply, waits for the in-order answer.</summary>
    public async Task<GlobalReply> SendGlobalRequestAsync(string name, bool wantReply, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var w = new SshWriter();
        w.WriteByte(SshConnectionMessage.GlobalRequest).WriteString(name).WriteBoolean(wantReply).WriteRaw(data.Span);
        TaskCompletionSource<GlobalReply>? waiter = null;
        lock (_gate)
        {
            if (TerminalError is { } err) throw Closed(err);
            if (wantReply)
            {
                waiter = new(TaskCreationOptions.RunContinuationsAsynchronously);
                _globalReplyWaiters.Enqueue(waiter);
            }
            // Enqueue under the lock so reply order matches send order.
            EnqueueControlUnchecked(w.ToArray());
        }
        if (waiter is null) return new GlobalReply(true);
        return await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private void EnqueueControlUnchecked(byte[] payload) => _outbound.Writer.TryWrite(new Outbound { Payload = payload });

    // ---------------------------------------------------------------- channel open

    private void OnChannelOpen(ref SshReader r)
    {
        if (!r.TryReadUtf8(out var type, SshChannel.MaxRequestTypeBytes) || !r.TryReadUInt32(out var sender)
            || !r.TryReadUInt32(out var window) || !r.TryReadUInt32(out var maxPacket))
            throw Protocol("malformed CHANNEL_OPEN");

        bool supported = IsServer
            ? type is SshChannelTypes.Session or SshChannelTypes.DirectTcpIp
            : type is SshChannelTypes.ForwardedTcpIp or SshChannelTypes.AuthAgent;
        if (!supported)
        {
            SendOpenFailure(sender, SshChannelOpenFailureReason.UnknownChannelType, "unknown channel type");
            return;
        }
        if (maxPacket == 0)
        {
            SendOpenFailure(sender, SshChannelOpenFailureReason.ConnectFailed, "invalid maximum packet size");
            return;
        }

        string? host = null, originator = null;
        uint port = 0, originatorPort = 0;
        if (type is SshChannelTypes.DirectTcpIp or SshChannelTypes.ForwardedTcpIp)
        {
            // RFC 4254 §7.2: host/address, port, originator address, originator port.
            if (!r.TryReadUtf8(out host, SshChannel.MaxHostBytes) || !r.TryReadUInt32(out port)
                || !r.TryReadUtf8(out originator, SshChannel.MaxHostBytes) || !r.TryReadUInt32(out originatorPort))
                throw Protocol("malformed " + type + " open");
        }

        lock (_gate)
        {
            if (TerminalError is not null) return;
            if (_channelCount >= Limits.MaxChannels)
            {
                SendOpenFailure(sender, SshChannelOpenFailureReason.ResourceShortage, "too many channels");
                return;
            }
            _channelCount++;
        }
        var request = new SshChannelOpenRequest(this, type, sender, window, maxPacket)
        {
            Host = host, Port = port, OriginatorAddress = originator, OriginatorPort = originatorPort,
        };
        _incomingOpens.Writer.TryWrite(request);
    }

    private void SendOpenFailure(uint recipient, SshChannelOpenFailureReason reason, string description)
    {
        var w = new SshWriter();
        w.WriteByte(SshConnectionMessage.ChannelOpenFailure).WriteUInt32(recipient).WriteUInt32((uint)reason)
         .WriteString(description).WriteString("");
        EnqueueControl(w.ToArray());
    }

    internal SshChannel AcceptIncoming(SshChannelOpenRequest request)
    {
        SshChannel channel;
        lock (_gate)
        {
            if (TerminalError is { } err) throw Closed(err);
            uint id = AllocateLocalId();
            channel = new SshChannel(this, request.ChannelType, id, Limits.InitialWindowSize, Limits.MaxPacketSize);
            channel.SetRemote(request.SenderChannel, request.InitialWindowSize, request.MaxPacketSize);
            _channels.Add(id, channel);
            var w = new SshWriter();
            w.WriteByte(SshConnectionMessage.ChannelOpenConfirmation).WriteUInt32(request.SenderChannel).WriteUInt32(id)
             .WriteUInt32(Limits.InitialWindowSize).WriteUInt32(Limits.MaxPacketSize);
            EnqueueControlUnchecked(w.ToArray());
        }
        return channel;
    }

    internal void RejectIncoming(SshChannelOpenRequest request, SshChannelOpenFailureReason reason, string description)
    {
        lock (_gate) _channelCount--;
        SendOpenFailure(request.SenderChannel, reason, description);
    }

    /// <summary>The next channel the peer asked to open; throws <see cref="SshConnectionClosedException"/> at the end.</summary>
    public async ValueTask<SshChannelOpenRequest> AcceptChannelAsync(CancellationToken cancellationToken)
    {
        try { return await _incomingOpens.Reader.ReadAsync(cancellationToken).ConfigureAwait(false); }
        catch (ChannelClosedException) { throw Closed(TerminalError); }
    }

    public async IAsyncEnumerable<SshChannelOpenRequest> AcceptChannelsAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var r in _incomingOpens.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            yield return r;
    }

    /// <summary>Opens a channel to the peer and waits for its answer (RFC 4254 §5.1).</summary>
    public async Task<SshChannel> OpenChannelAsync(string type, ReadOnlyMemory<byte> typeSpecificData, CancellationToken cancellationToken)
    {
        SshChannel channel;
        lock (_gate)
        {
            if (TerminalError is { } err) throw Closed(err);
            if (_channelCount >= Limits.MaxChannels)
                throw new SshChannelOpenFailedException(SshChannelOpenFailureReason.ResourceShortage, "local channel limit reached");
            _channelCount++;
            uint id = AllocateLocalId();
            channel = new SshChannel(this, type, id, Limits.InitialWindowSize, Limits.MaxPacketSize);
            _channels.Add(id, channel);
            var w = new SshWriter();
            w.WriteByte(SshConnectionMessage.ChannelOpen).WriteString(type).WriteUInt32(id)
             .WriteUInt32(Limits.InitialWindowSize).WriteUInt32(Limits.MaxPacketSize).WriteRaw(typeSpecificData.Span);
            EnqueueControlUnchecked(w.ToArray());
        }
        try
        {
            await channel.OpenTask.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // An open cannot be withdrawn; close it as soon as the peer confirms.
            _ = channel.OpenTask.ContinueWith(t => { if (t.IsCompletedSuccessfully) _ = channel.CloseAsync(); }, TaskScheduler.Default);
            throw;
        }
        return channel;
    }

    private void OnOpenConfirmation(ref SshReader r)
    {
        var ch = ReadRecipient(ref r);
        if (!r.TryReadUInt32(out var sender) || !r.TryReadUInt32(out var window) || !r.TryReadUInt32(out var maxPacket))
            throw Protocol("malformed CHANNEL_OPEN_CONFIRMATION");
        if (maxPacket == 0) throw Protocol("invalid maximum packet size");
        if (!ch.OnOpenConfirmed(sender, window, maxPacket)) throw Protocol("unexpected CHANNEL_OPEN_CONFIRMATION");
    }

    private void OnOpenFailure(ref SshReader r)
    {
        var ch = ReadRecipient(ref r);
        if (!r.TryReadUInt32(out var reason)) throw Protocol("malformed CHANNEL_OPEN_FAILURE");
        // Description and language tag are optional in practice (some peers omit them).
        string description = r.TryReadUtf8(out var d, SshChannel.MaxDescriptionBytes) ? d : "";
        if (!ch.OnOpenFailed((SshChannelOpenFailureReason)reason, description)) throw Protocol("unexpected CHANNEL_OPEN_FAILURE");
        Free(ch);
    }

    private uint AllocateLocalId()
    {
        // Caller holds _gate. At most MaxChannels ids are in use, so this ends quickly.
        while (_channels.ContainsKey(_nextLocalId)) _nextLocalId++;
        return _nextLocalId++;
    }

    /// <summary>Removes a channel whose CLOSE went both ways (or whose open failed).</summary>
    internal void Free(SshChannel channel)
    {
        lock (_gate)
        {
            if (_channels.Remove(channel.LocalId)) _channelCount--;
        }
    }

    internal void OnAgentForwardingAccepted() => Volatile.Write(ref _agentForwardingAccepted, true);

    // ---------------------------------------------------------------- teardown

    /// <summary>A peer protocol error: disconnect with its reason, then tear down.</summary>
    internal void Fail(Exception error)
    {
        if (Interlocked.CompareExchange(ref _terminalError, error, null) is not null) return;
        if (error is SshProtocolException pe)
        {
            // Disconnect text is fixed per error kind; it carries no peer data or secrets.
            var item = new Outbound { DisconnectReason = pe.Reason, DisconnectDescription = pe.Message };
            if (!_outbound.Writer.TryWrite(item)) _outbound.Writer.TryComplete();
        }
        else _outbound.Writer.TryComplete();
        FailLocal(error);
    }

    private void FailLocal(Exception error)
    {
        Interlocked.CompareExchange(ref _terminalError, error, null);
        try { _closing.Cancel(); } catch (ObjectDisposedException) { }
        SshChannel[] channels;
        TaskCompletionSource<GlobalReply>[] waiters;
        lock (_gate)
        {
            channels = [.. _channels.Values];
            _channels.Clear();
            _channelCount = 0;
            waiters = [.. _globalReplyWaiters];
            _globalReplyWaiters.Clear();
        }
        foreach (var ch in channels) ch.OnConnectionLost(error);
        foreach (var w in waiters) w.TrySetException(Closed(error));
        _incomingOpens.Writer.TryComplete();
        _globalRequests.Writer.TryComplete();
    }

    internal static SshProtocolException Protocol(string message) => new(SshDisconnectReason.ProtocolError, message);

    internal SshConnectionClosedException Closed(Exception? inner = null) => new("connection closed", inner ?? TerminalError);
}
