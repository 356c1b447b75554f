using Xunit;
using System.Security.Cryptography;
using CsCheck;
using Warren.Platform.Integrations;

namespace Warren.Platform.Tests.Integrations;

public sealed class IntegrationSecretBoxTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "warren-integ-box", Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public void The_key_file_is_created_once_with_mode_0600_and_reused()
    {
        var options = new PlatformOptions { DataDirectory = _dir };
        var first = IntegrationSecretBox.Open(options, _ => null);
        string path = Path.Combine(_dir, IntegrationSecretBox.KeyFileName);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        var secrets = new IntegrationSecrets(new Dictionary<string, string> { ["X-Key"] = "v" }, "tok", null, null);
        byte[] sealedBytes = first.Seal("int_1", secrets);
        var second = IntegrationSecretBox.Open(options, _ => null);
        Assert.Equal("tok", second.Unseal("int_1", sealedBytes).Bearer);
    }

    [Fact]
    public void A_blob_does_not_open_under_another_integration_id_or_another_key_or_when_altered()
    {
        var box = new IntegrationSecretBox(RandomNumberGenerator.GetBytes(32));
        byte[] blob = box.Seal("int_a", new IntegrationSecrets(new Dictionary<string, string>(), "tok", null, null));
        Assert.ThrowsAny<CryptographicException>(() => box.Unseal("int_b", blob));
        Assert.ThrowsAny<CryptographicException>(() => new IntegrationSecretBox(RandomNumberGenerator.GetBytes(32)).Unseal("int_a", blob));
        blob[^1] ^= 1;
        Assert.ThrowsAny<CryptographicException>(() => box.Unseal("int_a", blob));
        Assert.ThrowsAny<CryptographicException>(() => box.Unseal("int_a", blob.AsSpan(0, 5)));
    }

    [Fact]
    public void The_environment_hook_overrides_the_file()
    {
        byte[] key = RandomNumberGenerator.GetBytes(32);
        var box = IntegrationSecretBox.Open(new PlatformOptions { DataDirectory = _dir },
            name => name == IntegrationOptions.KeyEnvironmentVariable ? Convert.ToBase64String(key) : null);
        Assert.False(File.Exists(Path.Combine(_dir, IntegrationSecretBox.KeyFileName)));
        var blob = box.Seal("i", IntegrationSecrets.None with { Bearer = "b" });
        Assert.Equal("b", new IntegrationSecretBox(key).Unseal("i", blob).Bearer);
    }

    [Fact]
    public void Seal_round_trips_any_secrets()
    {
        var box = new IntegrationSecretBox(RandomNumberGenerator.GetBytes(32));
        Gen.Select(Gen.String, Gen.String, Gen.Dictionary(Gen.String.AlphaNumeric, Gen.String)[0, 5]).Sample((bearer, password, headers) =>
        {
            var s = new IntegrationSecrets(headers, bearer, password, null);
            var back = box.Unseal("x", box.Seal("x", s));
            return back.Bearer == bearer && back.BasicPassword == password && back.Headers.Count == headers.Count
                   && headers.All(h => back.Headers[h.Key] == h.Value);
        }, iter: 200);
    }
}
