namespace Warren.Edge.ProxyProtocol;

/// <summary>
/// Base of the front door's stream wrappers that only look at (or prepend to) what is read:
/// everything except reading goes straight to <see cref="Inner"/>, which the wrapper owns and disposes.
/// Subclasses implement the two read primitives; the array overloads route to them.
/// </summary>
internal abstract class ReadInterceptingStream(Stream inner) : Stream
{
    public Stream Inner { get; } = inner;

    public override bool CanRead => Inner.CanRead;
    public override bool CanWrite => Inner.CanWrite;
    public override bool CanSeek => false;
    public override bool CanTimeout => Inner.CanTimeout;
    public override int ReadTimeout { get => Inner.ReadTimeout; set => Inner.ReadTimeout = value; }
    public override int WriteTimeout { get => Inner.WriteTimeout; set => Inner.WriteTimeout = value; }
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public abstract override int Read(Span<byte> buffer);
    public abstract override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default);

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => Inner.Write(buffer, offset, count);
    public override void Write(ReadOnlySpan<byte> buffer) => Inner.Write(buffer);
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => Inner.WriteAsync(buffer, offset, count, cancellationToken);
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        => Inner.WriteAsync(buffer, cancellationToken);
    public override void Flush() => Inner.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => Inner.FlushAsync(cancellationToken);
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing) Inner.Dispose();
        base.Dispose(disposing);
    }

    public override ValueTask DisposeAsync() => Inner.DisposeAsync();
}
