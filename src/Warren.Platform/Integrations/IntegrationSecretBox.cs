using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Warren.Platform.Integrations;

/// <summary>
/// Seals integration secrets at rest with AES-256-GCM (NIST SP 800-38D). The key never enters the database: it is
/// the environment variable <see cref="IntegrationOptions.KeyEnvironmentVariable"/> (base64 of 32 bytes) when set,
/// else <c>{DataDirectory}/integration-secrets.key</c>, created once with mode 0600. The integration's id is the
/// associated data, so a sealed blob moved to another row does not open.
/// </summary>
/// <remarks>Layout: version byte 1 ‖ 12-byte nonce ‖ 16-byte tag ‖ ciphertext of the secrets' JSON.</remarks>
public sealed class IntegrationSecretBox
{
    public const string KeyFileName = "integration-secrets.key";
    private const byte Version = 1;
    private const int KeyBytes = 32, NonceBytes = 12, TagBytes = 16;
    private const int HeaderBytes = 1 + NonceBytes + TagBytes;

    private readonly byte[] _key;

    public IntegrationSecretBox(byte[] key)
    {
        if (key.Length != KeyBytes) throw new ArgumentException($"The integration secrets key must be {KeyBytes} bytes.", nameof(key));
        _key = key;
    }

    /// <summary>The key from the environment hook, else from (or newly into) the data directory's key file.</summary>
    public static IntegrationSecretBox Open(PlatformOptions options, Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        if (environment(IntegrationOptions.KeyEnvironmentVariable) is { Length: > 0 } b64)
        {
            byte[] fromEnv;
            try { fromEnv = Convert.FromBase64String(b64); }
            catch (FormatException) { throw new InvalidOperationException($"{IntegrationOptions.KeyEnvironmentVariable} is not base64."); }
            if (fromEnv.Length != KeyBytes) throw new InvalidOperationException($"{IntegrationOptions.KeyEnvironmentVariable} must hold {KeyBytes} bytes.");
            return new IntegrationSecretBox(fromEnv);
        }
        string dir = Path.GetFullPath(options.DataDirectory);
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, KeyFileName);
        if (!File.Exists(path))
        {
            byte[] fresh = RandomNumberGenerator.GetBytes(KeyBytes);
            try
            {
                // CreateNew: two processes starting at once cannot both write a key; the loser reads the winner's.
                var create = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
                if (!OperatingSystem.IsWindows()) create.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
                using var fs = new FileStream(path, create);
                fs.Write(fresh);
                fs.Flush(flushToDisk: true);
                return new IntegrationSecretBox(fresh);
            }
            catch (IOException) when (File.Exists(path)) { /* created concurrently */ }
        }
        byte[] key = File.ReadAllBytes(path);
        if (key.Length != KeyBytes) throw new InvalidOperationException($"{path} must hold exactly {KeyBytes} bytes.");
        return new IntegrationSecretBox(key);
    }

    public byte[] Seal(string integrationId, IntegrationSecrets secrets)
    {
        byte[] plain = JsonSerializer.SerializeToUtf8Bytes(new SecretsDocument
        {
            Headers = secrets.Headers.ToDictionary(h => h.Key, h => h.Value),
            Bearer = secrets.Bearer,
            BasicPassword = secrets.BasicPassword,
            PeerToken = secrets.PeerToken,
        });
        var sealedBytes = new byte[HeaderBytes + plain.Length];
        sealedBytes[0] = Version;
        var nonce = sealedBytes.AsSpan(1, NonceBytes);
        RandomNumberGenerator.Fill(nonce);
        using var gcm = new AesGcm(_key, TagBytes);
        gcm.Encrypt(nonce, plain, sealedBytes.AsSpan(HeaderBytes), sealedBytes.AsSpan(1 + NonceBytes, TagBytes), Aad(integrationId));
        CryptographicOperations.ZeroMemory(plain);
        return sealedBytes;
    }

    /// <summary>Opens a sealed blob; throws <see cref="CryptographicException"/> when it was not sealed for this id with this key.</summary>
    public IntegrationSecrets Unseal(string integrationId, ReadOnlySpan<byte> sealedBytes)
    {
        if (sealedBytes.Length < HeaderBytes || sealedBytes[0] != Version)
            throw new CryptographicException("Unknown sealed secrets format.");
        byte[] plain = new byte[sealedBytes.Length - HeaderBytes];
        try
        {
            using var gcm = new AesGcm(_key, TagBytes);
            gcm.Decrypt(sealedBytes.Slice(1, NonceBytes), sealedBytes[HeaderBytes..], sealedBytes.Slice(1 + NonceBytes, TagBytes), plain, Aad(integrationId));
            var doc = JsonSerializer.Deserialize<SecretsDocument>(plain) ?? new SecretsDocument();
            return new IntegrationSecrets(doc.Headers ?? new Dictionary<string, string>(), doc.Bearer, doc.BasicPassword, doc.PeerToken);
        }
        finally { CryptographicOperations.ZeroMemory(plain); }
    }

    private static byte[] Aad(string integrationId) => Encoding.UTF8.GetBytes("warren integration secrets v1:" + integrationId);

    private sealed class SecretsDocument
    {
        public Dictionary<string, string>? Headers { get; set; }
        public string? Bearer { get; set; }
        public string? BasicPassword { get; set; }
        public string? PeerToken { get; set; }
    }
}
