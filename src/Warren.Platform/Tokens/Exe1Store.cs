using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using System.Text;
using Dapper;
using Warren.Platform.Storage;

namespace Warren.Platform.Tokens;

/// <summary>
/// <c>exe1</c> handles: short database-backed names for one <c>exe0</c> (exe.dev). The exe0 is fully
/// re-validated on every use, so revoking its key revokes the handle.
/// </summary>
/// <remarks>
/// Neither secret is stored readable. A row is found by SHA-256(handle) or SHA-256(exe0); the exe0 is kept
/// AES-256-GCM-sealed under a key derived (HKDF-SHA256) from the handle, and the handle sealed under a key
/// derived from the exe0, so a copy of the database yields neither without the other secret.
/// </remarks>
public sealed class Exe1Store
{
    public const string Prefix = "exe1.";

    /// <summary>Characters minted: 26 of RFC 4648 base32's A–Z2–7 = 130 bits.</summary>
    public const int HandleLength = 26;

    /// <summary>exe.dev accepts 20–40 handle characters.</summary>
    public const int MinHandleLength = 20, MaxHandleLength = 40;

    /// <summary>exe.dev: a handle whose exe0 has no exp expires 3333-03-03.</summary>
    public static readonly DateTimeOffset NoExpiry = new(3333, 3, 3, 0, 0, 0, TimeSpan.Zero);

    private const string Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    private const int NonceBytes = 12, TagBytes = 16, KeyBytes = 32;
    private static readonly byte[] s_infoExe0 = "warren exe1 v1: exe0 sealed under handle"u8.ToArray();
    private static readonly byte[] s_infoHandle = "warren exe1 v1: handle sealed under exe0"u8.ToArray();

    /// <summary>Schema for <see cref="Exe1Store"/>; register with the database's extra migrations.</summary>
    public static readonly SchemaMigration Migration = new("0100-exe1-tokens", """
        CREATE TABLE exe1_tokens (
            handle_hash      TEXT PRIMARY KEY,   -- SHA-256 of the exe1 token text
            exe0_hash        TEXT NOT NULL UNIQUE,
            account_id       TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            key_fingerprint  TEXT NOT NULL REFERENCES account_keys(fingerprint) ON DELETE CASCADE,
            exe0_sealed      BLOB NOT NULL,
            handle_sealed    BLOB NOT NULL,
            expires_at       INTEGER NOT NULL,   -- unix ms
            created_at       INTEGER NOT NULL
        );
        CREATE INDEX exe1_tokens_account ON exe1_tokens(account_id);
        """);

    private readonly WarrenDatabase _db;
    private readonly TimeProvider _time;

    public Exe1Store(WarrenDatabase db, TimeProvider time)
    {
        _db = db;
        _time = time;
    }

    public static bool LooksLikeExe1(string? s) => s is not null && s.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>Shape check: "exe1." + 20–40 characters of A–Z2–7.</summary>
    public static bool IsWellFormed(string? s)
    {
        if (!LooksLikeExe1(s)) return false;
        var h = s.AsSpan(Prefix.Length);
        return h.Length is >= MinHandleLength and <= MaxHandleLength && h.IndexOfAnyExcept(Alphabet) < 0;
    }

    /// <summary>Returns the existing handle for <paramref name="exe0"/>, or mints and stores a new one.</summary>
    public async Task<string> GetOrCreateAsync(string exe0, string accountId, string keyFingerprint, DateTimeOffset? exe0Expiry, CancellationToken ct = default)
    {
        var exe0Hash = Hash(exe0);
        return await _db.WriteAsync(async u =>
        {
            var sealedHandle = await u.ScalarAsync<byte[]>("SELECT handle_sealed FROM exe1_tokens WHERE exe0_hash = @exe0Hash", new { exe0Hash });
            if (sealedHandle is not null && TryOpen(exe0, s_infoHandle, sealedHandle, out var existing)) return existing;
            if (sealedHandle is not null) await u.ExecuteAsync("DELETE FROM exe1_tokens WHERE exe0_hash = @exe0Hash", new { exe0Hash });

            string handle = Prefix + RandomNumberGenerator.GetString(Alphabet, HandleLength);
            await u.ExecuteAsync("""
                INSERT INTO exe1_tokens (handle_hash, exe0_hash, account_id, key_fingerprint, exe0_sealed, handle_sealed, expires_at, created_at)
                VALUES (@HandleHash, @Exe0Hash, @AccountId, @Fp, @Exe0Sealed, @HandleSealed, @ExpiresAt, @CreatedAt)
                """,
                new
                {
                    HandleHash = Hash(handle),
                    Exe0Hash = exe0Hash,
                    AccountId = accountId,
                    Fp = keyFingerprint,
                    Exe0Sealed = Seal(handle, s_infoExe0, exe0),
                    HandleSealed = Seal(exe0, s_infoHandle, handle),
                    ExpiresAt = (exe0Expiry ?? NoExpiry).ToUnixTimeMilliseconds(),
                    CreatedAt = _time.GetUtcNow().ToUnixTimeMilliseconds(),
                });
            return handle;
        }, ct);
    }

    /// <summary>
    /// The exe0 behind a handle, or null when unknown or malformed. Expiry is not judged here: the caller
    /// re-validates the exe0, whose own <c>exp</c> gives the precise "token has expired" error.
    /// </summary>
    public async Task<string?> ResolveAsync(string exe1, CancellationToken ct = default)
    {
        if (!IsWellFormed(exe1)) return null;
        var handleHash = Hash(exe1);
        var row = await _db.ReadAsync(c => c.QuerySingleOrDefaultAsync<Row>(
            "SELECT exe0_sealed AS Exe0Sealed FROM exe1_tokens WHERE handle_hash = @handleHash", new { handleHash }), ct);
        if (row is null) return null;
        return TryOpen(exe1, s_infoExe0, row.Exe0Sealed, out var exe0) ? exe0 : null;
    }

    private sealed class Row
    {
        public byte[] Exe0Sealed { get; set; } = [];
    }

    private static string Hash(string secret) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    private static byte[] DeriveKey(string secret, byte[] info)
        => HKDF.DeriveKey(HashAlgorithmName.SHA256, Encoding.UTF8.GetBytes(secret), KeyBytes, salt: [], info: info);

    private static byte[] Seal(string keySecret, byte[] info, string plaintext)
    {
        var key = DeriveKey(keySecret, info);
        try
        {
            var pt = Encoding.UTF8.GetBytes(plaintext);
            var output = new byte[NonceBytes + pt.Length + TagBytes];
            var nonce = output.AsSpan(0, NonceBytes);
            RandomNumberGenerator.Fill(nonce);
            using var gcm = new AesGcm(key, TagBytes);
            gcm.Encrypt(nonce, pt, output.AsSpan(NonceBytes, pt.Length), output.AsSpan(NonceBytes + pt.Length, TagBytes));
            return output;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    private static bool TryOpen(string keySecret, byte[] info, byte[] sealedBytes, [NotNullWhen(true)] out string? plaintext)
    {
        plaintext = null;
        if (sealedBytes.Length < NonceBytes + TagBytes) return false;
        var key = DeriveKey(keySecret, info);
        try
        {
            int n = sealedBytes.Length - NonceBytes - TagBytes;
            var pt = new byte[n];
            using var gcm = new AesGcm(key, TagBytes);
            gcm.Decrypt(sealedBytes.AsSpan(0, NonceBytes), sealedBytes.AsSpan(NonceBytes, n), sealedBytes.AsSpan(NonceBytes + n, TagBytes), pt);
            plaintext = Encoding.UTF8.GetString(pt);
            return true;
        }
        catch (CryptographicException)
        {
            return false;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }
}
