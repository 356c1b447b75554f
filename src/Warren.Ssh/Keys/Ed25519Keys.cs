using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Keys;

/// <summary>An Ed25519 public key.</summary>
/// <remarks>
/// RFC 8709 §4: the blob is string "ssh-ed25519", string key (32 bytes).
/// RFC 8709 §6: the signature blob is string "ssh-ed25519", string signature (64 bytes).
/// </remarks>
public sealed class Ed25519PublicKey : SshPublicKey
{
    public const string Name = "ssh-ed25519";

    /// <summary>RFC 8032 §5.1.5: an encoded public key is 32 octets.</summary>
    public const int PublicKeyLength = 32;

    /// <summary>RFC 8032 §5.1.6: a signature is 64 octets.</summary>
    public const int SignatureLength = 64;

    private static readonly string[] s_algorithms = [Name];

    private readonly byte[] _key;
    private readonly byte[] _blob;

    public Ed25519PublicKey(ReadOnlySpan<byte> key)
    {
        if (key.Length != PublicKeyLength)
            throw new ArgumentException($"An Ed25519 public key is {PublicKeyLength} bytes.", nameof(key));
        _key = key.ToArray();
        _blob = new SshWriter(4 + Name.Length + 4 + PublicKeyLength).WriteString(Name).WriteString(_key).ToArray();
    }

    public override string KeyType => Name;
    public override ReadOnlyMemory<byte> Blob => _blob;
    public override IReadOnlyList<string> SignatureAlgorithms => s_algorithms;

    /// <summary>The raw 32-byte key (RFC 8032 encoding).</summary>
    public ReadOnlySpan<byte> Key => _key;

    internal static bool TryReadFields(ref SshReader r, out SshPublicKey? key)
    {
        key = null;
        if (!r.TryReadString(out var pk) || pk.Length != PublicKeyLength) return false;
        key = new Ed25519PublicKey(pk);
        return true;
    }

    public override bool Verify(string signatureAlgorithm, ReadOnlySpan<byte> data, ReadOnlySpan<byte> signatureBlob)
    {
        if (signatureAlgorithm != Name) return false;
        var r = new SshReader(signatureBlob);
        if (!r.TryReadString(out var alg) || !alg.SequenceEqual("ssh-ed25519"u8)) return false;
        if (!r.TryReadString(out var sig) || sig.Length != SignatureLength || !r.IsEmpty) return false;
        try
        {
            return Org.BouncyCastle.Math.EC.Rfc8032.Ed25519.Verify(sig.ToArray(), 0, _key, 0, data.ToArray(), 0, data.Length);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or CryptographicException)
        {
            return false;
        }
    }
}

/// <summary>An Ed25519 private key (RFC 8709, RFC 8032 §5.1).</summary>
public sealed class Ed25519PrivateKey : SshPrivateKey
{
    /// <summary>RFC 8032 §5.1.5: the private key is a 32-octet seed.</summary>
    public const int SeedLength = 32;

    private static readonly string[] s_algorithms = [Ed25519PublicKey.Name];

    private readonly byte[] _seed;
    private readonly Ed25519PrivateKeyParameters _parameters;
    private readonly Ed25519PublicKey _public;

    public Ed25519PrivateKey(ReadOnlySpan<byte> seed)
    {
        if (seed.Length != SeedLength)
            throw new ArgumentException($"An Ed25519 seed is {SeedLength} bytes.", nameof(seed));
        _seed = seed.ToArray();
        _parameters = new Ed25519PrivateKeyParameters(_seed, 0);
        _public = new Ed25519PublicKey(_parameters.GeneratePublicKey().GetEncoded());
    }

    public static Ed25519PrivateKey Generate()
    {
        Span<byte> seed = stackalloc byte[SeedLength];
        RandomNumberGenerator.Fill(seed);
        try { return new Ed25519PrivateKey(seed); }
        finally { CryptographicOperations.ZeroMemory(seed); }
    }

    public override SshPublicKey PublicKey => _public;
    public override IReadOnlyList<string> SignatureAlgorithms => s_algorithms;

    public override byte[] Sign(string signatureAlgorithm, ReadOnlySpan<byte> data)
    {
        if (signatureAlgorithm != Ed25519PublicKey.Name)
            throw new ArgumentException($"Ed25519 keys cannot sign with '{signatureAlgorithm}'.", nameof(signatureAlgorithm));
        ObjectDisposedException.ThrowIf(_disposed, this);
        var signer = new Ed25519Signer();
        signer.Init(true, _parameters);
        signer.BlockUpdate(data);
        var sig = signer.GenerateSignature();
        return new SshWriter(4 + Ed25519PublicKey.Name.Length + 4 + sig.Length)
            .WriteString(Ed25519PublicKey.Name).WriteString(sig).ToArray();
    }

    /// <summary>PROTOCOL.key / sshkey.c private fields: string pk(32), string sk(64 = seed || pk).</summary>
    internal override void WritePrivateFields(SshWriter w)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var pk = ((Ed25519PublicKey)_public).Key;
        byte[] sk = new byte[SeedLength + Ed25519PublicKey.PublicKeyLength];
        try
        {
            _seed.CopyTo(sk, 0);
            pk.CopyTo(sk.AsSpan(SeedLength));
            w.WriteString(pk).WriteString(sk);
        }
        finally { CryptographicOperations.ZeroMemory(sk); }
    }

    internal static bool TryReadPrivateFields(ref SshReader r, out SshPrivateKey? key)
    {
        key = null;
        if (!r.TryReadString(out var pk) || pk.Length != Ed25519PublicKey.PublicKeyLength) return false;
        if (!r.TryReadString(out var sk) || sk.Length != SeedLength + Ed25519PublicKey.PublicKeyLength) return false;
        if (!sk[SeedLength..].SequenceEqual(pk)) return false;
        var k = new Ed25519PrivateKey(sk[..SeedLength]);
        if (!((Ed25519PublicKey)k._public).Key.SequenceEqual(pk)) { k.Dispose(); return false; }
        key = k;
        return true;
    }

    private bool _disposed;

    public override void Dispose()
    {
        _disposed = true;
        CryptographicOperations.ZeroMemory(_seed);
    }

    public override string ToString() => $"Ed25519PrivateKey({_public.Fingerprint})";
}
