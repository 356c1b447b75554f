using System.Collections.Concurrent;
using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Warren.Edge.Tls;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// One listener's TLS configuration: one OpenSSL <c>SSL_CTX</c> per certificate of a <see cref="TlsCertificateProvider"/>,
/// picked per handshake by SNI. TLS 1.2 and 1.3 only, renegotiation and compression off, ALPN h2 (when
/// <c>http2</c>) and http/1.1, session tickets on (OpenSSL's default).
/// </summary>
/// <remarks>
/// <para>
/// Every handshake starts on the context of the provider's default certificate (whose session-ticket keys therefore
/// encrypt every ticket); the servername callback then asks <see cref="TlsCertificateProvider.Select"/> again and
/// moves the connection to that certificate's context with <c>SSL_set_SSL_CTX</c>. Contexts are cached per
/// <see cref="SslStreamCertificateContext"/> instance in a <see cref="ConditionalWeakTable{TKey,TValue}"/>, so a
/// reloaded certificate (a new instance) gets a new context at once and the old one is freed when the provider
/// drops it. Freeing a context while connections still use it is safe: every <c>SSL</c> holds its own reference
/// to its contexts (SSL_new(3), SSL_set_SSL_CTX).
/// </para>
/// <para>
/// OpenSSL runs the ALPN callback after the servername callback, on the context the connection was moved to
/// (ssl/statem/statem_srvr.c, tls_handle_alpn uses <c>s-&gt;ctx</c>), so every context gets the same callbacks.
/// </para>
/// <para>
/// Thread-safe: <see cref="NewSession"/> and the callbacks run on any thread. Dispose when the listener stops;
/// sessions still open keep working, except that a handshake not yet past its ClientHello is refused.
/// </para>
/// </remarks>
internal sealed unsafe class TlsServerContext : IDisposable
{
    /// <summary>
    /// TLS 1.2 cipher list: nginx's default <c>ssl_ciphers</c>. TLS 1.3 suites stay at OpenSSL's defaults
    /// (AES-GCM and ChaCha20-Poly1305), as nginx leaves them.
    /// </summary>
    private static ReadOnlySpan<byte> Tls12CipherList => "HIGH:!aNULL:!MD5\0"u8;

    /// <summary>
    /// Ceiling for a PKCS#8 private key export: an RSA-8192 key is about 4.8 KB DER, so 16 KiB covers every key a
    /// certificate authority issues today. The buffer is pinned so the key never gets copied by the GC.
    /// </summary>
    private const int MaxPkcs8Bytes = 16 * 1024;

    private const ulong ContextOptions = OpenSsl.SSL_OP_NO_RENEGOTIATION | OpenSsl.SSL_OP_NO_COMPRESSION
        | OpenSsl.SSL_OP_CIPHER_SERVER_PREFERENCE
        // A peer closing TCP without close_notify reads as a clean close (SSL_ERROR_ZERO_RETURN), as nginx treats it:
        // HTTP/1.1 frames its own messages, so truncation cannot forge a shorter body (RFC 9112 §9.8).
        | OpenSsl.SSL_OP_IGNORE_UNEXPECTED_EOF;

    private const long ContextModes = OpenSsl.SSL_MODE_ENABLE_PARTIAL_WRITE | OpenSsl.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
        | OpenSsl.SSL_MODE_RELEASE_BUFFERS;

    private static readonly Lazy<bool> s_supported = new(Probe);
    private static readonly Lazy<bool> s_initialized = new(() => OpenSsl.OPENSSL_init_ssl(0, null) == 1);

    /// <summary>
    /// Live contexts by id. The servername callback's argument is this id, not a GCHandle: a connection may still be
    /// handshaking after <see cref="Dispose"/>, and then its lookup simply fails instead of touching a freed handle.
    /// </summary>
    private static readonly ConcurrentDictionary<nint, TlsServerContext> s_live = new();
    private static long s_lastId;

    private readonly TlsCertificateProvider _certificates;
    private readonly bool _http2;
    private readonly nint _id;
    private readonly ConditionalWeakTable<SslStreamCertificateContext, SslContextHandle> _contexts = new();
    private readonly object _createGate = new(); // guards creation and Dispose; lookups are lock-free
    private volatile bool _disposed;

    /// <summary>Builds the default certificate's context at once, so a bad certificate fails here, not per connection.</summary>
    public TlsServerContext(TlsCertificateProvider certificates, bool http2)
    {
        ArgumentNullException.ThrowIfNull(certificates);
        if (!IsSupported)
            throw new PlatformNotSupportedException($"TLS on the event loop needs {OpenSsl.LibSsl} (OpenSSL 3.0 or later)");
        if (!s_initialized.Value)
            throw new InvalidOperationException("OPENSSL_init_ssl failed");
        _certificates = certificates;
        _http2 = http2;
        _id = (nint)Interlocked.Increment(ref s_lastId);
        s_live[_id] = this;
        try
        {
            ContextFor(certificates.Select(null));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>True when libssl.so.3 loads and reports OpenSSL 3.0 or later.</summary>
    public static bool IsSupported => s_supported.Value;

    /// <summary>A server session on a socket the event loop owns; the session never closes it (the loop does, after the session).</summary>
    public TlsSession NewSession(SafeDescriptor fd) => NewSession(fd.Number);

    /// <summary>
    /// A server session on a connected, non-blocking TCP socket whose owner (a <see cref="SafeDescriptor"/> or a
    /// Socket) keeps it open for the session's life. The session never closes <paramref name="fd"/>.
    /// </summary>
    public TlsSession NewSession(int fd)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fd);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var context = ContextFor(_certificates.Select(null));
        bool added = false;
        try
        {
            context.DangerousAddRef(ref added);
            OpenSsl.ERR_clear_error();
            nint ssl = OpenSsl.SSL_new(context.DangerousGetHandle());
            if (ssl == 0)
                throw new InvalidOperationException("SSL_new failed: " + OpenSsl.DrainErrors());
            // A socket BIO without BIO_CLOSE (SSL_set_fd(3)): SSL_free leaves the descriptor open.
            if (OpenSsl.SSL_set_fd(ssl, fd) != 1)
            {
                OpenSsl.SSL_free(ssl);
                throw new InvalidOperationException("SSL_set_fd failed: " + OpenSsl.DrainErrors());
            }
            // Reads through SocketReadBio (a recv that also tells whether the socket was left empty); writes stay on
            // the socket BIO. SSL_set0_rbio takes the new BIO and drops the read reference to the old one.
            nint readBio;
            nint readState;
            try
            {
                readBio = SocketReadBio.Create(fd, out readState);
            }
            catch
            {
                OpenSsl.SSL_free(ssl);
                throw;
            }
            OpenSsl.SSL_set0_rbio(ssl, readBio);
            return new TlsSession(ssl, readState);
        }
        finally
        {
            if (added)
                context.DangerousRelease();
            OpenSsl.ERR_clear_error();
        }
    }

    /// <summary>Frees the cached contexts (connections keep their own references) and refuses new sessions. Idempotent.</summary>
    public void Dispose()
    {
        lock (_createGate)
        {
            if (_disposed)
                return;
            _disposed = true;
        }
        s_live.TryRemove(_id, out _);
        foreach (var (_, handle) in (IEnumerable<KeyValuePair<SslStreamCertificateContext, SslContextHandle>>)_contexts)
            handle.Dispose();
        _contexts.Clear();
    }

    private static bool Probe()
    {
        if (!OperatingSystem.IsLinux())
            return false;
        // Loaded for the life of the process (the DllImports bind to the same libraries), so never freed.
        if (!NativeLibrary.TryLoad(OpenSsl.LibSsl, out _) || !NativeLibrary.TryLoad(OpenSsl.LibCrypto, out _))
            return false;
        try
        {
            return OpenSsl.OpenSSL_version_num() >= OpenSsl.MinimumVersion;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    private SslContextHandle ContextFor(SslStreamCertificateContext certificate)
    {
        if (_contexts.TryGetValue(certificate, out var handle))
            return handle;
        // Creation is rare (once per certificate per reload) and serialized, so two handshakes racing on a new
        // certificate build one context, not two.
        lock (_createGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_contexts.TryGetValue(certificate, out handle))
            {
                handle = CreateContext(certificate);
                _contexts.Add(certificate, handle);
            }
            return handle;
        }
    }

    private SslContextHandle CreateContext(SslStreamCertificateContext certificate)
    {
        OpenSsl.ERR_clear_error();
        nint ctx = OpenSsl.SSL_CTX_new(OpenSsl.TLS_server_method());
        if (ctx == 0)
            throw Error("SSL_CTX_new");
        var handle = new SslContextHandle(ctx);
        try
        {
            Configure(ctx);
            UseCertificate(ctx, certificate);
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
        finally
        {
            OpenSsl.ERR_clear_error();
        }
    }

    private void Configure(nint ctx)
    {
        if (OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.SSL_CTRL_SET_MIN_PROTO_VERSION, OpenSsl.TLS1_2_VERSION, 0) != 1)
            throw Error("SSL_CTX_set_min_proto_version");
        OpenSsl.SSL_CTX_set_options(ctx, ContextOptions);
        OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.SSL_CTRL_MODE, (nint)ContextModes, 0);
        // Read ahead: one read() takes whatever the socket holds instead of a record header and then its body (two
        // system calls per request otherwise). What it buffers beyond a record is reported by SSL_has_pending, which
        // the event loop checks before it waits for the socket (TlsSession.HasBufferedInput).
        OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.SSL_CTRL_SET_READ_AHEAD, 1, 0);
        fixed (byte* ciphers = Tls12CipherList)
        {
            if (OpenSsl.SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
                throw Error("SSL_CTX_set_cipher_list");
        }
        delegate* unmanaged[Cdecl]<nint, int*, nint, int> onServerName = &OnServerName;
        OpenSsl.SSL_CTX_callback_ctrl(ctx, OpenSsl.SSL_CTRL_SET_TLSEXT_SERVERNAME_CB, (nint)onServerName);
        OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.SSL_CTRL_SET_TLSEXT_SERVERNAME_ARG, 0, _id);
        delegate* unmanaged[Cdecl]<nint, byte**, byte*, byte*, uint, nint, int> onAlpn = &OnAlpn;
        // The ALPN argument is the http2 flag itself: no managed state to keep alive for it.
        OpenSsl.SSL_CTX_set_alpn_select_cb(ctx, (nint)onAlpn, _http2 ? 1 : 0);
    }

    /// <summary>Leaf, key (via a zeroed, pinned PKCS#8 export) and intermediates into <paramref name="ctx"/>.</summary>
    private static void UseCertificate(nint ctx, SslStreamCertificateContext certificate)
    {
        var leaf = certificate.TargetCertificate;
        nint x509 = ParseCertificate(leaf);
        try
        {
            // SSL_CTX_use_certificate and SSL_CTX_add1_chain_cert take their own references, so ours is freed below.
            if (OpenSsl.SSL_CTX_use_certificate(ctx, x509) != 1)
                throw Error("SSL_CTX_use_certificate");
        }
        finally
        {
            OpenSsl.X509_free(x509);
        }

        byte[] pkcs8 = GC.AllocateUninitializedArray<byte>(MaxPkcs8Bytes, pinned: true);
        try
        {
            int length = ExportPrivateKey(leaf, pkcs8);
            fixed (byte* start = pkcs8)
            {
                byte* cursor = start;
                nint key = OpenSsl.d2i_AutoPrivateKey(null, &cursor, length);
                if (key == 0)
                    throw Error("d2i_AutoPrivateKey");
                try
                {
                    if (OpenSsl.SSL_CTX_use_PrivateKey(ctx, key) != 1)
                        throw Error("SSL_CTX_use_PrivateKey");
                }
                finally
                {
                    OpenSsl.EVP_PKEY_free(key);
                }
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(pkcs8);
        }
        if (OpenSsl.SSL_CTX_check_private_key(ctx) != 1)
            throw Error("SSL_CTX_check_private_key");

        foreach (var intermediate in certificate.IntermediateCertificates)
        {
            nint chainCert = ParseCertificate(intermediate);
            try
            {
                // SSL_CTX_add1_chain_cert(ctx, x509) is the macro SSL_CTX_ctrl(ctx, SSL_CTRL_CHAIN_CERT, 1, x509).
                if (OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.SSL_CTRL_CHAIN_CERT, 1, chainCert) != 1)
                    throw Error("SSL_CTX_add1_chain_cert");
            }
            finally
            {
                OpenSsl.X509_free(chainCert);
            }
        }
    }

    private static nint ParseCertificate(X509Certificate2 certificate)
    {
        var der = certificate.RawDataMemory.Span;
        fixed (byte* start = der)
        {
            byte* cursor = start;
            nint x509 = OpenSsl.d2i_X509(null, &cursor, der.Length);
            if (x509 == 0)
                throw Error("d2i_X509");
            return x509;
        }
    }

    /// <summary>The leaf's private key as PKCS#8 DER into <paramref name="into"/>; RSA and ECDSA, as certificates are issued.</summary>
    private static int ExportPrivateKey(X509Certificate2 leaf, Span<byte> into)
    {
        int written;
        using (var rsa = leaf.GetRSAPrivateKey())
        {
            if (rsa is not null)
                return rsa.TryExportPkcs8PrivateKey(into, out written) ? written
                    : throw new CryptographicException($"The RSA private key does not fit in {MaxPkcs8Bytes} bytes");
        }
        using (var ecdsa = leaf.GetECDsaPrivateKey())
        {
            if (ecdsa is not null)
                return ecdsa.TryExportPkcs8PrivateKey(into, out written) ? written
                    : throw new CryptographicException($"The ECDSA private key does not fit in {MaxPkcs8Bytes} bytes");
        }
        throw new CryptographicException($"Certificate {leaf.Subject} has no RSA or ECDSA private key");
    }

    /// <summary>OpenSSL's reasons only (codes and library strings): no key material reaches the message.</summary>
    private static CryptographicException Error(string call) =>
        new($"{call} failed: {OpenSsl.DrainErrors() ?? "no OpenSSL error recorded"}");

    /// <summary>
    /// SNI (RFC 6066 §3): moves the connection to the context of the certificate the provider selects for the name
    /// (or for no name). Runs inside SSL_accept on the loop thread; must never let an exception cross into C.
    /// </summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnServerName(nint ssl, int* alert, nint arg)
    {
        try
        {
            if (!s_live.TryGetValue(arg, out var owner))
            {
                *alert = OpenSsl.SSL_AD_INTERNAL_ERROR;
                return OpenSsl.SSL_TLSEXT_ERR_ALERT_FATAL;
            }
            byte* name = OpenSsl.SSL_get_servername(ssl, OpenSsl.TLSEXT_NAMETYPE_host_name);
            string? serverName = name is null ? null : Marshal.PtrToStringUTF8((nint)name);
            var context = owner.ContextFor(owner._certificates.Select(serverName));
            bool added = false;
            try
            {
                context.DangerousAddRef(ref added);
                if (OpenSsl.SSL_set_SSL_CTX(ssl, context.DangerousGetHandle()) == 0)
                {
                    *alert = OpenSsl.SSL_AD_INTERNAL_ERROR;
                    return OpenSsl.SSL_TLSEXT_ERR_ALERT_FATAL;
                }
            }
            finally
            {
                if (added)
                    context.DangerousRelease();
            }
            return OpenSsl.SSL_TLSEXT_ERR_OK;
        }
        catch
        {
            // Disposed meanwhile, or a new certificate that failed to load: refuse this handshake only.
            *alert = OpenSsl.SSL_AD_INTERNAL_ERROR;
            return OpenSsl.SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    }

    /// <summary>
    /// ALPN (RFC 7301 §3.2): h2 when enabled and offered, else http/1.1. A client that offers ALPN but neither gets
    /// a fatal no_application_protocol alert, as the RFC requires and as Kestrel (SslStream's ALPN callback) and
    /// nginx (since 1.21.4) do, so moving a listener onto the loop changes nothing for such clients.
    /// <paramref name="output"/> points into the client's list, which OpenSSL copies when the callback returns OK.
    /// </summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnAlpn(nint ssl, byte** output, byte* outputLength, byte* offered, uint offeredLength, nint http2)
    {
        try
        {
            var list = new ReadOnlySpan<byte>(offered, (int)Math.Min(offeredLength, (uint)ushort.MaxValue));
            int http11At = -1, http2At = -1;
            for (int at = 0; at < list.Length;)
            {
                int length = list[at];
                if (length == 0 || at + 1 + length > list.Length)
                    return OpenSsl.SSL_TLSEXT_ERR_ALERT_FATAL; // malformed (OpenSSL checks this first, so unexpected)
                var name = list.Slice(at + 1, length);
                if (http2At < 0 && name.SequenceEqual(SslApplicationProtocol.Http2.Protocol.Span))
                    http2At = at;
                else if (http11At < 0 && name.SequenceEqual(SslApplicationProtocol.Http11.Protocol.Span))
                    http11At = at;
                at += 1 + length;
            }
            int chosen = http2 != 0 && http2At >= 0 ? http2At : http11At;
            if (chosen < 0)
                return OpenSsl.SSL_TLSEXT_ERR_ALERT_FATAL;
            *output = offered + chosen + 1;
            *outputLength = list[chosen];
            return OpenSsl.SSL_TLSEXT_ERR_OK;
        }
        catch
        {
            return OpenSsl.SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    }

    /// <summary>Our reference to one <c>SSL_CTX</c>; released on Dispose or, for a dropped certificate, by the finalizer.</summary>
    private sealed class SslContextHandle : SafeHandle
    {
        public SslContextHandle(nint ctx) : base(0, ownsHandle: true) => SetHandle(ctx);

        public override bool IsInvalid => handle == 0;

        protected override bool ReleaseHandle()
        {
            OpenSsl.SSL_CTX_free(handle);
            return true;
        }
    }
}
