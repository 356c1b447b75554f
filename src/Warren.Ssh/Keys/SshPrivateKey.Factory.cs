using Warren.Ssh.Wire;

namespace Warren.Ssh.Keys;

public abstract partial class SshPrivateKey
{
    /// <summary>
    /// Generates a new key. <paramref name="keyType"/>: "ssh-ed25519", "ecdsa-sha2-nistp256",
    /// "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521" or "ssh-rsa" (default 3072 bits as ssh-keygen).
    /// <paramref name="bits"/> is only meaningful for RSA; for ECDSA it must match the curve if given.
    /// </summary>
    public static SshPrivateKey Generate(string keyType, int? bits = null)
    {
        ArgumentNullException.ThrowIfNull(keyType);
        switch (keyType)
        {
            case Ed25519PublicKey.Name:
                if (bits is not null and not 256) throw new ArgumentOutOfRangeException(nameof(bits), "Ed25519 keys have a fixed size.");
                return Ed25519PrivateKey.Generate();
            case RsaPublicKey.Name:
                return RsaPrivateKey.Generate(bits ?? RsaPrivateKey.DefaultBits);
        }
        if (EcdsaCurve.FromKeyType(keyType) is { } curve)
        {
            if (bits is { } b && b != curve.KeyBits)
                throw new ArgumentOutOfRangeException(nameof(bits), "The ECDSA curve fixes the key size.");
            return EcdsaPrivateKey.Generate(curve);
        }
        throw new ArgumentException($"Unsupported key type '{keyType}'.", nameof(keyType));
    }

    /// <summary>
    /// Writes the type-specific private fields of the openssh-key-v1 format
    /// (OpenSSH PROTOCOL.key; field order as sshkey.c sshkey_private_serialize).
    /// The key type string itself is written by the caller.
    /// </summary>
    internal virtual void WritePrivateFields(SshWriter w)
        => throw new NotSupportedException($"{GetType().Name} cannot be serialized.");

    /// <summary>Reads "string key-type" then the private fields; false on malformed or inconsistent keys.</summary>
    internal static bool TryReadPrivate(ref SshReader r, out SshPrivateKey? key)
    {
        key = null;
        if (!r.TryReadString(out var type)) return false;
        if (type.SequenceEqual("ssh-ed25519"u8)) return Ed25519PrivateKey.TryReadPrivateFields(ref r, out key);
        if (type.SequenceEqual("ssh-rsa"u8)) return RsaPrivateKey.TryReadPrivateFields(ref r, out key);
        if (EcdsaCurve.FromKeyType(type) is { } curve) return EcdsaPrivateKey.TryReadPrivateFields(curve, ref r, out key);
        return false;
    }
}
