using Warren.Platform.Runtime;

namespace Warren.Runtime.Agent;

/// <summary>
/// A TCP connection made inside the VM by the agent (a connect OPEN), carried over the session socket: writes are
/// DATA frames, <see cref="ShutdownWriteAsync"/> is an EOF frame (the agent then shuts down its socket's sending
/// side), and reading returns 0 after the agent's STDOUT_EOF (the peer's half-close). Disposing closes both ways.
/// </summary>
internal sealed class AgentConnectionStream : UnseekableStream, IHalfClosableStream
{
    private readonly AgentSession _session;
    private readonly Stream _input;
    private int _writeClosed;
    private int _disposed;

    public AgentConnectionStream(AgentSession session)
    {
        _session = session;
        _input = session.OpenStdout();
    }

    /// <summary>Sends EOF to the VM side (TCP half-close there); reading goes on.</summary>
    public async Task ShutdownWriteAsync()
    {
        if (Interlocked.Exchange(ref _writeClosed, 1) != 0) return;
        try
        {
            await _session.SendEofAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // Already cut off: nothing left to half-close.
        }
    }

    public override bool CanRead => true;
    public override bool CanWrite => true;

    public override int Read(byte[] buffer, int offset, int count) => _input.Read(buffer, offset, count);
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => _input.ReadAsync(buffer, offset, count, ct);
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => _input.ReadAsync(buffer, ct);

    public override void Write(byte[] buffer, int offset, int count) =>
        WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) =>
        WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
    {
        if (Volatile.Read(ref _writeClosed) != 0) return ValueTask.FromException(new IOException("the connection's sending side is shut down"));
        return buffer.IsEmpty ? ValueTask.CompletedTask : _session.SendDataAsync(buffer, ct);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _input.Dispose();
            _session.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            await _input.DisposeAsync().ConfigureAwait(false);
            await _session.DisposeAsync().ConfigureAwait(false);
        }
        GC.SuppressFinalize(this);
    }
}
