using System.Security.Cryptography;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Keys;

/// <summary>One of the three RFC 5656 §10.1 REQUIRED curves and its SSH parameters.</summary>
public sealed class EcdsaCurve
{
    /// <summary>RFC 5656 §6.2 / §10.1: nistp256 uses SHA-256.</summary>
    public static readonly EcdsaCurve NistP256 = new("nistp256", ECCurve.NamedCurves.nistP256, 256, 32, HashAlgorithmName.SHA256);
    /// <summary>RFC 5656 §6.2.1: nistp384 uses SHA-384.</summary>
    public static readonly EcdsaCurve NistP384 = new("nistp384", ECCurve.NamedCurves.nistP384, 384, 48, HashAlgorithmName.SHA384);
    /// <summary>RFC 5656 §6.2.1: nistp521 uses SHA-512; coordinates are ceil(521/8) = 66 bytes.</summary>
    public static readonly EcdsaCurve NistP521 = new("nistp521", ECCurve.NamedCurves.nistP521, 521, 66, HashAlgorithmName.SHA512);

    private EcdsaCurve(string identifier, ECCurve curve, int keyBits, int coordinateLength, HashAlgorithmName hash)
    {
        KeyBits = keyBits;
        Identifier = identifier;
        Curve = curve;
        CoordinateLength = coordinateLength;
        Hash = hash;
        KeyType = "ecdsa-sha2-" + identifier;
    }

    /// <summary>RFC 5656 §6.1 [identifier]: "nistp256", "nistp384", "nistp521".</summary>
    public string Identifier { get; }
    /// <summary>"ecdsa-sha2-" + identifier (RFC 5656 §6.2).</summary>
    public string KeyType { get; }
    public ECCurve Curve { get; }
    /// <summary>Field size in bits (what ssh-keygen -b and -l report).</summary>
    public int KeyBits { get; }
    /// <summary>Bytes per field element / scalar.</summary>
    public int CoordinateLength { get; }
    public HashAlgorithmName Hash { get; }
    /// <summary>SEC1 §2.3.3: the prefix byte of an uncompressed point.</summary>
    private const byte Uncompressed = 0x04;

    /// <summary>SEC1 §2.3.3 uncompressed point: 0x04 || X || Y.</summary>
    public int PointLength => 1 + 2 * CoordinateLength;

    public static IReadOnlyList<EcdsaCurve> All { get; } = [NistP256, NistP384, NistP521];

    public static EcdsaCurve? FromKeyType(ReadOnlySpan<byte> keyType)
    {
        foreach (var c in All)
            if (KeyEncoding.AsciiEquals(keyType, c.KeyType)) return c;
        return null;
    }

    public static EcdsaCurve? FromKeyType(string keyType) => All.FirstOrDefault(c => c.KeyType == keyType);

    internal bool TryDecodePoint(ReadOnlySpan<byte> q, out ECPoint point)
    {
        point = default;
        // SEC1 §2.3.4: only the uncompressed form, as OpenSSH writes it.
        if (q.Length != PointLength || q[0] != Uncompressed) return false;
        point = new ECPoint { X = q.Slice(1, CoordinateLength).ToArray(), Y = q.Slice(1 + CoordinateLength, CoordinateLength).ToArray() };
        return true;
    }

    internal byte[] EncodePoint(ECPoint p)
    {
        var q = new byte[PointLength];
        q[0] = Uncompressed;
        KeyEncoding.ToFixed(p.X, CoordinateLength).CopyTo(q, 1);
        KeyEncoding.ToFixed(p.Y, CoordinateLength).CopyTo(q, 1 + CoordinateLength);
        return q;
    }
}

/// <summary>An ECDSA public key on nistp256/384/521.</summary>
/// <remarks>
/// RFC 5656 §3.1: blob = string "ecdsa-sha2-[identifier]", string [identifier], string Q.
/// RFC 5656 §3.1.2: signature blob = string "ecdsa-sha2-[identifier]", string (mpint r, mpint s).
/// </remarks>
public sealed class EcdsaPublicKey : SshPublicKey, IDisposable
{
    private readonly byte[] _blob;
    private readonly ECDsa _ecdsa;
    private readonly string[] _algorithms;

    private EcdsaPublicKey(EcdsaCurve curve, ECDsa ecdsa, byte[] q)
    {
        Curve = curve;
        _ecdsa = ecdsa;
        _algorithms = [curve.KeyType];
        _blob = new SshWriter(64 + q.Length).WriteString(curve.KeyType).WriteString(curve.Identifier).WriteString(q).ToArray();
    }

    public EcdsaCurve Curve { get; }
    public override string KeyType => Curve.KeyType;
    public override ReadOnlyMemory<byte> Blob => _blob;
    public override IReadOnlyList<string> SignatureAlgorithms => _algorithms;

    /// <summary>Builds a public key from an uncompressed point; false if it is not on the curve.</summary>
    public static bool TryCreate(EcdsaCurve curve, ReadOnlySpan<byte> q, out EcdsaPublicKey? key)
    {
        key = null;
        if (!curve.TryDecodePoint(q, out var point)) return false;
        ECDsa? ecdsa = null;
        try
        {
            ecdsa = ECDsa.Create(new ECParameters { Curve = curve.Curve, Q = point });
            key = new EcdsaPublicKey(curve, ecdsa, q.ToArray());
            return true;
        }
        catch (CryptographicException)
        {
            ecdsa?.Dispose();
            return false;
        }
    }

    internal static EcdsaPublicKey FromParameters(EcdsaCurve curve, ECParameters p)
    {
        var q = curve.EncodePoint(p.Q);
        return new EcdsaPublicKey(curve, ECDsa.Create(new ECParameters { Curve = curve.Curve, Q = p.Q }), q);
    }

    internal static bool TryReadFields(EcdsaCurve curve, ref SshReader r, out SshPublicKey? key)
    {
        key = null;
        if (!r.TryReadString(out var id) || !KeyEncoding.AsciiEquals(id, curve.Identifier)) return false;
        if (!r.TryReadString(out var q)) return false;
        if (!TryCreate(curve, q, out var k)) return false;
        key = k;
        return true;
    }

    public override bool Verify(string signatureAlgorithm, ReadOnlySpan<byte> data, ReadOnlySpan<byte> signatureBlob)
    {
        if (signatureAlgorithm != Curve.KeyType) return false;
        var r = new SshReader(signatureBlob);
        if (!r.TryReadString(out var alg) || !KeyEncoding.AsciiEquals(alg, Curve.KeyType)) return false;
        if (!r.TryReadString(out var inner) || !r.IsEmpty) return false;
        var ir = new SshReader(inner);
        // An mpint of a scalar is at most CoordinateLength bytes plus one sign byte.
        int maxMpint = Curve.CoordinateLength + 1;
        if (!KeyEncoding.TryReadCanonicalPositiveMpint(ref ir, out var rr, maxMpint)
            || !KeyEncoding.TryReadCanonicalPositiveMpint(ref ir, out var ss, maxMpint) || !ir.IsEmpty) return false;
        int n = Curve.CoordinateLength;
        Span<byte> p1363 = stackalloc byte[2 * n];
        if (rr.Length > n || ss.Length > n) return false;
        rr.CopyTo(p1363[(n - rr.Length)..n]);
        ss.CopyTo(p1363[(2 * n - ss.Length)..]);
        try
        {
            return _ecdsa.VerifyData(data, p1363, Curve.Hash, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
        }
        catch (CryptographicException)
        {
            return false;
        }
    }

    public void Dispose() => _ecdsa.Dispose();
}

/// <summary>An ECDSA private key on nistp256/384/521 (RFC 5656).</summary>
public sealed class EcdsaPrivateKey : SshPrivateKey
{
    private readonly ECDsa _ecdsa;
    private readonly EcdsaPublicKey _public;
    private readonly string[] _algorithms;

    private EcdsaPrivateKey(EcdsaCurve curve, ECDsa ecdsa)
    {
        Curve = curve;
        _ecdsa = ecdsa;
        _public = EcdsaPublicKey.FromParameters(curve, ecdsa.ExportParameters(false));
        _algorithms = [curve.KeyType];
    }

    public EcdsaCurve Curve { get; }
    public override SshPublicKey PublicKey => _public;
    public override IReadOnlyList<string> SignatureAlgorithms => _algorithms;

    public static EcdsaPrivateKey Generate(EcdsaCurve curve) => new(curve, ECDsa.Create(curve.Curve));

    public override byte[] Sign(string signatureAlgorithm, ReadOnlySpan<byte> data)
    {
        if (signatureAlgorithm != Curve.KeyType)
            throw new ArgumentException($"{Curve.KeyType} keys cannot sign with '{signatureAlgorithm}'.", nameof(signatureAlgorithm));
        int n = Curve.CoordinateLength;
        Span<byte> p1363 = stackalloc byte[2 * n];
        if (!_ecdsa.TrySignData(data, p1363, Curve.Hash, DSASignatureFormat.IeeeP1363FixedFieldConcatenation, out int written) || written != 2 * n)
            throw new CryptographicException("ECDSA signing failed.");
        var inner = new SshWriter(2 * n + 16).WriteMpintFromUnsigned(p1363[..n]).WriteMpintFromUnsigned(p1363[n..]);
        return new SshWriter(inner.Length + 32).WriteString(Curve.KeyType).WriteString(inner.WrittenSpan).ToArray();
    }

    /// <summary>PROTOCOL.key / sshkey.c private fields: string curve, string Q, mpint d.</summary>
    internal override void WritePrivateFields(SshWriter w)
    {
        var p = _ecdsa.ExportParameters(true);
        try
        {
            w.WriteString(Curve.Identifier).WriteString(Curve.EncodePoint(p.Q)).WriteMpintFromUnsigned(p.D);
        }
        finally { if (p.D is not null) CryptographicOperations.ZeroMemory(p.D); }
    }

    internal static bool TryReadPrivateFields(EcdsaCurve curve, ref SshReader r, out SshPrivateKey? key)
    {
        key = null;
        if (!r.TryReadString(out var id) || !KeyEncoding.AsciiEquals(id, curve.Identifier)) return false;
        if (!r.TryReadString(out var q) || !curve.TryDecodePoint(q, out var point)) return false;
        if (!r.TryReadPositiveMpint(out var d, curve.CoordinateLength + 1)) return false;
        if (!KeyEncoding.TryToFixed(d, curve.CoordinateLength, out var dFixed)) return false;
        ECDsa? ecdsa = null;
        try
        {
            // Import validates that Q is on the curve and that Q = d·G.
            ecdsa = ECDsa.Create(new ECParameters { Curve = curve.Curve, Q = point, D = dFixed });
            key = new EcdsaPrivateKey(curve, ecdsa);
            return true;
        }
        catch (CryptographicException)
        {
            ecdsa?.Dispose();
            return false;
        }
        finally { CryptographicOperations.ZeroMemory(dFixed); }
    }

    public override void Dispose()
    {
        _ecdsa.Dispose();
        _public.Dispose();
    }

    public override string ToString() => $"EcdsaPrivateKey({Curve.Identifier}, {_public.Fingerprint})";
}
