namespace Warren.Runtime.Agent;

/// <summary>
/// Base of the runtime's pipe-like streams (process stdio, VM connections): no length, no position, no seek,
/// and nothing to flush because every write is handed on at once. Subclasses say which directions they support.
/// </summary>
internal abstract class UnseekableStream : Stream
{
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}

/// <summary>
/// A process's stdin as a write-only stream over the owner's write and close operations; disposing it sends
/// EOF to the process (as closing a pipe's write end would).
/// </summary>
internal sealed class ProcessStdinStream(
    Func<ReadOnlyMemory<byte>, CancellationToken, ValueTask> write,
    Func<Task> close) : UnseekableStream
{
    public override bool CanRead => false;
    public override bool CanWrite => true;
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) =>
        write(buffer.AsMemory(offset, count), CancellationToken.None).AsTask().GetAwaiter().GetResult();
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        write(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        write(buffer, cancellationToken);
    protected override void Dispose(bool disposing)
    {
        if (disposing) close().GetAwaiter().GetResult();
        base.Dispose(disposing);
    }
    public override ValueTask DisposeAsync() => new(close());
}

/// <summary>A process's output as a read-only stream: subclasses supply the one asynchronous read; the array forms map onto it.</summary>
internal abstract class ReadOnlyUnseekableStream : UnseekableStream
{
    public sealed override bool CanRead => true;
    public sealed override bool CanWrite => false;
    public sealed override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public sealed override int Read(byte[] buffer, int offset, int count) =>
        ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
    public sealed override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    public abstract override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default);
}
