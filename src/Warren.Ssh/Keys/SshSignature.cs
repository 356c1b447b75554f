using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using System.Text;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Keys;

/// <summary>
/// OpenSSH "SSHSIG" detached signatures (OpenSSH PROTOCOL.sshsig), as made by
/// <c>ssh-keygen -Y sign</c>. Warren's API tokens carry one.
/// </summary>
/// <remarks>
/// Blob: byte[6] "SSHSIG", uint32 version (1), string publickey, string namespace,
/// string reserved, string hash_algorithm, string signature.
/// Signed data: byte[6] "SSHSIG", string namespace, string reserved,
/// string hash_algorithm, string H(message).
/// </remarks>
public static class SshSignature
{
    /// <summary>PROTOCOL.sshsig MAGIC_PREAMBLE.</summary>
    private static ReadOnlySpan<byte> MagicPreamble => "SSHSIG"u8;

    /// <summary>PROTOCOL.sshsig SIG_VERSION.</summary>
    public const uint Version = 1;

    public const string Sha256 = "sha256";
    public const string Sha512 = "sha512";

    private const string ArmorBegin = "-----BEGIN SSH SIGNATURE-----";
    private const string ArmorEnd = "-----END SSH SIGNATURE-----";

    /// <summary>ssh-keygen wraps armored signatures at 70 columns (sshbuf_dtob64 with wrap).</summary>
    private const int ArmorLineLength = 70;

    /// <summary>
    /// Largest signature blob accepted. The largest one we can verify holds a 16384-bit RSA
    /// key and signature (~4.2 KiB); 16 KiB also bounds a hostile namespace or reserved field.
    /// </summary>
    public const int MaxBlobBytes = 16 * 1024;

    /// <summary>Largest namespace accepted (ssh-keygen sets no limit; ours are ~40 bytes).</summary>
    public const int MaxNamespaceBytes = 1024;

    /// <summary>
    /// Signs <paramref name="message"/> in <paramref name="namespace"/> and returns the binary
    /// SSHSIG blob. RSA keys sign with rsa-sha2-512, as ssh-keygen does.
    /// </summary>
    public static byte[] SignBlob(SshPrivateKey key, string @namespace, ReadOnlySpan<byte> message, string hashAlgorithm = Sha512)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentException.ThrowIfNullOrEmpty(@namespace);
        var hash = HashFor(hashAlgorithm) ?? throw new ArgumentException($"Unsupported SSHSIG hash '{hashAlgorithm}'.", nameof(hashAlgorithm));
        var ns = Encoding.UTF8.GetBytes(@namespace);
        if (ns.Length > MaxNamespaceBytes) throw new ArgumentException("Namespace too long.", nameof(@namespace));

        var signed = SignedData(ns, ReadOnlySpan<byte>.Empty, hashAlgorithm, Digest(hash, message));
        var algorithm = key.PublicKey.KeyType == RsaPublicKey.Name ? RsaPublicKey.Sha512Algorithm : key.SignatureAlgorithms[0];
        var signature = key.Sign(algorithm, signed);

        return new SshWriter(512 + signature.Length + key.PublicKey.Blob.Length)
            .WriteRaw(MagicPreamble).WriteUInt32(Version)
            .WriteString(key.PublicKey.Blob.Span).WriteString(ns).WriteString(ReadOnlySpan<byte>.Empty)
            .WriteString(hashAlgorithm).WriteString(signature).ToArray();
    }

    /// <summary>The armored text form that <c>ssh-keygen -Y sign</c> writes to <c>FILE.sig</c>.</summary>
    public static string Armor(byte[] blob)
    {
        ArgumentNullException.ThrowIfNull(blob);
        var b64 = Convert.ToBase64String(blob);
        var sb = new StringBuilder(b64.Length + 100);
        sb.Append(ArmorBegin).Append('\n');
        for (int i = 0; i < b64.Length; i += ArmorLineLength)
            sb.Append(b64, i, Math.Min(ArmorLineLength, b64.Length - i)).Append('\n');
        return sb.Append(ArmorEnd).Append('\n').ToString();
    }

    /// <summary>Extracts the blob from armored text; false when the armor or base64 is malformed. Never throws.</summary>
    public static bool TryUnarmor(string? text, [NotNullWhen(true)] out byte[]? blob)
    {
        blob = null;
        if (text is null) return false;
        var s = text.AsSpan().Trim();
        if (!s.StartsWith(ArmorBegin, StringComparison.Ordinal) || !s.EndsWith(ArmorEnd, StringComparison.Ordinal)) return false;
        s = s[ArmorBegin.Length..^ArmorEnd.Length];
        // Base64 of MaxBlobBytes, plus line breaks, bounds the text we are willing to decode.
        if (s.Length > MaxBlobBytes * 2) return false;
        Span<char> chars = new char[s.Length];
        int n = 0;
        foreach (var c in s)
            if (c is not (' ' or '\t' or '\r' or '\n')) chars[n++] = c;
        var buf = new byte[n / 4 * 3 + 3];
        if (n == 0 || !Convert.TryFromBase64Chars(chars[..n], buf, out int len)) return false;
        blob = buf.AsSpan(0, len).ToArray();
        return true;
    }

    /// <summary>
    /// Verifies an SSHSIG blob over <paramref name="message"/>: magic, version 1, the namespace
    /// equal to <paramref name="namespace"/>, empty reserved field, sha256 or sha512, and a
    /// signature by the embedded key (RSA only with rsa-sha2-*). On success
    /// <paramref name="signer"/> is the embedded public key; the caller decides whether to trust it.
    /// Never throws.
    /// </summary>
    public static bool TryVerify(ReadOnlySpan<byte> blob, string @namespace, ReadOnlySpan<byte> message, [NotNullWhen(true)] out SshPublicKey? signer)
    {
        signer = null;
        if (string.IsNullOrEmpty(@namespace) || blob.Length > MaxBlobBytes) return false;
        var r = new SshReader(blob);
        if (!r.TryReadBytes(MagicPreamble.Length, out var magic) || !magic.SequenceEqual(MagicPreamble)) return false;
        if (!r.TryReadUInt32(out var version) || version != Version) return false;
        if (!r.TryReadString(out var publicKey) || !r.TryReadString(out var ns) || !r.TryReadString(out var reserved)
            || !r.TryReadString(out var hashName) || !r.TryReadString(out var signature) || !r.IsEmpty)
            return false;
        if (!reserved.IsEmpty || ns.Length > MaxNamespaceBytes) return false;
        byte[] expectedNs;
        try { expectedNs = Encoding.UTF8.GetBytes(@namespace); }
        catch (EncoderFallbackException) { return false; }
        if (!ns.SequenceEqual(expectedNs)) return false;

        string hashAlgorithm;
        if (hashName.SequenceEqual("sha512"u8)) hashAlgorithm = Sha512;
        else if (hashName.SequenceEqual("sha256"u8)) hashAlgorithm = Sha256;
        else return false;

        if (!SshPublicKey.TryParseBlob(publicKey, out var key)) return false;

        var sr = new SshReader(signature);
        if (!sr.TryReadUtf8(out var sigAlgorithm, maxBytes: 64)) return false;
        // RSA: only rsa-sha2-256/512 (the key's SignatureAlgorithms); never SHA-1 "ssh-rsa".
        if (!key.SignatureAlgorithms.Contains(sigAlgorithm)) return false;

        var signed = SignedData(ns, reserved, hashAlgorithm, Digest(HashFor(hashAlgorithm)!.Value, message));
        if (!key.Verify(sigAlgorithm, signed, signature)) return false;
        signer = key;
        return true;
    }

    /// <summary>
    /// The public key an SSHSIG blob names, read without verifying anything (PROTOCOL.sshsig: magic, version, then
    /// the key): a verifier may look the key up first and spend a signature check only on a key it knows. The key's
    /// own bounds (RSA modulus size, exponent) are checked while parsing. Never throws.
    /// </summary>
    public static bool TryReadSigner(ReadOnlySpan<byte> blob, [NotNullWhen(true)] out SshPublicKey? signer)
    {
        signer = null;
        if (blob.Length > MaxBlobBytes) return false;
        var r = new SshReader(blob);
        if (!r.TryReadBytes(MagicPreamble.Length, out var magic) || !magic.SequenceEqual(MagicPreamble)) return false;
        if (!r.TryReadUInt32(out var version) || version != Version) return false;
        return r.TryReadString(out var publicKey) && SshPublicKey.TryParseBlob(publicKey, out signer);
    }

    /// <summary>Armored-text convenience for <see cref="TryVerify(ReadOnlySpan{byte}, string, ReadOnlySpan{byte}, out SshPublicKey?)"/>.</summary>
    public static bool TryVerifyArmored(string armored, string @namespace, ReadOnlySpan<byte> message, [NotNullWhen(true)] out SshPublicKey? signer)
    {
        signer = null;
        return TryUnarmor(armored, out var blob) && TryVerify(blob, @namespace, message, out signer);
    }

    private static HashAlgorithmName? HashFor(string name) => name switch
    {
        Sha512 => HashAlgorithmName.SHA512,
        Sha256 => HashAlgorithmName.SHA256,
        _ => null,
    };

    private static byte[] Digest(HashAlgorithmName hash, ReadOnlySpan<byte> message)
        => hash == HashAlgorithmName.SHA512 ? SHA512.HashData(message) : SHA256.HashData(message);

    private static byte[] SignedData(ReadOnlySpan<byte> ns, ReadOnlySpan<byte> reserved, string hashAlgorithm, ReadOnlySpan<byte> digest)
        => new SshWriter(128 + ns.Length + reserved.Length + digest.Length)
            .WriteRaw(MagicPreamble).WriteString(ns).WriteString(reserved).WriteString(hashAlgorithm).WriteString(digest).ToArray();
}
