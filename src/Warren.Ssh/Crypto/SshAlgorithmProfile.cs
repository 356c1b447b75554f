using Warren.Ssh.Transport;

namespace Warren.Ssh.Crypto;

/// <summary>Which algorithms a server offers in SSH_MSG_KEXINIT (RFC 4253 §7.1).</summary>
public enum SshAlgorithmProfile
{
    /// <summary>
    /// Everything Warren implements (<see cref="SshAlgorithms.DefaultKexAlgorithms"/> and the other defaults): NIST-curve
    /// and finite-field key exchange, ECDSA and RSA host keys, AES-CTR with encrypt-and-MAC, so older clients connect.
    /// </summary>
    Compatible,

    /// <summary>
    /// No NIST curves and nothing an auditor flags: hybrid post-quantum and Curve25519 key exchange (RFC 8731),
    /// the Ed25519 host key (RFC 8709), AEAD ciphers only, and encrypt-then-MAC MACs. OpenSSH 6.5 (2014) and later,
    /// PuTTY 0.68 and later connect; clients limited to ECDSA/RSA host keys or NIST key exchange do not.
    /// </summary>
    Modern,
}

/// <summary>The algorithm lists of each <see cref="SshAlgorithmProfile"/>.</summary>
public static class SshAlgorithmProfiles
{
    public static IReadOnlyList<string> ModernKexAlgorithms { get; } =
    [
        SshAlgorithms.KexMlKem768X25519, SshAlgorithms.KexSntrup761X25519, SshAlgorithms.KexSntrup761X25519OpenSsh,
        SshAlgorithms.KexCurve25519, SshAlgorithms.KexCurve25519LibSsh,
    ];

    public static IReadOnlyList<string> ModernHostKeyAlgorithms { get; } = [SshAlgorithms.HostKeyEd25519];

    public static IReadOnlyList<string> ModernCiphers { get; } =
        [SshAlgorithms.ChaCha20Poly1305, SshAlgorithms.Aes256Gcm, SshAlgorithms.Aes128Gcm];

    /// <summary>Only consulted for a non-AEAD cipher, which <see cref="ModernCiphers"/> has none of; listed for auditors.</summary>
    public static IReadOnlyList<string> ModernMacs { get; } = [SshAlgorithms.HmacSha512Etm, SshAlgorithms.HmacSha256Etm];

    /// <summary>Sets the kex, host-key, cipher and MAC lists of <paramref name="options"/> to those of <paramref name="profile"/>.</summary>
    public static void Apply(SshTransportOptions options, SshAlgorithmProfile profile)
    {
        ArgumentNullException.ThrowIfNull(options);
        switch (profile)
        {
            case SshAlgorithmProfile.Compatible:
                options.KexAlgorithms = SshAlgorithms.DefaultKexAlgorithms;
                options.HostKeyAlgorithms = SshAlgorithms.DefaultHostKeyAlgorithms;
                options.Ciphers = SshAlgorithms.DefaultCiphers;
                options.Macs = SshAlgorithms.DefaultMacs;
                break;
            case SshAlgorithmProfile.Modern:
                options.KexAlgorithms = ModernKexAlgorithms;
                options.HostKeyAlgorithms = ModernHostKeyAlgorithms;
                options.Ciphers = ModernCiphers;
                options.Macs = ModernMacs;
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(profile), profile, "unknown SSH algorithm profile");
        }
    }
}
