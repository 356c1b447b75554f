using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Warren.Platform.Storage;

namespace Warren.Platform.Accounts;

/// <summary>What a verification link, once confirmed, completes.</summary>
public enum VerificationPurpose
{
    /// <summary>An SSH sign-up dialogue waits for it (the code typed there completes it too).</summary>
    SshSignup,
    /// <summary>A sign-up or login from the web page (<c>POST /auth</c>): confirming it signs the browser in.</summary>
    WebSignup,
}

/// <summary>One mailed verification that has not been confirmed yet.</summary>
public sealed class PendingVerification
{
    internal PendingVerification(string email, VerificationPurpose purpose, DateTimeOffset expiresAt, string? redirect, bool waiterGone = false)
    {
        Email = email;
        Purpose = purpose;
        ExpiresAt = expiresAt;
        Redirect = redirect;
        WaiterGone = waiterGone;
    }

    public string Email { get; }
    public VerificationPurpose Purpose { get; }
    public DateTimeOffset ExpiresAt { get; }

    /// <summary>Where a web sign-up returns to afterwards (a local path), or null.</summary>
    public string? Redirect { get; }

    /// <summary>
    /// An SSH sign-up whose dialogue is no longer running (the daemon restarted since it mailed the link): confirming
    /// completes nothing, and the person is told to sign up again.
    /// </summary>
    public bool WaiterGone { get; }

    private readonly TaskCompletionSource _confirmed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when the link is confirmed.</summary>
    public Task Confirmed => _confirmed.Task;

    internal void Confirm() => _confirmed.TrySetResult();
}

/// <summary>
/// Verification links for sign-up mail, beside the code: <c>https://CONTROL-HOST/verify-email?token=T</c>. Opening
/// the link (GET) only shows a page with a button; the POST that button sends confirms. Mail scanners and link
/// previewers fetch links with GET, so they cannot use a verification up on someone's behalf, while a person clicks
/// once, from any device (the phone that shows the mail included).
/// </summary>
/// <remarks>
/// Kept in SQLite (<c>email_verifications</c>) so a link mailed before a daemon restart still works after it: rows hold
/// the SHA-256 of the token (nothing in the table works as a link), the address, the purpose and the expiry; a
/// confirmation deletes its row (single use). Expired rows are purged whenever a new one is made; each address has at
/// most <see cref="MaxPendingPerEmail"/> outstanding (the oldest go first) and the table at most
/// <see cref="MaxPending"/>. The SSH dialogue waiting on a link lives in this process only: after a restart its
/// session is gone, so such a link confirms nothing (<see cref="PendingVerification.WaiterGone"/>).
/// </remarks>
public sealed class EmailVerifications
{
    /// <summary>Outstanding verifications at most; beyond it expired ones are swept, then new ones refused.</summary>
    public const int MaxPending = 10_000;

    /// <summary>Outstanding verifications per address at most: a new one beyond it replaces the oldest.</summary>
    public const int MaxPendingPerEmail = 5;

    /// <summary>Random bytes in a token (256 bits: not guessable within its lifetime).</summary>
    public const int TokenBytes = 32;

    /// <summary>The control host's path of the confirmation page.</summary>
    public const string LinkPath = "/verify-email";

    /// <summary>Longest token text accepted from a request (base64url of <see cref="TokenBytes"/>, with room).</summary>
    public const int MaxTokenChars = 64;

    /// <summary>The dialogues of this process waiting on their link, by token hash.</summary>
    private readonly ConcurrentDictionary<string, PendingVerification> _waiting = new(StringComparer.Ordinal);
    private readonly PlatformOptions _options;
    private readonly TimeProvider _time;
    private readonly WarrenDatabase _db;

    public EmailVerifications(PlatformOptions options, TimeProvider time, WarrenDatabase db)
    {
        _options = options;
        _time = time;
        _db = db;
    }

    /// <summary>A new pending verification and its token, or null when <see cref="MaxPending"/> are outstanding.</summary>
    public async Task<(string Token, PendingVerification Pending)?> CreateAsync(string email, VerificationPurpose purpose, string? redirect = null,
        CancellationToken ct = default)
    {
        var now = _time.GetUtcNow();
        string token = Base64Url(RandomNumberGenerator.GetBytes(TokenBytes));
        string hash = Hash(token);
        var pending = new PendingVerification(email, purpose, now + _options.Signup.VerificationTimeout, redirect);
        bool stored = await _db.WriteAsync(async u =>
        {
            long nowSeconds = now.ToUnixTimeSeconds();
            await u.ExecuteAsync("DELETE FROM email_verifications WHERE expires_at <= @nowSeconds", new { nowSeconds });
            if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM email_verifications") >= MaxPending) return false;
            // The newest few per address: asking again and again keeps the table bounded and old links stop working.
            await u.ExecuteAsync("""
                DELETE FROM email_verifications WHERE token_hash IN (
                    SELECT token_hash FROM email_verifications WHERE email = @email
                    ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET @keep)
                """, new { email, keep = MaxPendingPerEmail - 1 });
            await u.ExecuteAsync("""
                INSERT INTO email_verifications (token_hash, email, purpose, redirect, created_at, expires_at)
                VALUES (@hash, @email, @purpose, @redirect, @nowSeconds, @expires)
                """, new { hash, email, purpose = PurposeText(purpose), redirect, nowSeconds, expires = pending.ExpiresAt.ToUnixTimeSeconds() });
            return true;
        }, ct).ConfigureAwait(false);
        if (!stored) return null;
        if (purpose == VerificationPurpose.SshSignup) _waiting[hash] = pending;
        return (token, pending);
    }

    /// <summary>The pending verification a token names, without using it up; null when unknown or expired.</summary>
    public async Task<PendingVerification?> FindAsync(string? token, CancellationToken ct = default)
    {
        if (!IsPlausible(token)) return null;
        string hash = Hash(token!);
        long nowSeconds = _time.GetUtcNow().ToUnixTimeSeconds();
        var row = await _db.ReadAsync(c => Dapper.SqlMapper.QuerySingleOrDefaultAsync<Row>(c, """
            SELECT email AS Email, purpose AS Purpose, redirect AS Redirect, expires_at AS ExpiresAt
            FROM email_verifications WHERE token_hash = @hash AND expires_at > @nowSeconds
            """, new { hash, nowSeconds }), ct).ConfigureAwait(false);
        return row is null ? null : Pending(hash, row);
    }

    /// <summary>Uses the token up and completes its verification; null when unknown, expired or already used.</summary>
    public async Task<PendingVerification?> ConfirmAsync(string? token, CancellationToken ct = default)
    {
        if (!IsPlausible(token)) return null;
        string hash = Hash(token!);
        long nowSeconds = _time.GetUtcNow().ToUnixTimeSeconds();
        // One DELETE … RETURNING: of two confirmations racing, exactly one gets the row.
        var row = await _db.WriteAsync(u => u.QuerySingleOrDefaultAsync<Row>("""
            DELETE FROM email_verifications WHERE token_hash = @hash
            RETURNING email AS Email, purpose AS Purpose, redirect AS Redirect, expires_at AS ExpiresAt
            """, new { hash }), ct).ConfigureAwait(false);
        if (row is null || row.ExpiresAt <= nowSeconds)
        {
            _waiting.TryRemove(hash, out _);
            return null;
        }
        var pending = Pending(hash, row);
        _waiting.TryRemove(hash, out _);
        pending.Confirm();
        return pending;
    }

    /// <summary>Drops a verification nobody waits for any more (the code was typed, or the dialogue ended).</summary>
    public async Task ForgetAsync(string token, CancellationToken ct = default)
    {
        string hash = Hash(token);
        _waiting.TryRemove(hash, out _);
        await _db.WriteAsync(u => u.ExecuteAsync("DELETE FROM email_verifications WHERE token_hash = @hash", new { hash }), ct).ConfigureAwait(false);
    }

    /// <summary>The link to mail: on the control host's HTTPS address.</summary>
    public string Link(string token)
        => $"https://{_options.ControlHost}{(_options.HttpsPort == 443 ? "" : ":" + _options.HttpsPort)}{LinkPath}?token={token}";

    private PendingVerification Pending(string hash, Row row)
    {
        var purpose = row.Purpose == PurposeText(VerificationPurpose.SshSignup) ? VerificationPurpose.SshSignup : VerificationPurpose.WebSignup;
        if (purpose == VerificationPurpose.SshSignup)
            return _waiting.TryGetValue(hash, out var live)
                ? live
                : new PendingVerification(row.Email, purpose, DateTimeOffset.FromUnixTimeSeconds(row.ExpiresAt), row.Redirect, waiterGone: true);
        return new PendingVerification(row.Email, purpose, DateTimeOffset.FromUnixTimeSeconds(row.ExpiresAt), row.Redirect);
    }

    private static bool IsPlausible(string? token) => token is { Length: > 0 and <= MaxTokenChars };

    private static string PurposeText(VerificationPurpose purpose) => purpose == VerificationPurpose.SshSignup ? "ssh-signup" : "web-signup";

    private static string Hash(string token) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(token)));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private sealed class Row
    {
        public string Email { get; set; } = "";
        public string Purpose { get; set; } = "";
        public string? Redirect { get; set; }
        public long ExpiresAt { get; set; }
    }
}
