using System.Net.Security;
using System.Security.Authentication;

namespace Warren.Edge.Http.EventLoop;

/// <summary>The outcome of one <see cref="TlsSession"/> call.</summary>
internal enum TlsStatus
{
    /// <summary>The call completed (handshake finished, or bytes were read or written).</summary>
    Done,
    /// <summary>The socket has nothing to read yet: call again when it is readable.</summary>
    WantRead,
    /// <summary>The socket's send buffer is full: call again (with the same data, for Write) when it is writable.</summary>
    WantWrite,
    /// <summary>The peer sent close_notify or the connection ended (EOF, reset): nothing more will arrive.</summary>
    Closed,
    /// <summary>A TLS protocol error; <see cref="TlsSession.LastError"/> says which. The connection is unusable.</summary>
    Failed,
}

/// <summary>
/// One server-side TLS connection: an OpenSSL <c>SSL</c> whose socket BIO reads and writes the non-blocking fd
/// itself (SSL_set_fd), so each call is at most one recv/send plus the crypto.
/// </summary>
/// <remarks>
/// <para>
/// Not thread-safe: one caller at a time (the loop thread, or the hand-off stream under its own lock). OpenSSL's
/// error queue is per thread and loop threads are shared by many connections, so every call clears it before
/// and after, whatever the outcome: a stale error never leaks into another connection's result.
/// </para>
/// <para>
/// After <see cref="TlsStatus.WantRead"/>/<see cref="TlsStatus.WantWrite"/> from <see cref="Write"/>, call it
/// again with at least the same bytes (they may move: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER); SSL_write(3) requires
/// the retry to carry what it already took. After <see cref="TlsStatus.Failed"/> every call returns Failed again
/// without touching OpenSSL, as SSL_get_error(3) forbids further I/O after SSL_ERROR_SSL or SSL_ERROR_SYSCALL.
/// </para>
/// <para>
/// Ownership: the fd belongs to the caller (the socket BIO is BIO_NOCLOSE). The memory BIO of
/// <see cref="DetachWriteSide"/> belongs to the SSL and is freed with it. <see cref="Dispose"/> is required; the
/// finalizer only backs up a forgotten one.
/// </para>
/// </remarks>
internal sealed unsafe class TlsSession : IDisposable
{
    private readonly SafeSslHandle _ssl; // owned: SSL_free (and the read BIO's state) once, when the last call has left
    private nint _writeBio;       // owned by the SSL (SSL_set0_wbio); 0 until DetachWriteSide
    private TlsStatus? _terminal; // Failed or Closed after a fatal OpenSSL error: no more calls into the SSL

    /// <summary>Takes ownership of <paramref name="ssl"/> and its read BIO's state (from <see cref="TlsServerContext.NewSession"/>).</summary>
    internal TlsSession(nint ssl, nint readState)
    {
        _ssl = new SafeSslHandle(ssl, readState);
    }

    /// <summary>
    /// True when the last read from the socket left it empty (fewer bytes than asked, or EAGAIN): with
    /// edge-triggered epoll, bytes that arrive later raise a new event, so a reader may wait for it.
    /// </summary>
    public bool InputDrained
    {
        get
        {
            if (!TryEnter(out _))
                return false;
            try
            {
                return SocketReadBio.Drained(_ssl.ReadState);
            }
            finally
            {
                _ssl.DangerousRelease();
            }
        }
    }

    /// <summary>SNI host name the client sent (after the handshake), or null.</summary>
    public string? ServerName
    {
        get
        {
            if (!TryEnter(out nint ssl))
                return null;
            try
            {
                byte* name = OpenSsl.SSL_get_servername(ssl, OpenSsl.TLSEXT_NAMETYPE_host_name);
                return name is null ? null : System.Runtime.InteropServices.Marshal.PtrToStringUTF8((nint)name);
            }
            finally
            {
                _ssl.DangerousRelease();
            }
        }
    }

    /// <summary>The ALPN protocol agreed, or default when the client offered none.</summary>
    public SslApplicationProtocol ApplicationProtocol
    {
        get
        {
            if (!TryEnter(out nint ssl))
                return default;
            try
            {
                byte* data;
                uint length;
                OpenSsl.SSL_get0_alpn_selected(ssl, &data, &length);
                var protocol = new ReadOnlySpan<byte>(data, (int)length);
                return length == 0 ? default
                    : protocol.SequenceEqual(SslApplicationProtocol.Http2.Protocol.Span) ? SslApplicationProtocol.Http2
                    : protocol.SequenceEqual(SslApplicationProtocol.Http11.Protocol.Span) ? SslApplicationProtocol.Http11
                    : new SslApplicationProtocol(protocol.ToArray());
            }
            finally
            {
                _ssl.DangerousRelease();
            }
        }
    }

    /// <summary>The negotiated version: Tls12 or Tls13 (None before the handshake completes).</summary>
    public SslProtocols Protocol
    {
        get
        {
            if (!TryEnter(out nint ssl))
                return SslProtocols.None;
            try
            {
                if (OpenSsl.SSL_is_init_finished(ssl) != 1)
                    return SslProtocols.None;
                return OpenSsl.SSL_version(ssl) switch
                {
                    OpenSsl.TLS1_3_VERSION => SslProtocols.Tls13,
                    OpenSsl.TLS1_2_VERSION => SslProtocols.Tls12,
                    _ => SslProtocols.None,
                };
            }
            finally
            {
                _ssl.DangerousRelease();
            }
        }
    }

    /// <summary>IANA id of the negotiated cipher suite (SSL_CIPHER_get_protocol_id), or 0 before the handshake.</summary>
    public TlsCipherSuite CipherSuite
    {
        get
        {
            if (!TryEnter(out nint ssl))
                return default;
            try
            {
                nint cipher = OpenSsl.SSL_get_current_cipher(ssl);
                return cipher == 0 ? default : (TlsCipherSuite)OpenSsl.SSL_CIPHER_get_protocol_id(cipher);
            }
            finally
            {
                _ssl.DangerousRelease();
            }
        }
    }

    /// <summary>OpenSSL's reason for the last <see cref="TlsStatus.Failed"/> (e.g. "…:SSL routines::wrong version number").</summary>
    public string? LastError { get; private set; }

    /// <summary>Bytes waiting in the memory BIO after <see cref="DetachWriteSide"/> (0 before it).</summary>
    public int PendingCiphertext
    {
        get
        {
            if (_writeBio == 0 || !TryEnter(out _))
                return 0;
            try
            {
                long pending = OpenSsl.BIO_ctrl(_writeBio, OpenSsl.BIO_CTRL_PENDING, 0, 0);
                return (int)Math.Clamp(pending, 0, int.MaxValue);
            }
            finally
            {
                _ssl.DangerousRelease();
            }
        }
    }

    /// <summary>Server handshake step (SSL_accept). Done once complete; call again on WantRead/WantWrite.</summary>
    public TlsStatus Handshake()
    {
        nint ssl = Enter();
        try
        {
            if (_terminal is { } terminal)
                return terminal;
            OpenSsl.ERR_clear_error();
            int result = OpenSsl.SSL_accept(ssl);
            return result == 1 ? Succeeded() : Classify(ssl, result);
        }
        finally
        {
            _ssl.DangerousRelease();
        }
    }

    /// <summary>
    /// True when OpenSSL holds input read from the socket but not yet returned (read-ahead is on): a reader must
    /// call <see cref="Read"/> before it waits for the socket, whose readiness event for those bytes has passed.
    /// </summary>
    public bool HasBufferedInput
    {
        get
        {
            if (_terminal is not null || !TryEnter(out nint ssl))
                return false;
            try
            {
                return OpenSsl.SSL_has_pending(ssl) == 1;
            }
            finally
            {
                _ssl.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Decrypts into <paramref name="buffer"/> (SSL_read). Done with <paramref name="read"/> &gt; 0, or Closed on
    /// close_notify or EOF. An empty buffer returns Done/0 without touching the socket.
    /// </summary>
    public TlsStatus Read(Span<byte> buffer, out int read)
    {
        read = 0;
        nint ssl = Enter();
        try
        {
            if (_terminal is { } terminal)
                return terminal;
            if (buffer.IsEmpty)
                return TlsStatus.Done;
            OpenSsl.ERR_clear_error();
            int result;
            fixed (byte* p = buffer)
                result = OpenSsl.SSL_read(ssl, p, buffer.Length);
            if (result <= 0)
                return Classify(ssl, result);
            read = result;
            return Succeeded();
        }
        finally
        {
            _ssl.DangerousRelease();
        }
    }

    /// <summary>
    /// Encrypts and sends (SSL_write). With partial writes on, Done may report fewer than all bytes
    /// (<paramref name="written"/>, at least one record's worth); write the rest with another call.
    /// </summary>
    public TlsStatus Write(ReadOnlySpan<byte> data, out int written)
    {
        written = 0;
        nint ssl = Enter();
        try
        {
            if (_terminal is { } terminal)
                return terminal;
            if (data.IsEmpty)
                return TlsStatus.Done; // SSL_write(3) with 0 bytes is an error in OpenSSL 3.0
            OpenSsl.ERR_clear_error();
            int result;
            fixed (byte* p = data)
                result = OpenSsl.SSL_write(ssl, p, data.Length);
            if (result <= 0)
                return Classify(ssl, result);
            written = result;
            return Succeeded();
        }
        finally
        {
            _ssl.DangerousRelease();
        }
    }

    /// <summary>
    /// Best-effort close_notify (one SSL_shutdown, not waiting for the peer's). Skipped after a fatal error or before
    /// the handshake completed, as SSL_shutdown(3) asks. Never throws.
    /// </summary>
    public void Shutdown()
    {
        if (_terminal is not null || !TryEnter(out nint ssl))
            return;
        try
        {
            OpenSsl.ERR_clear_error();
            if (OpenSsl.SSL_is_init_finished(ssl) == 1)
                OpenSsl.SSL_shutdown(ssl);
        }
        catch
        {
            // Best effort by contract; nothing in here is expected to throw.
        }
        finally
        {
            OpenSsl.ERR_clear_error();
            _ssl.DangerousRelease();
        }
    }

    /// <summary>
    /// From now on the ciphertext OpenSSL writes goes to a memory BIO (drain it with <see cref="TakeCiphertext"/>),
    /// while reads still come from the fd. Call once, after the handshake, with no write pending.
    /// Afterwards <see cref="Write"/> never returns WantWrite (the BIO grows), and <see cref="Read"/> and
    /// <see cref="Shutdown"/> may also leave ciphertext there (alerts, TLS 1.3 KeyUpdate replies, close_notify):
    /// check <see cref="PendingCiphertext"/> after every call.
    /// </summary>
    /// <remarks>
    /// SSL_set_fd put one socket BIO into both the read and the write slot, holding one reference per slot
    /// (SSL_set_bio(3)). SSL_set0_wbio frees only the write slot's reference (BIO_free_all stops at a BIO whose
    /// count was above one), so the socket BIO lives on as the read BIO, and the SSL owns the new memory BIO.
    /// </remarks>
    public void DetachWriteSide()
    {
        nint ssl = Enter();
        try
        {
            if (_writeBio != 0)
                throw new InvalidOperationException("The write side is already detached");
            OpenSsl.ERR_clear_error();
            nint bio = OpenSsl.BIO_new(OpenSsl.BIO_s_mem());
            if (bio == 0)
            {
                string? reason = OpenSsl.DrainErrors();
                throw new InvalidOperationException("BIO_new(BIO_s_mem()) failed: " + reason);
            }
            OpenSsl.SSL_set0_wbio(ssl, bio);
            _writeBio = bio;
            OpenSsl.ERR_clear_error();
        }
        finally
        {
            _ssl.DangerousRelease();
        }
    }

    /// <summary>Moves up to <paramref name="into"/>.Length bytes of pending ciphertext out; returns how many.</summary>
    public int TakeCiphertext(Span<byte> into)
    {
        if (_writeBio == 0 || into.IsEmpty || !TryEnter(out _))
            return 0;
        try
        {
            int taken;
            fixed (byte* p = into)
                taken = OpenSsl.BIO_read(_writeBio, p, into.Length); // -1 (retry) when empty: a memory BIO's EOF default
            OpenSsl.ERR_clear_error();
            return Math.Max(taken, 0);
        }
        finally
        {
            _ssl.DangerousRelease();
        }
    }

    /// <summary>SSL_free (the memory BIO with it; never the fd) once no call is inside the SSL. Idempotent.</summary>
    public void Dispose() => _ssl.Dispose();

    /// <summary>Holds the SSL for one call (released in the caller's finally); false once disposed.</summary>
    private bool TryEnter(out nint ssl)
    {
        bool added = false;
        try
        {
            _ssl.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
        }
        ssl = added ? _ssl.DangerousGetHandle() : 0;
        return added;
    }

    /// <summary>Holds the SSL for one call (released in the caller's finally); throws once disposed.</summary>
    private nint Enter()
    {
        ObjectDisposedException.ThrowIf(!TryEnter(out nint ssl), this);
        return ssl;
    }

    /// <summary>A successful call leaves the queue as it found it: empty (every call starts by clearing it).</summary>
    private static TlsStatus Succeeded() => TlsStatus.Done;

    /// <summary>Maps a non-positive SSL_accept/read/write result through SSL_get_error(3), leaving the error queue empty.</summary>
    private TlsStatus Classify(nint ssl, int result)
    {
        int error = OpenSsl.SSL_get_error(ssl, result);
        switch (error)
        {
            case OpenSsl.SSL_ERROR_WANT_READ:
                OpenSsl.ERR_clear_error();
                return TlsStatus.WantRead;
            case OpenSsl.SSL_ERROR_WANT_WRITE:
                OpenSsl.ERR_clear_error();
                return TlsStatus.WantWrite;
            case OpenSsl.SSL_ERROR_ZERO_RETURN:
                OpenSsl.ERR_clear_error();
                return TlsStatus.Closed;
            case OpenSsl.SSL_ERROR_SYSCALL:
            {
                // An empty queue means the socket itself ended (EOF, ECONNRESET, EPIPE): the peer vanished.
                string? reason = OpenSsl.DrainErrors();
                if (reason is null)
                {
                    _terminal = TlsStatus.Closed;
                    return TlsStatus.Closed;
                }
                LastError = reason;
                _terminal = TlsStatus.Failed;
                return TlsStatus.Failed;
            }
            case OpenSsl.SSL_ERROR_SSL:
                LastError = OpenSsl.DrainErrors() ?? "TLS protocol error (OpenSSL recorded no reason)";
                _terminal = TlsStatus.Failed;
                return TlsStatus.Failed;
            default:
                // WANT_X509_LOOKUP, WANT_ASYNC, … need callbacks or engines this server never installs.
                OpenSsl.ERR_clear_error();
                LastError = $"unexpected SSL_get_error result {error}";
                _terminal = TlsStatus.Failed;
                return TlsStatus.Failed;
        }
    }
}

/// <summary>
/// One OpenSSL <c>SSL</c> and the state of its read BIO (<see cref="SocketReadBio"/>): SSL_free once, then the
/// state (the read BIO went with the SSL) — and not while a call on another thread is still inside (SafeHandle
/// reference counting), which a raw pointer freed by Dispose could not promise.
/// </summary>
internal sealed class SafeSslHandle : Microsoft.Win32.SafeHandles.SafeHandleZeroOrMinusOneIsInvalid
{
    public SafeSslHandle(nint ssl, nint readState) : base(ownsHandle: true)
    {
        SetHandle(ssl);
        ReadState = readState;
    }

    /// <summary>The read BIO's state; valid while the handle is held.</summary>
    public nint ReadState { get; }

    protected override bool ReleaseHandle()
    {
        OpenSsl.SSL_free(handle);
        OpenSsl.ERR_clear_error();
        if (ReadState != 0)
            SocketReadBio.FreeState(ReadState); // after SSL_free: the read BIO went with it
        return true;
    }
}
