using CsCheck;
using System.Text;
using Warren.Ssh.Keys;
using Xunit;

namespace Warren.Ssh.Tests.Keys;

/// <summary>Hostile input never escapes as anything but the documented failure.</summary>
public class FuzzTests
{
    private static readonly string[] s_types = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"];
    private static readonly SshPrivateKey[] s_keys = s_types.Select(TestKeys.Get).ToArray();

    /// <summary>A valid input with up to 4 random byte edits, a truncation or an extension.</summary>
    private static Gen<byte[]> Mutated(byte[] seed) =>
        Gen.Select(Gen.Int[0, 3], Gen.Int[1, 4], Gen.Int[0, int.MaxValue].Array[8], Gen.Byte.Array[0, 16], (mode, edits, positions, extra) =>
        {
            var b = (byte[])seed.Clone();
            switch (mode)
            {
                case 0:
                    for (int i = 0; i < edits && b.Length > 0; i++) b[positions[i] % b.Length] ^= (byte)(positions[i + 4] | 1);
                    return b;
                case 1: return b[..(positions[0] % Math.Max(1, b.Length))];
                case 2: return [.. b, .. extra];
                default:
                    // Overwrite a 4-byte length field with a huge value.
                    if (b.Length >= 4) { int p = positions[0] % (b.Length - 3); b[p] = 0xff; b[p + 1] = 0xff; b[p + 2] = 0xff; b[p + 3] = 0xff; }
                    return b;
            }
        });

    [Fact]
    public void TryParseBlob_RandomBytes_NeverThrows()
    {
        Gen.Byte.Array[0, 600].Sample(b => { SshPublicKey.TryParseBlob(b, out _); }, iter: 3000);
        var blobs = s_keys.Select(k => k.PublicKey.Blob.ToArray()).ToArray();
        Gen.Int[0, blobs.Length - 1].SelectMany(i => Mutated(blobs[i]))
            .Sample(b => { SshPublicKey.TryParseBlob(b, out _); }, iter: 3000);
    }

    [Fact]
    public void Verify_MutatedSignatures_ReturnFalse()
    {
        var data = "exchange hash"u8.ToArray();
        foreach (var key in s_keys)
        {
            var alg = key.SignatureAlgorithms[0];
            var sig = key.Sign(alg, data);
            Mutated(sig).Sample(m =>
            {
                if (m.AsSpan().SequenceEqual(sig)) return;
                Assert.False(key.PublicKey.Verify(alg, data, m));
            }, iter: 500);
            Gen.Byte.Array[0, 300].Sample(m => { key.PublicKey.Verify(alg, data, m); }, iter: 500);
        }
    }

    [Fact]
    public void TryVerify_Sshsig_MutatedBlobs_NeverThrow()
    {
        var msg = "m"u8.ToArray();
        foreach (var key in s_keys)
        {
            var blob = SshSignature.SignBlob(key, "ns", msg);
            Mutated(blob).Sample(m =>
            {
                bool ok = SshSignature.TryVerify(m, "ns", msg, out _);
                // Every field is covered by the signature or checked exactly, so any change fails.
                if (!m.AsSpan().SequenceEqual(blob)) Assert.False(ok);
            }, iter: 300);
        }
        Gen.Byte.Array[0, 400].Sample(b => { SshSignature.TryVerify(b, "ns", msg, out _); }, iter: 2000);
        Gen.String.Sample(s => { SshSignature.TryUnarmor(s, out _); }, iter: 2000);
    }

    [Fact]
    public void ParseOpenSsh_HostileFiles_OnlyFormatException()
    {
        void Check(string text)
        {
            try { SshPrivateKey.ParseOpenSsh(text, "pw"u8).Dispose(); }
            catch (FormatException) { }
        }
        Gen.String.Sample(Check, iter: 1000);
        Gen.Byte.Array[0, 400].Sample(b => Check(Pem(b)), iter: 2000);
        foreach (var key in s_keys)
        {
            var body = Unpem(key.ToOpenSshPrivateKey("c"));
            Mutated(body).Sample(b => Check(Pem(b)), iter: 300);
        }
    }

    [Fact]
    public void ParseOpenSsh_TruncatedByOne_IsFormatException()
    {
        foreach (var key in s_keys)
        {
            var body = Unpem(key.ToOpenSshPrivateKey("comment"));
            for (int n = 0; n < body.Length; n += body.Length > 400 ? 7 : 1)
                Assert.ThrowsAny<FormatException>(() => SshPrivateKey.ParseOpenSsh(Pem(body[..n])));
            Assert.ThrowsAny<FormatException>(() => SshPrivateKey.ParseOpenSsh(Pem(body[..^1])));
        }
    }

    [Fact]
    public void ParseOpenSsh_KdfRoundsAboveLimit_IsRejectedBeforeWork()
    {
        // Hand-built header: aes256-ctr/bcrypt with rounds = MaxKdfRounds + 1.
        var kdf = new Warren.Ssh.Wire.SshWriter().WriteString(new byte[16]).WriteUInt32(SshPrivateKey.MaxKdfRounds + 1).ToArray();
        var body = new Warren.Ssh.Wire.SshWriter().WriteRaw("openssh-key-v1\0"u8).WriteString("aes256-ctr").WriteString("bcrypt")
            .WriteString(kdf).WriteUInt32(1).WriteString(s_keys[0].PublicKey.Blob.Span).WriteString(new byte[32]).ToArray();
        var e = Assert.ThrowsAny<FormatException>(() => SshPrivateKey.ParseOpenSsh(Pem(body), "pw"u8));
        Assert.IsNotType<SshKeyPassphraseException>(e);
    }

    [Fact]
    public void ParseOpenSsh_UnencryptedCheckIntMismatch_IsFormatException()
    {
        var body = Unpem(s_keys[0].ToOpenSshPrivateKey("c"));
        // Skip magic, ciphername, kdfname, kdfoptions, count and the public key to reach the private section.
        var r = new Warren.Ssh.Wire.SshReader(body);
        r.TryReadBytes("openssh-key-v1\0"u8.Length, out _);
        r.TryReadString(out _); r.TryReadString(out _); r.TryReadString(out _);
        r.TryReadUInt32(out _); r.TryReadString(out _);
        int checkInt1 = body.Length - r.RemainingLength + 4; // after the section's length prefix
        body[checkInt1] ^= 0x55;
        var e = Assert.ThrowsAny<FormatException>(() => SshPrivateKey.ParseOpenSsh(Pem(body)));
        Assert.IsNotType<SshKeyPassphraseException>(e);
    }

    /// <summary>Offsets of the length prefixes of consecutive top-level strings starting at <paramref name="start"/>.</summary>
    private static List<int> StringOffsets(byte[] data, int start)
    {
        var offsets = new List<int>();
        var r = new Warren.Ssh.Wire.SshReader(data.AsSpan(start));
        while (!r.IsEmpty)
        {
            offsets.Add(data.Length - r.RemainingLength);
            if (!r.TryReadString(out _)) break;
        }
        return offsets;
    }

    [Fact]
    public void LengthFieldsEqualToUIntMax_AreRejected()
    {
        var msg = "m"u8.ToArray();
        const int SshsigHeader = 6 + 4; // "SSHSIG" + uint32 version
        foreach (var key in s_keys)
        {
            var blob = key.PublicKey.Blob.ToArray();
            foreach (var i in StringOffsets(blob, 0))
            {
                var b = (byte[])blob.Clone();
                b.AsSpan(i, 4).Fill(0xff);
                Assert.False(SshPublicKey.TryParseBlob(b, out _));
            }
            var sig = SshSignature.SignBlob(key, "ns", msg);
            var sigOffsets = StringOffsets(sig, SshsigHeader);
            Assert.Equal(5, sigOffsets.Count);
            foreach (var i in sigOffsets)
            {
                var g = (byte[])sig.Clone();
                g.AsSpan(i, 4).Fill(0xff);
                Assert.False(SshSignature.TryVerify(g, "ns", msg, out _));
            }
            var file = Unpem(key.ToOpenSshPrivateKey("c"));
            foreach (var i in StringOffsets(file, "openssh-key-v1\0"u8.Length).Take(3))
            {
                var f = (byte[])file.Clone();
                f.AsSpan(i, 4).Fill(0xff);
                Assert.ThrowsAny<FormatException>(() => SshPrivateKey.ParseOpenSsh(Pem(f)));
            }
        }
    }

    private static string Pem(byte[] body)
        => "-----BEGIN OPENSSH PRIVATE KEY-----\n" + Convert.ToBase64String(body, Base64FormattingOptions.InsertLineBreaks) + "\n-----END OPENSSH PRIVATE KEY-----\n";

    private static byte[] Unpem(string pem)
    {
        var lines = pem.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return Convert.FromBase64String(string.Concat(lines[1..^1]));
    }
}
