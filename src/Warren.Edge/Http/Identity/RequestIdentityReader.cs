using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Warren.Threading;

namespace Warren.Edge.Http.Identity;

/// <summary>Who a request to a site is.</summary>
/// <param name="User">The person, or null (anonymous, or a failed token).</param>
/// <param name="TokenCtx">The token's <c>ctx</c> JSON, for the identity headers.</param>
/// <param name="FromAuthorizationHeader">The token came from <c>Authorization</c> (not exe.dev's own header).</param>
/// <param name="TokenFailed">A token was presented and is not valid.</param>
/// <param name="Rejected">Both auth headers carry the same value → 400 (exe.dev's proxy).</param>
/// <param name="SessionKey">The login session's key when the identity came from the cookie (anti-CSRF tokens are bound to it).</param>
public readonly record struct WebIdentity(WebUser? User, string? TokenCtx, bool FromAuthorizationHeader, bool TokenFailed, bool Rejected, string? SessionKey = null)
{
    public static WebIdentity Anonymous => default;
}

/// <summary>
/// The identity stage: every credential type a request to a site may carry, in exe.dev's order —
/// <c>X-Exedev-Authorization: Bearer</c>, then <c>Authorization: Bearer</c>, then Basic (token as password), then the
/// site's login cookie. A request <see cref="CredentialFields.HasCredentials"/> does not admit is anonymous without
/// a look (the common case on a public site), and that same list decides what the lane may serve anonymously.
/// </summary>
public sealed class RequestIdentityReader
{
    private readonly IWebTokenValidator _tokens;
    private readonly IWebSessionStore _sessions;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string _vmDomainSuffix;

    public RequestIdentityReader(IWebTokenValidator tokens, IWebSessionStore sessions, Routing.ControlUrls urls, TimeProvider time, ILogger<RequestIdentityReader> logger)
    {
        _tokens = tokens;
        _sessions = sessions;
        _time = time;
        _logger = logger;
        _vmDomainSuffix = urls.VmDomainSuffix;
    }

    /// <summary>True when the request carries any credential (the lane's question, asked of a raw head, is <see cref="CredentialFields.IsCredential"/>).</summary>
    public static bool HasCredentials(HttpContext context) => CredentialFields.HasCredentials(context.Request.Headers);

    /// <summary>The site login cookie's name for a request: <c>login-with-exe-&lt;public port&gt;</c>.</summary>
    public static string SiteCookieName(HttpContext context)
    {
        HeaderParsing.TryParseHost(context.Request.Host.Value, out _, out int? port);
        return CredentialFields.LoginCookiePrefix + (port ?? 443).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    public async ValueTask<WebIdentity> AuthenticateAsync(HttpContext context, string vmName, CancellationToken ct)
    {
        if (!HasCredentials(context))
            return WebIdentity.Anonymous;
        var headers = context.Request.Headers;
        StringValues exeAuth = headers[CredentialFields.ExeDevAuthorization];
        StringValues auth = headers.Authorization;
        if (exeAuth.Count == 1 && auth.Count == 1 && string.Equals(exeAuth[0], auth[0], StringComparison.Ordinal))
            return new WebIdentity(null, null, false, false, Rejected: true);

        string? token = null;
        bool fromAuthorization = false;
        if (exeAuth.Count > 0)
        {
            // The preferred header: present but unusable is a failed token, not anonymity.
            if (exeAuth.Count != 1 || !HeaderParsing.TryGetBearer(exeAuth[0], out token))
                return new WebIdentity(null, null, false, TokenFailed: true, false);
        }
        else if (auth.Count == 1 && (HeaderParsing.TryGetBearer(auth[0], out token) || HeaderParsing.TryGetBasicPassword(auth[0], out token)))
        {
            fromAuthorization = true;
        }

        if (token is not null)
        {
            TokenValidation result;
            try
            {
                await SocketThread.Leave(); // signature checks and key lookups: off the socket engine thread
                result = await _tokens.ValidateAsync(token, "v0@" + vmName + _vmDomainSuffix, ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (!ct.IsCancellationRequested)
            {
                FrontDoorLog.DirectoryFailed(_logger, ex);
                result = new TokenValidation(TokenValidationStatus.InternalError);
            }
            if (result.Status == TokenValidationStatus.Valid && result.Principal is { } principal)
                return new WebIdentity(principal.User, principal.CtxJson, fromAuthorization, false, false);
            return new WebIdentity(null, null, fromAuthorization, TokenFailed: true, false);
        }

        if (StringValues.IsNullOrEmpty(headers.Cookie))
            return WebIdentity.Anonymous;
        var session = await FindSessionAsync(context, SiteCookieName(context), ct).ConfigureAwait(false);
        return new WebIdentity(session?.User, null, false, false, false, session?.SessionKey);
    }

    /// <summary>The live login session named by the cookie <paramref name="cookieName"/> for this very Host, or null.</summary>
    public async ValueTask<WebSession?> FindSessionAsync(HttpContext context, string cookieName, CancellationToken ct)
    {
        var cookies = context.Request.Headers.Cookie;
        if (StringValues.IsNullOrEmpty(cookies))
            return null;
        string? value = null;
        foreach (var header in cookies)
        {
            value = HeaderParsing.GetCookie(header, cookieName);
            if (value is not null)
                break;
        }
        if (string.IsNullOrEmpty(value) || value.Length > HttpFrontDoorLimits.SessionIdBytes * 2)
            return null;
        var session = await _sessions.FindAsync(LoginLinks.Hash(value), ct).ConfigureAwait(false);
        if (session is null || session.ExpiresAt <= _time.GetUtcNow()
            || !string.Equals(session.Host, context.Request.Host.Value, StringComparison.OrdinalIgnoreCase))
            return null;
        return session;
    }
}
