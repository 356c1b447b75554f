using Dapper;
using Warren.Edge.Http;
using Warren.Platform.Accounts;
using Warren.Platform.Storage;

namespace Warren.Edge.Adapters;

/// <summary>
/// Login sessions in the platform's SQLite database, so a daemon restart does not log everyone out.
/// Rows hold only the SHA-256 of the cookie (the front door never hands the store the cookie itself). A session is
/// found only while its account's address is verified (<see cref="Account.EmailVerified"/>).
/// </summary>
public sealed class SqliteWebSessionStore(WarrenDatabase db, TimeProvider time) : IWebSessionStore
{
    public static readonly SchemaMigration Migration = new("0200-web-sessions", """
        CREATE TABLE web_sessions (
            session_key TEXT PRIMARY KEY,
            user_id     TEXT NOT NULL,
            email       TEXT NOT NULL,
            host        TEXT NOT NULL,
            expires_at  INTEGER NOT NULL
        );
        CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
        """);

    /// <summary>The control host's <c>/api/profile</c> lists a user's sessions.</summary>
    public static readonly SchemaMigration UserIndexMigration = new("0201-web-sessions-user", """
        CREATE INDEX web_sessions_user ON web_sessions(user_id, expires_at);
        """);

    public ValueTask CreateAsync(WebSession session, CancellationToken ct) => new(db.WriteAsync(async u =>
    {
        // Expired rows go when new ones come: the table stays bounded by live sessions.
        await u.ExecuteAsync("DELETE FROM web_sessions WHERE expires_at <= @now", new { now = time.GetUtcNow().ToUnixTimeSeconds() });
        await u.ExecuteAsync("""
            INSERT OR REPLACE INTO web_sessions (session_key, user_id, email, host, expires_at)
            VALUES (@SessionKey, @UserId, @Email, @Host, @ExpiresAt)
            """, new { session.SessionKey, session.User.UserId, session.User.Email, session.Host, ExpiresAt = session.ExpiresAt.ToUnixTimeSeconds() });
    }, ct));

    public async ValueTask<WebSession?> FindAsync(string sessionKey, CancellationToken ct)
    {
        // A session names a person to sites (X-ExeDev-Email), so it counts only while the account's address is
        // proven: sessions of an account whose address is not verified are not found.
        var row = await db.ReadAsync(c => c.QuerySingleOrDefaultAsync<Row>(
            $"""
            SELECT w.session_key AS SessionKey, w.user_id AS UserId, w.email AS Email, w.host AS Host, w.expires_at AS ExpiresAt
            FROM web_sessions w JOIN accounts a ON a.id = w.user_id AND a.email = w.email AND a.{VerifiedAddressSql.Condition}
            WHERE w.session_key = @sessionKey
            """,
            new { sessionKey }), ct).ConfigureAwait(false);
        if (row is null) return null;
        var expires = DateTimeOffset.FromUnixTimeSeconds(row.ExpiresAt);
        return expires <= time.GetUtcNow() ? null : new WebSession(row.SessionKey, new WebUser(row.UserId, row.Email), row.Host, expires);
    }

    public ValueTask DeleteAsync(string sessionKey, CancellationToken ct) =>
        new(db.WriteAsync(u => u.ExecuteAsync("DELETE FROM web_sessions WHERE session_key = @sessionKey", new { sessionKey }), ct));

    public async ValueTask<IReadOnlyList<WebSession>> ListForUserAsync(string userId, int limit, CancellationToken ct)
    {
        long now = time.GetUtcNow().ToUnixTimeSeconds();
        var rows = await db.ReadAsync(c => c.QueryAsync<Row>("""
            SELECT session_key AS SessionKey, user_id AS UserId, email AS Email, host AS Host, expires_at AS ExpiresAt
            FROM web_sessions WHERE user_id = @userId AND expires_at > @now ORDER BY expires_at DESC LIMIT @limit
            """, new { userId, now, limit }), ct).ConfigureAwait(false);
        return rows.Select(r => new WebSession(r.SessionKey, new WebUser(r.UserId, r.Email), r.Host, DateTimeOffset.FromUnixTimeSeconds(r.ExpiresAt))).ToList();
    }

    private sealed class Row
    {
        public string SessionKey { get; set; } = "";
        public string UserId { get; set; } = "";
        public string Email { get; set; } = "";
        public string Host { get; set; } = "";
        public long ExpiresAt { get; set; }
    }
}
