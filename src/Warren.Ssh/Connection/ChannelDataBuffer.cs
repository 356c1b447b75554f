using System.Buffers;

namespace Warren.Ssh.Connection;

/// <summary>
/// Received channel data waiting for the application. The connection's read
/// loop appends without ever waiting; the consumer takes bytes out. The bound
/// on what can be buffered is the channel's receive window, which the
/// connection enforces before it calls <see cref="Append"/>.
/// </summary>
/// <remarks>
/// Single owner: every segment is rented from <see cref="ArrayPool{T}.Shared"/>
/// by <see cref="Append"/> and returned exactly once, either when fully read
/// or by <see cref="Complete"/>/<see cref="Dispose"/>.
/// </remarks>
internal sealed class ChannelDataBuffer : IDisposable
{
    private readonly object _gate = new();
    private readonly Queue<Segment> _segments = new();
    private TaskCompletionSource? _waiter;
    private bool _completed;
    private Exception? _fault;
    private bool _disposed;

    private readonly record struct Segment(byte[] Array, int Offset, int Count);

    public int BufferedBytes { get; private set; }

    /// <summary>True once the writer side has signalled end of data.</summary>
    public bool IsCompleted { get { lock (_gate) return _completed; } }

    /// <summary>Copies <paramref name="data"/> into the buffer. Never blocks.</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        TaskCompletionSource? wake;
        lock (_gate)
        {
            if (_completed || _disposed) return;
            var array = ArrayPool<byte>.Shared.Rent(data.Length);
            data.CopyTo(array);
            _segments.Enqueue(new Segment(array, 0, data.Length));
            BufferedBytes += data.Length;
            wake = _waiter;
            _waiter = null;
        }
        wake?.TrySetResult();
    }

    /// <summary>No more data will arrive; readers get 0 once drained (or <paramref name="fault"/>).</summary>
    public void Complete(Exception? fault = null)
    {
        TaskCompletionSource? wake;
        lock (_gate)
        {
            if (_completed) return;
            _completed = true;
            _fault = fault;
            wake = _waiter;
            _waiter = null;
        }
        wake?.TrySetResult();
    }

    /// <summary>
    /// Reads up to <paramref name="destination"/>.Length bytes; 0 at end of data. An empty destination waits until
    /// data (or the end) is there and returns 0, as a zero-byte socket read does: a reader can wait without holding
    /// a buffer.
    /// </summary>
    public async ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wait;
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (BufferedBytes > 0) return destination.IsEmpty ? 0 : CopyOut(destination.Span);
                if (_completed)
                {
                    if (_fault is not null) throw new SshChannelClosedException("connection ended", _fault);
                    return 0;
                }
                _waiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                wait = _waiter.Task;
            }
            await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private int CopyOut(Span<byte> destination)
    {
        int total = 0;
        while (total < destination.Length && _segments.Count > 0)
        {
            var head = _segments.Peek();
            int available = head.Count - _headOffset;
            int n = Math.Min(available, destination.Length - total);
            head.Array.AsSpan(head.Offset + _headOffset, n).CopyTo(destination[total..]);
            _headOffset += n;
            total += n;
            if (_headOffset == head.Count)
            {
                _segments.Dequeue();
                _headOffset = 0;
                ArrayPool<byte>.Shared.Return(head.Array);
            }
        }
        BufferedBytes -= total;
        return total;
    }

    /// <summary>Bytes of the queue's head segment already handed to the reader.</summary>
    private int _headOffset;

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _completed = true;
            foreach (var s in _segments) ArrayPool<byte>.Shared.Return(s.Array);
            _segments.Clear();
            _headOffset = 0;
            BufferedBytes = 0;
            _waiter?.TrySetResult();
            _waiter = null;
        }
    }
}
