using CsCheck;
using Warren.Platform.Tests.Commands;
using Warren.Platform.Tokens;
using Warren.Ssh.Keys;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Platform.Tests.Tokens;

/// <summary>
/// A token's signing key is bounded before any signature check (RSA modulus ≤ <see cref="TokenAuthenticator.MaxRsaModulusBits"/>,
/// exponent ≤ 24 bits), and the key is looked up before its signature is verified.
/// </summary>
public sealed class TokenKeyLimitTests : IDisposable
{
    private const string ControlNs = "v0@warren.localhost";
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    /// <summary>An SSHSIG blob naming an RSA key with these e and n, carrying <paramref name="signature"/> (not checked by the caller).</summary>
    private static byte[] RsaSshsig(byte[] exponent, byte[] modulus, byte[] signature)
    {
        var key = new SshWriter().WriteString("ssh-rsa").WriteMpintFromUnsigned(exponent).WriteMpintFromUnsigned(modulus).ToArray();
        var sig = new SshWriter().WriteString("rsa-sha2-512").WriteString(signature).ToArray();
        return new SshWriter().WriteRaw("SSHSIG"u8).WriteUInt32(1).WriteString(key).WriteString(ControlNs)
            .WriteString(ReadOnlySpan<byte>.Empty).WriteString("sha512").WriteString(sig).ToArray();
    }

    /// <summary>An odd number of exactly <paramref name="bits"/> bits: a stand-in modulus (parsing never factors it).</summary>
    private static byte[] OddNumber(int bits, int seed)
    {
        var bytes = new byte[(bits + 7) / 8];
        new Random(seed).NextBytes(bytes);
        int top = bits % 8 == 0 ? 8 : bits % 8;
        bytes[0] &= (byte)((1 << top) - 1);
        bytes[0] |= (byte)(1 << (top - 1));
        bytes[^1] |= 1;
        return bytes;
    }

    private static string Token(byte[] sshsig) => Exe0Token.Format("{}"u8, sshsig);

    [Fact]
    public async Task RsaModulusAboveTheTokenCap_IsInvalid()
    {
        var blob = RsaSshsig([1, 0, 1], OddNumber(TokenAuthenticator.MaxRsaModulusBits + 8, 1), new byte[1100]);
        Assert.True(SshSignature.TryReadSigner(blob, out var named));
        Assert.Equal(TokenAuthenticator.MaxRsaModulusBits + 8, ((RsaPublicKey)named).ModulusBits);
        var result = await _h.Authenticator.AuthenticateAsync(Token(blob), ControlNs);
        Assert.Equal(TokenErrors.Invalid, result.Error);
    }

    [Theory]
    [InlineData(new byte[] { 0x01, 0x00, 0x00, 0x01 })]                   // 2^24 + 1: 25 bits
    [InlineData(new byte[] { 0x01, 0x00, 0x00, 0x00, 0x01 })]             // 2^32 + 1
    [InlineData(new byte[] { 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff })]
    public void RsaExponentAbove24Bits_IsRejectedWhileParsing(byte[] exponent)
    {
        var blob = RsaSshsig(exponent, OddNumber(2048, 2), new byte[256]);
        Assert.False(SshSignature.TryReadSigner(blob, out _));
        Assert.False(SshSignature.TryVerify(blob, ControlNs, "{}"u8, out _));
    }

    [Fact]
    public async Task RegisteredKey_WithABadSignature_IsInvalid_UnregisteredKeyToo()
    {
        using var key = SshPrivateKey.Generate(Ed25519PublicKey.Name);
        var account = await _h.P.Accounts.CreateAsync("alice@example.com", key.PublicKey, emailVerified: true);
        var good = SshSignature.SignBlob(key, ControlNs, "{}"u8);
        Assert.True((await _h.Authenticator.AuthenticateAsync(Token(good), ControlNs)).Succeeded);
        var bad = (byte[])good.Clone();
        bad[^1] ^= 1; // the signature's last byte
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync(Token(bad), ControlNs)).Error);

        using var stranger = SshPrivateKey.Generate(Ed25519PublicKey.Name);
        var unregistered = SshSignature.SignBlob(stranger, ControlNs, "{}"u8);
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync(Token(unregistered), ControlNs)).Error);
        Assert.NotNull(account);
    }

    /// <summary>Any exponent: parsing accepts exactly the odd ones of 2..24 bits (at least 3), whatever the modulus.</summary>
    [Fact]
    public void Property_RsaExponentBound_HoldsForEveryExponent()
    {
        var modulus = OddNumber(2048, 3);
        Gen.Byte.Array[1, 9].Sample(exponent =>
        {
            var blob = new SshWriter().WriteString("ssh-rsa").WriteMpintFromUnsigned(exponent).WriteMpintFromUnsigned(modulus).ToArray();
            bool parsed = SshPublicKey.TryParseBlob(blob, out _);
            var value = new System.Numerics.BigInteger(exponent, isUnsigned: true, isBigEndian: true);
            bool allowed = value >= 3 && !value.IsEven && value < (1 << RsaPublicKey.MaxExponentBits);
            Assert.Equal(allowed, parsed);
        }, iter: 2000);
    }
}
