using Dapper;
using Warren.Edge.Http;
using Warren.Platform.Storage;

namespace Warren.Edge.Adapters;

/// <summary>One consumed login link: what it grants, and whether it was mailed to the account's address.</summary>
public sealed record ConsumedLoginLink(LoginGrant Grant, bool Mailed);

/// <summary>
/// One-time login links in the platform's SQLite database, so a link printed by <c>browser</c> or mailed from the
/// login page before a daemon restart still works once after it. Rows hold only the SHA-256 of the secret
/// (<see cref="LoginLinks.Hash"/>): nothing in the table works as a link. Consuming deletes the row in the same
/// statement that reads it (single use, also when two requests race). Expired rows are purged whenever a link is
/// issued, and each account has at most <see cref="MaxOutstandingPerAccount"/> (the oldest go first), so the table
/// stays bounded by the accounts that asked recently.
/// </summary>
public sealed class SqliteLoginLinks(WarrenDatabase db, TimeProvider time) : ILoginLinkService
{
    /// <summary>Unused links one account holds at most; a new one beyond it replaces the oldest.</summary>
    public const int MaxOutstandingPerAccount = 20;

    public static readonly SchemaMigration Migration = new("0202-login-links", """
        CREATE TABLE login_links (
            secret_hash TEXT PRIMARY KEY,     -- lower-case hex SHA-256 of the secret
            user_id     TEXT NOT NULL,
            email       TEXT NOT NULL,
            host        TEXT,                 -- the site it is for, or NULL for any
            mailed      INTEGER NOT NULL,     -- 1: mailed to email, so using it proves that mailbox
            created_at  INTEGER NOT NULL,
            expires_at  INTEGER NOT NULL
        );
        CREATE INDEX login_links_user ON login_links(user_id, created_at);
        CREATE INDEX login_links_expiry ON login_links(expires_at);
        """);

    public ValueTask<string> IssueAsync(WebUser user, string? host, CancellationToken ct) => IssueAsync(user, host, mailed: false, ct);

    /// <summary>Issues a one-time secret; <paramref name="mailed"/> records that it goes to <paramref name="user"/>'s address.</summary>
    public async ValueTask<string> IssueAsync(WebUser user, string? host, bool mailed, CancellationToken ct)
    {
        string secret = LoginLinks.NewSecret();
        var now = time.GetUtcNow();
        await db.WriteAsync(async u =>
        {
            await u.ExecuteAsync("DELETE FROM login_links WHERE expires_at <= @now", new { now = now.ToUnixTimeSeconds() });
            await u.ExecuteAsync("""
                DELETE FROM login_links WHERE secret_hash IN (
                    SELECT secret_hash FROM login_links WHERE user_id = @UserId
                    ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET @keep)
                """, new { user.UserId, keep = MaxOutstandingPerAccount - 1 });
            await u.ExecuteAsync("""
                INSERT INTO login_links (secret_hash, user_id, email, host, mailed, created_at, expires_at)
                VALUES (@hash, @UserId, @Email, @host, @mailed, @created, @expires)
                """, new
            {
                hash = LoginLinks.Hash(secret), user.UserId, user.Email, host = host?.ToLowerInvariant(), mailed = mailed ? 1 : 0,
                created = now.ToUnixTimeSeconds(), expires = (now + LoginLinks.LinkLifetime).ToUnixTimeSeconds(),
            });
        }, ct).ConfigureAwait(false);
        return secret;
    }

    public async ValueTask<LoginGrant?> ConsumeAsync(string secret, CancellationToken ct)
        => (await ConsumeLinkAsync(secret, ct).ConfigureAwait(false))?.Grant;

    /// <summary>Consumes a secret (first call only); null when unknown, expired or used.</summary>
    public async ValueTask<ConsumedLoginLink?> ConsumeLinkAsync(string secret, CancellationToken ct)
    {
        if (secret.Length is 0 or > HeaderParsing.MaxTokenLength) return null;
        string hash = LoginLinks.Hash(secret);
        var row = await db.WriteAsync(u => u.QuerySingleOrDefaultAsync<Row>("""
            DELETE FROM login_links WHERE secret_hash = @hash
            RETURNING user_id AS UserId, email AS Email, host AS Host, mailed AS Mailed, expires_at AS ExpiresAt
            """, new { hash }), ct).ConfigureAwait(false);
        if (row is null || row.ExpiresAt <= time.GetUtcNow().ToUnixTimeSeconds()) return null;
        return new ConsumedLoginLink(new LoginGrant(new WebUser(row.UserId, row.Email), row.Host), row.Mailed != 0);
    }

    private sealed class Row
    {
        public string UserId { get; set; } = "";
        public string Email { get; set; } = "";
        public string? Host { get; set; }
        public long Mailed { get; set; }
        public long ExpiresAt { get; set; }
    }
}
