using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace Warren.Edge.Http;

/// <summary>Helpers for one-time login links.</summary>
public static class LoginLinks
{
    /// <summary>One-time secret size: 32 random bytes.</summary>
    public const int SecretBytes = 32;

    /// <summary>How long an unused login link stays valid.</summary>
    public static readonly TimeSpan LinkLifetime = TimeSpan.FromMinutes(10);

    /// <summary><c>https://HOST/__exe.dev/auth?secret=…&amp;redirect=…</c> for a secret from <see cref="ILoginLinkService.IssueAsync"/>.</summary>
    public static string BuildAuthUrl(string host, string secret, string redirect = "/") =>
        $"https://{host}/__exe.dev/auth?secret={Uri.EscapeDataString(secret)}&redirect={Uri.EscapeDataString(redirect)}";

    /// <summary>A fresh random URL-safe secret.</summary>
    public static string NewSecret(int bytes = SecretBytes) => Base64Url(RandomNumberGenerator.GetBytes(bytes));

    /// <summary>Lower-case hex SHA-256: how secrets and session ids are stored.</summary>
    public static string Hash(string secret) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    internal static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}

/// <summary>
/// In-process <see cref="ILoginLinkService"/>: secrets are kept hashed, expire after
/// <see cref="LoginLinks.LinkLifetime"/>, and are removed atomically when consumed. Lost on restart.
/// </summary>
public sealed class InMemoryLoginLinkService : ILoginLinkService
{
    /// <summary>Outstanding links kept at most; issuing beyond it drops expired ones first, then refuses.</summary>
    public const int MaxOutstandingLinks = 100_000;

    private readonly ConcurrentDictionary<string, (LoginGrant Grant, DateTimeOffset ExpiresAt)> _links = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;

    public InMemoryLoginLinkService(TimeProvider time) => _time = time;

    public ValueTask<string> IssueAsync(WebUser user, string? host, CancellationToken ct)
    {
        var now = _time.GetUtcNow();
        if (_links.Count >= MaxOutstandingLinks)
        {
            foreach (var (key, value) in _links)
            {
                if (value.ExpiresAt <= now)
                    _links.TryRemove(key, out _);
            }
            if (_links.Count >= MaxOutstandingLinks)
                throw new InvalidOperationException("too many outstanding login links");
        }
        string secret = LoginLinks.NewSecret();
        _links[LoginLinks.Hash(secret)] = (new LoginGrant(user, host?.ToLowerInvariant()), now + LoginLinks.LinkLifetime);
        return ValueTask.FromResult(secret);
    }

    public ValueTask<LoginGrant?> ConsumeAsync(string secret, CancellationToken ct)
    {
        if (_links.TryRemove(LoginLinks.Hash(secret), out var entry) && entry.ExpiresAt > _time.GetUtcNow())
            return ValueTask.FromResult<LoginGrant?>(entry.Grant);
        return ValueTask.FromResult<LoginGrant?>(null);
    }
}

/// <summary>In-process <see cref="IWebSessionStore"/> (dev and tests; lost on restart). Expired sessions are dropped on lookup and when the store is full.</summary>
public sealed class InMemoryWebSessionStore : IWebSessionStore
{
    /// <summary>Sessions kept at most.</summary>
    public const int MaxSessions = 1_000_000;

    private readonly ConcurrentDictionary<string, WebSession> _sessions = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;

    public InMemoryWebSessionStore(TimeProvider time) => _time = time;

    public ValueTask CreateAsync(WebSession session, CancellationToken ct)
    {
        if (_sessions.Count >= MaxSessions)
        {
            var now = _time.GetUtcNow();
            foreach (var (key, value) in _sessions)
            {
                if (value.ExpiresAt <= now)
                    _sessions.TryRemove(key, out _);
            }
            if (_sessions.Count >= MaxSessions)
                throw new InvalidOperationException("session store full");
        }
        _sessions[session.SessionKey] = session;
        return ValueTask.CompletedTask;
    }

    public ValueTask<WebSession?> FindAsync(string sessionKey, CancellationToken ct)
    {
        if (_sessions.TryGetValue(sessionKey, out var s))
        {
            if (s.ExpiresAt > _time.GetUtcNow())
                return ValueTask.FromResult<WebSession?>(s);
            _sessions.TryRemove(sessionKey, out _);
        }
        return ValueTask.FromResult<WebSession?>(null);
    }

    public ValueTask DeleteAsync(string sessionKey, CancellationToken ct)
    {
        _sessions.TryRemove(sessionKey, out _);
        return ValueTask.CompletedTask;
    }

    public ValueTask<IReadOnlyList<WebSession>> ListForUserAsync(string userId, int limit, CancellationToken ct)
    {
        var now = _time.GetUtcNow();
        IReadOnlyList<WebSession> list = _sessions.Values
            .Where(s => s.User.UserId == userId && s.ExpiresAt > now)
            .OrderByDescending(s => s.ExpiresAt)
            .Take(limit)
            .ToList();
        return ValueTask.FromResult(list);
    }
}
