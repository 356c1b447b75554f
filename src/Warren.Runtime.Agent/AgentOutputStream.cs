using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;

namespace Warren.Runtime.Agent;

/// <summary>
/// A read-only stream over one output pipe of an <see cref="AgentSession"/>. Unlike <c>PipeReader.AsStream()</c> it
/// hands out everything received before a session failure and only then throws it (as an <see cref="IOException"/>,
/// the Stream contract), so a broken session never swallows output that did arrive. Disposing it tells the session
/// this consumer is gone: further output for it is dropped instead of holding the process up.
/// </summary>
internal sealed class AgentOutputStream(PipeReader reader, AgentSession session) : ReadOnlyUnseekableStream
{
    private int _disposed;

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (buffer.IsEmpty) return 0;
        while (true)
        {
            var result = await reader.ReadAsync(ct).ConfigureAwait(false);
            var data = result.Buffer;
            if (!data.IsEmpty)
            {
                int n = (int)Math.Min(data.Length, buffer.Length);
                var taken = data.Slice(0, n);
                taken.CopyTo(buffer.Span);
                reader.AdvanceTo(taken.End);
                return n;
            }
            reader.AdvanceTo(data.End);
            if (result.IsCompleted)
            {
                if (session.OutputFailure is { } failure) throw new IOException(failure.Message, failure);
                return 0;
            }
            // Cancelled via CancelPendingRead (not used) or a spurious wake-up: read again.
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0) reader.Complete();
        base.Dispose(disposing);
    }
}
