using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using System.Text;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Keys;

/// <summary>A private key file needs a passphrase that was not given, or the one given is wrong.</summary>
public sealed class SshKeyPassphraseException : FormatException
{
    public SshKeyPassphraseException(string message) : base(message) { }
}

/// <summary>
/// The "openssh-key-v1" private key format of OpenSSH's PROTOCOL.key:
/// <code>
/// byte[]  "openssh-key-v1\0"
/// string  ciphername   ("none", "aes256-ctr", "aes256-gcm@openssh.com", ...)
/// string  kdfname      ("none" or "bcrypt")
/// string  kdfoptions   (bcrypt: string salt, uint32 rounds)
/// uint32  number of keys N (OpenSSH supports exactly one)
/// string  public key blob
/// string  encrypted private section (+ AEAD tag after the string, for GCM)
/// </code>
/// Private section: uint32 checkint ×2, key type + private fields, string comment, padding 1,2,3… to the cipher block size.
/// </summary>
public abstract partial class SshPrivateKey
{
    private const string PemBegin = "-----BEGIN OPENSSH PRIVATE KEY-----";
    private const string PemEnd = "-----END OPENSSH PRIVATE KEY-----";
    private static ReadOnlySpan<byte> AuthMagic => "openssh-key-v1\0"u8;

    /// <summary>sshkey.c wraps the base64 body at 70 columns.</summary>
    private const int PemLineLength = 70;

    /// <summary>
    /// Largest private key file accepted. A 16384-bit RSA key (the largest we accept)
    /// is ~12 KiB of text; 64 KiB leaves room for long comments and line-ending variety.
    /// </summary>
    public const int MaxPrivateKeyFileChars = 64 * 1024;

    /// <summary>
    /// Largest bcrypt rounds count accepted from a file. ssh-keygen writes 16 by default (-a);
    /// each round costs roughly a millisecond, so this bounds a hostile file's cost to ~seconds.
    /// </summary>
    public const int MaxKdfRounds = 1024;

    /// <summary>Largest bcrypt salt accepted; ssh-keygen writes 16 bytes (BCRYPT_DEFAULT_SALT_LEN).</summary>
    public const int MaxKdfSaltBytes = 1024;

    /// <summary>Block size of the "none" cipher for padding, as sshkey.c (8).</summary>
    private const int NoneCipherBlockSize = 8;

    private sealed record CipherSpec(string Name, int KeyBytes, int IvBytes, int BlockSize, int TagBytes, string Mode);

    /// <summary>Ciphers OpenSSH can write private keys with (cipher.c), minus chacha20-poly1305 and 3des-cbc.</summary>
    private static readonly CipherSpec[] s_ciphers =
    [
        new("none", 0, 0, NoneCipherBlockSize, 0, "none"),
        new("aes128-ctr", 16, 16, 16, 0, "ctr"),
        new("aes192-ctr", 24, 16, 16, 0, "ctr"),
        new("aes256-ctr", 32, 16, 16, 0, "ctr"),
        new("aes128-cbc", 16, 16, 16, 0, "cbc"),
        new("aes192-cbc", 24, 16, 16, 0, "cbc"),
        new("aes256-cbc", 32, 16, 16, 0, "cbc"),
        // PROTOCOL: 12-byte nonce, 16-byte tag appended after the encrypted section.
        new("aes128-gcm@openssh.com", 16, 12, 16, 16, "gcm"),
        new("aes256-gcm@openssh.com", 32, 12, 16, 16, "gcm"),
    ];

    /// <summary>
    /// Reads an OpenSSH private key file. Throws <see cref="FormatException"/> on malformed
    /// or unsupported input, <see cref="SshKeyPassphraseException"/> when the file is encrypted
    /// and the passphrase is missing or wrong. Nothing else escapes for any input.
    /// </summary>
    public static SshPrivateKey ParseOpenSsh(string pemText, ReadOnlySpan<byte> passphrase = default)
        => ParseOpenSsh(pemText, passphrase, out _);

    /// <inheritdoc cref="ParseOpenSsh(string, ReadOnlySpan{byte})"/>
    public static SshPrivateKey ParseOpenSsh(string pemText, ReadOnlySpan<byte> passphrase, out string comment)
    {
        ArgumentNullException.ThrowIfNull(pemText);
        byte[] raw = Unarmor(pemText);
        byte[]? plain = null;
        try
        {
            var r = new SshReader(raw);
            if (!r.TryReadBytes(AuthMagic.Length, out var magic) || !magic.SequenceEqual(AuthMagic))
                throw Bad("not an openssh-key-v1 file");
            if (!r.TryReadUtf8(out var cipherName, maxBytes: 64) || !r.TryReadUtf8(out var kdfName, maxBytes: 64)
                || !r.TryReadString(out var kdfOptions) || !r.TryReadUInt32(out var keyCount))
                throw Bad("truncated header");
            var cipher = Array.Find(s_ciphers, c => c.Name == cipherName) ?? throw Bad("unsupported cipher");
            if (keyCount != 1) throw Bad("exactly one key per file is supported");
            if (!r.TryReadString(out var publicBlob)) throw Bad("truncated public key");
            if (!r.TryReadString(out var encrypted)) throw Bad("truncated private section");
            if (r.RemainingLength != cipher.TagBytes) throw Bad("unexpected trailing data");
            var tag = r.Remaining;
            if (encrypted.Length % cipher.BlockSize != 0) throw Bad("private section is not a multiple of the block size");

            plain = new byte[encrypted.Length];
            if (cipher.Mode == "none")
            {
                if (kdfName != "none" || !kdfOptions.IsEmpty) throw Bad("unencrypted key with a KDF");
                encrypted.CopyTo(plain);
            }
            else
            {
                if (kdfName != "bcrypt") throw Bad("unsupported KDF");
                var ko = new SshReader(kdfOptions);
                if (!ko.TryReadString(out var salt) || !ko.TryReadUInt32(out var rounds) || !ko.IsEmpty)
                    throw Bad("malformed KDF options");
                if (salt.Length > MaxKdfSaltBytes || rounds < 1 || rounds > MaxKdfRounds) throw Bad("KDF parameters out of range");
                if (passphrase.IsEmpty) throw new SshKeyPassphraseException("The private key is encrypted; a passphrase is required.");
                Decrypt(cipher, passphrase, salt, (int)rounds, encrypted, tag, plain);
            }

            var pr = new SshReader(plain);
            if (!pr.TryReadUInt32(out var check1) || !pr.TryReadUInt32(out var check2)) throw Bad("truncated private section");
            if (check1 != check2)
                throw cipher.Mode == "none" ? Bad("check bytes differ") : new SshKeyPassphraseException("Incorrect passphrase.");
            if (!TryReadPrivate(ref pr, out var key)) throw Bad("malformed or unsupported private key");
            try
            {
                if (!pr.TryReadUtf8(out comment, maxBytes: MaxPrivateKeyFileChars)) throw Bad("malformed comment");
                // Padding: 1, 2, 3, ... up to the block size (sshkey.c private2_check_padding).
                var pad = pr.Remaining;
                if (pad.Length >= cipher.BlockSize) throw Bad("too much padding");
                for (int i = 0; i < pad.Length; i++)
                    if (pad[i] != (byte)(i + 1)) throw Bad("bad padding");
                if (!key.PublicKey.Blob.Span.SequenceEqual(publicBlob)) throw Bad("public and private keys differ");
                return key;
            }
            catch
            {
                key.Dispose();
                throw;
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(raw);
            if (plain is not null) CryptographicOperations.ZeroMemory(plain);
        }
    }

    /// <summary>Non-throwing <see cref="ParseOpenSsh(string, ReadOnlySpan{byte})"/>.</summary>
    public static bool TryParseOpenSsh(string pemText, ReadOnlySpan<byte> passphrase, [NotNullWhen(true)] out SshPrivateKey? key, out string? comment)
    {
        try
        {
            key = ParseOpenSsh(pemText, passphrase, out var c);
            comment = c;
            return true;
        }
        catch (FormatException)
        {
            key = null;
            comment = null;
            return false;
        }
    }

    /// <summary>
    /// Writes this key as an unencrypted openssh-key-v1 file (what <c>ssh-keygen -N ''</c> writes).
    /// The result contains the private key: write it with mode 0600.
    /// </summary>
    public string ToOpenSshPrivateKey(string comment)
    {
        ArgumentNullException.ThrowIfNull(comment);
        var priv = new SshWriter(4096);
        var body = new SshWriter(4096);
        try
        {
            uint check = BinaryPrimitives.ReadUInt32LittleEndian(RandomNumberGenerator.GetBytes(4));
            priv.WriteUInt32(check).WriteUInt32(check).WriteString(PublicKey.KeyType);
            WritePrivateFields(priv);
            priv.WriteString(comment);
            for (byte i = 1; priv.Length % NoneCipherBlockSize != 0; i++) priv.WriteByte(i);

            body.WriteRaw(AuthMagic).WriteString("none").WriteString("none").WriteString(ReadOnlySpan<byte>.Empty)
                .WriteUInt32(1).WriteString(PublicKey.Blob.Span).WriteString(priv.WrittenSpan);
            return Armor(body.WrittenSpan);
        }
        finally
        {
            // SshWriter exposes no way to wipe; clear through the written span.
            Wipe(priv);
            Wipe(body);
        }
    }

    private static void Wipe(SshWriter w) => CryptographicOperations.ZeroMemory(System.Runtime.InteropServices.MemoryMarshal.AsMemory(w.WrittenMemory).Span);

    private static string Armor(ReadOnlySpan<byte> body)
    {
        var b64 = Convert.ToBase64String(body);
        var sb = new StringBuilder(b64.Length + b64.Length / PemLineLength + 80);
        sb.Append(PemBegin).Append('\n');
        for (int i = 0; i < b64.Length; i += PemLineLength)
            sb.Append(b64, i, Math.Min(PemLineLength, b64.Length - i)).Append('\n');
        sb.Append(PemEnd).Append('\n');
        return sb.ToString();
    }

    private static byte[] Unarmor(string text)
    {
        if (text.Length > MaxPrivateKeyFileChars) throw Bad("file too large");
        var s = text.AsSpan();
        int begin = s.IndexOf(PemBegin, StringComparison.Ordinal);
        if (begin < 0) throw Bad("missing BEGIN OPENSSH PRIVATE KEY");
        s = s[(begin + PemBegin.Length)..];
        int end = s.IndexOf(PemEnd, StringComparison.Ordinal);
        if (end < 0) throw Bad("missing END OPENSSH PRIVATE KEY");
        s = s[..end];
        var chars = new char[s.Length];
        int n = 0;
        foreach (var c in s)
            if (c is not (' ' or '\t' or '\r' or '\n')) chars[n++] = c;
        var bytes = new byte[n / 4 * 3 + 3];
        if (!Convert.TryFromBase64Chars(chars.AsSpan(0, n), bytes, out int len)) throw Bad("invalid base64");
        Array.Clear(chars);
        var result = bytes.AsSpan(0, len).ToArray();
        CryptographicOperations.ZeroMemory(bytes);
        return result;
    }

    private static void Decrypt(CipherSpec cipher, ReadOnlySpan<byte> passphrase, ReadOnlySpan<byte> salt, int rounds,
        ReadOnlySpan<byte> encrypted, ReadOnlySpan<byte> tag, Span<byte> plain)
    {
        Span<byte> keyIv = stackalloc byte[cipher.KeyBytes + cipher.IvBytes];
        try
        {
            BcryptPbkdf.Derive(passphrase, salt, rounds, keyIv);
            var key = keyIv[..cipher.KeyBytes];
            var iv = keyIv[cipher.KeyBytes..];
            switch (cipher.Mode)
            {
                case "ctr":
                    AesCtr.Transform(key, iv, encrypted, plain);
                    break;
                case "cbc":
                    using (var aes = Aes.Create())
                    {
                        aes.Key = key.ToArray();
                        aes.DecryptCbc(encrypted, iv, plain, PaddingMode.None);
                    }
                    break;
                case "gcm":
                    using (var gcm = new AesGcm(key, tag.Length))
                    {
                        try { gcm.Decrypt(iv, encrypted, tag, plain); }
                        catch (AuthenticationTagMismatchException) { throw new SshKeyPassphraseException("Incorrect passphrase."); }
                    }
                    break;
                default:
                    throw Bad("unsupported cipher");
            }
        }
        catch (CryptographicException)
        {
            throw Bad("decryption failed");
        }
        finally { CryptographicOperations.ZeroMemory(keyIv); }
    }

    private static FormatException Bad(string what) => new("Invalid OpenSSH private key: " + what + ".");
}

/// <summary>AES in counter mode (NIST SP 800-38A §6.5) with a 128-bit big-endian counter, as OpenSSH's aesNNN-ctr.</summary>
internal static class AesCtr
{
    private const int BlockSize = 16;

    public static void Transform(ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv, ReadOnlySpan<byte> input, Span<byte> output)
    {
        if (iv.Length != BlockSize) throw new ArgumentException("CTR needs a 16-byte counter.", nameof(iv));
        using var aes = Aes.Create();
        aes.Key = key.ToArray();
        Span<byte> counter = stackalloc byte[BlockSize];
        Span<byte> stream = stackalloc byte[BlockSize];
        iv.CopyTo(counter);
        try
        {
            for (int off = 0; off < input.Length; off += BlockSize)
            {
                aes.EncryptEcb(counter, stream, PaddingMode.None);
                int n = Math.Min(BlockSize, input.Length - off);
                for (int i = 0; i < n; i++) output[off + i] = (byte)(input[off + i] ^ stream[i]);
                for (int i = BlockSize - 1; i >= 0 && ++counter[i] == 0; i--) { }
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(stream);
            CryptographicOperations.ZeroMemory(counter);
        }
    }
}
