using System.Security.Cryptography;

namespace Warren.Ssh.Keys;

/// <summary>
/// A public key in SSH wire form (RFC 4253 §6.6). Implementations: Ed25519
/// (RFC 8709), ECDSA P-256/384/521 (RFC 5656 §3.1), RSA (RFC 8332).
/// Contract shared by the transport, auth and token layers; see Keys/ for the
/// concrete types and the OpenSSH file formats.
/// </summary>
public abstract partial class SshPublicKey : IEquatable<SshPublicKey>
{
    /// <summary>Key type name as it appears in the blob: "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa".</summary>
    public abstract string KeyType { get; }

    /// <summary>The key blob: string key-type, then the type's fields.</summary>
    public abstract ReadOnlyMemory<byte> Blob { get; }

    /// <summary>Signature algorithms this key can verify ("rsa-sha2-512", "rsa-sha2-256" for RSA; the key type otherwise).</summary>
    public abstract IReadOnlyList<string> SignatureAlgorithms { get; }

    /// <summary>
    /// Verifies a signature blob (string algorithm, string signature; RFC 4253 §6.6)
    /// over <paramref name="data"/>. The algorithm inside the blob must equal
    /// <paramref name="signatureAlgorithm"/>; false on any mismatch or malformed input, never throws.
    /// </summary>
    public abstract bool Verify(string signatureAlgorithm, ReadOnlySpan<byte> data, ReadOnlySpan<byte> signatureBlob);

    /// <summary>"SHA256:" + unpadded base64 of SHA-256(blob), as <c>ssh-keygen -l</c> prints it.</summary>
    public string Fingerprint => "SHA256:" + Convert.ToBase64String(SHA256.HashData(Blob.Span)).TrimEnd('=');

    public bool Equals(SshPublicKey? other) => other is not null && Blob.Span.SequenceEqual(other.Blob.Span);
    public override bool Equals(object? obj) => obj is SshPublicKey k && Equals(k);
    public override int GetHashCode()
    {
        var h = new HashCode();
        h.AddBytes(Blob.Span);
        return h.ToHashCode();
    }
}
