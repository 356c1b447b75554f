using Warren.Ssh.Keys;
using Xunit;

namespace Warren.Ssh.Tests.Keys;

public class HostKeyStoreTests
{
    [Fact]
    public void LoadOrCreate_CreatesPrivateFiles_AndIsStableAcrossRestarts()
    {
        using var kg = new SshKeygen();
        var dir = Path.Combine(kg.Dir, "hostkeys");

        var first = SshHostKeyStore.LoadOrCreate(dir);
        Assert.Equal(["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"], first.Select(k => k.PublicKey.KeyType));
        Assert.Equal(RsaPrivateKey.DefaultBits, ((RsaPublicKey)first[2].PublicKey).ModulusBits);

        foreach (var (file, _, _) in SshHostKeyStore.Layout)
        {
            var path = Path.Combine(dir, file);
            Assert.True(File.Exists(path));
            Assert.True(File.Exists(path + ".pub"));
            if (!OperatingSystem.IsWindows())
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
            // sshd and ssh-keygen agree with what we wrote.
            var line = kg.RunOk("-y", "-f", path).Trim();
            Assert.True(SshPublicKey.TryParseOpenSsh(line, out var fromKeygen, out _));
            Assert.True(SshPublicKey.TryParseOpenSsh(File.ReadAllText(path + ".pub"), out var pub, out _));
            Assert.Equal(fromKeygen, pub);
        }
        Assert.Empty(Directory.GetFiles(dir, "*.tmp-*"));

        var second = SshHostKeyStore.LoadOrCreate(dir);
        Assert.Equal(first.Select(k => k.PublicKey), second.Select(k => k.PublicKey));
        foreach (var k in first.Concat(second)) k.Dispose();
    }

    [Fact]
    public void LoadOrCreate_RewritesMissingPubFile()
    {
        using var kg = new SshKeygen();
        var dir = Path.Combine(kg.Dir, "hostkeys");
        var keys = SshHostKeyStore.LoadOrCreate(dir);
        var pub = Path.Combine(dir, "ssh_host_ed25519_key.pub");
        File.Delete(pub);
        var again = SshHostKeyStore.LoadOrCreate(dir);
        Assert.True(SshPublicKey.TryParseOpenSsh(File.ReadAllText(pub), out var k, out _));
        Assert.Equal(keys[0].PublicKey, k);
        foreach (var x in keys.Concat(again)) x.Dispose();
    }

    [Fact]
    public void LoadOrCreate_UsesExistingKeygenKeys()
    {
        using var kg = new SshKeygen();
        var dir = Path.Combine(kg.Dir, "hostkeys");
        Directory.CreateDirectory(dir);
        kg.RunOk("-q", "-t", "ed25519", "-N", "", "-f", Path.Combine(dir, "ssh_host_ed25519_key"));
        var keys = SshHostKeyStore.LoadOrCreate(dir);
        Assert.True(SshPublicKey.TryParseOpenSsh(File.ReadAllText(Path.Combine(dir, "ssh_host_ed25519_key.pub")), out var pub, out _));
        Assert.Equal(pub, keys[0].PublicKey);
        foreach (var x in keys) x.Dispose();
    }

    [Fact]
    public void LoadOrCreate_CorruptKey_IsAnErrorNotOverwritten()
    {
        using var kg = new SshKeygen();
        var dir = Path.Combine(kg.Dir, "hostkeys");
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "ssh_host_ed25519_key");
        File.WriteAllText(path, "garbage");
        Assert.ThrowsAny<FormatException>(() => SshHostKeyStore.LoadOrCreate(dir));
        Assert.Equal("garbage", File.ReadAllText(path));
    }

    [Fact]
    public void LoadOrCreate_WrongKeyTypeInFile_IsAnError()
    {
        using var kg = new SshKeygen();
        var dir = Path.Combine(kg.Dir, "hostkeys");
        Directory.CreateDirectory(dir);
        kg.RunOk("-q", "-t", "ecdsa", "-N", "", "-f", Path.Combine(dir, "ssh_host_ed25519_key"));
        Assert.Throws<FormatException>(() => SshHostKeyStore.LoadOrCreate(dir));
    }
}
