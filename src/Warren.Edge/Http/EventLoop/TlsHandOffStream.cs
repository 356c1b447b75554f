using System.Buffers;
using System.Net.Sockets;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// The plaintext side of a TLS connection the event loop handed off: Kestrel's HTTP layer reads and writes here,
/// while TLS stays in the connection's <see cref="TlsSession"/> (no second handshake, no SslStream).
/// </summary>
/// <remarks>
/// <para>Reads: OpenSSL reads ciphertext straight from the fd (socket BIO). When it wants more, a zero-byte
/// <see cref="Socket.ReceiveAsync(Memory{byte}, SocketFlags, CancellationToken)"/> waits for readiness (.NET turns
/// it into a one-byte MSG_PEEK on Linux, so it completes when data or EOF is there and consumes nothing).</para>
/// <para>Writes: after <see cref="TlsSession.DetachWriteSide"/> OpenSSL writes records into a memory BIO; this stream
/// moves them out and sends them with the socket. Whoever holds <see cref="_sendLock"/> drains that BIO in FIFO
/// order, so records never overtake each other, whichever of the reader (alerts, TLS 1.3 KeyUpdate answers) or
/// the writer produced them.</para>
/// <para>Concurrency: one read and one write may run at the same time (HTTP/2, WebSockets). Every call on the
/// session happens under <see cref="_sslLock"/>, held only around that synchronous call; the fd is closed and the
/// SSL object freed under the same lock after <see cref="_released"/> is set, so no SSL_read can ever run on a
/// closed (and possibly reused) fd number.</para>
/// </remarks>
internal sealed class TlsHandOffStream : Stream
{
    /// <summary>Plaintext encrypted per step of a write: one full TLS record (RFC 8446 §5.1: at most 2^14 bytes),
    /// so a large write never buffers more than one record of ciphertext before it is sent.</summary>
    internal const int PlaintextChunkBytes = 16 * 1024;

    /// <summary>Ciphertext moved out of the memory BIO per send: one record of <see cref="PlaintextChunkBytes"/>
    /// plus its header and the largest expansion TLS 1.2 allows (RFC 5246 §6.2.3: 2^14 + 2048; TLS 1.3 allows
    /// less, RFC 8446 §5.2). Larger backlogs simply take several sends.</summary>
    private const int CiphertextBufferBytes = PlaintextChunkBytes + 2048 + 5;

    /// <summary>How long closing waits to send close_notify (RFC 8446 §6.1) before it closes the socket anyway:
    /// a client that stopped reading must not hold a connection (or a shutdown) open.</summary>
    internal static readonly TimeSpan CloseNotifyTimeout = TimeSpan.FromSeconds(1);

    private readonly Socket _socket;
    private readonly TlsSession _session;
    /// <summary>Guards every call on <see cref="_session"/> and the fields below it.</summary>
    private readonly Lock _sslLock = new();
    /// <summary>Held by the one drain that moves ciphertext from the memory BIO to the socket.</summary>
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    /// <summary>Set by anyone who put ciphertext into the BIO; a drain clears it before taking and re-checks it
    /// after releasing <see cref="_sendLock"/>, so a request made while the lock was held is never lost.</summary>
    private int _drainRequested;
    private ReadOnlyMemory<byte> _alreadyDecrypted;
    private bool _closing;   // under _sslLock: no new Read/Write on the session
    private bool _released;  // under _sslLock: the session is freed and the fd closed
    private int _disposeStarted;
    /// <summary>The first send failure (or a cancelled, partly sent record): the byte stream to the peer is broken,
    /// so every later write fails too.</summary>
    private volatile Exception? _sendFailure;

    /// <param name="socket">The connection's socket; owned and disposed by this stream.</param>
    /// <param name="session">Its TLS session, handshake complete, nothing pending to write; owned by this stream.</param>
    /// <param name="alreadyDecrypted">Plaintext the loop read but did not consume; returned by the first reads.
    /// Copied, so the caller may reuse its buffer.</param>
    public TlsHandOffStream(Socket socket, TlsSession session, ReadOnlyMemory<byte> alreadyDecrypted)
    {
        _socket = socket;
        _session = session;
        _alreadyDecrypted = alreadyDecrypted.IsEmpty ? ReadOnlyMemory<byte>.Empty : alreadyDecrypted.ToArray();
        session.DetachWriteSide();
    }

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    /// <summary>Nothing to flush: every write has been sent when it completes.</summary>
    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override int Read(byte[] buffer, int offset, int count) =>
        ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override void Write(byte[] buffer, int offset, int count) =>
        WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <summary>Returns decrypted bytes, 0 at the end (close_notify or EOF). Failures are <see cref="IOException"/>;
    /// a read on (or ended by) a closed stream throws <see cref="ObjectDisposedException"/>.</summary>
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty)
            return 0;
        if (!_alreadyDecrypted.IsEmpty)
        {
            int n = Math.Min(buffer.Length, _alreadyDecrypted.Length);
            _alreadyDecrypted.Span[..n].CopyTo(buffer.Span);
            _alreadyDecrypted = _alreadyDecrypted[n..];
            return n;
        }

        // Each pass either returns or waits for the socket, so this does not spin.
        while (true)
        {
            TlsStatus status;
            int read;
            string? error = null;
            bool pending;
            lock (_sslLock)
            {
                ObjectDisposedException.ThrowIf(_closing, this);
                status = _session.Read(buffer.Span, out read);
                if (status == TlsStatus.Failed)
                    error = _session.LastError;
                pending = _session.PendingCiphertext > 0;
            }
            // A read can produce output (alerts, a KeyUpdate answer: RFC 8446 §4.6.3). The reader never waits for
            // it to be sent: a writer blocked on a peer that is itself blocked writing to us must not stop reads.
            if (pending)
                RequestDrainInBackground();

            switch (status)
            {
                case TlsStatus.Done:
                    return read;
                case TlsStatus.Closed:
                    return 0;
                case TlsStatus.Failed:
                    throw new IOException($"TLS read failed: {error ?? "unknown error"}");
                case TlsStatus.WantWrite:
                    // Output goes to the memory BIO, which never refuses; nothing was queued means nothing can unblock it.
                    if (!pending)
                        throw new IOException("TLS read wants to write, but the write side is detached and nothing is pending.");
                    await Task.Yield();
                    break;
                case TlsStatus.WantRead:
                    await WaitReadableAsync(cancellationToken);
                    break;
            }
        }
    }

    private async ValueTask WaitReadableAsync(CancellationToken cancellationToken)
    {
        try
        {
            await _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException && Volatile.Read(ref _disposeStarted) != 0)
        {
            throw new ObjectDisposedException(nameof(TlsHandOffStream), e);
        }
        catch (SocketException e)
        {
            throw new IOException(e.Message, e);
        }
    }

    /// <summary>Encrypts and sends <paramref name="data"/> one record at a time; completes when all of it is sent.</summary>
    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        while (!data.IsEmpty)
        {
            var chunk = data[..Math.Min(data.Length, PlaintextChunkBytes)];
            data = data[chunk.Length..];
            while (!chunk.IsEmpty)
            {
                if (_sendFailure is { } failure)
                    throw new IOException("An earlier send on this TLS connection failed.", failure);
                TlsStatus status;
                int written;
                string? error = null;
                lock (_sslLock)
                {
                    ObjectDisposedException.ThrowIf(_closing, this);
                    status = _session.Write(chunk.Span, out written);
                    if (status == TlsStatus.Failed)
                        error = _session.LastError;
                }
                switch (status)
                {
                    case TlsStatus.Done:
                        chunk = chunk[written..];
                        break;
                    case TlsStatus.WantWrite:
                        // Memory BIOs grow, so this should not happen; sending what is queued is the only way forward.
                        await DrainAsync(cancellationToken);
                        break;
                    case TlsStatus.WantRead:
                        // Only renegotiation makes SSL_write read, and TlsServerContext turns it off.
                        throw new IOException("TLS write wants to read (renegotiation is disabled).");
                    case TlsStatus.Closed:
                        throw new IOException("The TLS session is closed.");
                    case TlsStatus.Failed:
                        throw new IOException($"TLS write failed: {error ?? "unknown error"}");
                }
            }
            await DrainAsync(cancellationToken);
        }
    }

    /// <summary>Sends everything queued in the memory BIO (the caller's records and any queued before them).</summary>
    private async ValueTask DrainAsync(CancellationToken cancellationToken)
    {
        Volatile.Write(ref _drainRequested, 1);
        await _sendLock.WaitAsync(cancellationToken);
        await DrainHeldAsync(cancellationToken);
    }

    /// <summary>Starts a drain if none is running; never waits (the running drain sees the request).</summary>
    private void RequestDrainInBackground()
    {
        Volatile.Write(ref _drainRequested, 1);
        if (_sendLock.Wait(0))
            _ = DrainInBackgroundAsync();
    }

    private async Task DrainInBackgroundAsync()
    {
        try
        {
            await DrainHeldAsync(CancellationToken.None);
        }
        catch (Exception)
        {
            // Recorded in _sendFailure by SendAllAsync (the next write reports it) or the stream is closing.
        }
    }

    /// <summary>Called holding <see cref="_sendLock"/>; releases it, then takes it again if a drain was requested
    /// meanwhile (its requester's Wait(0) failed because we held the lock).</summary>
    private async Task DrainHeldAsync(CancellationToken cancellationToken)
    {
        do
        {
            // Single owner: this drain; returned before the lock is released.
            byte[] buffer = ArrayPool<byte>.Shared.Rent(CiphertextBufferBytes);
            try
            {
                do
                {
                    Volatile.Write(ref _drainRequested, 0);
                    while (true)
                    {
                        int taken;
                        lock (_sslLock)
                        {
                            if (_released || _session.PendingCiphertext == 0)
                                break;
                            taken = _session.TakeCiphertext(buffer);
                        }
                        await SendAllAsync(buffer.AsMemory(0, taken), cancellationToken);
                    }
                }
                while (Volatile.Read(ref _drainRequested) != 0);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
                _sendLock.Release();
            }
        }
        while (Volatile.Read(ref _drainRequested) != 0 && _sendLock.Wait(0));
    }

    private async ValueTask SendAllAsync(ReadOnlyMemory<byte> ciphertext, CancellationToken cancellationToken)
    {
        if (_sendFailure is { } earlier)
            throw new IOException("An earlier send on this TLS connection failed.", earlier);
        try
        {
            while (!ciphertext.IsEmpty)
            {
                int sent = await _socket.SendAsync(ciphertext, SocketFlags.None, cancellationToken);
                ciphertext = ciphertext[sent..];
            }
        }
        catch (Exception e)
        {
            // Part of a record may be on the wire: nothing sent after it could be decrypted by the peer.
            _sendFailure ??= e;
            if (e is SocketException)
                throw new IOException(e.Message, e);
            throw;
        }
    }

    /// <summary>Closes at once without close_notify (Kestrel's abort): pending and later reads and writes fail.</summary>
    public void Abort()
    {
        Interlocked.Exchange(ref _disposeStarted, 1);
        Release();
    }

    /// <summary>Best-effort close_notify (bounded by <see cref="CloseNotifyTimeout"/>), then closes the socket and
    /// frees the session, exactly once.</summary>
    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposeStarted, 1) != 0)
            return;
        bool queued;
        lock (_sslLock)
        {
            if (_released)
                return;
            _closing = true;
            _session.Shutdown();
            queued = _session.PendingCiphertext > 0;
        }
        if (queued && _sendFailure is null)
        {
            using var timeout = new CancellationTokenSource(CloseNotifyTimeout);
            try
            {
                await DrainAsync(timeout.Token);
            }
            catch (Exception)
            {
                // Best effort: a peer that does not read (or a broken connection) just gets the socket closed.
            }
        }
        Release();
    }

    protected override void Dispose(bool disposing)
    {
        // Synchronous callers block at most CloseNotifyTimeout; Kestrel and the transport use DisposeAsync.
        if (disposing)
            DisposeAsync().AsTask().GetAwaiter().GetResult();
        base.Dispose(disposing);
    }

    private void Release()
    {
        lock (_sslLock)
        {
            if (_released)
                return;
            _closing = true;
            _released = true;
            // Under the lock: no session call is running and none will start (they all check the flags first),
            // so neither SSL_free nor close(fd) can race an SSL_read on this fd.
            _socket.Dispose();
            _session.Dispose();
        }
    }
}
