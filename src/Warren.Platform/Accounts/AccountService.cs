using System.Text.Json;
using Dapper;
using Microsoft.Data.Sqlite;
using Warren.Platform.Addressing;
using Warren.Platform.Storage;
using Warren.Ssh.Keys;

namespace Warren.Platform.Accounts;

/// <summary>Accounts and their SSH keys. A key (by fingerprint) belongs to at most one account platform-wide.</summary>
public sealed class AccountService
{
    private readonly WarrenDatabase _db;
    private readonly TimeProvider _time;
    private readonly AddressSlotAllocator _allocator;
    private readonly PlatformIndex _index;

    public AccountService(WarrenDatabase db, TimeProvider time, AddressSlotAllocator allocator, PlatformIndex index)
    {
        _db = db;
        _time = time;
        _allocator = allocator;
        _index = index;
    }

    private const string AccountColumns = "id AS Id, email AS Email, created_at AS CreatedAt, email_verified AS EmailVerified";
    private const string KeyColumns = "id AS Id, account_id AS AccountId, public_key AS PublicKey, fingerprint AS Fingerprint, name AS Name, added_at AS AddedAt, last_used_at AS LastUsedAt, permissions AS Permissions";

    public Task<Account?> FindByKeyFingerprintAsync(string fingerprint, CancellationToken ct = default)
        => _db.ReadAsync(async c => Map(await c.QuerySingleOrDefaultAsync<AccountRow>(
            $"SELECT a.id AS Id, a.email AS Email, a.created_at AS CreatedAt, a.email_verified AS EmailVerified FROM accounts a JOIN account_keys k ON k.account_id = a.id WHERE k.fingerprint = @fingerprint",
            new { fingerprint })), ct);

    /// <summary>The registered key with this fingerprint (any account), or null.</summary>
    public Task<AccountKey?> FindKeyByFingerprintAsync(string fingerprint, CancellationToken ct = default)
        => _db.ReadAsync(async c => Map(await c.QuerySingleOrDefaultAsync<KeyRow>(
            $"SELECT {KeyColumns} FROM account_keys WHERE fingerprint = @fingerprint", new { fingerprint })), ct);

    /// <summary>
    /// The registered key with this fingerprint and the account holding it, in one read (one JOIN): what the SSH
    /// front door needs to turn a key into an identity once per connection. Null when no account holds the key.
    /// </summary>
    public Task<(AccountKey Key, Account Account)?> FindKeyWithAccountAsync(string fingerprint, CancellationToken ct = default)
        => _db.ReadAsync<(AccountKey, Account)?>(async c => await c.QuerySingleOrDefaultAsync<KeyAccountRow>(
            $"SELECT k.id AS Id, k.account_id AS AccountId, k.public_key AS PublicKey, k.fingerprint AS Fingerprint, k.name AS Name, " +
            "k.added_at AS AddedAt, k.last_used_at AS LastUsedAt, k.permissions AS Permissions, " +
            "a.email AS Email, a.created_at AS AccountCreatedAt, a.email_verified AS EmailVerified " +
            "FROM account_keys k JOIN accounts a ON a.id = k.account_id WHERE k.fingerprint = @fingerprint", new { fingerprint }) is { } r
            ? (Map(r)!, new Account(r.AccountId, r.Email, FromMs(r.AccountCreatedAt)) { EmailVerified = r.EmailVerified != 0 })
            : null, ct);

    public Task<Account?> FindByEmailAsync(string email, CancellationToken ct = default)
    {
        if (!EmailAddress.TryNormalize(email, out var e)) return Task.FromResult<Account?>(null);
        return _db.ReadAsync(async c => Map(await c.QuerySingleOrDefaultAsync<AccountRow>(
            $"SELECT {AccountColumns} FROM accounts WHERE email = @e", new { e })), ct);
    }

    public Task<Account?> GetAsync(string accountId, CancellationToken ct = default)
        => _db.ReadAsync(async c => Map(await c.QuerySingleOrDefaultAsync<AccountRow>(
            $"SELECT {AccountColumns} FROM accounts WHERE id = @accountId", new { accountId })), ct);

    public Task<IReadOnlyList<Account>> ListAccountsAsync(CancellationToken ct = default)
        => _db.ReadAsync<IReadOnlyList<Account>>(async c => (await c.QueryAsync<AccountRow>(
            $"SELECT {AccountColumns} FROM accounts ORDER BY created_at, email")).Select(r => Map(r)!).ToList(), ct);

    /// <summary>
    /// Creates an account with its first key (named <paramref name="keyName"/> or "key-1"). With
    /// <paramref name="emailVerified"/> (the address was proven, or the operator vouches for it), pending shares
    /// addressed to the e-mail become active (and SSH shares get a slot when the invariant allows); without it they
    /// wait for <see cref="MarkEmailVerifiedAsync"/>. Errors: <c>invalid_email</c>, <c>account_exists</c>, <c>key_in_use</c>.
    /// </summary>
    public async Task<Account> CreateAsync(string email, SshPublicKey firstKey, bool emailVerified, string? keyName = null, CancellationToken ct = default)
    {
        var normalized = EmailAddress.Normalize(email);
        var now = _time.GetUtcNow();
        var account = new Account(NewId("acct"), normalized, TruncateMs(now)) { EmailVerified = emailVerified };
        try
        {
            await _db.WriteAsync(async u =>
            {
                if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM accounts WHERE email = @normalized", new { normalized }) > 0)
                    throw new PlatformException(PlatformErrorCodes.AccountExists, $"An account with email {normalized} already exists.");
                await EnsureKeyFreeAsync(u, firstKey.Fingerprint);
                await u.ExecuteAsync("INSERT INTO accounts (id, email, created_at, email_verified) VALUES (@Id, @Email, @At, @EmailVerified)",
                    new { account.Id, account.Email, At = now.ToUnixTimeMilliseconds(), account.EmailVerified });
                await InsertKeyAsync(u, account.Id, firstKey, KeyNames.Sanitize(keyName) is { Length: > 0 } n ? n : KeyNames.Default(1), null, now);
                if (emailVerified) _index.ReloadVmsOnCommit(u, await _allocator.ActivatePendingSharesAsync(u, account.Id, account.Email));
            }, ct);
        }
        catch (SqliteException e) when (SqliteErrors.IsUnique(e))
        {
            throw new PlatformException(PlatformErrorCodes.AccountExists, $"An account with email {normalized} already exists.", e);
        }
        return account;
    }

    /// <summary>
    /// The account for a verified web sign-up (<c>POST /auth</c>, then the mailed link confirmed): the existing account
    /// with that address, now verified (its pending shares become active), or a new one without keys, verified. Its
    /// first SSH key joins it later through the SSH sign-up dialogue, which verifies the address again.
    /// </summary>
    public async Task<Account> GetOrCreateVerifiedAsync(string email, CancellationToken ct = default)
    {
        var normalized = EmailAddress.Normalize(email);
        if (await FindByEmailAsync(normalized, ct) is { } existing)
        {
            await MarkEmailVerifiedAsync(existing.Id, normalized, ct);
            return existing with { EmailVerified = true };
        }
        var now = _time.GetUtcNow();
        var account = new Account(NewId("acct"), normalized, TruncateMs(now)) { EmailVerified = true };
        try
        {
            await _db.WriteAsync(async u =>
            {
                await u.ExecuteAsync("INSERT INTO accounts (id, email, created_at, email_verified) VALUES (@Id, @Email, @At, 1)",
                    new { account.Id, account.Email, At = now.ToUnixTimeMilliseconds() });
                _index.ReloadVmsOnCommit(u, await _allocator.ActivatePendingSharesAsync(u, account.Id, account.Email));
            }, ct);
        }
        catch (SqliteException e) when (SqliteErrors.IsUnique(e))
        {
            // Created by another request meanwhile: that one is the account.
            return await FindByEmailAsync(normalized, ct) ?? throw new PlatformException(PlatformErrorCodes.AccountExists, $"An account with email {normalized} already exists.", e);
        }
        return account;
    }

    /// <summary>
    /// Records that <paramref name="email"/> was proven to belong to the account (a code or a login link mailed to
    /// it was used): pending shares to it become active. Does nothing when the account's address is no longer
    /// <paramref name="email"/> (the proof was for another address). Returns whether the account is now verified.
    /// </summary>
    public Task<bool> MarkEmailVerifiedAsync(string accountId, string email, CancellationToken ct = default)
    {
        if (!EmailAddress.TryNormalize(email, out var normalized)) return Task.FromResult(false);
        return _db.WriteAsync(async u =>
        {
            var changed = await u.ExecuteAsync(
                "UPDATE accounts SET email_verified = 1 WHERE id = @accountId AND email = @normalized AND email_verified = 0", new { accountId, normalized });
            if (changed > 0) _index.ReloadVmsOnCommit(u, await _allocator.ActivatePendingSharesAsync(u, accountId, normalized));
            return changed > 0 || await u.ScalarAsync<long>(
                "SELECT COUNT(*) FROM accounts WHERE id = @accountId AND email = @normalized AND email_verified = 1", new { accountId, normalized }) > 0;
        }, ct);
    }

    /// <summary>
    /// Adds a key to an account. Name: sanitised <paramref name="name"/>; else sanitised <paramref name="nameIfFree"/>
    /// (the key's comment) when no key of the account has it; else "key-N" (N = the first unused number).
    /// Errors: <c>account_not_found</c>, <c>key_in_use</c> (this or another account holds it), <c>key_name_in_use</c>.
    /// </summary>
    public async Task<AccountKey> AddKeyAsync(string accountId, SshPublicKey key, string? name = null, ApiKeyPermissions? permissions = null,
        CancellationToken ct = default, string? nameIfFree = null)
    {
        var now = _time.GetUtcNow();
        try
        {
            return await _db.WriteAsync(async u =>
            {
                if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM accounts WHERE id = @accountId", new { accountId }) == 0)
                    throw new PlatformException(PlatformErrorCodes.AccountNotFound, "Account not found.");
                await EnsureKeyFreeAsync(u, key.Fingerprint);
                var names = (await u.QueryAsync<string>("SELECT name FROM account_keys WHERE account_id = @accountId", new { accountId })).ToHashSet(StringComparer.Ordinal);
                var sanitized = KeyNames.Sanitize(name);
                if (sanitized.Length > 0 && names.Contains(sanitized))
                    throw new PlatformException(PlatformErrorCodes.KeyNameInUse, $"A key named \"{sanitized}\" already exists.");
                if (sanitized.Length == 0 && KeyNames.Sanitize(nameIfFree) is { Length: > 0 } suggested && !names.Contains(suggested))
                    sanitized = suggested;
                if (sanitized.Length == 0)
                {
                    int n = names.Count + 1;
                    while (names.Contains(KeyNames.Default(n))) n++;
                    sanitized = KeyNames.Default(n);
                }
                return await InsertKeyAsync(u, accountId, key, sanitized, permissions, now);
            }, ct);
        }
        catch (SqliteException e) when (SqliteErrors.IsUnique(e, "account_keys.fingerprint"))
        {
            throw new PlatformException(PlatformErrorCodes.KeyInUse, "This SSH key is already registered.", e);
        }
    }

    /// <summary>
    /// Removes the key selected by fingerprint, OpenSSH line or name. Refuses to remove the account's last
    /// login key (one without API permissions). Errors: <c>key_not_found</c>, <c>last_key</c>.
    /// </summary>
    public Task<AccountKey> RemoveKeyAsync(string accountId, string keySelector, CancellationToken ct = default)
        => _db.WriteAsync(async u =>
        {
            var keys = await LoadKeysAsync(u, accountId);
            var k = Select(keys, keySelector) ?? throw new PlatformException(PlatformErrorCodes.KeyNotFound, "SSH key not found.");
            if (k.Permissions is null && keys.Count(x => x.Permissions is null) == 1)
                throw new PlatformException(PlatformErrorCodes.LastKey, "Cannot remove the last SSH key of an account.");
            try { await u.ExecuteAsync("DELETE FROM account_keys WHERE id = @Id", new { k.Id }); }
            catch (SqliteException e) when (SqliteErrors.IsConstraint(e))
            {
                // A row that must outlive the key references it: a peer integration's managed key (exe.dev's docs: vm-to-vm).
                throw new PlatformException(PlatformErrorCodes.KeyInUse, $"The key \"{k.Name}\" is managed by an integration; remove that integration instead (integrations remove).", e);
            }
            return k;
        }, ct);

    /// <summary>Renames a key (name sanitised). Returns (before, after). Errors: <c>key_not_found</c>, <c>key_name_in_use</c>, <c>invalid_argument</c>.</summary>
    public Task<(AccountKey Before, AccountKey After)> RenameKeyAsync(string accountId, string keySelector, string newName, CancellationToken ct = default)
        => _db.WriteAsync(async u =>
        {
            var keys = await LoadKeysAsync(u, accountId);
            var k = Select(keys, keySelector) ?? throw new PlatformException(PlatformErrorCodes.KeyNotFound, "SSH key not found.");
            var sanitized = KeyNames.Sanitize(newName);
            if (sanitized.Length == 0) throw new PlatformException(PlatformErrorCodes.InvalidArgument, "The new key name is empty.");
            if (sanitized == k.Name) return (k, k);
            if (keys.Any(x => x.Name == sanitized))
                throw new PlatformException(PlatformErrorCodes.KeyNameInUse, $"A key named \"{sanitized}\" already exists.");
            await u.ExecuteAsync("UPDATE account_keys SET name = @sanitized WHERE id = @Id", new { sanitized, k.Id });
            return (k, k with { Name = sanitized });
        }, ct);

    public Task<IReadOnlyList<AccountKey>> ListKeysAsync(string accountId, CancellationToken ct = default)
        => _db.ReadAsync<IReadOnlyList<AccountKey>>(async c => (await c.QueryAsync<KeyRow>(
            $"SELECT {KeyColumns} FROM account_keys WHERE account_id = @accountId ORDER BY added_at, name", new { accountId }))
            .Select(r => Map(r)!).ToList(), ct);

    /// <summary>Records that the key just authenticated (last_used_at).</summary>
    public Task TouchKeyAsync(string fingerprint, CancellationToken ct = default)
    {
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        return _db.WriteAsync(u => u.ExecuteAsync("UPDATE account_keys SET last_used_at = @now WHERE fingerprint = @fingerprint", new { now, fingerprint }), ct);
    }

    /// <summary>The account's stored default <paramref name="domain"/> <paramref name="key"/>, or null.</summary>
    public Task<string?> GetDefaultAsync(string accountId, string domain, string key, CancellationToken ct = default)
        => _db.ReadAsync(c => c.QuerySingleOrDefaultAsync<string?>(
            "SELECT value FROM account_defaults WHERE account_id = @accountId AND domain = @domain AND key = @key", new { accountId, domain, key }), ct);

    /// <summary>Every stored default of the account, ordered by domain and key.</summary>
    public Task<IReadOnlyList<(string Domain, string Key, string Value)>> ListDefaultsAsync(string accountId, CancellationToken ct = default)
        => _db.ReadAsync<IReadOnlyList<(string, string, string)>>(async c => (await c.QueryAsync<(string, string, string)>(
            "SELECT domain, key, value FROM account_defaults WHERE account_id = @accountId ORDER BY domain, key", new { accountId })).ToList(), ct);

    public Task SetDefaultAsync(string accountId, string domain, string key, string value, CancellationToken ct = default)
        => _db.WriteAsync(u => u.ExecuteAsync("""
            INSERT INTO account_defaults (account_id, domain, key, value) VALUES (@accountId, @domain, @key, @value)
            ON CONFLICT (account_id, domain, key) DO UPDATE SET value = excluded.value
            """, new { accountId, domain, key, value }), ct);

    /// <summary>Returns whether there was such a default.</summary>
    public Task<bool> DeleteDefaultAsync(string accountId, string domain, string key, CancellationToken ct = default)
        => _db.WriteAsync(async u => await u.ExecuteAsync(
            "DELETE FROM account_defaults WHERE account_id = @accountId AND domain = @domain AND key = @key", new { accountId, domain, key }) > 0, ct);

    private static async Task EnsureKeyFreeAsync(UnitOfWork u, string fingerprint)
    {
        if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM account_keys WHERE fingerprint = @fingerprint", new { fingerprint }) > 0)
            throw new PlatformException(PlatformErrorCodes.KeyInUse, "This SSH key is already registered.");
    }

    private async Task<AccountKey> InsertKeyAsync(UnitOfWork u, string accountId, SshPublicKey key, string name, ApiKeyPermissions? permissions, DateTimeOffset now)
    {
        var k = new AccountKey(NewId("key"), accountId, key.ToOpenSshString(), key.Fingerprint, name, TruncateMs(now), null, permissions);
        await u.ExecuteAsync("""
            INSERT INTO account_keys (id, account_id, public_key, fingerprint, name, added_at, last_used_at, permissions)
            VALUES (@Id, @AccountId, @PublicKey, @Fingerprint, @Name, @AddedAt, NULL, @Permissions)
            """,
            new { k.Id, k.AccountId, k.PublicKey, k.Fingerprint, k.Name, AddedAt = now.ToUnixTimeMilliseconds(),
                  Permissions = permissions is null ? null : JsonSerializer.Serialize(permissions, JsonOptions) });
        return k;
    }

    private static async Task<List<AccountKey>> LoadKeysAsync(UnitOfWork u, string accountId)
        => (await u.QueryAsync<KeyRow>($"SELECT {KeyColumns} FROM account_keys WHERE account_id = @accountId ORDER BY added_at", new { accountId }))
            .Select(r => Map(r)!).ToList();

    private static AccountKey? Select(List<AccountKey> keys, string selector)
    {
        var s = selector.Trim();
        var byFp = keys.FirstOrDefault(k => k.Fingerprint == s || k.Fingerprint == "SHA256:" + s);
        if (byFp is not null) return byFp;
        if (SshPublicKey.TryParseOpenSsh(s, out var parsed, out _))
            return keys.FirstOrDefault(k => k.Fingerprint == parsed.Fingerprint);
        return keys.FirstOrDefault(k => k.Name == s) ?? keys.FirstOrDefault(k => k.Name == KeyNames.Sanitize(s));
    }

    internal static readonly JsonSerializerOptions JsonOptions = new(JsonSerializerDefaults.Web);

    internal static string NewId(string prefix) => prefix + "_" + Guid.CreateVersion7().ToString("N");
    private static DateTimeOffset TruncateMs(DateTimeOffset t) => DateTimeOffset.FromUnixTimeMilliseconds(t.ToUnixTimeMilliseconds());
    private static DateTimeOffset FromMs(long ms) => DateTimeOffset.FromUnixTimeMilliseconds(ms);

    private static Account? Map(AccountRow? r) => r is null ? null : new Account(r.Id, r.Email, FromMs(r.CreatedAt)) { EmailVerified = r.EmailVerified != 0 };
    private static AccountKey? Map(KeyRow? r) => r is null ? null : new AccountKey(r.Id, r.AccountId, r.PublicKey, r.Fingerprint, r.Name,
        FromMs(r.AddedAt), r.LastUsedAt is { } l ? FromMs(l) : null,
        r.Permissions is null ? null : JsonSerializer.Deserialize<ApiKeyPermissions>(r.Permissions, JsonOptions));

    private sealed class AccountRow { public string Id { get; set; } = ""; public string Email { get; set; } = ""; public long CreatedAt { get; set; } public long EmailVerified { get; set; } }
    private sealed class KeyAccountRow : KeyRow
    {
        public string Email { get; set; } = "";
        public long AccountCreatedAt { get; set; }
        public long EmailVerified { get; set; }
    }
    private class KeyRow
    {
        public string Id { get; set; } = "";
        public string AccountId { get; set; } = "";
        public string PublicKey { get; set; } = "";
        public string Fingerprint { get; set; } = "";
        public string Name { get; set; } = "";
        public long AddedAt { get; set; }
        public long? LastUsedAt { get; set; }
        public string? Permissions { get; set; }
    }
}
