using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Warren.Edge.Http;

/// <summary>
/// Login links consumed and login sessions started or ended, for the control host's cookie (<c>exe-auth</c>) and a
/// site's (<c>login-with-exe-PORT</c>) alike. Cookies are HttpOnly, SameSite=Lax, Secure on HTTPS (RFC 6265 §4.1.2).
/// </summary>
internal sealed class LoginSessions
{
    private readonly IWebSessionStore _sessions;
    private readonly ILoginLinkService _links;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public LoginSessions(IWebSessionStore sessions, ILoginLinkService links, TimeProvider time, ILogger<LoginSessions> logger)
    {
        _sessions = sessions;
        _links = links;
        _time = time;
        _logger = logger;
    }

    /// <summary>The person a one-time <paramref name="secret"/> logs in on <paramref name="host"/> (consumed), or null (logged).</summary>
    public async ValueTask<WebUser?> ConsumeLinkAsync(string secret, string host, CancellationToken ct)
    {
        LoginGrant? grant = null;
        if (secret.Length is > 0 and <= HeaderParsing.MaxTokenLength)
            grant = await _links.ConsumeAsync(secret, ct).ConfigureAwait(false);
        if (grant is null || !GrantMatchesHost(grant, host))
        {
            FrontDoorLog.LoginRejected(_logger, host);
            return null;
        }
        return grant.User;
    }

    private static bool GrantMatchesHost(LoginGrant grant, string host) =>
        grant.Host is null
        || string.Equals(grant.Host, host, StringComparison.OrdinalIgnoreCase)
        || string.Equals(grant.Host, host.Split(':')[0], StringComparison.OrdinalIgnoreCase);

    public async Task StartAsync(HttpContext context, WebUser user, string cookieName, string host)
    {
        string sessionId = LoginLinks.NewSecret(HttpFrontDoorLimits.SessionIdBytes);
        var expires = _time.GetUtcNow() + HttpFrontDoorLimits.SessionLifetime;
        await _sessions
            .CreateAsync(new WebSession(LoginLinks.Hash(sessionId), user, host, expires), context.RequestAborted).ConfigureAwait(false);
        context.Response.Cookies.Append(cookieName, sessionId, new CookieOptions
        {
            Path = "/",
            HttpOnly = true,
            Secure = context.Request.IsHttps,
            SameSite = SameSiteMode.Lax,
            Expires = expires,
            MaxAge = HttpFrontDoorLimits.SessionLifetime,
            IsEssential = true,
        });
        FrontDoorLog.LoginSucceeded(_logger, user.UserId, host);
        context.Response.Headers.CacheControl = "no-store";
    }

    /// <summary>Deletes the session the cookie names and expires the cookie.</summary>
    public async Task EndAsync(HttpContext context, string cookieName)
    {
        string? value = HeaderParsing.GetCookie(context.Request.Headers.Cookie.ToString(), cookieName);
        if (!string.IsNullOrEmpty(value))
            await _sessions.DeleteAsync(LoginLinks.Hash(value), context.RequestAborted).ConfigureAwait(false);
        // Expired both ways (Max-Age=0 for RFC 6265 clients, a past Expires for older ones).
        context.Response.Cookies.Append(cookieName, "", new CookieOptions
        {
            Path = "/", HttpOnly = true, Secure = context.Request.IsHttps, SameSite = SameSiteMode.Lax,
            MaxAge = TimeSpan.Zero, Expires = DateTimeOffset.UnixEpoch, IsEssential = true,
        });
    }
}
