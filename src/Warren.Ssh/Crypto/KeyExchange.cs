using System.Security.Cryptography;
using Org.BouncyCastle.Asn1.Nist;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto.Agreement;
using Org.BouncyCastle.Crypto.Generators;
using Org.BouncyCastle.Crypto.Kems;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Math.EC.Rfc7748;
using Org.BouncyCastle.Pqc.Crypto.NtruPrime;
using Org.BouncyCastle.Security;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Warren.Ssh.Crypto;

/// <summary>
/// One ephemeral key agreement (RFC 4253 §8 shape: SSH_MSG_KEX*_INIT carries the
/// client's value, SSH_MSG_KEX*_REPLY the server's). Public values are handled as
/// the contents of an SSH "string" (for finite-field DH that is the mpint's bytes),
/// and the shared secret K is returned already encoded the way the exchange hash
/// and key derivation use it (mpint or string, per algorithm).
/// Invalid peer values raise <see cref="SshProtocolException"/> with KeyExchangeFailed.
/// </summary>
internal abstract class KeyExchangeAlgorithm : IDisposable
{
    public abstract string Name { get; }

    /// <summary>HASH of RFC 4253 §7.2 / §8 for this method.</summary>
    public abstract HashAlgorithmName Hash { get; }

    /// <summary>Client: generates the ephemeral key and returns Q_C (or e).</summary>
    public abstract byte[] CreateClientValue();

    /// <summary>Client: given Q_S (or f), returns the encoded shared secret K.</summary>
    public abstract byte[] ComputeClientSecret(ReadOnlySpan<byte> serverValue);

    /// <summary>Server: given Q_C (or e), returns Q_S (or f) and the encoded shared secret K.</summary>
    public abstract byte[] ComputeServerReply(ReadOnlySpan<byte> clientValue, out byte[] sharedSecret);

    public byte[] HashData(ReadOnlySpan<byte> data) => CryptographicOperations.HashData(Hash, data);

    public virtual void Dispose() { }

    public static KeyExchangeAlgorithm? Create(string name, ISshRandom random) => name switch
    {
        SshAlgorithms.KexCurve25519 or SshAlgorithms.KexCurve25519LibSsh => new Curve25519Kex(name, random),
        SshAlgorithms.KexMlKem768X25519 => new HybridKex(name, HashAlgorithmName.SHA256, new MlKem768(random), random),
        SshAlgorithms.KexSntrup761X25519 or SshAlgorithms.KexSntrup761X25519OpenSsh
            => new HybridKex(name, HashAlgorithmName.SHA512, new Sntrup761(random), random),
        SshAlgorithms.KexEcdhNistP256 => new EcdhKex(name, "P-256", HashAlgorithmName.SHA256, random),
        SshAlgorithms.KexEcdhNistP384 => new EcdhKex(name, "P-384", HashAlgorithmName.SHA384, random),
        SshAlgorithms.KexEcdhNistP521 => new EcdhKex(name, "P-521", HashAlgorithmName.SHA512, random),
        SshAlgorithms.KexDhGroup14Sha256 => new FiniteFieldDhKex(name, DHStandardGroups.rfc3526_2048, HashAlgorithmName.SHA256, random),
        SshAlgorithms.KexDhGroup16Sha512 => new FiniteFieldDhKex(name, DHStandardGroups.rfc3526_4096, HashAlgorithmName.SHA512, random),
        _ => null,
    };

    protected static SshProtocolException Invalid(string what) => new(SshDisconnectReason.KeyExchangeFailed, what);

    /// <summary>Encodes an unsigned big-endian secret as mpint (RFC 4251 §5).</summary>
    protected static byte[] EncodeMpint(ReadOnlySpan<byte> magnitude) => new SshWriter(magnitude.Length + 8).WriteMpintFromUnsigned(magnitude).ToArray();

    /// <summary>Encodes a secret as string (hybrid methods: K is a hash output).</summary>
    protected static byte[] EncodeString(ReadOnlySpan<byte> value) => new SshWriter(value.Length + 4).WriteString(value).ToArray();
}

/// <summary>X25519 as used by curve25519-sha256 and the hybrid methods (RFC 7748 §5, §6.1).</summary>
internal sealed class X25519KeyPair : IDisposable
{
    /// <summary>RFC 7748 §5: 32-byte scalars and u-coordinates.</summary>
    public const int Length = 32;

    private readonly byte[] _private = new byte[Length];
    public byte[] Public { get; } = new byte[Length];

    public X25519KeyPair(ISshRandom random)
    {
        random.Fill(_private);
        X25519.ScalarMultBase(_private, Public);
    }

    /// <summary>X25519(k, u); rejects a peer value of the wrong size or an all-zero result (RFC 7748 §6.1, RFC 8731 §3).</summary>
    public void Agree(ReadOnlySpan<byte> peerPublic, Span<byte> shared)
    {
        if (peerPublic.Length != Length) throw new SshProtocolException(SshDisconnectReason.KeyExchangeFailed, "X25519 public value has the wrong length");
        if (!X25519.CalculateAgreement(_private, peerPublic, shared))
            throw new SshProtocolException(SshDisconnectReason.KeyExchangeFailed, "X25519 shared secret is all zero");
    }

    public void Dispose() => CryptographicOperations.ZeroMemory(_private);
}

/// <summary>curve25519-sha256 (RFC 8731): K is the X25519 output read as a big-endian mpint (§3.1).</summary>
internal sealed class Curve25519Kex(string name, ISshRandom random) : KeyExchangeAlgorithm
{
    private X25519KeyPair? _pair;

    public override string Name => name;
    public override HashAlgorithmName Hash => HashAlgorithmName.SHA256;

    public override byte[] CreateClientValue()
    {
        _pair = new X25519KeyPair(random);
        return _pair.Public;
    }

    public override byte[] ComputeClientSecret(ReadOnlySpan<byte> serverValue)
    {
        if (_pair is null) throw new InvalidOperationException("CreateClientValue first.");
        Span<byte> shared = stackalloc byte[X25519KeyPair.Length];
        _pair.Agree(serverValue, shared);
        var k = EncodeMpint(shared);
        CryptographicOperations.ZeroMemory(shared);
        return k;
    }

    public override byte[] ComputeServerReply(ReadOnlySpan<byte> clientValue, out byte[] sharedSecret)
    {
        _pair = new X25519KeyPair(random);
        Span<byte> shared = stackalloc byte[X25519KeyPair.Length];
        _pair.Agree(clientValue, shared);
        sharedSecret = EncodeMpint(shared);
        CryptographicOperations.ZeroMemory(shared);
        return _pair.Public;
    }

    public override void Dispose() => _pair?.Dispose();
}

/// <summary>ecdh-sha2-nistp* (RFC 5656 §4): Q_C and Q_S are uncompressed points (SEC1 §2.3.3) sent as strings; K is the mpint x-coordinate.</summary>
internal sealed class EcdhKex(string name, string curveName, HashAlgorithmName hash, ISshRandom random) : KeyExchangeAlgorithm
{
    private readonly X9ECParameters _curve = NistNamedCurves.GetByName(curveName);
    private BcBigInteger? _d;

    public override string Name => name;
    public override HashAlgorithmName Hash => hash;

    private int CoordinateLength => (_curve.Curve.FieldSize + 7) / 8;

    private byte[] Generate()
    {
        // d uniform in [1, n-1]: 64 extra bits make the modular bias negligible (FIPS 186-5 A.2.1).
        var n = _curve.N;
        var bytes = new byte[(n.BitLength + 7) / 8 + 8];
        random.Fill(bytes);
        _d = new BcBigInteger(1, bytes).Mod(n.Subtract(BcBigInteger.One)).Add(BcBigInteger.One);
        CryptographicOperations.ZeroMemory(bytes);
        return _curve.G.Multiply(_d).Normalize().GetEncoded(false);
    }

    private byte[] Agree(ReadOnlySpan<byte> peer)
    {
        // RFC 5656 §4: the recipient must verify that the point is on the curve (SEC1 §3.2.2.1).
        if (peer.Length != 1 + 2 * CoordinateLength || peer[0] != 0x04) throw Invalid("ECDH public value is not an uncompressed point");
        Org.BouncyCastle.Math.EC.ECPoint q;
        try
        {
            q = _curve.Curve.DecodePoint(peer.ToArray());
        }
        catch (ArgumentException)
        {
            throw Invalid("ECDH public value is not on the curve");
        }
        if (q.IsInfinity || !q.IsValid()) throw Invalid("ECDH public value is not on the curve");
        var s = q.Multiply(_d).Normalize();
        if (s.IsInfinity) throw Invalid("ECDH shared point is infinity");
        return EncodeMpint(s.AffineXCoord.GetEncoded());
    }

    public override byte[] CreateClientValue() => Generate();

    public override byte[] ComputeClientSecret(ReadOnlySpan<byte> serverValue) => Agree(serverValue);

    public override byte[] ComputeServerReply(ReadOnlySpan<byte> clientValue, out byte[] sharedSecret)
    {
        var q = Generate();
        sharedSecret = Agree(clientValue);
        return q;
    }
}

/// <summary>
/// diffie-hellman-group14-sha256 and group16-sha512 (RFC 8268 §3, groups of RFC 3526).
/// e and f are mpints; both sides check 1 &lt; f &lt; p-1 (RFC 4253 §8).
/// </summary>
internal sealed class FiniteFieldDhKex(string name, DHParameters group, HashAlgorithmName hash, ISshRandom random) : KeyExchangeAlgorithm
{
    /// <summary>
    /// Private exponent size: twice the 256-bit security strength the hash offers
    /// (RFC 8268 §4 / NIST SP 800-56A), as OpenSSH sizes it.
    /// </summary>
    private const int PrivateExponentBits = 512;

    private BcBigInteger? _x;

    public override string Name => name;
    public override HashAlgorithmName Hash => hash;

    private byte[] Generate()
    {
        var bytes = new byte[PrivateExponentBits / 8];
        random.Fill(bytes);
        bytes[0] |= 0x80; // full size, and certainly > 1
        _x = new BcBigInteger(1, bytes);
        CryptographicOperations.ZeroMemory(bytes);
        return group.G.ModPow(_x, group.P).ToByteArray(); // two's complement big-endian = mpint contents
    }

    private byte[] Agree(ReadOnlySpan<byte> peer)
    {
        int maxBytes = (group.P.BitLength + 7) / 8 + 1;
        if (peer.IsEmpty || peer.Length > maxBytes || (peer[0] & 0x80) != 0) throw Invalid("DH public value out of range");
        var f = new BcBigInteger(1, peer.ToArray());
        var pMinus1 = group.P.Subtract(BcBigInteger.One);
        if (f.CompareTo(BcBigInteger.One) <= 0 || f.CompareTo(pMinus1) >= 0) throw Invalid("DH public value out of range");
        var k = f.ModPow(_x, group.P);
        return EncodeMpint(k.ToByteArrayUnsigned());
    }

    public override byte[] CreateClientValue() => Generate();

    public override byte[] ComputeClientSecret(ReadOnlySpan<byte> serverValue) => Agree(serverValue);

    public override byte[] ComputeServerReply(ReadOnlySpan<byte> clientValue, out byte[] sharedSecret)
    {
        var f = Generate();
        sharedSecret = Agree(clientValue);
        return f;
    }
}

/// <summary>A KEM as the hybrid methods use it.</summary>
internal interface IKem
{
    int PublicKeyLength { get; }
    int CiphertextLength { get; }
    byte[] GenerateKeyPair();
    /// <summary>Returns the ciphertext; <paramref name="secret"/> receives the shared secret.</summary>
    byte[] Encapsulate(byte[] publicKey, out byte[] secret);
    byte[] Decapsulate(byte[] ciphertext);
}

/// <summary>ML-KEM-768 (FIPS 203), BouncyCastle implementation.</summary>
internal sealed class MlKem768(ISshRandom random) : IKem
{
    /// <summary>FIPS 203 Table 3: ML-KEM-768 encapsulation key 1184 bytes, ciphertext 1088.</summary>
    public int PublicKeyLength => 1184;
    public int CiphertextLength => 1088;

    private readonly SecureRandom _random = SshRandom.ToSecureRandom(random);
    private MLKemPrivateKeyParameters? _private;

    public byte[] GenerateKeyPair()
    {
        var gen = new MLKemKeyPairGenerator();
        gen.Init(new MLKemKeyGenerationParameters(_random, MLKemParameters.ml_kem_768));
        var pair = gen.GenerateKeyPair();
        _private = (MLKemPrivateKeyParameters)pair.Private;
        return ((MLKemPublicKeyParameters)pair.Public).GetEncoded();
    }

    public byte[] Encapsulate(byte[] publicKey, out byte[] secret)
    {
        var pk = MLKemPublicKeyParameters.FromEncoding(MLKemParameters.ml_kem_768, publicKey);
        var enc = new MLKemEncapsulator(MLKemParameters.ml_kem_768);
        enc.Init(new ParametersWithRandom(pk, _random));
        var ct = new byte[enc.EncapsulationLength];
        secret = new byte[enc.SecretLength];
        enc.Encapsulate(ct, secret);
        return ct;
    }

    public byte[] Decapsulate(byte[] ciphertext)
    {
        var dec = new MLKemDecapsulator(MLKemParameters.ml_kem_768);
        dec.Init(_private ?? throw new InvalidOperationException("GenerateKeyPair first."));
        var secret = new byte[dec.SecretLength];
        dec.Decapsulate(ciphertext, secret);
        return secret;
    }
}

/// <summary>Streamlined NTRU Prime sntrup761, BouncyCastle implementation.</summary>
internal sealed class Sntrup761(ISshRandom random) : IKem
{
    /// <summary>sntrup761 sizes (supercop crypto_kem/sntrup761): public key 1158 bytes, ciphertext 1039.</summary>
    public int PublicKeyLength => 1158;
    public int CiphertextLength => 1039;

    private readonly SecureRandom _random = SshRandom.ToSecureRandom(random);
    private SNtruPrimePrivateKeyParameters? _private;

    public byte[] GenerateKeyPair()
    {
        var gen = new SNtruPrimeKeyPairGenerator();
        gen.Init(new SNtruPrimeKeyGenerationParameters(_random, SNtruPrimeParameters.sntrup761));
        var pair = gen.GenerateKeyPair();
        _private = (SNtruPrimePrivateKeyParameters)pair.Private;
        return ((SNtruPrimePublicKeyParameters)pair.Public).GetEncoded();
    }

    public byte[] Encapsulate(byte[] publicKey, out byte[] secret)
    {
        var pk = new SNtruPrimePublicKeyParameters(SNtruPrimeParameters.sntrup761, publicKey);
        var result = new SNtruPrimeKemGenerator(_random).GenerateEncapsulated(pk);
        secret = result.GetSecret();
        return result.GetEncapsulation();
    }

    public byte[] Decapsulate(byte[] ciphertext) =>
        new SNtruPrimeKemExtractor(_private ?? throw new InvalidOperationException("GenerateKeyPair first.")).ExtractSecret(ciphertext);
}

/// <summary>
/// PQ/T hybrids (draft-ietf-sshm-mlkem-hybrid-kex, draft-ietf-sshm-ntruprime-ssh, as
/// OpenSSH implements them): C_INIT = kem_pk || X25519_C, S_REPLY = kem_ct || X25519_S,
/// K = HASH(kem_secret || X25519 secret) encoded as a string.
/// </summary>
internal sealed class HybridKex(string name, HashAlgorithmName hash, IKem kem, ISshRandom random) : KeyExchangeAlgorithm
{
    private X25519KeyPair? _pair;

    public override string Name => name;
    public override HashAlgorithmName Hash => hash;

    public override byte[] CreateClientValue()
    {
        var pk = kem.GenerateKeyPair();
        _pair = new X25519KeyPair(random);
        return [.. pk, .. _pair.Public];
    }

    private byte[] Combine(byte[] kemSecret, ReadOnlySpan<byte> peerX25519)
    {
        var buf = new byte[kemSecret.Length + X25519KeyPair.Length];
        try
        {
            kemSecret.CopyTo(buf, 0);
            _pair!.Agree(peerX25519, buf.AsSpan(kemSecret.Length));
            return EncodeString(HashData(buf));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(buf);
            CryptographicOperations.ZeroMemory(kemSecret);
        }
    }

    public override byte[] ComputeClientSecret(ReadOnlySpan<byte> serverValue)
    {
        if (_pair is null) throw new InvalidOperationException("CreateClientValue first.");
        if (serverValue.Length != kem.CiphertextLength + X25519KeyPair.Length) throw Invalid("hybrid KEX reply has the wrong length");
        byte[] secret;
        try
        {
            secret = kem.Decapsulate(serverValue[..kem.CiphertextLength].ToArray());
        }
        catch (Exception e) when (e is not SshProtocolException)
        {
            throw Invalid("KEM ciphertext rejected");
        }
        return Combine(secret, serverValue[kem.CiphertextLength..]);
    }

    public override byte[] ComputeServerReply(ReadOnlySpan<byte> clientValue, out byte[] sharedSecret)
    {
        if (clientValue.Length != kem.PublicKeyLength + X25519KeyPair.Length) throw Invalid("hybrid KEX init has the wrong length");
        byte[] ct, secret;
        try
        {
            ct = kem.Encapsulate(clientValue[..kem.PublicKeyLength].ToArray(), out secret);
        }
        catch (Exception e) when (e is not SshProtocolException)
        {
            throw Invalid("KEM public key rejected");
        }
        _pair = new X25519KeyPair(random);
        sharedSecret = Combine(secret, clientValue[kem.PublicKeyLength..]);
        return [.. ct, .. _pair.Public];
    }

    public override void Dispose() => _pair?.Dispose();
}
