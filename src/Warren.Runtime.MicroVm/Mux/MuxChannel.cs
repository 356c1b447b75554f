using System.IO.Pipelines;

namespace Warren.Runtime.MicroVm.Mux;

/// <summary>
/// One channel of a <see cref="MuxConnection"/>, with credit-based flow control both ways (as SSH channels,
/// RFC 4254 §5.2). Guest → host: DATA goes into <see cref="Input"/>, at most the window we granted, and the consumer
/// grants it again (<see cref="GrantAsync"/>) as it takes bytes out; so the connection's reader never waits on this
/// channel. Host → guest: <see cref="WriteAsync"/> waits for the guest's window.
/// </summary>
internal sealed class MuxChannel
{
    /// <summary>Never pauses the writer (the connection's reader): the window already bounds what is buffered.</summary>
    private static readonly PipeOptions s_inputOptions = new(pauseWriterThreshold: 0, resumeWriterThreshold: 0, useSynchronizationContext: false);

    private readonly MuxConnection _mux;
    private readonly Pipe _input = new(s_inputOptions);
    private readonly TaskCompletionSource _opened = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _lock = new();
    /// <summary>Bytes the guest may still send us (decremented by the reader, given back by the consumer).</summary>
    private int _receiveWindow = MuxConnection.ReceiveWindow;
    /// <summary>Bytes we may still send the guest.</summary>
    private long _sendWindow;
    private TaskCompletionSource? _windowWaiter;
    private bool _inputEnded, _closeSent, _closeReceived, _abandoned;
    private IOException? _failure;

    public MuxChannel(MuxConnection mux, uint id)
    {
        _mux = mux;
        Id = id;
    }

    public uint Id { get; }

    /// <summary>Completes when the guest confirmed; faults with <see cref="MuxOpenFailedException"/> or the connection's failure.</summary>
    public Task Opened => _opened.Task;

    /// <summary>Bytes from the guest; completes at its EOF/CLOSE, faults when the connection fails.</summary>
    public PipeReader Input => _input.Reader;

    // ------------------------------------------------------------------ from the connection's reader

    internal void OnConfirm(uint window)
    {
        bool abandoned;
        lock (_lock)
        {
            _sendWindow = Math.Min(window, int.MaxValue);
            abandoned = _abandoned;
        }
        if (!_opened.TrySetResult() || abandoned) _ = CloseAsync();
    }

    internal void OnFailure(string reason)
    {
        lock (_lock) _closeSent = _closeReceived = true; // a refused channel is over on both sides
        _opened.TrySetException(new MuxOpenFailedException(reason));
        EndInput(null);
        _mux.Release(this);
    }

    internal void OnData(ReadOnlySpan<byte> data)
    {
        if (!_opened.Task.IsCompletedSuccessfully) throw new MuxProtocolException($"DATA on channel {Id} before it was confirmed");
        if (Interlocked.Add(ref _receiveWindow, -data.Length) < 0)
            throw new MuxProtocolException($"channel {Id}: {data.Length} bytes of DATA beyond the window");
        lock (_lock)
        {
            if (_inputEnded) return; // we closed already: the rest is dropped (it still used up window)
            if (data.IsEmpty) return;
            // Pipe writes never wait here (pauseWriterThreshold 0): FlushAsync completes synchronously.
            var span = _input.Writer.GetSpan(data.Length);
            data.CopyTo(span);
            _input.Writer.Advance(data.Length);
            _ = _input.Writer.FlushAsync();
        }
    }

    internal void OnWindow(uint bytes)
    {
        TaskCompletionSource? waiter;
        lock (_lock)
        {
            _sendWindow += bytes;
            if (_sendWindow > int.MaxValue) throw new MuxProtocolException($"channel {Id}: window grown past 2^31-1");
            waiter = _windowWaiter;
            _windowWaiter = null;
        }
        waiter?.TrySetResult();
    }

    internal void OnEof() => EndInput(null);

    internal void OnClose()
    {
        bool release;
        lock (_lock)
        {
            _closeReceived = true;
            release = _closeSent;
        }
        EndInput(null);
        WakeWriter();
        if (release) _mux.Release(this);
        else _ = CloseAsync(); // answer, as SSH does (RFC 4254 §5.3)
    }

    /// <summary>The connection failed: every wait ends with <paramref name="error"/>.</summary>
    internal void Fail(IOException error)
    {
        lock (_lock) _failure ??= error;
        _opened.TrySetException(error);
        EndInput(error);
        WakeWriter();
    }

    /// <summary>The opener gave up waiting: close the channel as soon as it is confirmed.</summary>
    internal void Abandon()
    {
        lock (_lock) _abandoned = true;
        if (_opened.Task.IsCompletedSuccessfully) _ = CloseAsync();
    }

    private void EndInput(Exception? error)
    {
        lock (_lock)
        {
            if (_inputEnded) return;
            _inputEnded = true;
            _input.Writer.Complete(error);
        }
    }

    private void WakeWriter()
    {
        TaskCompletionSource? waiter;
        lock (_lock)
        {
            waiter = _windowWaiter;
            _windowWaiter = null;
        }
        waiter?.TrySetResult();
    }

    // ------------------------------------------------------------------ from the consumer

    /// <summary>The consumer took <paramref name="bytes"/> out of <see cref="Input"/>: the guest may send that much more.</summary>
    public async ValueTask GrantAsync(int bytes, CancellationToken ct)
    {
        if (bytes <= 0) return;
        Interlocked.Add(ref _receiveWindow, bytes);
        lock (_lock)
        {
            if (_closeSent || _closeReceived || _failure != null) return;
        }
        await _mux.SendAsync(MuxFrames.BuildUInt32(MuxFrameType.Window, Id, (uint)bytes), ct).ConfigureAwait(false);
    }

    /// <summary>Sends <paramref name="data"/> as DATA frames, each within the guest's window (waiting for WINDOW when it is used up).</summary>
    public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (!data.IsEmpty)
        {
            int chunk;
            Task? wait = null;
            lock (_lock)
            {
                if (_failure != null) throw new IOException(_failure.Message, _failure);
                if (_closeSent || _closeReceived) throw new IOException($"channel {Id} is closed");
                if (_sendWindow == 0)
                {
                    _windowWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = _windowWaiter.Task;
                    chunk = 0;
                }
                else
                {
                    chunk = (int)Math.Min(Math.Min(_sendWindow, MuxProtocol.MaxPayload), data.Length);
                    _sendWindow -= chunk;
                }
            }
            if (wait != null)
            {
                await wait.WaitAsync(ct).ConfigureAwait(false);
                continue;
            }
            await _mux.SendDataAsync(Id, data[..chunk], ct).ConfigureAwait(false);
            data = data[chunk..];
        }
    }

    /// <summary>No more data from us (the guest half-closes its connection to the agent).</summary>
    public async ValueTask SendEofAsync(CancellationToken ct)
    {
        lock (_lock)
        {
            if (_closeSent || _closeReceived || _failure != null) return;
        }
        await _mux.SendAsync(MuxFrames.Build(MuxFrameType.Eof, Id, []), ct).ConfigureAwait(false);
    }

    /// <summary>Closes the channel (once); its id is reused after the guest's CLOSE too.</summary>
    public async Task CloseAsync()
    {
        bool failed, received;
        lock (_lock)
        {
            if (_closeSent) return;
            _closeSent = true;
            failed = _failure != null;
            received = _closeReceived;
        }
        EndInput(null);
        WakeWriter();
        if (!failed)
        {
            try
            {
                await _mux.SendAsync(MuxFrames.Build(MuxFrameType.Close, Id, []), CancellationToken.None).ConfigureAwait(false);
            }
            catch (IOException)
            {
                // The connection is gone: so is the channel.
            }
        }
        if (received || failed) _mux.Release(this);
    }
}
