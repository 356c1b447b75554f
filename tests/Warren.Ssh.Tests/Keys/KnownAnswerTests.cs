using Warren.Ssh.Keys;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Ssh.Tests.Keys;

public class KnownAnswerTests
{
    // RFC 8032 §7.1, TEST 1 and TEST 2.
    [Theory]
    [InlineData(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")]
    [InlineData(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")]
    public void Ed25519_Rfc8032Vectors(string secret, string pub, string message, string signature)
    {
        using var key = new Ed25519PrivateKey(Convert.FromHexString(secret));
        var pk = (Ed25519PublicKey)key.PublicKey;
        Assert.Equal(pub, Convert.ToHexStringLower(pk.Key));

        var msg = Convert.FromHexString(message);
        var blob = key.Sign("ssh-ed25519", msg);
        var r = new SshReader(blob);
        Assert.True(r.TryReadString(out var alg));
        Assert.Equal("ssh-ed25519"u8.ToArray(), alg.ToArray());
        Assert.True(r.TryReadString(out var sig));
        Assert.Equal(signature, Convert.ToHexStringLower(sig));
        Assert.True(r.IsEmpty);

        // RFC 8709 §4 blob layout.
        var expectedBlob = new SshWriter().WriteString("ssh-ed25519").WriteString(Convert.FromHexString(pub)).ToArray();
        Assert.Equal(expectedBlob, pk.Blob.ToArray());
        Assert.True(SshPublicKey.ParseBlob(expectedBlob).Verify("ssh-ed25519", msg, blob));
    }

    [Fact]
    public void Ed25519_NonCanonicalS_IsRejected()
    {
        // RFC 8032 §5.1.7: S must be < L. Adding L to a valid S must not verify.
        using var key = new Ed25519PrivateKey(new byte[32]);
        var data = "m"u8.ToArray();
        var r = new SshReader(key.Sign("ssh-ed25519", data));
        r.TryReadString(out _);
        r.TryReadString(out var sig);
        var s = new System.Numerics.BigInteger(sig[32..], isUnsigned: true, isBigEndian: false);
        var l = System.Numerics.BigInteger.Pow(2, 252) + System.Numerics.BigInteger.Parse("27742317777372353535851937790883648493");
        var bigS = (s + l).ToByteArray(isUnsigned: true, isBigEndian: false);
        var forged = new byte[64];
        sig[..32].CopyTo(forged);
        bigS.AsSpan(0, Math.Min(32, bigS.Length)).CopyTo(forged.AsSpan(32));
        var blob = new SshWriter().WriteString("ssh-ed25519").WriteString(forged).ToArray();
        Assert.False(key.PublicKey.Verify("ssh-ed25519", data, blob));
    }

    [Fact]
    public void Blowfish_InitialStateIsPi()
    {
        // Schneier's P-array starts with the fractional hex digits of pi.
        var s = Blowfish.InitialState;
        Assert.Equal(0x243F6A88u, s[0]);
        Assert.Equal(0x85A308D3u, s[1]);
        Assert.Equal(0x8979FB1Bu, s[Blowfish.PCount - 1]);
        Assert.Equal(0xD1310BA6u, s[Blowfish.PCount]);
    }

    // Eric Young's published Blowfish ECB test vectors.
    [Theory]
    [InlineData("0000000000000000", "0000000000000000", "4EF997456198DD78")]
    [InlineData("FFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFF", "51866FD5B85ECB8A")]
    [InlineData("3000000000000000", "1000000000000001", "7D856F9A613063F2")]
    public void Blowfish_EcbVectors(string key, string plain, string cipher)
    {
        var bf = new Blowfish();
        bf.SetKey(Convert.FromHexString(key));
        var p = Convert.FromHexString(plain);
        uint l = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(p);
        uint r = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(p.AsSpan(4));
        bf.Encipher(ref l, ref r);
        Assert.Equal(cipher, $"{l:X8}{r:X8}");
    }

    [Fact]
    public void AesCtr_Sp80038aVector()
    {
        // NIST SP 800-38A F.5.5 CTR-AES256.Encrypt, first two blocks.
        var key = Convert.FromHexString("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        var iv = Convert.FromHexString("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        var plain = Convert.FromHexString("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        var output = new byte[plain.Length];
        AesCtr.Transform(key, iv, plain, output);
        Assert.Equal("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5", Convert.ToHexStringLower(output));
    }
}
