using System.Text;
using Warren.Ssh.Keys;
using Xunit;

namespace Warren.Ssh.Tests.Keys;

/// <summary>Interop with the real ssh-keygen (OpenSSH 9.x): key files, fingerprints, SSHSIG.</summary>
public class OpenSshInteropTests
{
    public static TheoryData<string, string, string?> KeygenTypes => new()
    {
        { "ed25519", "ssh-ed25519", null },
        { "ecdsa", "ecdsa-sha2-nistp256", "256" },
        { "ecdsa", "ecdsa-sha2-nistp384", "384" },
        { "ecdsa", "ecdsa-sha2-nistp521", "521" },
        { "rsa", "ssh-rsa", "2048" },
        { "rsa", "ssh-rsa", "3072" },
    };

    public static TheoryData<string> OurTypes => new()
    {
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
    };

    private const string Namespace = "v0@warren.localhost";

    private static string[] GenArgs(string t, string? bits, string pass, string file, params string[] extra)
    {
        var args = new List<string> { "-q", "-t", t, "-N", pass, "-C", "test comment", "-f", file };
        if (bits is not null) { args.Add("-b"); args.Add(bits); }
        args.AddRange(extra);
        return [.. args];
    }

    [Theory]
    [MemberData(nameof(KeygenTypes))]
    public void KeygenFiles_Parse_AndFingerprintsMatch(string t, string keyType, string? bits)
    {
        using var kg = new SshKeygen();
        var file = kg.PathOf("id");
        kg.RunOk(GenArgs(t, bits, "", file));

        using var priv = SshPrivateKey.ParseOpenSsh(File.ReadAllText(file), default, out var comment);
        Assert.Equal("test comment", comment);
        Assert.Equal(keyType, priv.PublicKey.KeyType);

        Assert.True(SshPublicKey.TryParseOpenSsh(File.ReadAllText(file + ".pub"), out var pub, out var pubComment));
        Assert.Equal("test comment", pubComment);
        Assert.Equal(pub, priv.PublicKey);

        // "256 SHA256:xxxx test comment (ED25519)"
        var fp = kg.RunOk("-l", "-E", "sha256", "-f", file + ".pub").Split(' ')[1];
        Assert.Equal(fp, pub.Fingerprint);

        // The key we read can sign things the public file verifies.
        var data = "data"u8.ToArray();
        foreach (var alg in priv.SignatureAlgorithms)
            Assert.True(pub.Verify(alg, data, priv.Sign(alg, data)));
    }

    [Theory]
    [MemberData(nameof(OurTypes))]
    public void OurPrivateKeyFiles_AreReadByKeygen(string keyType)
    {
        using var kg = new SshKeygen();
        var key = TestKeys.Get(keyType);
        var path = kg.WritePrivate("ours", key.ToOpenSshPrivateKey("warren@test"));
        var line = kg.RunOk("-y", "-f", path).Trim();
        Assert.True(SshPublicKey.TryParseOpenSsh(line, out var pub, out _));
        Assert.Equal(key.PublicKey, pub);

        // And we read our own file back.
        using var again = SshPrivateKey.ParseOpenSsh(File.ReadAllText(path), default, out var comment);
        Assert.Equal("warren@test", comment);
        Assert.Equal(key.PublicKey, again.PublicKey);
    }

    public static TheoryData<string, string?, string> EncryptedCases => new()
    {
        { "ed25519", null, "aes256-ctr" },
        { "ecdsa", "384", "aes256-ctr" },
        { "rsa", "2048", "aes256-ctr" },
        { "ed25519", null, "aes256-gcm@openssh.com" },
        { "ed25519", null, "aes128-ctr" },
        { "ed25519", null, "aes256-cbc" },
    };

    [Theory]
    [MemberData(nameof(EncryptedCases))]
    public void EncryptedKeygenFiles_DecryptWithPassphrase(string t, string? bits, string cipher)
    {
        using var kg = new SshKeygen();
        var file = kg.PathOf("enc");
        kg.RunOk(GenArgs(t, bits, "correct horse", file, "-Z", cipher, "-a", "4"));
        var text = File.ReadAllText(file);

        using var key = SshPrivateKey.ParseOpenSsh(text, "correct horse"u8, out var comment);
        Assert.Equal("test comment", comment);
        Assert.True(SshPublicKey.TryParseOpenSsh(File.ReadAllText(file + ".pub"), out var pub, out _));
        Assert.Equal(pub, key.PublicKey);

        Assert.Throws<SshKeyPassphraseException>(() => SshPrivateKey.ParseOpenSsh(text, "wrong horse"u8));
        Assert.Throws<SshKeyPassphraseException>(() => SshPrivateKey.ParseOpenSsh(text));
    }

    [Fact]
    public void EncryptedKeygenFile_DefaultRounds()
    {
        using var kg = new SshKeygen();
        var file = kg.PathOf("enc16");
        kg.RunOk(GenArgs("ed25519", null, "pw", file));
        using var key = SshPrivateKey.ParseOpenSsh(File.ReadAllText(file), "pw"u8);
        Assert.Equal("ssh-ed25519", key.PublicKey.KeyType);
    }

    [Theory]
    [MemberData(nameof(KeygenTypes))]
    public void KeygenSshsig_VerifiesWithUs(string t, string keyType, string? bits)
    {
        using var kg = new SshKeygen();
        var file = kg.PathOf("id");
        kg.RunOk(GenArgs(t, bits, "", file));
        var message = Encoding.UTF8.GetBytes("{\"exp\":4102444800}");
        var msgPath = kg.PathOf("msg");
        File.WriteAllBytes(msgPath, message);
        kg.RunOk("-Y", "sign", "-n", Namespace, "-f", file, msgPath);
        var armored = File.ReadAllText(msgPath + ".sig");

        Assert.True(SshSignature.TryUnarmor(armored, out var blob));
        Assert.True(SshSignature.TryVerify(blob, Namespace, message, out var signer));
        Assert.Equal(keyType, signer.KeyType);
        Assert.True(SshPublicKey.TryParseOpenSsh(File.ReadAllText(file + ".pub"), out var pub, out _));
        Assert.Equal(pub, signer);

        Assert.False(SshSignature.TryVerify(blob, "v0@other.localhost", message, out _));
        var tampered = (byte[])message.Clone();
        tampered[0] ^= 1;
        Assert.False(SshSignature.TryVerify(blob, Namespace, tampered, out _));

        // Armor round-trips byte-for-byte with ssh-keygen's line wrapping.
        Assert.Equal(armored, SshSignature.Armor(blob));
    }

    [Theory]
    [InlineData("ssh-ed25519", "sha512")]
    [InlineData("ssh-ed25519", "sha256")]
    [InlineData("ecdsa-sha2-nistp256", "sha512")]
    [InlineData("ecdsa-sha2-nistp521", "sha256")]
    [InlineData("ssh-rsa", "sha512")]
    public void OurSshsig_VerifiesWithKeygen(string keyType, string hash)
    {
        using var kg = new SshKeygen();
        var key = TestKeys.Get(keyType);
        var message = "payload bytes\n"u8.ToArray();
        var sigPath = kg.PathOf("msg.sig");
        File.WriteAllText(sigPath, SshSignature.Armor(SshSignature.SignBlob(key, Namespace, message, hash)));
        var msg = Encoding.Latin1.GetString(message);

        kg.RunOkWithInput(msg, "-Y", "check-novalidate", "-n", Namespace, "-s", sigPath);

        var allowed = kg.PathOf("allowed_signers");
        File.WriteAllText(allowed, "alice@warren " + key.PublicKey.ToOpenSshString() + "\n");
        kg.RunOkWithInput(msg, "-Y", "verify", "-f", allowed, "-I", "alice@warren", "-n", Namespace, "-s", sigPath);

        Assert.NotEqual(0, kg.Run(msg, "-Y", "check-novalidate", "-n", "file", "-s", sigPath).Exit);
        Assert.NotEqual(0, kg.Run(msg + "x", "-Y", "check-novalidate", "-n", Namespace, "-s", sigPath).Exit);
    }
}
