using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http.Access;
using Warren.Edge.Http.Forwarding;
using Warren.Edge.Http.Identity;
using Warren.Edge.Http.Routing;
using Warren.Edge.Limits;

namespace Warren.Edge.Http.FrontDoor;

/// <summary>
/// The HTTP(S) front door's middleware: chains its stages for one request —
/// routing (<see cref="SiteRouter"/>: Host → the control host or a site) →
/// identity (<see cref="RequestIdentityReader"/>: every credential type) →
/// access (<see cref="SiteAccessPolicy"/>: forward, redirect, or which page) →
/// forwarding (<see cref="SiteForwarder"/>). The pages it answers itself are in <c>Pages/</c>.
/// </summary>
/// <remarks>
/// Per request, in order:
/// <list type="number">
/// <item>Per-source rate limit (<see cref="HttpFrontDoorOptions.RequestsPerSecondPerSource"/>) → 429 with <c>Retry-After</c>.</item>
/// <item>A request target over <see cref="HttpFrontDoorLimits.MaxRequestTargetBytes"/> → 414 (HTTP/2 too).</item>
/// <item>Plain HTTP → 308 to the same URL on HTTPS.</item>
/// <item>Control host → <see cref="ControlHostPages"/> (anything it does not answer → next middleware).</item>
/// <item><c>/__exe.dev/*</c> on a site → <see cref="SitePages"/>, never forwarded.</item>
/// <item>Identity; identical values in both auth headers → 400.</item>
/// <item>Site and access (existence of a VM is never revealed to people without access). Before access is decided, a signed-in
/// person's <c>?share=TOKEN</c> on the default route is redeemed: GET/HEAD → 302 to the URL without it; other methods go on without it.</item>
/// <item>Forward.</item>
/// </list>
/// Anonymous GET/HEAD requests to public sites usually never get here: the connection-level lane answers them
/// below Kestrel (<see cref="LaneSites"/>), asking the same stages.
/// </remarks>
public sealed class HttpFrontDoor
{
    private readonly SiteRouter _router;
    private readonly SourceRequestLimit _sourceLimit;
    private readonly RequestIdentityReader _identity;
    private readonly IWebSiteDirectory _directory;
    private readonly SiteAccessPolicy _policy;
    private readonly SiteForwarder _forwarder;
    private readonly ControlHostPages _control;
    private readonly SitePages _sitePages;
    private readonly RequestAccessPage _requestAccess;
    private readonly OwnForms _forms;
    private readonly LaneSites _lane;
    private readonly ILogger _logger;

    internal HttpFrontDoor(SiteRouter router, SourceRequestLimit sourceLimit, RequestIdentityReader identity, IWebSiteDirectory directory,
        SiteAccessPolicy policy, SiteForwarder forwarder, ControlHostPages control, SitePages sitePages, RequestAccessPage requestAccess,
        OwnForms forms, LaneSites lane, ILogger<HttpFrontDoor> logger)
    {
        _router = router;
        _sourceLimit = sourceLimit;
        _identity = identity;
        _directory = directory;
        _policy = policy;
        _forwarder = forwarder;
        _control = control;
        _sitePages = sitePages;
        _requestAccess = requestAccess;
        _forms = forms;
        _lane = lane;
        _logger = logger;
    }

    /// <summary>Requests answered below Kestrel's HTTP layer by the connection-level lane since start.</summary>
    internal long ConnectionLevelRequests => _lane.Requests;

    /// <summary>The login link the <c>browser</c> command prints (<see cref="ControlUrls.ControlLoginLink"/>).</summary>
    public string BuildControlLoginLink(string secret) => _router.Urls.ControlLoginLink(secret);

    /// <summary>Middleware entry point.</summary>
    public Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        FirstRequestDeadline.MarkStarted(context);
        var request = context.Request;
        // :: Routing
        var route = _router.Route(request.Host.Value);
        if (route.Kind == HostRouteKind.NotOurs)
            return next(context);

        if (!_sourceLimit.TryAcquire(context.Connection.RemoteIpAddress, out var retryAfter))
            return TooManyRequestsAsync(context, route, retryAfter);

        if (RequestTargetLength(context) > HttpFrontDoorLimits.MaxRequestTargetBytes)
            return Pages.UriTooLongAsync(context);

        if (!request.IsHttps)
            return RedirectToHttps(context, route.HostName);

        return route.Kind switch
        {
            HostRouteKind.Control => _control.HandleAsync(context, next),
            HostRouteKind.Site => HandleSiteAsync(context, route.VmName!, route.AlternatePort),
            _ => Pages.NotFoundAsync(context),
        };
    }

    private static Task TooManyRequestsAsync(HttpContext context, HostRoute route, TimeSpan retryAfter)
    {
        Pages.SetRetryAfter(context, retryAfter);
        if (route.Kind == HostRouteKind.Control && context.Request.Path.Equals(ControlPaths.Exec, StringComparison.Ordinal))
            return ExecEndpoint.ErrorAsync(context, StatusCodes.Status429TooManyRequests, "rate limit exceeded");
        return Pages.WriteTextAsync(context, StatusCodes.Status429TooManyRequests, "rate limit exceeded");
    }

    /// <summary>The request target's length as sent (Kestrel's raw target; the path and query when there is none).</summary>
    private static int RequestTargetLength(HttpContext context) =>
        context.Features.Get<IHttpRequestFeature>()?.RawTarget?.Length
        ?? context.Request.Path.Value?.Length + context.Request.QueryString.Value?.Length ?? 0;

    private Task RedirectToHttps(HttpContext context, string name)
    {
        var request = context.Request;
        context.Response.StatusCode = StatusCodes.Status308PermanentRedirect;
        context.Response.Headers.Location = "https://" + _router.Urls.Authority(name) + request.PathBase + request.Path + request.QueryString;
        return Task.CompletedTask;
    }

    private async Task HandleSiteAsync(HttpContext context, string vmName, int? alternatePort)
    {
        var request = context.Request;
        var ct = context.RequestAborted;

        if (SitePages.IsSitePage(request.Path))
        {
            await _sitePages.HandleAsync(context, vmName).ConfigureAwait(false);
            return;
        }

        // :: Identity
        var identity = await _identity.AuthenticateAsync(context, vmName, ct).ConfigureAwait(false);
        if (identity.Rejected)
        {
            await Pages.WriteTextAsync(context, StatusCodes.Status400BadRequest, "conflicting authorization headers").ConfigureAwait(false);
            return;
        }

        // :: Site and access
        WebSite? site;
        try
        {
            site = await _directory.FindAsync(vmName, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            FrontDoorLog.DirectoryFailed(_logger, ex);
            await Pages.ServiceUnavailableAsync(context).ConfigureAwait(false);
            return;
        }

        if (site is not null && identity.User is { } user && alternatePort is null && ShareLinks.TokenOf(request) is { } shareToken)
        {
            // A share link: admit the person, then drop ?share from the URL (exe.dev), keeping every other
            // parameter byte for byte. A GET or HEAD is sent there with 302, as exe.dev does; any other method is not
            // redirected (a browser would turn a redirected POST into a GET and lose its body): the app gets it, minus share.
            await _policy.RedeemShareLinkAsync(site, user, shareToken, ct).ConfigureAwait(false);
            string target = ShareLinks.WithoutQueryParameter(ShareLinks.RequestTarget(context), ShareLinks.Parameter);
            if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method))
            {
                context.Response.StatusCode = StatusCodes.Status302Found;
                context.Response.Headers.Location = target;
                context.Response.Headers.CacheControl = "no-store";
                return;
            }
            ShareLinks.SetRequestTarget(context, target);
        }

        var decision = await _policy.DecideAsync(identity, site, alternatePort, ct).ConfigureAwait(false);
        switch (decision.Verdict)
        {
            case AccessVerdict.Forward:
                // :: Forward
                var state = new ForwardState
                {
                    User = decision.ForwardAs,
                    TokenCtx = identity.TokenCtx,
                    RemoveAuthorization = identity.FromAuthorizationHeader && decision.ForwardAs is not null,
                };
                await _forwarder.ForwardAsync(context, site!, alternatePort ?? site!.DefaultPort, decision.Owner, state, ct).ConfigureAwait(false);
                return;
            case AccessVerdict.RedirectToLogin:
                SitePages.RedirectToLogin(context);
                return;
            case AccessVerdict.InvalidAuthentication:
                await Pages.InvalidAuthenticationAsync(context).ConfigureAwait(false);
                return;
            case AccessVerdict.AccessDenied:
                await Pages.AccessDeniedAsync(context).ConfigureAwait(false);
                return;
            default:
                await Pages.NeedAccessAsync(context, StatusCodes.Status401Unauthorized, identity.User!.Email, _router.Urls.ControlHost, site!.Name,
                    identity.SessionKey is { } sessionKey && _requestAccess.Enabled ? _forms.FormToken(sessionKey) : null,
                    _router.Urls.ControlUrl("")).ConfigureAwait(false);
                return;
        }
    }
}
