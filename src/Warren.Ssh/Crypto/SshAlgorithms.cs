namespace Warren.Ssh.Crypto;

/// <summary>
/// Algorithm names as they appear in SSH_MSG_KEXINIT (RFC 4253 §7.1), with the
/// defaults Warren offers, strongest and fastest first. Nothing CBC, SHA-1, MD5 or DSA.
/// </summary>
public static class SshAlgorithms
{
    // Key exchange.
    /// <summary>ML-KEM-768 + X25519 hybrid (draft-ietf-sshm-mlkem-hybrid-kex; OpenSSH 9.9 default).</summary>
    public const string KexMlKem768X25519 = "mlkem768x25519-sha256";
    /// <summary>Streamlined NTRU Prime + X25519 hybrid (draft-ietf-sshm-ntruprime-ssh).</summary>
    public const string KexSntrup761X25519 = "sntrup761x25519-sha512";
    /// <summary>Pre-standard name of <see cref="KexSntrup761X25519"/> (OpenSSH 8.5–9.x default).</summary>
    public const string KexSntrup761X25519OpenSsh = "sntrup761x25519-sha512@openssh.com";
    /// <summary>RFC 8731.</summary>
    public const string KexCurve25519 = "curve25519-sha256";
    /// <summary>RFC 8731 §2, the pre-standard name.</summary>
    public const string KexCurve25519LibSsh = "curve25519-sha256@libssh.org";
    /// <summary>RFC 5656 §4.</summary>
    public const string KexEcdhNistP256 = "ecdh-sha2-nistp256";
    public const string KexEcdhNistP384 = "ecdh-sha2-nistp384";
    public const string KexEcdhNistP521 = "ecdh-sha2-nistp521";
    /// <summary>RFC 8268 §3.</summary>
    public const string KexDhGroup14Sha256 = "diffie-hellman-group14-sha256";
    public const string KexDhGroup16Sha512 = "diffie-hellman-group16-sha512";

    // Pseudo-algorithms signalled in the kex list.
    /// <summary>RFC 8308 §2.1: the client accepts SSH_MSG_EXT_INFO.</summary>
    public const string ExtInfoClient = "ext-info-c";
    /// <summary>RFC 8308 §2.1: the server accepts SSH_MSG_EXT_INFO.</summary>
    public const string ExtInfoServer = "ext-info-s";
    /// <summary>OpenSSH PROTOCOL §1.10, strict key exchange (client side).</summary>
    public const string StrictKexClient = "kex-strict-c-v00@openssh.com";
    /// <summary>OpenSSH PROTOCOL §1.10, strict key exchange (server side).</summary>
    public const string StrictKexServer = "kex-strict-s-v00@openssh.com";

    // Host key / signature algorithms.
    public const string HostKeyEd25519 = "ssh-ed25519";
    public const string HostKeyEcdsaNistP256 = "ecdsa-sha2-nistp256";
    public const string HostKeyEcdsaNistP384 = "ecdsa-sha2-nistp384";
    public const string HostKeyEcdsaNistP521 = "ecdsa-sha2-nistp521";
    /// <summary>RFC 8332.</summary>
    public const string HostKeyRsaSha512 = "rsa-sha2-512";
    public const string HostKeyRsaSha256 = "rsa-sha2-256";

    // Ciphers.
    /// <summary>OpenSSH PROTOCOL.chacha20poly1305.</summary>
    public const string ChaCha20Poly1305 = "chacha20-poly1305@openssh.com";
    /// <summary>RFC 5647 as OpenSSH implements it (PROTOCOL §1.6).</summary>
    public const string Aes128Gcm = "aes128-gcm@openssh.com";
    public const string Aes256Gcm = "aes256-gcm@openssh.com";
    /// <summary>RFC 4344 §4.</summary>
    public const string Aes128Ctr = "aes128-ctr";
    public const string Aes192Ctr = "aes192-ctr";
    public const string Aes256Ctr = "aes256-ctr";

    // MACs.
    /// <summary>RFC 6668.</summary>
    public const string HmacSha256 = "hmac-sha2-256";
    public const string HmacSha512 = "hmac-sha2-512";
    /// <summary>OpenSSH PROTOCOL §1.7, encrypt-then-MAC.</summary>
    public const string HmacSha256Etm = "hmac-sha2-256-etm@openssh.com";
    public const string HmacSha512Etm = "hmac-sha2-512-etm@openssh.com";

    /// <summary>The only compression method offered (RFC 4253 §6.2).</summary>
    public const string CompressionNone = "none";

    public static IReadOnlyList<string> DefaultKexAlgorithms { get; } =
    [
        KexMlKem768X25519, KexSntrup761X25519, KexSntrup761X25519OpenSsh,
        KexCurve25519, KexCurve25519LibSsh,
        KexEcdhNistP256, KexEcdhNistP384, KexEcdhNistP521,
        KexDhGroup16Sha512, KexDhGroup14Sha256,
    ];

    public static IReadOnlyList<string> DefaultHostKeyAlgorithms { get; } =
    [
        HostKeyEd25519, HostKeyEcdsaNistP256, HostKeyEcdsaNistP384, HostKeyEcdsaNistP521,
        HostKeyRsaSha512, HostKeyRsaSha256,
    ];

    public static IReadOnlyList<string> DefaultCiphers { get; } =
    [
        Aes128Gcm, Aes256Gcm, ChaCha20Poly1305, Aes128Ctr, Aes192Ctr, Aes256Ctr,
    ];

    public static IReadOnlyList<string> DefaultMacs { get; } =
    [
        HmacSha256Etm, HmacSha512Etm, HmacSha256, HmacSha512,
    ];

    public static IReadOnlyList<string> SupportedKexAlgorithms => DefaultKexAlgorithms;
    public static IReadOnlyList<string> SupportedHostKeyAlgorithms => DefaultHostKeyAlgorithms;
    public static IReadOnlyList<string> SupportedCiphers => DefaultCiphers;
    public static IReadOnlyList<string> SupportedMacs => DefaultMacs;
}
