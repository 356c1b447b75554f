using System.Runtime.InteropServices;
using System.Text;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// The libssl/libcrypto 3.x calls TLS on the event loop makes (server side only). Signatures use blittable types
/// only, so no marshalling stub runs per call; C <c>long</c>/<c>unsigned long</c> are 64-bit on Linux (LP64) and
/// map to <see cref="nint"/>/<see cref="ulong"/>. Constants are copied from the OpenSSL 3.0 headers
/// (ssl.h, tls1.h, bio.h, prov_ssl.h); they are ABI, stable across 3.x.
/// </summary>
internal static unsafe class OpenSsl
{
    public const string LibSsl = "libssl.so.3";
    public const string LibCrypto = "libcrypto.so.3";

    /// <summary>OpenSSL 3.0.0 as <c>OpenSSL_version_num()</c> reports it (0xMNN00PP0L).</summary>
    public const ulong MinimumVersion = 0x30000000;

    // SSL_get_error results (ssl.h).
    public const int SSL_ERROR_NONE = 0, SSL_ERROR_SSL = 1, SSL_ERROR_WANT_READ = 2, SSL_ERROR_WANT_WRITE = 3,
        SSL_ERROR_SYSCALL = 5, SSL_ERROR_ZERO_RETURN = 6;

    // SSL_CTX_ctrl commands (ssl.h).
    public const int SSL_CTRL_SET_READ_AHEAD = 41;
    public const int SSL_CTRL_MODE = 33;
    public const int SSL_CTRL_SET_TLSEXT_SERVERNAME_CB = 53;
    public const int SSL_CTRL_SET_TLSEXT_SERVERNAME_ARG = 54;
    public const int SSL_CTRL_CHAIN_CERT = 89;
    public const int SSL_CTRL_SET_MIN_PROTO_VERSION = 123;

    // SSL_MODE_* (ssl.h).
    public const long SSL_MODE_ENABLE_PARTIAL_WRITE = 0x1;
    public const long SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = 0x2;
    public const long SSL_MODE_RELEASE_BUFFERS = 0x10;

    // SSL_OP_* (ssl.h, SSL_OP_BIT(n)).
    public const ulong SSL_OP_IGNORE_UNEXPECTED_EOF = 1UL << 7;
    public const ulong SSL_OP_NO_COMPRESSION = 1UL << 17;
    public const ulong SSL_OP_CIPHER_SERVER_PREFERENCE = 1UL << 22;
    public const ulong SSL_OP_NO_RENEGOTIATION = 1UL << 30;

    // Protocol versions (prov_ssl.h).
    public const int TLS1_2_VERSION = 0x0303, TLS1_3_VERSION = 0x0304;

    // Servername / ALPN callback results and alerts (tls1.h).
    public const int SSL_TLSEXT_ERR_OK = 0, SSL_TLSEXT_ERR_ALERT_FATAL = 2, SSL_TLSEXT_ERR_NOACK = 3;
    public const int SSL_AD_INTERNAL_ERROR = 80;
    public const int TLSEXT_NAMETYPE_host_name = 0;

    // BIO_ctrl commands (bio.h).
    public const int BIO_CTRL_PENDING = 10;

    /// <summary>ERR_error_string_n needs at least 256 bytes for any message (err.h, ERR_error_string).</summary>
    public const int ErrorStringBytes = 256;

    // --- libssl ---
    [DllImport(LibSsl)] public static extern int OPENSSL_init_ssl(ulong options, void* settings);
    [DllImport(LibSsl)] public static extern nint TLS_server_method();
    [DllImport(LibSsl)] public static extern nint SSL_CTX_new(nint method);
    [DllImport(LibSsl)] public static extern void SSL_CTX_free(nint ctx);
    [DllImport(LibSsl)] public static extern nint SSL_CTX_ctrl(nint ctx, int command, nint larg, nint parg);
    [DllImport(LibSsl)] public static extern nint SSL_CTX_callback_ctrl(nint ctx, int command, nint callback);
    [DllImport(LibSsl)] public static extern ulong SSL_CTX_set_options(nint ctx, ulong options);
    [DllImport(LibSsl)] public static extern int SSL_CTX_set_cipher_list(nint ctx, byte* list);
    [DllImport(LibSsl)] public static extern int SSL_CTX_use_certificate(nint ctx, nint x509);
    [DllImport(LibSsl)] public static extern int SSL_CTX_use_PrivateKey(nint ctx, nint pkey);
    [DllImport(LibSsl)] public static extern int SSL_CTX_check_private_key(nint ctx);
    [DllImport(LibSsl)] public static extern void SSL_CTX_set_alpn_select_cb(nint ctx, nint callback, nint arg);

    [DllImport(LibSsl)] public static extern nint SSL_new(nint ctx);
    [DllImport(LibSsl)] public static extern void SSL_free(nint ssl);
    [DllImport(LibSsl)] public static extern int SSL_set_fd(nint ssl, int fd);
    [DllImport(LibSsl)] public static extern nint SSL_set_SSL_CTX(nint ssl, nint ctx);
    [DllImport(LibSsl)] public static extern int SSL_accept(nint ssl);
    [DllImport(LibSsl)] public static extern int SSL_read(nint ssl, byte* buffer, int count);
    [DllImport(LibSsl)] public static extern int SSL_has_pending(nint ssl);
    [DllImport(LibSsl)] public static extern int SSL_write(nint ssl, byte* buffer, int count);
    [DllImport(LibSsl)] public static extern int SSL_shutdown(nint ssl);
    [DllImport(LibSsl)] public static extern int SSL_get_error(nint ssl, int result);
    [DllImport(LibSsl)] public static extern int SSL_is_init_finished(nint ssl);
    [DllImport(LibSsl)] public static extern byte* SSL_get_servername(nint ssl, int type);
    [DllImport(LibSsl)] public static extern void SSL_get0_alpn_selected(nint ssl, byte** data, uint* length);
    [DllImport(LibSsl)] public static extern int SSL_version(nint ssl);
    [DllImport(LibSsl)] public static extern nint SSL_get_current_cipher(nint ssl);
    [DllImport(LibSsl)] public static extern ushort SSL_CIPHER_get_protocol_id(nint cipher);
    [DllImport(LibSsl)] public static extern void SSL_set0_wbio(nint ssl, nint bio);

    // --- libcrypto ---
    [DllImport(LibCrypto)] public static extern ulong OpenSSL_version_num();
    [DllImport(LibCrypto)] public static extern void ERR_clear_error();
    [DllImport(LibCrypto)] public static extern ulong ERR_get_error();
    [DllImport(LibCrypto)] public static extern void ERR_error_string_n(ulong error, byte* buffer, nuint length);
    [DllImport(LibCrypto)] public static extern nint d2i_X509(nint* reuse, byte** input, nint length);
    [DllImport(LibCrypto)] public static extern void X509_free(nint x509);
    [DllImport(LibCrypto)] public static extern nint d2i_AutoPrivateKey(nint* reuse, byte** input, nint length);
    [DllImport(LibCrypto)] public static extern void EVP_PKEY_free(nint pkey);
    [DllImport(LibCrypto)] public static extern nint BIO_s_mem();
    [DllImport(LibCrypto)] public static extern nint BIO_new(nint method);
    // A BIO method of our own (SocketReadBio): BIO_meth_new copies the name.
    [DllImport(LibCrypto)] public static extern int BIO_get_new_index();
    [DllImport(LibCrypto)] public static extern nint BIO_meth_new(int type, [MarshalAs(UnmanagedType.LPUTF8Str)] string name);
    [DllImport(LibCrypto)] public static extern int BIO_meth_set_read(nint method, delegate* unmanaged<nint, byte*, int, int> read);
    [DllImport(LibCrypto)] public static extern int BIO_meth_set_write(nint method, delegate* unmanaged<nint, byte*, int, int> write);
    [DllImport(LibCrypto)] public static extern int BIO_meth_set_ctrl(nint method, delegate* unmanaged<nint, int, nint, nint, nint> ctrl);
    [DllImport(LibCrypto)] public static extern int BIO_meth_set_create(nint method, delegate* unmanaged<nint, int> create);
    [DllImport(LibCrypto)] public static extern void BIO_set_data(nint bio, nint data);
    [DllImport(LibCrypto)] public static extern nint BIO_get_data(nint bio);
    [DllImport(LibCrypto)] public static extern void BIO_set_init(nint bio, int init);
    [DllImport(LibCrypto)] public static extern void BIO_set_flags(nint bio, int flags);
    [DllImport(LibCrypto)] public static extern void BIO_clear_flags(nint bio, int flags);
    [DllImport(LibCrypto)] public static extern int BIO_test_flags(nint bio, int flags);
    [DllImport(LibSsl)] public static extern void SSL_set0_rbio(nint ssl, nint bio);
    [DllImport(LibCrypto)] public static extern int BIO_read(nint bio, byte* buffer, int count);
    [DllImport(LibCrypto)] public static extern nint BIO_ctrl(nint bio, int command, nint larg, nint parg);

    /// <summary>
    /// Drains this thread's error queue into one line (oldest first, at most <paramref name="maxErrors"/> entries),
    /// e.g. "error:0A0000C1:SSL routines::no shared cipher". Codes and reason strings only: never key material.
    /// </summary>
    public static string? DrainErrors(int maxErrors = 4)
    {
        StringBuilder? text = null;
        byte* buffer = stackalloc byte[ErrorStringBytes];
        ulong code;
        int count = 0;
        while ((code = ERR_get_error()) != 0)
        {
            if (count++ >= maxErrors)
                continue; // keep draining so the queue ends empty
            ERR_error_string_n(code, buffer, ErrorStringBytes);
            text ??= new StringBuilder();
            if (text.Length > 0)
                text.Append("; ");
            text.Append(Marshal.PtrToStringUTF8((nint)buffer));
        }
        ERR_clear_error();
        return text?.ToString();
    }
}
