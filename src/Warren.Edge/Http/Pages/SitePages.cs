using Microsoft.AspNetCore.Http;
using Warren.Edge.Http.Identity;
using Warren.Edge.Http.Routing;

namespace Warren.Edge.Http;

/// <summary>
/// A site's own pages under <c>/__exe.dev/</c> (exe.dev's docs: login with exe), answered by the front door and
/// never forwarded: <c>login</c> (→ the control host), <c>auth</c> (consumes a one-time secret, sets the site's
/// cookie), <c>logout</c> (form, then POST) and <c>request-access</c> (<see cref="RequestAccessPage"/>).
/// </summary>
internal sealed class SitePages
{
    public const string ExeDevPathPrefix = "/__exe.dev";
    public const string LoginPath = ExeDevPathPrefix + "/login";
    public const string AuthPath = ExeDevPathPrefix + "/auth";
    public const string LogoutPath = ExeDevPathPrefix + "/logout";

    private readonly ControlUrls _urls;
    private readonly LoginSessions _logins;
    private readonly RequestAccessPage _requestAccess;
    private readonly Integrations.SiteLoginRecorder? _visitors;

    public SitePages(ControlUrls urls, LoginSessions logins, RequestAccessPage requestAccess, Integrations.SiteLoginRecorder? visitors = null)
    {
        _urls = urls;
        _logins = logins;
        _requestAccess = requestAccess;
        _visitors = visitors;
    }

    public static bool IsSitePage(PathString path) => path.StartsWithSegments(ExeDevPathPrefix, StringComparison.OrdinalIgnoreCase);

    public async Task HandleAsync(HttpContext context, string vmName)
    {
        var request = context.Request;
        string path = request.Path.Value!.ToLowerInvariant();
        bool get = HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method);
        switch (path)
        {
            case LoginPath:
                if (get)
                    await LoginPageAsync(context).ConfigureAwait(false);
                else
                    await Pages.MethodNotAllowedAsync(context, "GET, HEAD").ConfigureAwait(false);
                return;
            case AuthPath:
                if (get)
                    await AuthAsync(context, vmName).ConfigureAwait(false);
                else
                    await Pages.MethodNotAllowedAsync(context, "GET, HEAD").ConfigureAwait(false);
                return;
            case LogoutPath:
                if (get)
                    await Pages.LogoutFormAsync(context, _urls.ControlUrl("")).ConfigureAwait(false);
                else if (HttpMethods.IsPost(request.Method))
                    await LogoutAsync(context).ConfigureAwait(false);
                else
                    await Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST").ConfigureAwait(false);
                return;
            case RequestAccessPage.Path:
                if (get || HttpMethods.IsPost(request.Method))
                    await _requestAccess.HandleAsync(context, vmName).ConfigureAwait(false);
                else
                    await Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST").ConfigureAwait(false);
                return;
            default:
                await Pages.NotFoundAsync(context).ConfigureAwait(false);
                return;
        }
    }

    /// <summary>To the site's login page, coming back here afterwards. 307 keeps the method, so a POST gets 303.</summary>
    public static void RedirectToLogin(HttpContext context)
    {
        var request = context.Request;
        string relative = request.PathBase + request.Path + request.QueryString;
        context.Response.StatusCode = HttpMethods.IsPost(request.Method) ? StatusCodes.Status303SeeOther : StatusCodes.Status307TemporaryRedirect;
        context.Response.Headers.Location = LoginPath + "?redirect=" + Uri.EscapeDataString(HeaderParsing.SanitizeRedirect(relative));
        context.Response.Headers.CacheControl = "no-store";
    }

    /// <summary>
    /// <c>/__exe.dev/login?redirect=P</c> on a site → 307 to the control host's <c>/login?redirect=P&amp;return_host=HOST</c>
    /// (exe.dev), which sends the browser back with a one-time secret when it is logged in there.
    /// </summary>
    private Task LoginPageAsync(HttpContext context)
    {
        string redirect = HeaderParsing.SanitizeRedirect(context.Request.Query["redirect"]);
        string host = context.Request.Host.Value!.ToLowerInvariant();
        context.Response.StatusCode = StatusCodes.Status307TemporaryRedirect;
        context.Response.Headers.Location = _urls.ControlUrl(ControlPaths.Login)
            + "?redirect=" + Uri.EscapeDataString(redirect) + "&return_host=" + Uri.EscapeDataString(host);
        context.Response.Headers.CacheControl = "no-store";
        return Task.CompletedTask;
    }

    /// <summary>
    /// <c>GET /__exe.dev/auth?secret=…&amp;redirect=…</c>: consumes the one-time secret and sets the site's cookie, on
    /// the GET, as exe.dev's docs (login with exe) describe. Unlike a mailed link, this URL is never shown to a person
    /// or a mail scanner: the control host mints it for the browser holding its session and hands it over only as a
    /// 307's Location, so no link preview or prefetch sees it before that browser follows it (within
    /// <see cref="LoginLinks.LinkLifetime"/>, once).
    /// </summary>
    private async Task AuthAsync(HttpContext context, string vmName)
    {
        var request = context.Request;
        string secret = request.Query["secret"].ToString();
        string redirect = HeaderParsing.SanitizeRedirect(request.Query["redirect"]);
        string host = request.Host.Value!.ToLowerInvariant();
        var user = await _logins.ConsumeLinkAsync(secret, host, context.RequestAborted).ConfigureAwait(false);
        if (user is null)
        {
            await Pages.WriteAsync(context, StatusCodes.Status401Unauthorized, "Login link not valid",
                "<p>This login link is invalid, expired or already used. Ask for a new one.</p>").ConfigureAwait(false);
            return;
        }
        await _logins.StartAsync(context, user, RequestIdentityReader.SiteCookieName(context), host).ConfigureAwait(false);
        // A verified site login makes the person one the VM may mail (exe.dev's docs: send email).
        if (_visitors is not null) await _visitors.RecordAsync(vmName, user, context.RequestAborted).ConfigureAwait(false);
        context.Response.StatusCode = StatusCodes.Status303SeeOther;
        context.Response.Headers.Location = redirect;
    }

    private async Task LogoutAsync(HttpContext context)
    {
        await _logins.EndAsync(context, RequestIdentityReader.SiteCookieName(context)).ConfigureAwait(false);
        // exe.dev's answer: 307 to the control host's logged-out page (which therefore also takes the repeated POST).
        context.Response.StatusCode = StatusCodes.Status307TemporaryRedirect;
        context.Response.Headers.Location = _urls.ControlUrl(ControlPaths.LoggedOut);
        context.Response.Headers.CacheControl = "no-store";
    }
}
