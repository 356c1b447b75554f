using CsCheck;
using System.Text;
using Warren.Ssh.Keys;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Ssh.Tests.Keys;

public class KeyRoundTripTests
{
    public static TheoryData<string> KeyTypes => new()
    {
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
    };

    [Theory]
    [MemberData(nameof(KeyTypes))]
    public void Generate_SignVerify_RoundTrips(string keyType)
    {
        var key = TestKeys.Get(keyType);
        Assert.Equal(keyType, key.PublicKey.KeyType);
        var data = Encoding.UTF8.GetBytes("exchange hash");
        foreach (var alg in key.SignatureAlgorithms)
        {
            var sig = key.Sign(alg, data);
            Assert.True(key.PublicKey.Verify(alg, data, sig));
            Assert.False(key.PublicKey.Verify(alg, Encoding.UTF8.GetBytes("exchange hasH"), sig));
            var tampered = (byte[])sig.Clone();
            tampered[^1] ^= 1;
            Assert.False(key.PublicKey.Verify(alg, data, tampered));
            Assert.False(key.PublicKey.Verify(alg, data, sig.AsSpan(0, sig.Length - 1)));
            Assert.False(key.PublicKey.Verify(alg, data, [.. sig, 0]));
        }
        Assert.Equal(key.SignatureAlgorithms, key.PublicKey.SignatureAlgorithms);
    }

    [Theory]
    [MemberData(nameof(KeyTypes))]
    public void Blob_And_OpenSshLine_RoundTrip(string keyType)
    {
        var key = TestKeys.Get(keyType);
        var parsed = SshPublicKey.ParseBlob(key.PublicKey.Blob.Span);
        Assert.Equal(key.PublicKey, parsed);
        Assert.Equal(key.PublicKey.Fingerprint, parsed.Fingerprint);

        var line = key.PublicKey.ToOpenSshString("alice@example");
        Assert.True(SshPublicKey.TryParseOpenSsh(line, out var k2, out var comment));
        Assert.Equal(key.PublicKey, k2);
        Assert.Equal("alice@example", comment);

        Assert.True(SshPublicKey.TryParseOpenSsh(key.PublicKey.ToOpenSshString(), out _, out var none));
        Assert.Null(none);
    }

    [Theory]
    [MemberData(nameof(KeyTypes))]
    public void Blob_TruncatedByOne_IsRejected(string keyType)
    {
        var key = TestKeys.Get(keyType);
        var blob = key.PublicKey.Blob.Span;
        for (int n = 0; n < blob.Length; n++)
            Assert.False(SshPublicKey.TryParseBlob(blob[..n], out _));
        Assert.False(SshPublicKey.TryParseBlob([.. blob, 0], out _));
        var truncated = blob[..^1].ToArray();
        Assert.Throws<FormatException>(() => SshPublicKey.ParseBlob(truncated));
    }

    [Fact]
    public void OpenSshLine_TypeWordMustMatchBlob()
    {
        using var key = SshPrivateKey.Generate("ssh-ed25519");
        var b64 = Convert.ToBase64String(key.PublicKey.Blob.Span);
        Assert.False(SshPublicKey.TryParseOpenSsh("ssh-rsa " + b64, out _, out _));
        Assert.False(SshPublicKey.TryParseOpenSsh("ssh-ed25519", out _, out _));
        Assert.False(SshPublicKey.TryParseOpenSsh("", out _, out _));
        Assert.False(SshPublicKey.TryParseOpenSsh("ssh-ed25519 !!!!", out _, out _));
    }

    [Fact]
    public void Rsa_Sha1Signatures_AreRefused()
    {
        var key = TestKeys.Get("ssh-rsa");
        var data = "x"u8.ToArray();
        Assert.Throws<ArgumentException>(() => key.Sign("ssh-rsa", data));
        // A well-formed "ssh-rsa" blob carrying a valid rsa-sha2-256 signature value is still refused.
        var good = new SshReader(key.Sign("rsa-sha2-256", data));
        good.TryReadString(out _);
        good.TryReadString(out var raw);
        var sha1Blob = new SshWriter().WriteString("ssh-rsa").WriteString(raw).ToArray();
        Assert.False(key.PublicKey.Verify("ssh-rsa", data, sha1Blob));
        Assert.DoesNotContain("ssh-rsa", key.PublicKey.SignatureAlgorithms);
    }

    [Fact]
    public void Rsa_SignatureAlgorithmMustMatchBlob()
    {
        var key = TestKeys.Get("ssh-rsa");
        var data = "x"u8.ToArray();
        var sig = key.Sign("rsa-sha2-512", data);
        Assert.False(key.PublicKey.Verify("rsa-sha2-256", data, sig));
    }

    [Fact]
    public void Rsa_ModulusOutsideLimits_IsRejected()
    {
        // Limit - 1: a 2047-bit odd modulus.
        var small = new byte[(RsaPublicKey.MinModulusBits - 1 + 7) / 8];
        small[0] = 0x40; small[^1] = 1;
        var blob = new SshWriter().WriteString("ssh-rsa").WriteMpintFromUnsigned([1, 0, 1]).WriteMpintFromUnsigned(small).ToArray();
        Assert.False(SshPublicKey.TryParseBlob(blob, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => SshPrivateKey.Generate("ssh-rsa", RsaPublicKey.MinModulusBits - 8));
    }

    [Fact]
    public void Generate_RejectsUnknownTypesAndWrongSizes()
    {
        Assert.Throws<ArgumentException>(() => SshPrivateKey.Generate("ssh-dss"));
        Assert.Throws<ArgumentOutOfRangeException>(() => SshPrivateKey.Generate("ecdsa-sha2-nistp256", 384));
        Assert.Throws<ArgumentOutOfRangeException>(() => SshPrivateKey.Generate("ssh-rsa", RsaPublicKey.MaxModulusBits + 8));
        using var p384 = SshPrivateKey.Generate("ecdsa-sha2-nistp384", 384);
        Assert.Equal("ecdsa-sha2-nistp384", p384.PublicKey.KeyType);
    }

    [Fact]
    public void Rsa_NonCanonicalMpint_IsRejected()
    {
        var pub = (RsaPublicKey)TestKeys.Get("ssh-rsa").PublicKey;
        var r = new SshReader(pub.Blob.Span);
        r.TryReadString(out _);
        r.TryReadString(out var e);
        r.TryReadString(out var n);
        // An extra leading zero on e: same value, different bytes.
        var padded = new SshWriter().WriteString("ssh-rsa").WriteString([0, .. e]).WriteString(n).ToArray();
        Assert.False(SshPublicKey.TryParseBlob(padded, out _));
        // Negative n.
        var negative = new SshWriter().WriteString("ssh-rsa").WriteString(e).WriteString(n[1..]).ToArray();
        Assert.False(SshPublicKey.TryParseBlob(negative, out _));
    }

    [Theory]
    [MemberData(nameof(KeyTypes))]
    public void ParsedBlob_ReencodesToTheSameBytes(string keyType)
    {
        var blob = TestKeys.Get(keyType).PublicKey.Blob.ToArray();
        Assert.Equal(blob, SshPublicKey.ParseBlob(blob).Blob.ToArray());
    }

    [Fact]
    public void Rsa_ModulusAboveMax_IsRejected()
    {
        var big = new byte[RsaPublicKey.MaxModulusBits / 8 + 1];
        big[0] = 1; big[^1] = 1;
        var blob = new SshWriter().WriteString("ssh-rsa").WriteMpintFromUnsigned([1, 0, 1]).WriteMpintFromUnsigned(big).ToArray();
        Assert.False(SshPublicKey.TryParseBlob(blob, out _));
    }

    /// <summary>golang.org/x/crypto/ssh's parseRSA bound: exponents of more than 24 bits are refused while parsing.</summary>
    [Fact]
    public void Rsa_ExponentBound_Is24Bits_CheckedWhileParsing()
    {
        var modulus = TestKeys.Get("ssh-rsa").PublicKey is RsaPublicKey rsa ? rsa.Modulus : throw new InvalidOperationException();
        Gen.Select(Gen.UInt, Gen.Int[0, 5]).Sample((value, extraBytes) =>
        {
            // A value of up to 32 bits, then possibly more bytes after it (exponents of up to 72 bits).
            var bytes = new byte[4 + extraBytes];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
            for (int i = 4; i < bytes.Length; i++) bytes[i] = (byte)(value >> (i % 4 * 8) | 1);
            var blob = new SshWriter().WriteString("ssh-rsa").WriteMpintFromUnsigned(bytes).WriteMpintFromUnsigned(modulus).ToArray();
            var e = new System.Numerics.BigInteger(bytes, isUnsigned: true, isBigEndian: true);
            bool expected = e >= 3 && !e.IsEven && e < (1 << RsaPublicKey.MaxExponentBits);
            Assert.Equal(expected, SshPublicKey.TryParseBlob(blob, out _));
        }, iter: 3000);
        var largest = new SshWriter().WriteString("ssh-rsa").WriteMpintFromUnsigned([0xff, 0xff, 0xff]).WriteMpintFromUnsigned(modulus).ToArray();
        Assert.True(SshPublicKey.TryParseBlob(largest, out _));
        var next = new SshWriter().WriteString("ssh-rsa").WriteMpintFromUnsigned([0x01, 0x00, 0x00, 0x01]).WriteMpintFromUnsigned(modulus).ToArray();
        Assert.False(SshPublicKey.TryParseBlob(next, out _));
    }

    [Fact]
    public void Ecdsa_PointNotOnCurve_IsRejected()
    {
        var key = TestKeys.Get("ecdsa-sha2-nistp256");
        var blob = key.PublicKey.Blob.ToArray();
        blob[^1] ^= 1; // last byte of Y
        Assert.False(SshPublicKey.TryParseBlob(blob, out _));
    }

    [Fact]
    public void Ecdsa_CurveIdentifierMustMatchKeyType()
    {
        var key = TestKeys.Get("ecdsa-sha2-nistp256");
        var r = new SshReader(key.PublicKey.Blob.Span);
        r.TryReadString(out _);
        r.TryReadString(out _);
        r.TryReadString(out var q);
        var blob = new SshWriter().WriteString("ecdsa-sha2-nistp256").WriteString("nistp384").WriteString(q).ToArray();
        Assert.False(SshPublicKey.TryParseBlob(blob, out _));
    }

    [Fact]
    public void PrivateKey_ToString_DoesNotRevealSecrets()
    {
        using var key = (Ed25519PrivateKey)SshPrivateKey.Generate("ssh-ed25519");
        var s = key.ToString();
        Assert.Contains(key.PublicKey.Fingerprint, s);
        var pem = key.ToOpenSshPrivateKey("c");
        Assert.DoesNotContain(s, pem);
    }
}

public class InconsistentPrivateKeyTests
{
    private static string File(SshPublicKey pub, Action<SshWriter> fields)
    {
        var priv = new SshWriter().WriteUInt32(7).WriteUInt32(7).WriteString(pub.KeyType);
        fields(priv);
        priv.WriteString("c");
        for (byte i = 1; priv.Length % 8 != 0; i++) priv.WriteByte(i);
        var body = new SshWriter().WriteRaw("openssh-key-v1\0"u8).WriteString("none").WriteString("none").WriteString(ReadOnlySpan<byte>.Empty)
            .WriteUInt32(1).WriteString(pub.Blob.Span).WriteString(priv.WrittenSpan).ToArray();
        return "-----BEGIN OPENSSH PRIVATE KEY-----\n" + Convert.ToBase64String(body) + "\n-----END OPENSSH PRIVATE KEY-----\n";
    }

    private static SshReader PrivateFields(SshPrivateKey k, out byte[] storage)
    {
        var w = new SshWriter();
        k.WritePrivateFields(w);
        storage = w.ToArray();
        return new SshReader(storage);
    }

    [Fact]
    public void Control_WellFormedHandBuiltFileParses()
    {
        var a = TestKeys.Get("ecdsa-sha2-nistp256");
        var text = File(a.PublicKey, w => a.WritePrivateFields(w));
        using var parsed = SshPrivateKey.ParseOpenSsh(text);
        Assert.Equal(a.PublicKey, parsed.PublicKey);
    }

    [Fact]
    public void Ecdsa_ScalarNotMatchingPoint_IsRejected()
    {
        var a = TestKeys.Get("ecdsa-sha2-nistp256");
        using var b = SshPrivateKey.Generate("ecdsa-sha2-nistp256");
        var ra = PrivateFields(a, out _);
        ra.TryReadString(out var curve); ra.TryReadString(out var q);
        var rb = PrivateFields(b, out _);
        rb.TryReadString(out _); rb.TryReadString(out _); rb.TryReadString(out var dB);
        var curveA = curve.ToArray(); var qA = q.ToArray(); var d = dB.ToArray();
        var text = File(a.PublicKey, w => w.WriteString(curveA).WriteString(qA).WriteString(d));
        Assert.Throws<FormatException>(() => SshPrivateKey.ParseOpenSsh(text));
    }

    [Fact]
    public void Rsa_WrongPrivateExponent_IsRejected()
    {
        var a = TestKeys.Get("ssh-rsa");
        var r = PrivateFields(a, out _);
        var parts = new byte[6][];
        for (int i = 0; i < 6; i++) { r.TryReadString(out var m); parts[i] = m.ToArray(); }
        parts[2][^1] ^= 2; // d
        var text = File(a.PublicKey, w => { foreach (var p in parts) w.WriteString(p); });
        Assert.Throws<FormatException>(() => SshPrivateKey.ParseOpenSsh(text));
    }

    [Fact]
    public void Ed25519_SeedNotMatchingPublicKey_IsRejected()
    {
        using var a = SshPrivateKey.Generate("ssh-ed25519");
        using var b = new Ed25519PrivateKey(new byte[32]);
        var pkA = ((Ed25519PublicKey)a.PublicKey).Key.ToArray();
        var sk = new byte[64];
        pkA.CopyTo(sk, 32); // seed all zeros (b's seed), public half claims a's key
        var text = File(a.PublicKey, w => w.WriteString(pkA).WriteString(sk));
        Assert.Throws<FormatException>(() => SshPrivateKey.ParseOpenSsh(text));
    }
}
