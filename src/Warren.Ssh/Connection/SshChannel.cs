using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Connection;

/// <summary>
/// One SSH channel (RFC 4254 §5): a flow-controlled, bidirectional byte stream
/// plus extended data (stderr), EOF, CLOSE and channel requests.
/// </summary>
/// <remarks>
/// Flow control (RFC 4254 §5.2): the peer may send at most our window and at most
/// our maximum packet per message, otherwise the connection is ended with a
/// protocol error. We return window credit once half of it has been consumed by
/// the reader, so a busy reader never stalls the sender. Writes wait for the
/// peer's window and are split at its maximum packet size.
/// </remarks>
public sealed class SshChannel : IAsyncDisposable
{
    /// <summary>Longest request or channel type name accepted; RFC 4251 §6 names are at most 64 characters.</summary>
    internal const int MaxRequestTypeBytes = 64;

    /// <summary>Host names in forwarding messages: RFC 1035 §2.3.4 caps a name at 255 octets.</summary>
    internal const int MaxHostBytes = 255;

    /// <summary>Free-text descriptions (open failure, exit-signal message): anything longer is truncated input.</summary>
    internal const int MaxDescriptionBytes = 1024;

    /// <summary>Requests waiting for the application to read them; beyond this they are refused (or dropped if no reply was asked).</summary>
    internal const int MaxQueuedRequests = 64;

    /// <summary>SSH_EXTENDED_DATA_STDERR, RFC 4254 §5.2.</summary>
    public const uint ExtendedDataStderr = 1;

    private readonly ChannelMux _mux;
    private readonly object _gate = new();
    private readonly ChannelDataBuffer _stdout = new();
    private readonly ChannelDataBuffer _stderr = new();
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly TaskCompletionSource _open = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Channel<SshChannelRequest> _requests = Channel.CreateBounded<SshChannelRequest>(MaxQueuedRequests);
    private readonly Queue<TaskCompletionSource<bool>> _replyWaiters = new();
    private readonly SortedDictionary<long, bool> _answers = [];
    private readonly uint _initialWindow;
    private readonly uint _localMaxPacket;
    private uint _localWindow;
    private uint _unacknowledged;
    private uint _remoteWindow;
    private uint _remoteMaxPacket;
    private TaskCompletionSource? _windowWaiter;
    private long _nextRequestSequence;
    private long _nextReplySequence;
    private bool _opened, _eofSent, _eofReceived, _closeSent, _closeReceived, _freed;
    private uint? _exitStatus;
    private string? _exitSignal, _exitMessage;
    private bool _coreDumped;
    private Stream? _stream, _stderrStream;

    internal SshChannel(ChannelMux mux, string channelType, uint localId, uint initialWindow, uint maxPacket)
    {
        _mux = mux;
        ChannelType = channelType;
        LocalId = localId;
        _initialWindow = initialWindow;
        _localWindow = initialWindow;
        _localMaxPacket = maxPacket;
    }

    /// <summary>"session", "direct-tcpip", ...</summary>
    public string ChannelType { get; }

    internal uint LocalId { get; }
    internal uint RemoteId { get; private set; }
    internal Task OpenTask => _open.Task;

    /// <summary>Completes when CLOSE went both ways or the connection ended.</summary>
    public Task Completion => _completion.Task;

    /// <summary>True once the peer sent EOF.</summary>
    public bool EofReceived { get { lock (_gate) return _eofReceived; } }

    /// <summary>Exit information the peer sent (exit-status / exit-signal, RFC 4254 §6.10); final once <see cref="Completion"/> is done.</summary>
    public SshExitResult ExitResult
    {
        get { lock (_gate) return new SshExitResult(_exitStatus, _exitSignal, _coreDumped, _exitMessage); }
    }

    /// <summary>Waits for the channel to close and returns the peer's exit information.</summary>
    public async Task<SshExitResult> WaitForExitAsync(CancellationToken cancellationToken = default)
    {
        await Completion.WaitAsync(cancellationToken).ConfigureAwait(false);
        return ExitResult;
    }

    // ------------------------------------------------------------- application: data

    /// <summary>
    /// Reads channel data; returns 0 after the peer's EOF or CLOSE once drained. An empty buffer waits until data
    /// (or the end) arrived and returns 0 without taking any, like a zero-byte socket read.
    /// </summary>
    public async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int n = await _stdout.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        if (n > 0) Credit((uint)n);
        return n;
    }

    /// <summary>Reads extended data of type stderr; returns 0 at EOF.</summary>
    public async ValueTask<int> ReadStderrAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int n = await _stderr.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        if (n > 0) Credit((uint)n);
        return n;
    }

    public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
        => WriteCoreAsync(data, null, cancellationToken);

    /// <summary>Writes extended data; type 1 is stderr (RFC 4254 §5.2).</summary>
    public ValueTask WriteExtendedAsync(ReadOnlyMemory<byte> data, uint dataTypeCode = ExtendedDataStderr, CancellationToken cancellationToken = default)
        => WriteCoreAsync(data, dataTypeCode, cancellationToken);

    private async ValueTask WriteCoreAsync(ReadOnlyMemory<byte> data, uint? extendedType, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            while (!data.IsEmpty)
            {
                int n = 0;
                Task? wait = null;
                lock (_gate)
                {
                    if (_closeSent || _closeReceived) throw new SshChannelClosedException("channel is closed", _mux.TerminalError);
                    if (_eofSent) throw new InvalidOperationException("EOF was already sent on this channel.");
                    if (_remoteWindow == 0)
                    {
                        _windowWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                        wait = _windowWaiter.Task;
                    }
                    else
                    {
                        uint chunk = Math.Min(Math.Min(_remoteWindow, _remoteMaxPacket), ChannelMux.MaxSendChunk);
                        n = (int)Math.Min((uint)data.Length, chunk);
                        _remoteWindow -= (uint)n;
                    }
                }
                if (wait is not null)
                {
                    await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
                    continue;
                }
                var w = new SshWriter(n + 16);
                if (extendedType is { } code)
                    w.WriteByte(SshConnectionMessage.ChannelExtendedData).WriteUInt32(RemoteId).WriteUInt32(code);
                else
                    w.WriteByte(SshConnectionMessage.ChannelData).WriteUInt32(RemoteId);
                w.WriteString(data.Span[..n]);
                try { await _mux.SendAndWaitAsync(w.ToArray(), cancellationToken).ConfigureAwait(false); }
                catch (SshConnectionClosedException e)
                {
                    // Channel users see one failure type for "the other side is gone" (an IOException),
                    // whether the channel or the whole connection closed underneath the write.
                    throw new SshChannelClosedException("connection closed", e);
                }
                data = data[n..];
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Sends SSH_MSG_CHANNEL_EOF after any write in progress; further writes are not allowed.</summary>
    public async ValueTask SendEofAsync(CancellationToken cancellationToken = default)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            lock (_gate)
            {
                if (_eofSent || _closeSent || _closeReceived) return;
                _eofSent = true;
                _mux.EnqueueControl(Simple(SshConnectionMessage.ChannelEof));
            }
        }
        finally { _writeLock.Release(); }
    }

    /// <summary>
    /// Sends SSH_MSG_CHANNEL_CLOSE (once). Pending writes fail; the channel is
    /// freed when the peer's CLOSE arrives (<see cref="Completion"/>).
    /// </summary>
    public ValueTask CloseAsync(CancellationToken cancellationToken = default)
    {
        bool free;
        TaskCompletionSource? wake;
        lock (_gate)
        {
            if (_closeSent || !_opened) return ValueTask.CompletedTask;
            _closeSent = true;
            wake = _windowWaiter;
            _windowWaiter = null;
            _mux.EnqueueControl(Simple(SshConnectionMessage.ChannelClose));
            free = _closeReceived;
        }
        wake?.TrySetResult();
        if (free) Release(null);
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Ends a session the way RFC 4254 §6.10 orders it: exit-status, EOF, CLOSE,
    /// all after any write still in progress.
    /// </summary>
    public async ValueTask ExitAsync(uint exitStatus, CancellationToken cancellationToken = default)
    {
        await SendAfterWritesAsync(SshChannelRequestTypes.ExitStatus, ExitStatusData(exitStatus), alsoEof: true, cancellationToken).ConfigureAwait(false);
        await CloseAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>"exit-status" (RFC 4254 §6.10), sent after any write in progress.</summary>
    public ValueTask SendExitStatusAsync(uint exitStatus, CancellationToken cancellationToken = default)
        => SendAfterWritesAsync(SshChannelRequestTypes.ExitStatus, ExitStatusData(exitStatus), alsoEof: false, cancellationToken);

    /// <summary>"exit-signal" (RFC 4254 §6.10); <paramref name="signalName"/> without "SIG", e.g. "KILL".</summary>
    public ValueTask SendExitSignalAsync(string signalName, bool coreDumped, string errorMessage = "", CancellationToken cancellationToken = default)
    {
        var w = new SshWriter();
        w.WriteString(signalName).WriteBoolean(coreDumped).WriteString(errorMessage).WriteString("");
        return SendAfterWritesAsync(SshChannelRequestTypes.ExitSignal, w.ToArray(), alsoEof: false, cancellationToken);
    }

    /// <summary>"eow@openssh.com": no more stdin will be read (OpenSSH PROTOCOL §2.1).</summary>
    public ValueTask SendEowAsync(CancellationToken cancellationToken = default)
        => SendRequestNoReplyAsync(SshChannelRequestTypes.Eow, default);

    private static byte[] ExitStatusData(uint exitStatus)
    {
        var w = new SshWriter(4);
        w.WriteUInt32(exitStatus);
        return w.ToArray();
    }

    /// <summary>Queues a no-reply request (and optionally EOF) behind any write in progress, so output precedes it.</summary>
    private async ValueTask SendAfterWritesAsync(string type, byte[] data, bool alsoEof, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            lock (_gate)
            {
                if (_closeSent || _closeReceived) return;
                _mux.EnqueueControl(RequestMessage(type, false, data));
                if (alsoEof && !_eofSent)
                {
                    _eofSent = true;
                    _mux.EnqueueControl(Simple(SshConnectionMessage.ChannelEof));
                }
            }
        }
        finally { _writeLock.Release(); }
    }

    private ValueTask SendRequestNoReplyAsync(string type, ReadOnlyMemory<byte> data)
    {
        lock (_gate)
        {
            if (_closeSent || _closeReceived) return ValueTask.CompletedTask;
            _mux.EnqueueControl(RequestMessage(type, false, data.Span));
        }
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Sends a channel request. With <paramref name="wantReply"/>, waits for
    /// SUCCESS (true) or FAILURE (false); false too if the channel closes first.
    /// </summary>
    public async Task<bool> SendRequestAsync(string requestType, bool wantReply, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        TaskCompletionSource<bool>? waiter = null;
        lock (_gate)
        {
            if (_closeSent || _closeReceived) return false;
            if (wantReply)
            {
                waiter = new(TaskCreationOptions.RunContinuationsAsynchronously);
                _replyWaiters.Enqueue(waiter);
            }
            _mux.EnqueueControl(RequestMessage(requestType, wantReply, data.Span));
        }
        if (waiter is null) return true;
        return await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private byte[] RequestMessage(string type, bool wantReply, ReadOnlySpan<byte> data)
    {
        var w = new SshWriter(32 + data.Length);
        w.WriteByte(SshConnectionMessage.ChannelRequest).WriteUInt32(RemoteId).WriteString(type).WriteBoolean(wantReply).WriteRaw(data);
        return w.ToArray();
    }

    private byte[] Simple(byte message)
    {
        var w = new SshWriter(5);
        w.WriteByte(message).WriteUInt32(RemoteId);
        return w.ToArray();
    }

    /// <summary>The channel's data as a stream: reads return channel data, writes send it; Dispose sends EOF.</summary>
    public Stream AsStream() => _stream ??= new SshChannelStream(this, stderr: false);

    /// <summary>Stderr as a stream: reads return extended data type 1, writes send it.</summary>
    public Stream StderrStream => _stderrStream ??= new SshChannelStream(this, stderr: true);

    // ------------------------------------------------------------- application: requests

    /// <summary>
    /// The next request the peer sent on this session channel (server side:
    /// pty-req, env, auth-agent-req@openssh.com, shell, exec, subsystem,
    /// window-change, signal, break), or null once the channel is closed.
    /// </summary>
    public async ValueTask<SshChannelRequest?> ReadRequestAsync(CancellationToken cancellationToken = default)
    {
        try { return await _requests.Reader.ReadAsync(cancellationToken).ConfigureAwait(false); }
        catch (ChannelClosedException) { return null; }
    }

    public async IAsyncEnumerable<SshChannelRequest> ReadRequestsAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var r in _requests.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            yield return r;
    }

    internal ValueTask AnswerRequestAsync(long sequence, bool success, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            _answers[sequence] = success;
            // RFC 4254 §5.4: replies go out in request order.
            while (_answers.Remove(_nextReplySequence, out var ok))
            {
                _nextReplySequence++;
                if (!_closeSent && !_closeReceived)
                    _mux.EnqueueControl(Simple(ok ? SshConnectionMessage.ChannelSuccess : SshConnectionMessage.ChannelFailure));
            }
        }
        return ValueTask.CompletedTask;
    }

    // ------------------------------------------------------------- read loop side

    internal void SetRemote(uint remoteId, uint window, uint maxPacket)
    {
        RemoteId = remoteId;
        _remoteWindow = window;
        _remoteMaxPacket = maxPacket;
        _opened = true;
        _open.TrySetResult();
    }

    internal bool OnOpenConfirmed(uint remoteId, uint window, uint maxPacket)
    {
        lock (_gate)
        {
            if (_opened) return false;
            RemoteId = remoteId;
            _remoteWindow = window;
            _remoteMaxPacket = maxPacket;
            _opened = true;
        }
        _open.TrySetResult();
        return true;
    }

    internal bool OnOpenFailed(SshChannelOpenFailureReason reason, string description)
    {
        lock (_gate)
        {
            if (_opened) return false;
            _freed = true;
        }
        _open.TrySetException(new SshChannelOpenFailedException(reason, description));
        _stdout.Complete();
        _stderr.Complete();
        _requests.Writer.TryComplete();
        _completion.TrySetResult();
        return true;
    }

    private void RequireOpened()
    {
        if (!_opened) throw ChannelMux.Protocol("message for a channel that is not open yet");
    }

    internal void OnWindowAdjust(uint bytesToAdd)
    {
        TaskCompletionSource? wake;
        lock (_gate)
        {
            RequireOpened();
            // RFC 4254 §5.2: the window may not grow beyond 2^32 - 1 bytes.
            if ((ulong)_remoteWindow + bytesToAdd > uint.MaxValue) throw ChannelMux.Protocol("window adjust overflows 2^32-1");
            _remoteWindow += bytesToAdd;
            wake = _windowWaiter;
            _windowWaiter = null;
        }
        wake?.TrySetResult();
    }

    internal void OnData(uint? extendedType, ReadOnlySpan<byte> data)
    {
        bool discard;
        lock (_gate)
        {
            RequireOpened();
            if (_eofReceived) throw ChannelMux.Protocol("data after EOF");
            if ((uint)data.Length > _localMaxPacket) throw ChannelMux.Protocol("data larger than the maximum packet size");
            if ((uint)data.Length > _localWindow) throw ChannelMux.Protocol("data beyond the channel window");
            _localWindow -= (uint)data.Length;
            // After we sent CLOSE the application is gone; data still in flight is dropped.
            discard = _closeSent || (extendedType is { } t && t != ExtendedDataStderr);
        }
        if (discard)
        {
            // Credit what nobody will read, so the peer is not stalled by data we throw away.
            Credit((uint)data.Length);
            return;
        }
        (extendedType is null ? _stdout : _stderr).Append(data);
    }

    private void Credit(uint consumed)
    {
        lock (_gate)
        {
            _unacknowledged += consumed;
            if (_eofReceived || _closeSent || _closeReceived) return;
            // Return credit once half the window is consumed (OpenSSH does the same
            // in channel_check_window), so the sender never runs dry while we read.
            if (_unacknowledged < _initialWindow / 2) return;
            uint add = _unacknowledged;
            _unacknowledged = 0;
            _localWindow += add;
            var w = new SshWriter(9);
            w.WriteByte(SshConnectionMessage.ChannelWindowAdjust).WriteUInt32(RemoteId).WriteUInt32(add);
            _mux.EnqueueControl(w.ToArray());
        }
    }

    internal void OnEof()
    {
        lock (_gate)
        {
            RequireOpened();
            _eofReceived = true;
        }
        _stdout.Complete();
        _stderr.Complete();
    }

    internal void OnClose()
    {
        bool sendClose;
        TaskCompletionSource? wake;
        lock (_gate)
        {
            RequireOpened();
            _closeReceived = true;
            // RFC 4254 §5.3: answer CLOSE with CLOSE unless we already sent one.
            sendClose = !_closeSent;
            _closeSent = true;
            wake = _windowWaiter;
            _windowWaiter = null;
            if (sendClose) _mux.EnqueueControl(Simple(SshConnectionMessage.ChannelClose));
        }
        wake?.TrySetResult();
        Release(null);
    }

    internal void OnReply(bool success)
    {
        TaskCompletionSource<bool>? waiter;
        lock (_gate)
        {
            RequireOpened();
            // Unsolicited replies are dropped.
            if (!_replyWaiters.TryDequeue(out waiter)) return;
        }
        waiter.TrySetResult(success);
    }

    internal void OnRequest(string type, bool wantReply, ReadOnlySpan<byte> data)
    {
        lock (_gate) RequireOpened();
        SshChannelRequest? request = null;
        bool? autoReply = false;
        if (_mux.IsServer && ChannelType == SshChannelTypes.Session)
        {
            // x11-req, xon-xoff and anything unknown parse to null and are refused (X11 forwarding is not offered).
            request = SessionRequestParser.Parse(type, wantReply, data);
        }
        else if (!_mux.IsServer)
        {
            var r = new SshReader(data);
            switch (type)
            {
                case SshChannelRequestTypes.ExitStatus:
                    if (!r.TryReadUInt32(out var status)) throw ChannelMux.Protocol("malformed exit-status");
                    lock (_gate) _exitStatus = status;
                    autoReply = true;
                    break;
                case SshChannelRequestTypes.ExitSignal:
                    if (!r.TryReadUtf8(out var sig, MaxRequestTypeBytes) || !r.TryReadBoolean(out var core))
                        throw ChannelMux.Protocol("malformed exit-signal");
                    string msg = r.TryReadUtf8(out var m, MaxDescriptionBytes) ? m : "";
                    lock (_gate) { _exitSignal = sig; _coreDumped = core; _exitMessage = msg; }
                    autoReply = true;
                    break;
                case SshChannelRequestTypes.Eow:
                    autoReply = true;
                    break;
            }
        }

        if (request is not null)
        {
            lock (_gate)
            {
                request.Bind(this, wantReply ? _nextRequestSequence++ : -1);
                if (_requests.Writer.TryWrite(request)) return;
            }
            // The application is not reading requests: refuse (or drop) the overflow.
            if (wantReply) _ = AnswerRequestAsync(request.ReplySequence, false, default);
            return;
        }
        if (!wantReply) return;
        long seq;
        lock (_gate) seq = _nextRequestSequence++;
        _ = AnswerRequestAsync(seq, autoReply == true, default);
    }

    /// <summary>The application accepted this session's "auth-agent-req@openssh.com".</summary>
    internal void OnAgentForwardingAccepted() => _mux.OnAgentForwardingAccepted();

    internal void OnConnectionLost(Exception error)
    {
        TaskCompletionSource? wake;
        TaskCompletionSource<bool>[] waiters;
        lock (_gate)
        {
            _closeReceived = true;
            _closeSent = true;
            wake = _windowWaiter;
            _windowWaiter = null;
            waiters = [.. _replyWaiters];
            _replyWaiters.Clear();
        }
        wake?.TrySetResult();
        foreach (var w in waiters) w.TrySetResult(false);
        _open.TrySetException(new SshConnectionClosedException("connection closed", error));
        _open.Task.Exception?.Handle(_ => true);
        Release(error);
    }

    private void Release(Exception? error)
    {
        TaskCompletionSource<bool>[] waiters;
        lock (_gate)
        {
            if (_freed) return;
            _freed = true;
            waiters = [.. _replyWaiters];
            _replyWaiters.Clear();
        }
        foreach (var w in waiters) w.TrySetResult(false);
        if (error is null) _mux.Free(this);
        // Readers drain what was delivered; an abrupt end surfaces as an error after that.
        bool clean = error is null || EofReceived;
        _stdout.Complete(clean ? null : error);
        _stderr.Complete(clean ? null : error);
        _requests.Writer.TryComplete();
        _completion.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        await CloseAsync().ConfigureAwait(false);
        _stdout.Dispose();
        _stderr.Dispose();
    }

    public override string ToString() => $"{ChannelType}#{LocalId}";
}
