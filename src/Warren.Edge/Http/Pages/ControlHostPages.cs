using System.Security.Cryptography;
using System.Text;
using Warren.Edge.Limits;
using Microsoft.AspNetCore.Http;
using Warren.Edge.Http.Identity;
using Warren.Edge.Http.Routing;
using Warren.Platform.Accounts;
using Warren.Threading;

namespace Warren.Edge.Http;

/// <summary>
/// The control host's answers: <c>/exec</c> (<see cref="ExecEndpoint"/>), <c>/auth</c>, <c>/login</c> (the sign-in
/// page, 401 when not signed in; POST mails a link), <c>/logged-out</c>, <c>/logout</c> (ends this browser's session
/// here), and the JSON of <see cref="ControlApi"/>.
/// Anything else goes to the next middleware.
/// </summary>
internal sealed class ControlHostPages : IControlHostLogin
{
    /// <summary>
    /// Prefix of the login-link page's anti-forgery cookies: random, set by the GET that shows the button, sent back
    /// in the form (double-submit). SameSite=Strict keeps another site's form from carrying it, so nobody can log a
    /// browser in to their own account behind its user's back (login CSRF). One cookie per link (the name ends in a
    /// digest of the link's secret), so two links open in two tabs each keep their own.
    /// </summary>
    internal const string ConfirmCookiePrefix = "exe-login-confirm-";

    /// <summary>The confirmation form's field holding the cookie's value.</summary>
    internal const string FormTokenField = "form_token";

    /// <summary>Random bytes in the anti-forgery cookie.</summary>
    private const int ConfirmCookieBytes = 32;

    /// <summary>Bytes of the secret's SHA-256 in a confirm cookie's name (64 bits: distinct among a browser's few open links).</summary>
    private const int ConfirmCookieDigestBytes = 8;

    /// <summary>
    /// Confirm cookies a browser keeps at once: opening a link page with this many already sent expires them, so a
    /// browser's cookie header to <c>/auth</c> stays small (RFC 6265 §6.1 asks browsers for only 50 cookies per domain).
    /// </summary>
    internal const int MaxConfirmCookies = 8;

    /// <summary>Domain-separation label of the confirm cookie's name digest (it is not the stored hash of the secret).</summary>
    private const string ConfirmCookieLabel = "warren login confirm\n";

    private readonly ControlUrls _urls;
    private readonly SiteRouter _router;
    private readonly RequestIdentityReader _identity;
    private readonly LoginSessions _logins;
    private readonly ILoginLinkService _links;
    private readonly ExecEndpoint _exec;
    private readonly ControlApi _api;
    private readonly ILoginEmailSender? _emailSender;
    private readonly KeyedTokenBucket _loginEmailLimiter;
    private readonly SignupPages? _signup;

    public ControlHostPages(ControlUrls urls, SiteRouter router, RequestIdentityReader identity, LoginSessions logins, ILoginLinkService links,
        ExecEndpoint exec, ControlApi api, TimeProvider time, ILoginEmailSender? emailSender = null, SignupPages? signup = null)
    {
        _urls = urls;
        _router = router;
        _identity = identity;
        _logins = logins;
        _links = links;
        _exec = exec;
        _api = api;
        _emailSender = emailSender;
        _signup = signup;
        _loginEmailLimiter = new KeyedTokenBucket(time, HttpFrontDoorLimits.LoginEmailBurst, HttpFrontDoorLimits.LoginEmailPerSecond, 0);
        // Every VM site on any port: a login that returns to a site ends there (CSP Level 3 host and port wildcards).
        FormRedirectSources = "https://*" + urls.VmDomainSuffix + ":*";
    }

    /// <inheritdoc />
    public string FormRedirectSources { get; }

    /// <summary>
    /// The control host's pages and <c>/exec</c> run whole commands, so they leave the socket engine thread first:
    /// with inline I/O Kestrel runs the middleware there, and a command that took 40 ms would stall every
    /// connection polled by that thread. (Database calls leave it by themselves, in WarrenDatabase.)
    /// </summary>
    public async Task HandleAsync(HttpContext context, RequestDelegate next)
    {
        await SocketThread.Leave();
        var path = context.Request.Path;
        if (path.Equals(ControlPaths.Exec, StringComparison.Ordinal))
            await _exec.HandleAsync(context).ConfigureAwait(false);
        else if (_signup is not null && await _signup.TryHandleAsync(context, this).ConfigureAwait(false)) { }
        else if (path.Equals(ControlPaths.Auth, StringComparison.Ordinal))
            await ControlAuthAsync(context).ConfigureAwait(false);
        else if (path.Equals(ControlPaths.Login, StringComparison.Ordinal))
            await ControlLoginAsync(context).ConfigureAwait(false);
        else if (path.Equals(ControlPaths.ProfileApi, StringComparison.Ordinal))
            await _api.HandleAsync(context, dashboard: false).ConfigureAwait(false);
        else if (path.Equals(ControlPaths.DashboardApi, StringComparison.Ordinal))
            await _api.HandleAsync(context, dashboard: true).ConfigureAwait(false);
        else if (path.Equals(ControlPaths.LoggedOut, StringComparison.Ordinal))
            await LoggedOutPageAsync(context).ConfigureAwait(false);
        else if (path.Equals(ControlPaths.Logout, StringComparison.Ordinal))
            await ControlLogoutAsync(context).ConfigureAwait(false);
        else
            await next(context).ConfigureAwait(false);
    }

    /// <summary>
    /// Control host <c>GET /auth?secret=…&amp;redirect=…</c> (the link <c>browser</c> prints and the login page mails):
    /// a page with one button, which POSTs the secret back (<see cref="ConfirmLinkAsync"/>). The GET uses nothing up,
    /// so a mail scanner or link preview that fetches the link cannot spend it.
    /// </summary>
    private async Task ControlAuthAsync(HttpContext context)
    {
        var request = context.Request;
        if (HttpMethods.IsPost(request.Method))
        {
            // Reached only without sign-up pages (they read every POST /auth and hand a login confirmation back).
            var form = await OwnForms.ReadAsync(context).ConfigureAwait(false);
            if (form is null) return;
            if (form.ContainsKey(SignupPages.LoginSecretField)) await ConfirmLinkAsync(context, form).ConfigureAwait(false);
            else await Pages.WriteTextAsync(context, StatusCodes.Status400BadRequest, "missing secret").ConfigureAwait(false);
            return;
        }
        if (!(HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method)))
        {
            await Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST").ConfigureAwait(false);
            return;
        }
        if (!request.Query.ContainsKey("secret"))
        {
            // exe.dev's sign-in address (https://exe.dev/auth?redirect=P&return_host=H): the same page as /login.
            await ControlLoginAsync(context).ConfigureAwait(false);
            return;
        }
        string secret = request.Query["secret"].ToString();
        string redirect = request.Query.ContainsKey("redirect") ? HeaderParsing.SanitizeRedirect(request.Query["redirect"]) : ControlPaths.Login;
        context.Response.Headers.CacheControl = "no-store";
        if (secret.Length is 0 or > HeaderParsing.MaxTokenLength)
        {
            await InvalidLoginLinkAsync(context).ConfigureAwait(false);
            return;
        }
        string formToken = LoginLinks.NewSecret(ConfirmCookieBytes);
        var sent = ConfirmCookiesSent(request);
        if (sent.Count >= MaxConfirmCookies)
        {
            foreach (string name in sent)
                ExpireConfirmCookie(context, name);
        }
        context.Response.Cookies.Append(ConfirmCookieName(secret), formToken, new CookieOptions
        {
            Path = ControlPaths.Auth,
            HttpOnly = true,
            Secure = request.IsHttps,
            SameSite = SameSiteMode.Strict,
            MaxAge = LoginLinks.LinkLifetime,
            IsEssential = true,
        });
        // The button's answer may go on to a VM site (a mailed link from a site's sign-in page): CSP must let it.
        await Pages.WriteAsync(context, StatusCodes.Status200OK, "Log in",
            $"<p>Log in to <b>{Pages.E(_urls.ControlHost)}</b> in this browser?</p>"
            + $"<form method=\"post\" action=\"{ControlPaths.Auth}\">"
            + $"<input type=\"hidden\" name=\"{SignupPages.LoginSecretField}\" value=\"{Pages.E(secret)}\">"
            + $"<input type=\"hidden\" name=\"redirect\" value=\"{Pages.E(redirect)}\">"
            + $"<input type=\"hidden\" name=\"{FormTokenField}\" value=\"{Pages.E(formToken)}\">"
            + "<button>Log in</button></form>"
            + "<p>The link works once. If you did not ask for it, close this page.</p>", FormRedirectSources).ConfigureAwait(false);
    }

    /// <summary>The anti-forgery cookie's name for the link with <paramref name="secret"/>.</summary>
    internal static string ConfirmCookieName(string secret)
    {
        Span<byte> digest = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(ConfirmCookieLabel + secret), digest);
        return ConfirmCookiePrefix + Convert.ToHexStringLower(digest[..ConfirmCookieDigestBytes]);
    }

    /// <summary>The names of the confirm cookies the request carries.</summary>
    private static List<string> ConfirmCookiesSent(HttpRequest request)
    {
        var names = new List<string>();
        foreach (var (name, _) in request.Cookies)
        {
            if (name.StartsWith(ConfirmCookiePrefix, StringComparison.Ordinal))
                names.Add(name);
        }
        return names;
    }

    /// <summary>
    /// Control host <c>POST /auth</c> with <c>secret</c>: the login page's button. Same origin and the anti-forgery
    /// cookie matching the form, then the secret is consumed (once) and <c>exe-auth</c> set.
    /// </summary>
    public async Task ConfirmLinkAsync(HttpContext context, IFormCollection form)
    {
        context.Response.Headers.CacheControl = "no-store";
        string secret = form[SignupPages.LoginSecretField].ToString();
        string cookieName = ConfirmCookieName(secret);
        string? cookie = HeaderParsing.GetCookie(context.Request.Headers.Cookie.ToString(), cookieName);
        string presented = form[FormTokenField].ToString();
        if (IsOtherOrigin(context) || string.IsNullOrEmpty(cookie) || cookie.Length > HeaderParsing.MaxTokenLength
            || !CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(cookie), Encoding.UTF8.GetBytes(presented)))
        {
            await Pages.WriteAsync(context, StatusCodes.Status403Forbidden, "Please open the link again",
                "<p>This form did not come from the login link's page in this browser. Open the link again and press the button.</p>").ConfigureAwait(false);
            return;
        }
        string redirect = form.ContainsKey("redirect") ? HeaderParsing.SanitizeRedirect(form["redirect"]) : ControlPaths.Login;
        string host = context.Request.Host.Value!.ToLowerInvariant();
        var user = await _logins.ConsumeLinkAsync(secret, host, context.RequestAborted).ConfigureAwait(false);
        ExpireConfirmCookie(context, cookieName);
        if (user is null)
        {
            await InvalidLoginLinkAsync(context).ConfigureAwait(false);
            return;
        }
        await SignInAsync(context, user, redirect).ConfigureAwait(false);
    }

    /// <summary>Sets <c>exe-auth</c> for <paramref name="user"/> on the control host and 303s to <paramref name="redirect"/>.</summary>
    public async Task SignInAsync(HttpContext context, WebUser user, string redirect)
    {
        await _logins.StartAsync(context, user, ControlPaths.CookieName, context.Request.Host.Value!.ToLowerInvariant()).ConfigureAwait(false);
        context.Response.StatusCode = StatusCodes.Status303SeeOther;
        context.Response.Headers.Location = redirect;
    }

    /// <summary>
    /// An <c>Origin</c> naming another site. "null" is not one: every page of this door is sent with
    /// <c>Referrer-Policy: no-referrer</c> (the secret is in the URL), under which browsers send a form's POST with
    /// <c>Origin: null</c> (Fetch standard, "serializing a request origin"); the SameSite=Strict cookie, which no
    /// other site's form carries, decides then.
    /// </summary>
    private static bool IsOtherOrigin(HttpContext context)
        => context.Request.Headers.Origin is { Count: > 0 } origin && origin.ToString() != "null" && !OwnForms.IsSameOrigin(context);

    private Task InvalidLoginLinkAsync(HttpContext context)
        => Pages.WriteAsync(context, StatusCodes.Status401Unauthorized, "Login link not valid",
            $"<p>This login link is invalid, expired or already used. Run <code>ssh {Pages.E(_urls.ControlHost)} browser</code> for a new one.</p>");

    private static void ExpireConfirmCookie(HttpContext context, string name)
        => context.Response.Cookies.Append(name, "", new CookieOptions
        {
            Path = ControlPaths.Auth, HttpOnly = true, Secure = context.Request.IsHttps, SameSite = SameSiteMode.Strict,
            MaxAge = TimeSpan.Zero, Expires = DateTimeOffset.UnixEpoch, IsEssential = true,
        });

    /// <summary>
    /// Control host <c>GET /login?redirect=P&amp;return_host=H</c>: logged in (exe-auth) and H a site of the VM
    /// domain → a one-time secret for H and 307 to <c>https://H/__exe.dev/auth</c>; otherwise a page saying how to log in.
    /// </summary>
    private async Task ControlLoginAsync(HttpContext context)
    {
        var request = context.Request;
        var ct = context.RequestAborted;
        if (HttpMethods.IsPost(request.Method))
        {
            await LoginEmailAsync(context).ConfigureAwait(false);
            return;
        }
        if (!(HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method)))
        {
            await Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST").ConfigureAwait(false);
            return;
        }
        string redirect = HeaderParsing.SanitizeRedirect(request.Query["redirect"]);
        string? returnHost = null;
        if (HeaderParsing.TryParseHost(request.Query["return_host"], out string returnName, out int? returnPort)
            && _router.TrySiteName(returnName, out _))
        {
            returnHost = returnPort is int p ? $"{returnName}:{p}" : returnName;
        }

        var session = await _identity.FindSessionAsync(context, ControlPaths.CookieName, ct).ConfigureAwait(false);
        if (session is not null && returnHost is not null)
        {
            string secret = await _links.IssueAsync(session.User, returnHost, ct).ConfigureAwait(false);
            context.Response.StatusCode = StatusCodes.Status307TemporaryRedirect;
            context.Response.Headers.Location = LoginLinks.BuildAuthUrl(returnHost, secret, redirect);
            context.Response.Headers.CacheControl = "no-store";
            return;
        }
        if (session is not null)
        {
            await Pages.WriteAsync(context, StatusCodes.Status200OK, "Logged in",
                $"<p>You are logged in as <b>{Pages.E(session.User.Email)}</b>. Private sites you have access to now open directly.</p>").ConfigureAwait(false);
            return;
        }
        // Not signed in: 401 with the sign-in page, as exe.dev's /auth answers (it carries where to return).
        string body = (returnHost is null ? "" : $"<p>To open <b>{Pages.E(returnHost)}</b>, sign in first.</p>")
            + $"<p>To sign in, run</p><pre>ssh {Pages.E(_urls.ControlHost)} browser</pre><p>open the link it prints, then reload the site.</p>";
        string returnUrl = ControlPaths.Login + "?redirect=" + Uri.EscapeDataString(redirect)
            + (returnHost is null ? "" : "&return_host=" + Uri.EscapeDataString(returnHost));
        // With web sign-up, the address form signs up or in (exe.dev's web sign-in): someone a site was shared with
        // by address has no account yet, and a login link is mailed only to accounts. Either way the mailed link
        // comes back here with returnUrl, and from here to the site.
        if (_signup is { CanMail: true })
        {
            body += "<form method=\"post\" action=\"" + ControlPaths.Auth + "\"><p>Or sign up or sign in by email:</p>"
                + $"<input type=\"hidden\" name=\"redirect\" value=\"{Pages.E(returnUrl)}\">"
                + "<input type=\"email\" name=\"email\" required autocomplete=\"email\"> <button>Email me a link</button></form>";
        }
        else if (_emailSender is not null)
        {
            body += "<form method=\"post\" action=\"" + ControlPaths.Login + "\"><p>Or get a link by email:</p>"
                + $"<input type=\"hidden\" name=\"redirect\" value=\"{Pages.E(returnUrl)}\">"
                + "<input type=\"email\" name=\"email\" required autocomplete=\"email\"> <button>Email me a link</button></form>";
        }
        await Pages.WriteAsync(context, StatusCodes.Status401Unauthorized, Pages.SignInTitle, body).ConfigureAwait(false);
    }

    private async Task LoginEmailAsync(HttpContext context)
    {
        var sender = _emailSender;
        if (sender is null)
        {
            await Pages.NotFoundAsync(context).ConfigureAwait(false);
            return;
        }
        var form = await OwnForms.ReadAsync(context).ConfigureAwait(false);
        if (form is null)
            return;
        string email = form["email"].ToString().Trim().ToLowerInvariant();
        string redirect = HeaderParsing.SanitizeRedirect(form["redirect"]);
        // As sign-up does: no mail to domains reserved for examples (RFC 2606), and the page says so. It says the
        // same whether or not an account has that address, so it reveals nothing about accounts.
        if (EmailAddress.TryNormalize(email, out var normalized) && ReservedEmailDomains.IsReserved(normalized))
        {
            await Pages.WriteAsync(context, StatusCodes.Status400BadRequest, "No mail can reach that address",
                $"<p>{Pages.E(ReservedEmailDomains.Message(normalized))}</p>").ConfigureAwait(false);
            return;
        }
        if (email.Length is > 0 and <= 254 && email.Contains('@') && _loginEmailLimiter.TryAcquire(email))
            await sender.SendLoginLinkAsync(email, redirect, context.RequestAborted).ConfigureAwait(false);
        await Pages.WriteAsync(context, StatusCodes.Status200OK, "Check your email",
            "<p>If that address may use this site, a login link is on its way.</p>").ConfigureAwait(false);
    }

    /// <summary>
    /// Control host <c>/logged-out</c>: GET, HEAD, or the POST a site's logout 307 repeats here. A site's logout ends
    /// only that site's session; while the browser is signed in here, opening the site signs it in again at once,
    /// so the page offers to log out here too (the cross-site POST carries no SameSite=Lax cookie to tell whether).
    /// </summary>
    private Task LoggedOutPageAsync(HttpContext context)
    {
        var method = context.Request.Method;
        if (!(HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsPost(method)))
            return Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST");
        return Pages.WriteAsync(context, StatusCodes.Status200OK, "Logged out",
            "<p>You are logged out of that site.</p>"
            + $"<p>Sites you may open sign you in again from <b>{Pages.E(_urls.ControlHost)}</b> while this browser is signed in there.</p>"
            + $"<form method=\"post\" action=\"{ControlPaths.Logout}\"><button>Log out of {Pages.E(_urls.ControlHost)} too</button></form>");
    }

    /// <summary>
    /// Control host <c>/logout</c>: GET shows the button; its POST ends this browser's <c>exe-auth</c> session (the
    /// sites' own sessions end with their <c>/__exe.dev/logout</c>). A POST from another site's form is refused.
    /// </summary>
    private async Task ControlLogoutAsync(HttpContext context)
    {
        var method = context.Request.Method;
        if (HttpMethods.IsGet(method) || HttpMethods.IsHead(method))
        {
            await Pages.WriteAsync(context, StatusCodes.Status200OK, "Log out",
                $"<form method=\"post\" action=\"{ControlPaths.Logout}\"><p>Log out of <b>{Pages.E(_urls.ControlHost)}</b> in this browser?</p>"
                + "<button>Log out</button></form>").ConfigureAwait(false);
            return;
        }
        if (!HttpMethods.IsPost(method))
        {
            await Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST").ConfigureAwait(false);
            return;
        }
        if (IsOtherOrigin(context))
        {
            await Pages.WriteAsync(context, StatusCodes.Status403Forbidden, "Log out",
                $"<p>This form did not come from this site. <a href=\"{ControlPaths.Logout}\">Log out here</a>.</p>").ConfigureAwait(false);
            return;
        }
        await _logins.EndAsync(context, ControlPaths.CookieName).ConfigureAwait(false);
        await Pages.WriteAsync(context, StatusCodes.Status200OK, "Logged out",
            $"<p>You are logged out of <b>{Pages.E(_urls.ControlHost)}</b> in this browser. Sites that you are still signed in to "
            + "keep their own session until you log out there (<code>/__exe.dev/logout</code>).</p>").ConfigureAwait(false);
    }
}
