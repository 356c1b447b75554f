using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

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
    internal PendingVerification(string email, VerificationPurpose purpose, DateTimeOffset expiresAt, string? redirect)
    {
        Email = email;
        Purpose = purpose;
        ExpiresAt = expiresAt;
        Redirect = redirect;
    }

    public string Email { get; }
    public VerificationPurpose Purpose { get; }
    public DateTimeOffset ExpiresAt { get; }

    /// <summary>Where a web sign-up returns to afterwards (a local path), or null.</summary>
    public string? Redirect { get; }

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
/// Held in memory (a restart drops them: the dialogue waiting on one is gone too), keyed by the SHA-256 of the token
/// so the table holds nothing that works as a link. Each lives as long as the dialogue's verification timeout.
/// </remarks>
public sealed class EmailVerifications
{
    /// <summary>Outstanding verifications at most; beyond it expired ones are swept, then new ones refused.</summary>
    public const int MaxPending = 10_000;

    /// <summary>Random bytes in a token (256 bits: not guessable within its lifetime).</summary>
    public const int TokenBytes = 32;

    /// <summary>The control host's path of the confirmation page.</summary>
    public const string LinkPath = "/verify-email";

    /// <summary>Longest token text accepted from a request (base64url of <see cref="TokenBytes"/>, with room).</summary>
    public const int MaxTokenChars = 64;

    private readonly ConcurrentDictionary<string, PendingVerification> _pending = new(StringComparer.Ordinal);
    private readonly PlatformOptions _options;
    private readonly TimeProvider _time;

    public EmailVerifications(PlatformOptions options, TimeProvider time)
    {
        _options = options;
        _time = time;
    }

    /// <summary>A new pending verification and its token, or null when <see cref="MaxPending"/> are outstanding.</summary>
    public (string Token, PendingVerification Pending)? Create(string email, VerificationPurpose purpose, string? redirect = null)
    {
        var now = _time.GetUtcNow();
        if (_pending.Count >= MaxPending)
            foreach (var (key, value) in _pending)
                if (value.ExpiresAt <= now) _pending.TryRemove(key, out _);
        if (_pending.Count >= MaxPending) return null;
        string token = Base64Url(RandomNumberGenerator.GetBytes(TokenBytes));
        var pending = new PendingVerification(email, purpose, now + _options.Signup.VerificationTimeout, redirect);
        _pending[Hash(token)] = pending;
        return (token, pending);
    }

    /// <summary>The pending verification a token names, without using it up; null when unknown or expired.</summary>
    public PendingVerification? Find(string? token)
    {
        if (token is null || token.Length is 0 or > MaxTokenChars) return null;
        return _pending.TryGetValue(Hash(token), out var p) && p.ExpiresAt > _time.GetUtcNow() ? p : null;
    }

    /// <summary>Uses the token up and completes its verification; null when unknown, expired or already used.</summary>
    public PendingVerification? Confirm(string? token)
    {
        if (token is null || token.Length is 0 or > MaxTokenChars) return null;
        if (!_pending.TryRemove(Hash(token), out var p) || p.ExpiresAt <= _time.GetUtcNow()) return null;
        p.Confirm();
        return p;
    }

    /// <summary>Drops a verification nobody waits for any more (the code was typed, or the dialogue ended).</summary>
    public void Forget(string token) => _pending.TryRemove(Hash(token), out _);

    /// <summary>The link to mail: on the control host's HTTPS address.</summary>
    public string Link(string token)
        => $"https://{_options.ControlHost}{(_options.HttpsPort == 443 ? "" : ":" + _options.HttpsPort)}{LinkPath}?token={token}";

    private static string Hash(string token) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(token)));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
