using System.Numerics;
using System.Security.Cryptography;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Keys;

/// <summary>An RSA public key.</summary>
/// <remarks>
/// RFC 4253 §6.6: blob = string "ssh-rsa", mpint e, mpint n.
/// RFC 8332 §3: signatures are string "rsa-sha2-256"|"rsa-sha2-512", string (RSASSA-PKCS1-v1_5 signature).
/// "ssh-rsa" (SHA-1) signatures are never verified: OpenSSH 8.8 disabled them by default.
/// </remarks>
public sealed class RsaPublicKey : SshPublicKey, IDisposable
{
    public const string Name = "ssh-rsa";
    /// <summary>RFC 8332 §3.</summary>
    public const string Sha512Algorithm = "rsa-sha2-512";
    /// <summary>RFC 8332 §3.</summary>
    public const string Sha256Algorithm = "rsa-sha2-256";

    /// <summary>
    /// Smallest modulus accepted. OpenSSH 8.8+ refuses RSA keys under 1024 bits
    /// (SSH_RSA_MINIMUM_MODULUS_SIZE); Warren is stricter and follows NIST SP 800-131A (2048).
    /// </summary>
    public const int MinModulusBits = 2048;

    /// <summary>Largest modulus accepted: OpenSSH's SSHBUF_MAX_BIGNUM × 8 = 16384 bits.</summary>
    public const int MaxModulusBits = 16384;

    /// <summary>
    /// Largest public exponent accepted, in bits: 24, as golang.org/x/crypto/ssh's parseRSA ("exponent too
    /// large"). Real keys use 65537 (17 bits); verification costs one modular multiplication per exponent bit,
    /// so a huge exponent is only a way to make the server work harder for a key it will then reject.
    /// </summary>
    public const int MaxExponentBits = 24;

    private static readonly string[] s_algorithms = [Sha512Algorithm, Sha256Algorithm];

    private readonly byte[] _blob;
    private readonly RSA _rsa;

    private RsaPublicKey(byte[] exponent, byte[] modulus)
    {
        Exponent = exponent;
        Modulus = modulus;
        ModulusBits = KeyEncoding.BitLength(modulus);
        _rsa = RSA.Create(new RSAParameters { Exponent = exponent, Modulus = modulus });
        _blob = new SshWriter(modulus.Length + exponent.Length + 32)
            .WriteString(Name).WriteMpintFromUnsigned(exponent).WriteMpintFromUnsigned(modulus).ToArray();
    }

    public override string KeyType => Name;
    public override ReadOnlyMemory<byte> Blob => _blob;
    public override IReadOnlyList<string> SignatureAlgorithms => s_algorithms;

    /// <summary>Modulus size in bits.</summary>
    public int ModulusBits { get; }
    internal byte[] Exponent { get; }
    internal byte[] Modulus { get; }

    /// <summary>Creates a key from unsigned big-endian e and n; false outside the accepted size range.</summary>
    public static bool TryCreate(ReadOnlySpan<byte> exponent, ReadOnlySpan<byte> modulus, out RsaPublicKey? key)
    {
        key = null;
        while (!exponent.IsEmpty && exponent[0] == 0) exponent = exponent[1..];
        while (!modulus.IsEmpty && modulus[0] == 0) modulus = modulus[1..];
        int bits = KeyEncoding.BitLength(modulus);
        if (bits < MinModulusBits || bits > MaxModulusBits) return false;
        // Both bounds are checked here, while parsing, before any key object exists or any signature is verified.
        if (exponent.IsEmpty || KeyEncoding.BitLength(exponent) > MaxExponentBits) return false;
        // e must be odd and at least 3; n must be odd (a product of odd primes).
        if ((exponent[^1] & 1) == 0 || (exponent.Length == 1 && exponent[0] < 3)) return false;
        if ((modulus[^1] & 1) == 0) return false;
        try
        {
            key = new RsaPublicKey(exponent.ToArray(), modulus.ToArray());
            return true;
        }
        catch (CryptographicException)
        {
            return false;
        }
    }

    internal static bool TryReadFields(ref SshReader r, out SshPublicKey? key)
    {
        key = null;
        if (!KeyEncoding.TryReadCanonicalPositiveMpint(ref r, out var e)) return false;
        if (!KeyEncoding.TryReadCanonicalPositiveMpint(ref r, out var n)) return false;
        if (!TryCreate(e, n, out var k)) return false;
        key = k;
        return true;
    }

    internal static HashAlgorithmName? HashFor(string signatureAlgorithm) => signatureAlgorithm switch
    {
        Sha512Algorithm => HashAlgorithmName.SHA512,
        Sha256Algorithm => HashAlgorithmName.SHA256,
        _ => null,
    };

    public override bool Verify(string signatureAlgorithm, ReadOnlySpan<byte> data, ReadOnlySpan<byte> signatureBlob)
    {
        if (HashFor(signatureAlgorithm) is not { } hash) return false;
        var r = new SshReader(signatureBlob);
        if (!r.TryReadString(out var alg) || !KeyEncoding.AsciiEquals(alg, signatureAlgorithm)) return false;
        if (!r.TryReadString(out var sig) || !r.IsEmpty) return false;
        // RFC 8332 §3 says the signature is exactly the modulus length; OpenSSH
        // accepts shorter ones (leading zeros dropped) and so do we, by left-padding.
        if (sig.Length == 0 || sig.Length > Modulus.Length) return false;
        byte[] padded = new byte[Modulus.Length];
        sig.CopyTo(padded.AsSpan(Modulus.Length - sig.Length));
        try
        {
            return _rsa.VerifyData(data, padded, hash, RSASignaturePadding.Pkcs1);
        }
        catch (CryptographicException)
        {
            return false;
        }
    }

    public void Dispose() => _rsa.Dispose();
}

/// <summary>An RSA private key (RFC 8332 signatures).</summary>
public sealed class RsaPrivateKey : SshPrivateKey
{
    /// <summary>ssh-keygen's default RSA size since OpenSSH 8.0.</summary>
    public const int DefaultBits = 3072;

    private static readonly string[] s_algorithms = [RsaPublicKey.Sha512Algorithm, RsaPublicKey.Sha256Algorithm];

    private readonly RSA _rsa;
    private readonly RsaPublicKey _public;

    private RsaPrivateKey(RSA rsa)
    {
        _rsa = rsa;
        var p = rsa.ExportParameters(false);
        if (!RsaPublicKey.TryCreate(p.Exponent, p.Modulus, out var pub))
            throw new CryptographicException("RSA key size outside the accepted range.");
        _public = pub!;
    }

    public override SshPublicKey PublicKey => _public;
    public override IReadOnlyList<string> SignatureAlgorithms => s_algorithms;

    public static RsaPrivateKey Generate(int bits = DefaultBits)
    {
        if (bits < RsaPublicKey.MinModulusBits || bits > RsaPublicKey.MaxModulusBits)
            throw new ArgumentOutOfRangeException(nameof(bits), bits,
                $"RSA keys must be {RsaPublicKey.MinModulusBits}–{RsaPublicKey.MaxModulusBits} bits.");
        return new RsaPrivateKey(RSA.Create(bits));
    }

    public override byte[] Sign(string signatureAlgorithm, ReadOnlySpan<byte> data)
    {
        if (RsaPublicKey.HashFor(signatureAlgorithm) is not { } hash)
            throw new ArgumentException($"RSA keys sign only with rsa-sha2-512/rsa-sha2-256, not '{signatureAlgorithm}'.", nameof(signatureAlgorithm));
        var sig = _rsa.SignData(data.ToArray(), hash, RSASignaturePadding.Pkcs1);
        return new SshWriter(sig.Length + 32).WriteString(signatureAlgorithm).WriteString(sig).ToArray();
    }

    /// <summary>PROTOCOL.key / sshkey.c private fields: mpint n, mpint e, mpint d, mpint iqmp, mpint p, mpint q.</summary>
    internal override void WritePrivateFields(SshWriter w)
    {
        var p = _rsa.ExportParameters(true);
        try
        {
            w.WriteMpintFromUnsigned(p.Modulus).WriteMpintFromUnsigned(p.Exponent).WriteMpintFromUnsigned(p.D)
             .WriteMpintFromUnsigned(p.InverseQ).WriteMpintFromUnsigned(p.P).WriteMpintFromUnsigned(p.Q);
        }
        finally { Clear(p); }
    }

    internal static bool TryReadPrivateFields(ref SshReader r, out SshPrivateKey? key)
    {
        key = null;
        if (!r.TryReadPositiveMpint(out var n) || !r.TryReadPositiveMpint(out var e) || !r.TryReadPositiveMpint(out var d)
            || !r.TryReadPositiveMpint(out var iqmp) || !r.TryReadPositiveMpint(out var p) || !r.TryReadPositiveMpint(out var q))
            return false;
        int bits = KeyEncoding.BitLength(n);
        if (bits < RsaPublicKey.MinModulusBits || bits > RsaPublicKey.MaxModulusBits) return false;
        if (e.IsEmpty || KeyEncoding.BitLength(e) > RsaPublicKey.MaxExponentBits) return false;
        int k = (bits + 7) / 8;
        int half = (k + 1) / 2;
        var bd = new BigInteger(d, isUnsigned: true, isBigEndian: true);
        var bp = new BigInteger(p, isUnsigned: true, isBigEndian: true);
        var bq = new BigInteger(q, isUnsigned: true, isBigEndian: true);
        if (bp <= BigInteger.One || bq <= BigInteger.One) return false;
        if (bp * bq != new BigInteger(n, isUnsigned: true, isBigEndian: true)) return false;
        // The import does not check d or iqmp; a corrupt file would sign garbage. Check
        // e·d ≡ 1 (mod p−1) and (mod q−1), and q·iqmp ≡ 1 (mod p), as RSA_check_key does.
        var be = new BigInteger(e, isUnsigned: true, isBigEndian: true);
        var biqmp = new BigInteger(iqmp, isUnsigned: true, isBigEndian: true);
        if ((be * bd) % (bp - 1) != BigInteger.One || (be * bd) % (bq - 1) != BigInteger.One) return false;
        if ((bq * biqmp) % bp != BigInteger.One) return false;
        var prms = new RSAParameters();
        try
        {
            if (!KeyEncoding.TryToFixed(n, k, out var mod) || !KeyEncoding.TryToFixed(d, k, out var dd)
                || !KeyEncoding.TryToFixed(p, half, out var pp) || !KeyEncoding.TryToFixed(q, half, out var qq)
                || !KeyEncoding.TryToFixed(iqmp, half, out var iq))
                return false;
            prms = new RSAParameters
            {
                Modulus = mod,
                Exponent = e.ToArray(),
                D = dd,
                P = pp,
                Q = qq,
                InverseQ = iq,
                DP = KeyEncoding.ToFixed((bd % (bp - 1)).ToByteArray(isUnsigned: true, isBigEndian: true), half),
                DQ = KeyEncoding.ToFixed((bd % (bq - 1)).ToByteArray(isUnsigned: true, isBigEndian: true), half),
            };
            RSA? rsa = null;
            try
            {
                rsa = RSA.Create(prms);
                key = new RsaPrivateKey(rsa);
                return true;
            }
            catch (CryptographicException)
            {
                rsa?.Dispose();
                return false;
            }
        }
        finally { Clear(prms); }
    }

    private static void Clear(RSAParameters p)
    {
        foreach (var a in new[] { p.D, p.P, p.Q, p.DP, p.DQ, p.InverseQ })
            if (a is not null) CryptographicOperations.ZeroMemory(a);
    }

    public override void Dispose()
    {
        _rsa.Dispose();
        _public.Dispose();
    }

    public override string ToString() => $"RsaPrivateKey({_public.ModulusBits} bits, {_public.Fingerprint})";
}
