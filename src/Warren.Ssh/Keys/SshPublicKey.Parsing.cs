using System.Diagnostics.CodeAnalysis;
using System.Text;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Keys;

public abstract partial class SshPublicKey
{
    /// <summary>
    /// Largest public-key blob accepted: a 16384-bit RSA key is ~2 KiB; OpenSSH's
    /// authorized_keys lines are bounded by SSH_MAX_PUBKEY_BYTES (16 KiB), adopted here.
    /// </summary>
    public const int MaxBlobBytes = 16 * 1024;

    /// <summary>Parses a key blob (RFC 4253 §6.6); false on anything malformed, unsupported or with trailing bytes. Never throws.</summary>
    public static bool TryParseBlob(ReadOnlySpan<byte> blob, [NotNullWhen(true)] out SshPublicKey? key)
    {
        key = null;
        if (blob.Length > MaxBlobBytes) return false;
        var r = new SshReader(blob);
        if (!TryRead(ref r, out key)) return false;
        if (!r.IsEmpty) { key = null; return false; }
        return true;
    }

    /// <summary>Parses a key blob; <see cref="FormatException"/> when it is not a supported, well-formed key.</summary>
    public static SshPublicKey ParseBlob(ReadOnlySpan<byte> blob)
        => TryParseBlob(blob, out var key) ? key : throw new FormatException("Not a supported SSH public key blob.");

    /// <summary>Reads "string key-type" and that type's fields from <paramref name="r"/>.</summary>
    internal static bool TryRead(ref SshReader r, [NotNullWhen(true)] out SshPublicKey? key)
    {
        key = null;
        if (!r.TryReadString(out var type)) return false;
        if (type.SequenceEqual("ssh-ed25519"u8)) return Ed25519PublicKey.TryReadFields(ref r, out key);
        if (type.SequenceEqual("ssh-rsa"u8)) return RsaPublicKey.TryReadFields(ref r, out key);
        if (EcdsaCurve.FromKeyType(type) is { } curve) return EcdsaPublicKey.TryReadFields(curve, ref r, out key);
        return false;
    }

    /// <summary>
    /// Parses the OpenSSH public-key line "type base64 [comment]" (sshd(8) AUTHORIZED_KEYS FILE FORMAT,
    /// without options). The type word must match the type inside the blob. Never throws.
    /// </summary>
    public static bool TryParseOpenSsh(string? line, [NotNullWhen(true)] out SshPublicKey? key, out string? comment)
    {
        key = null;
        comment = null;
        if (line is null) return false;
        var s = line.AsSpan().Trim();
        int sp = s.IndexOfAny(' ', '\t');
        if (sp <= 0) return false;
        var type = s[..sp];
        s = s[sp..].TrimStart();
        sp = s.IndexOfAny(' ', '\t');
        var b64 = sp < 0 ? s : s[..sp];
        var rest = sp < 0 ? ReadOnlySpan<char>.Empty : s[sp..].Trim();
        // Base64 of MaxBlobBytes is 4/3 as long; refuse longer text before decoding.
        if (b64.IsEmpty || b64.Length > (MaxBlobBytes + 2) / 3 * 4) return false;
        byte[] blob = new byte[b64.Length / 4 * 3 + 3];
        if (!Convert.TryFromBase64Chars(b64, blob, out int n)) return false;
        if (!TryParseBlob(blob.AsSpan(0, n), out key)) return false;
        if (!type.SequenceEqual(key.KeyType)) { key = null; return false; }
        comment = rest.IsEmpty ? null : rest.ToString();
        return true;
    }

    /// <summary>"type base64" plus " comment" if given: the .pub / authorized_keys form.</summary>
    public string ToOpenSshString(string? comment = null)
    {
        var sb = new StringBuilder(KeyType).Append(' ').Append(Convert.ToBase64String(Blob.Span));
        if (!string.IsNullOrEmpty(comment))
        {
            if (comment.AsSpan().IndexOfAny('\r', '\n') >= 0)
                throw new ArgumentException("A key comment cannot contain line breaks.", nameof(comment));
            sb.Append(' ').Append(comment);
        }
        return sb.ToString();
    }

    public override string ToString() => $"{KeyType} {Fingerprint}";
}
