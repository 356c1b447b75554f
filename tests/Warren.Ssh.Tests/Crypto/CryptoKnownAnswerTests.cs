using System.Buffers.Binary;
using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Macs;
using Org.BouncyCastle.Crypto.Parameters;
using Warren.Ssh.Crypto;
using Warren.Ssh.Transport;
using Xunit;

namespace Warren.Ssh.Tests.Crypto;

/// <summary>Returns the same fixed bytes for every request (repeated as needed).</summary>
internal sealed class FixedRandom(byte[] bytes) : ISshRandom
{
    public void Fill(Span<byte> destination)
    {
        for (int i = 0; i < destination.Length; i++) destination[i] = bytes[i % bytes.Length];
    }
}

public class CryptoKnownAnswerTests
{
    private static byte[] Hex(string s) => Convert.FromHexString(s);

    /// <summary>GCM spec (McGrew &amp; Viega) test case 3, the vector NIST's GCM validation uses for AES-128.</summary>
    [Fact]
    public void AesGcm_NistTestCase3()
    {
        var key = Hex("feffe9928665731c6d6a8f9467308308");
        var iv = Hex("cafebabefacedbaddecaf888");
        var plain = Hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255");
        var expected = Hex("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985");
        var expectedTag = Hex("4d5c2af327cd64a62cf35abd2ba6fab4");
        using var gcm = new AesGcm(key, 16);
        var c = new byte[plain.Length];
        var tag = new byte[16];
        gcm.Encrypt(iv, plain, c, tag);
        Assert.Equal(expected, c);
        Assert.Equal(expectedTag, tag);
    }

    /// <summary>aes*-gcm@openssh.com: the length is AAD, and the invocation counter (last 8 IV bytes) increments per packet (RFC 5647 §7.1).</summary>
    [Fact]
    public void AesGcmPacketCipher_MatchesRfc5647Construction()
    {
        var key = Hex("feffe9928665731c6d6a8f9467308308");
        var iv = Hex("cafebabefacedbadffffffff");
        using var cipher = new AesGcmPacketCipher(key, iv);
        using var reference = new AesGcm(key, 16);
        for (int n = 0; n < 3; n++)
        {
            var packet = new byte[4 + 32];
            BinaryPrimitives.WriteUInt32BigEndian(packet, 32);
            for (int i = 4; i < packet.Length; i++) packet[i] = (byte)(i * 7 + n);
            var plain = packet.ToArray();
            var tag = new byte[16];
            cipher.Encrypt((uint)n, packet, tag);

            var nonce = iv.ToArray();
            BinaryPrimitives.WriteUInt64BigEndian(nonce.AsSpan(4), BinaryPrimitives.ReadUInt64BigEndian(iv.AsSpan(4)) + (ulong)n);
            var expected = new byte[32];
            var expectedTag = new byte[16];
            reference.Encrypt(nonce, plain.AsSpan(4), expected, expectedTag, plain.AsSpan(0, 4));
            Assert.Equal(plain[..4], packet[..4]);
            Assert.Equal(expected, packet[4..]);
            Assert.Equal(expectedTag, tag);
        }
    }

    /// <summary>RFC 4231 §4.2 and §4.3 (test cases 1 and 2).</summary>
    [Theory]
    [InlineData("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854")]
    [InlineData("4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")]
    public void HmacSha2_Rfc4231(string key, string data, string sha256, string sha512)
    {
        Assert.Equal(Hex(sha256), HMACSHA256.HashData(Hex(key), Hex(data)));
        Assert.Equal(Hex(sha512), HMACSHA512.HashData(Hex(key), Hex(data)));
    }

    /// <summary>RFC 4253 §6.4 (MAC over sequence_number || plaintext) and OpenSSH PROTOCOL §1.7 (ETM: over the ciphertext, length in clear).</summary>
    [Theory]
    [InlineData(SshAlgorithms.HmacSha256)]
    [InlineData(SshAlgorithms.HmacSha512)]
    [InlineData(SshAlgorithms.HmacSha256Etm)]
    [InlineData(SshAlgorithms.HmacSha512Etm)]
    public void AesCtrHmac_MatchesIndependentConstruction(string macName)
    {
        var mac = PacketCiphers.GetMac(macName)!;
        var key = Enumerable.Range(1, 16).Select(i => (byte)i).ToArray();
        var iv = Enumerable.Range(100, 16).Select(i => (byte)i).ToArray();
        var macKey = Enumerable.Range(50, mac.KeyLength).Select(i => (byte)i).ToArray();
        using var cipher = new AesCtrHmacPacketCipher(key, iv, mac, macKey);
        const uint seq = 0xfffffffe;
        var packet = new byte[48];
        BinaryPrimitives.WriteUInt32BigEndian(packet, (uint)(packet.Length - 4));
        packet[4] = 10;
        for (int i = 5; i < packet.Length; i++) packet[i] = (byte)i;
        var plain = packet.ToArray();
        var tag = new byte[mac.TagLength];
        cipher.Encrypt(seq, packet, tag);

        // Independent AES-CTR: ECB over explicit counter blocks.
        using var aes = Aes.Create();
        aes.Key = key;
        var expected = plain.ToArray();
        int start = mac.EncryptThenMac ? 4 : 0;
        var counter = new System.Numerics.BigInteger(iv, isUnsigned: true, isBigEndian: true);
        for (int off = start, block = 0; off < expected.Length; off += 16, block++)
        {
            var ctr = (counter + block).ToByteArray(isUnsigned: true, isBigEndian: true);
            var ctrBlock = new byte[16];
            ctr.AsSpan(Math.Max(0, ctr.Length - 16)).CopyTo(ctrBlock.AsSpan(16 - Math.Min(16, ctr.Length)));
            var ks = aes.EncryptEcb(ctrBlock, PaddingMode.None);
            for (int i = 0; i < 16 && off + i < expected.Length; i++) expected[off + i] ^= ks[i];
        }
        Assert.Equal(expected, packet);
        var seqBytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(seqBytes, seq);
        var macInput = seqBytes.Concat(mac.EncryptThenMac ? expected : plain).ToArray();
        var expectedTag = mac.TagLength == 32 ? HMACSHA256.HashData(macKey, macInput) : HMACSHA512.HashData(macKey, macInput);
        Assert.Equal(expectedTag, tag);
    }

    /// <summary>RFC 7748 §6.1.</summary>
    [Fact]
    public void X25519_Rfc7748()
    {
        var alicePriv = Hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        var bobPriv = Hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        using var alice = new X25519KeyPair(new FixedRandom(alicePriv));
        using var bob = new X25519KeyPair(new FixedRandom(bobPriv));
        Assert.Equal(Hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"), alice.Public);
        Assert.Equal(Hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"), bob.Public);
        var shared = new byte[32];
        alice.Agree(bob.Public, shared);
        Assert.Equal(Hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"), shared);
    }

    /// <summary>RFC 7748 §6.1 / RFC 8731 §3: a low-order point gives an all-zero secret, which must be rejected.</summary>
    [Fact]
    public void X25519_AllZeroSharedSecret_IsRejected()
    {
        using var pair = new X25519KeyPair(SshRandom.Default);
        var e = Assert.Throws<SshProtocolException>(() => pair.Agree(new byte[32], new byte[32]));
        Assert.Equal(SshDisconnectReason.KeyExchangeFailed, e.Reason);
        Assert.Throws<SshProtocolException>(() => pair.Agree(new byte[31], new byte[32]));
    }

    /// <summary>
    /// chacha20-poly1305@openssh.com against an independent build from the original
    /// 64-bit-nonce ChaCha20 (BouncyCastle ChaChaEngine) and Poly1305, following
    /// PROTOCOL.chacha20poly1305 step by step.
    /// </summary>
    [Theory]
    [InlineData(0u)]
    [InlineData(7u)]
    [InlineData(0xffffffffu)]
    public void ChaCha20Poly1305_MatchesOpenSshConstruction(uint seq)
    {
        var key = Enumerable.Range(0, 64).Select(i => (byte)(i * 3 + 1)).ToArray();
        var packet = new byte[4 + 1 + 3 + 200 + 4];
        BinaryPrimitives.WriteUInt32BigEndian(packet, (uint)(packet.Length - 4));
        packet[4] = 4;
        for (int i = 5; i < packet.Length; i++) packet[i] = (byte)(i ^ 0x5a);
        var plain = packet.ToArray();

        using var cipher = new ChaCha20Poly1305OpenSsh(key);
        var tag = new byte[16];
        cipher.Encrypt(seq, packet, tag);

        var nonce = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(nonce, seq);
        // K_1 (second half) encrypts the length with counter 0.
        var header = new ChaChaEngine();
        header.Init(true, new ParametersWithIV(new KeyParameter(key, 32, 32), nonce));
        var expected = new byte[plain.Length];
        header.ProcessBytes(plain, 0, 4, expected, 0);
        // K_2 (first half): block 0 → Poly1305 key; payload from block 1.
        var main = new ChaChaEngine();
        main.Init(true, new ParametersWithIV(new KeyParameter(key, 0, 32), nonce));
        var block0 = new byte[64];
        main.ProcessBytes(new byte[64], 0, 64, block0, 0);
        main.ProcessBytes(plain, 4, plain.Length - 4, expected, 4);
        var poly = new Poly1305();
        poly.Init(new KeyParameter(block0, 0, 32));
        poly.BlockUpdate(expected, 0, expected.Length);
        var expectedTag = new byte[16];
        poly.DoFinal(expectedTag, 0);

        Assert.Equal(expected, packet);
        Assert.Equal(expectedTag, tag);

        using var decrypt = new ChaCha20Poly1305OpenSsh(key);
        Assert.Equal((uint)(plain.Length - 4), decrypt.DecryptLength(seq, packet.AsSpan(0, 4)));
        Assert.True(decrypt.Decrypt(seq, packet, tag));
        Assert.Equal(plain, packet);
    }

    /// <summary>RFC 8439 §2.5.2.</summary>
    [Fact]
    public void Poly1305_Rfc8439()
    {
        var mac = new Poly1305Mac();
        mac.Init(Hex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b"));
        mac.Update("Cryptographic Forum Research Group"u8);
        var tag = new byte[16];
        mac.Final(tag);
        Assert.Equal(Hex("a8061dc1305136c6c22b8baf0c0127a9"), tag);
    }

    /// <summary>Our Poly1305 against BouncyCastle's for random keys and messages, split into random update chunks, plus all-ones keys and data (carry paths).</summary>
    [Fact]
    public void Poly1305_MatchesBouncyCastle()
    {
        var rng = new Random(1305);
        for (int i = 0; i < 300; i++)
        {
            var key = new byte[32];
            var msg = new byte[rng.Next(0, 600)];
            if (i % 10 == 0) { Array.Fill(key, (byte)0xff); Array.Fill(msg, (byte)0xff); }
            else { rng.NextBytes(key); rng.NextBytes(msg); }
            var ours = new Poly1305Mac();
            ours.Init(key);
            int at = 0;
            while (at < msg.Length) { int n = Math.Min(msg.Length - at, rng.Next(1, 40)); ours.Update(msg.AsSpan(at, n)); at += n; }
            var tag = new byte[16];
            ours.Final(tag);
            var bc = new Poly1305();
            bc.Init(new KeyParameter(key));
            bc.BlockUpdate(msg, 0, msg.Length);
            var expected = new byte[16];
            bc.DoFinal(expected, 0);
            Assert.Equal(expected, tag);
        }
    }

    /// <summary>RFC 4253 §7.2: K1 = HASH(K || H || X || session_id), K2 = HASH(K || H || K1).</summary>
    [Fact]
    public void KeyDerivation_ExtendsPerRfc4253()
    {
        using var kex = KeyExchangeAlgorithm.Create(SshAlgorithms.KexCurve25519, SshRandom.Default)!;
        var k = new byte[] { 0, 0, 0, 2, 0x12, 0x34 };
        var h = SHA256.HashData("exchange hash"u8);
        var sid = SHA256.HashData("session"u8);
        var derived = SshKeyExchange.DeriveKey(kex, k, h, 'C', sid, 64);
        var k1 = SHA256.HashData([.. k, .. h, (byte)'C', .. sid]);
        var k2 = SHA256.HashData([.. k, .. h, .. k1]);
        Assert.Equal([.. k1, .. k2], derived);
    }

    /// <summary>RFC 8731 §3 exchange hash layout: string V_C, V_S, I_C, I_S, K_S, Q_C, Q_S, then mpint K.</summary>
    [Fact]
    public void ExchangeHash_Layout()
    {
        using var kex = KeyExchangeAlgorithm.Create(SshAlgorithms.KexCurve25519, SshRandom.Default)!;
        byte[] ic = [20, 1], isv = [20, 2], ks = [9, 9, 9], qc = [1], qs = [2, 3], k = [0, 0, 0, 1, 5];
        var h = SshKeyExchange.ExchangeHash(kex, "SSH-2.0-a", "SSH-2.0-b", ic, isv, ks, qc, qs, k);
        static byte[] S(byte[] v) => [.. BitConverter.GetBytes(v.Length).Reverse(), .. v];
        var expected = SHA256.HashData([.. S("SSH-2.0-a"u8.ToArray()), .. S("SSH-2.0-b"u8.ToArray()), .. S(ic), .. S(isv), .. S(ks), .. S(qc), .. S(qs), .. k]);
        Assert.Equal(expected, h);
    }

    /// <summary>Both ends of every method agree on K; invalid peer values are rejected with KeyExchangeFailed.</summary>
    [Theory]
    [InlineData(SshAlgorithms.KexMlKem768X25519)]
    [InlineData(SshAlgorithms.KexSntrup761X25519)]
    [InlineData(SshAlgorithms.KexCurve25519)]
    [InlineData(SshAlgorithms.KexEcdhNistP256)]
    [InlineData(SshAlgorithms.KexEcdhNistP521)]
    [InlineData(SshAlgorithms.KexDhGroup14Sha256)]
    public void KeyExchange_BothSidesAgree_AndRejectGarbage(string name)
    {
        using var client = KeyExchangeAlgorithm.Create(name, SshRandom.Default)!;
        using var server = KeyExchangeAlgorithm.Create(name, SshRandom.Default)!;
        var qc = client.CreateClientValue();
        var qs = server.ComputeServerReply(qc, out var ks);
        Assert.Equal(ks, client.ComputeClientSecret(qs));

        using var other = KeyExchangeAlgorithm.Create(name, SshRandom.Default)!;
        foreach (var bad in new[] { Array.Empty<byte>(), new byte[qc.Length - 1], new byte[qc.Length + 1] })
        {
            var e = Assert.Throws<SshProtocolException>(() => other.ComputeServerReply(bad, out _));
            Assert.Equal(SshDisconnectReason.KeyExchangeFailed, e.Reason);
        }
    }

    [Fact]
    public void Dh_RejectsOutOfRangePublicValues()
    {
        using var server = KeyExchangeAlgorithm.Create(SshAlgorithms.KexDhGroup14Sha256, SshRandom.Default)!;
        var p = Org.BouncyCastle.Crypto.Agreement.DHStandardGroups.rfc3526_2048.P;
        foreach (var v in new[] { Org.BouncyCastle.Math.BigInteger.One, p.Subtract(Org.BouncyCastle.Math.BigInteger.One), p })
            Assert.Throws<SshProtocolException>(() => server.ComputeServerReply(v.ToByteArray(), out _));
    }

    [Fact]
    public void Ecdh_RejectsPointNotOnCurve()
    {
        using var server = KeyExchangeAlgorithm.Create(SshAlgorithms.KexEcdhNistP256, SshRandom.Default)!;
        var point = new byte[65];
        point[0] = 4;
        point[64] = 1; // (0, 1) is not on P-256
        Assert.Throws<SshProtocolException>(() => server.ComputeServerReply(point, out _));
    }
}
