using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Warren.Edge.Http.Forwarding;
using Warren.Ssh.Server;
using Warren.Ssh.Threading;
using Yarp.ReverseProxy.Forwarder;

namespace Warren.Edge.Http;

/// <summary>
/// The HTTP(S) front door's request handling: picks the VM from the Host header, decides access,
/// answers <c>/__exe.dev/*</c> and the control host's <c>/exec</c> itself, and forwards everything
/// else to the VM's bridge address with YARP's <see cref="IHttpForwarder"/> over one shared
/// <see cref="SocketsHttpHandler"/>.
/// </summary>
/// <remarks>
/// Per request, in order:
/// <list type="number">
/// <item>Per-source rate limit (<see cref="HttpFrontDoorOptions.RequestsPerSecondPerSource"/>) → 429 with <c>Retry-After</c>.</item>
/// <item>Plain HTTP → 308 to the same URL on HTTPS.</item>
/// <item>Control host: <c>/exec</c> → <see cref="ExecEndpoint"/>; <c>/auth</c>, <c>/login</c> (the sign-in page, 401 when not
/// signed in), <c>/logged-out</c>, <c>/api/profile</c> and <c>/api/dashboard</c> → answered here; anything else → next middleware.</item>
/// <item><c>NAME.&lt;vm-domain&gt;[:PORT]</c>: PORT absent, 443 or the front door's own HTTPS port → default route; 3000–9999 → that VM port, for the owner alone (a share or the public flag covers the default route only); else 404.</item>
/// <item><c>/__exe.dev/*</c> → answered here, never forwarded.</item>
/// <item>Identity: <c>X-Exedev-Authorization: Bearer</c>, then <c>Authorization: Bearer</c>, then Basic (token as password), then the <c>login-with-exe-PORT</c> cookie; identical values in both auth headers → 400.</item>
/// <item>Site and access (existence of a VM is never revealed to people without access). Before access is decided, a signed-in
/// person's <c>?share=TOKEN</c> on the default route is redeemed: GET/HEAD → 302 to the URL without it; other methods go on without it.</item>
/// <item>Forward; an unreachable VM gets 502 <c>Port N unbound.</c> (owner) or 503.</item>
/// </list>
/// </remarks>
public sealed partial class HttpFrontDoor : IDisposable
{
    public const string ExeDevPathPrefix = "/__exe.dev";
    public const string ExeDevAuthorizationHeader = "X-Exedev-Authorization";

    /// <summary>Control host: consumes a login link and sets the control host's own session cookie.</summary>
    public const string ControlAuthPath = "/auth";

    /// <summary>Control host: a VM site's login page sends the browser here with <c>redirect</c> and <c>return_host</c>.</summary>
    public const string ControlLoginPath = "/login";

    /// <summary>Control host: where a site's logout ends (exe.dev's <c>/logged-out</c>).</summary>
    public const string ControlLoggedOutPath = "/logged-out";

    /// <summary>The control host's session cookie (exe.dev: the main site's cookie is <c>exe-auth</c>).</summary>
    public const string ControlCookieName = "exe-auth";

    private readonly HttpFrontDoorOptions _options;
    private readonly IWebSiteDirectory _directory;
    private readonly IWebAccessService _access;
    private readonly IWebUpstreamLocator _locator;
    private readonly IWebTokenValidator _tokens;
    private readonly IWebSessionStore _sessions;
    private readonly ILoginLinkService _links;
    private readonly ILoginEmailSender? _emailSender;
    private readonly IHttpForwarder _forwarder;
    private readonly HttpMessageInvoker _invoker;
    private readonly Http1Forwarder _http1;
    private readonly ForwarderRequestConfig _requestConfig;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string _vmDomainSuffix;
    private readonly string _controlHost;
    private readonly ExecEndpoint _exec;
    private readonly KeyedTokenBucket _loginEmailLimiter;
    private readonly KeyedTokenBucket<SourceNetwork>? _sourceLimiter;
    private int[]? _mainHttpsPorts;

    public HttpFrontDoor(HttpFrontDoorOptions options, IServiceProvider services, IHttpForwarder forwarder, TimeProvider time, ILogger<HttpFrontDoor> logger)
    {
        _options = options;
        // Resolved once: every port must be registered before the app starts (fail fast), and the hot path
        // does no service-provider lookups.
        _directory = services.GetRequiredService<IWebSiteDirectory>();
        _access = services.GetRequiredService<IWebAccessService>();
        _locator = services.GetRequiredService<IWebUpstreamLocator>();
        _tokens = services.GetRequiredService<IWebTokenValidator>();
        _sessions = services.GetRequiredService<IWebSessionStore>();
        _links = services.GetRequiredService<ILoginLinkService>();
        _emailSender = services.GetService<ILoginEmailSender>();
        _accessRequests = services.GetService<IAccessRequestSender>();
        _dashboard = services.GetService<IWebDashboardSource>();
        _forwarder = forwarder;
        _time = time;
        _logger = logger;
        _vmDomainSuffix = "." + options.VmDomain.Trim().TrimEnd('.').ToLowerInvariant();
        _controlHost = options.ControlHost.Trim().TrimEnd('.').ToLowerInvariant();
        // One handler for all VMs: pooled keep-alive connections per bridge IP:port. Settings follow
        // YARP's direct-forwarding guidance (no proxy, redirects, decompression or cookies).
        _invoker = new HttpMessageInvoker(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            ActivityHeadersPropagator = null,
            ConnectTimeout = HttpFrontDoorLimits.UpstreamConnectTimeout,
        });
        _http1 = new Http1Forwarder(HttpFrontDoorLimits.UpstreamConnectTimeout, HttpFrontDoorLimits.UpstreamActivityTimeout);
        _requestConfig = new ForwarderRequestConfig
        {
            ActivityTimeout = HttpFrontDoorLimits.UpstreamActivityTimeout,
            Version = HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        };
        _exec = new ExecEndpoint(options, services, time, logger);
        _loginEmailLimiter = new KeyedTokenBucket(time, HttpFrontDoorLimits.LoginEmailBurst, HttpFrontDoorLimits.LoginEmailPerSecond, 0);
        _accessRequestsPerSite = new KeyedTokenBucket<(string UserId, string VmId)>(time,
            HttpFrontDoorLimits.AccessRequestBurstPerSite, HttpFrontDoorLimits.AccessRequestsPerSecondPerSite, overdraft: 0);
        _accessRequestsPerRequester = new KeyedTokenBucket(time,
            HttpFrontDoorLimits.AccessRequestBurstPerRequester, HttpFrontDoorLimits.AccessRequestsPerSecondPerRequester, overdraft: 0);
        if (options.RequestsPerSecondPerSource > 0)
            _sourceLimiter = new KeyedTokenBucket<SourceNetwork>(time, options.RequestBurstPerSource, options.RequestsPerSecondPerSource, overdraft: 0);
    }

    private long _connectionLevelRequests;

    /// <summary>Requests answered below Kestrel's HTTP layer by <see cref="Http1ConnectionForwarder"/> since start.</summary>
    internal long ConnectionLevelRequests => Volatile.Read(ref _connectionLevelRequests);

    internal void CountConnectionLevelRequest() => Interlocked.Increment(ref _connectionLevelRequests);

    /// <summary>The log line the full path writes when forwarding fails, for the connection-level path.</summary>
    internal void LogForwardFailed(ForwardResult result, string vmName, int port) =>
        Log.ForwardFailed(_logger, result.Outcome.ToString(), vmName, port, result.Detail ?? result.Error?.Message);

    /// <summary>The HTTP/1.1 forwarder and its connection pool, shared with <see cref="Http1ConnectionForwarder"/>.</summary>
    internal Http1Forwarder Http1 => _http1;

    /// <summary>Called by the Kestrel setup once the main HTTPS listeners are bound.</summary>
    internal Func<int[]>? MainHttpsPortsSource { get; set; }

    public void Dispose()
    {
        _invoker.Dispose();
        _http1.Dispose();
    }

    /// <summary>Middleware entry point.</summary>
    public Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        FirstRequestDeadline.MarkStarted(context);
        var request = context.Request;
        if (!HeaderParsing.TryParseHost(request.Host.Value, out string name, out int? port))
            return next(context);

        bool ours = name == _controlHost || name.EndsWith(_vmDomainSuffix, StringComparison.Ordinal);
        if (!ours)
            return next(context);

        if (_sourceLimiter is not null && context.Connection.RemoteIpAddress is { } remote
            && !_sourceLimiter.TryAcquire(SourceNetwork.Of(remote), out var retryAfter))
            return TooManyRequestsAsync(context, name, retryAfter);

        if (!request.IsHttps)
            return RedirectToHttps(context, name);

        if (name == _controlHost)
            return ControlHostAsync(context, next);

        string vmName = name[..^_vmDomainSuffix.Length];
        if (!HeaderParsing.IsVmLabel(vmName))
            return Pages.NotFoundAsync(context);

        bool alternate = port is int p && !IsDefaultRoutePort(p);
        if (alternate && port is not (>= HttpFrontDoorLimits.MinAlternatePort and <= HttpFrontDoorLimits.MaxAlternatePort))
            return Pages.NotFoundAsync(context);

        return HandleSiteAsync(context, vmName, alternate ? port : null);
    }

    /// <summary>
    /// The connection-level forwarder's first question (<see cref="Http1ConnectionForwarder"/>), asked once per Host
    /// value on a connection: the VM name when <paramref name="host"/> is a site on its default route, else null.
    /// </summary>
    internal string? DefaultRouteVmName(string host)
    {
        if (!HeaderParsing.TryParseHost(host, out string name, out int? port)
            || !name.EndsWith(_vmDomainSuffix, StringComparison.Ordinal)
            || port is int p && !IsDefaultRoutePort(p))
            return null;
        string vmName = name[..^_vmDomainSuffix.Length];
        return HeaderParsing.IsVmLabel(vmName) ? vmName : null;
    }

    /// <summary>
    /// Its second, asked per request (a site made private stops here at once): the VM endpoint when an anonymous
    /// request to <paramref name="vmName"/> needs nothing but forwarding — a public site, a running VM, the source
    /// within its rate — else null, and the request takes the full path above (which also answers every refusal).
    /// </summary>
    internal async ValueTask<UpstreamEndpoint?> RoutePublicSiteAsync(string vmName, IPAddress? remote)
    {
        try
        {
            var site = await _directory.FindAsync(vmName, CancellationToken.None).ConfigureAwait(false);
            if (site is not { IsPublic: true })
                return null;
            var address = await _locator.GetAddressAsync(site.VmId, CancellationToken.None).ConfigureAwait(false);
            if (address is null)
                return null;
            // Last, so a request the full path answers is counted there once, not here too.
            if (_sourceLimiter is not null && remote is not null && !_sourceLimiter.TryAcquire(SourceNetwork.Of(remote), out _))
                return null;
            return new UpstreamEndpoint(address, site.DefaultPort);
        }
        catch (Exception ex)
        {
            Log.DirectoryFailed(_logger, ex);
            return null;
        }
    }

    /// <summary>
    /// The control host's pages and <c>/exec</c> run whole commands, so they leave the socket engine thread first:
    /// with inline I/O Kestrel runs the middleware there, and a command that took 40 ms would stall every
    /// connection polled by that thread. (Database calls leave it by themselves, in WarrenDatabase.)
    /// </summary>
    private async Task ControlHostAsync(HttpContext context, RequestDelegate next)
    {
        await SocketThread.Leave();
        var path = context.Request.Path;
        if (path.Equals("/exec", StringComparison.Ordinal))
            await _exec.HandleAsync(context).ConfigureAwait(false);
        else if (await SignupPages.TryHandleAsync(context).ConfigureAwait(false)) { }
        else if (path.Equals(ControlAuthPath, StringComparison.Ordinal))
            await ControlAuthAsync(context).ConfigureAwait(false);
        else if (path.Equals(ControlLoginPath, StringComparison.Ordinal))
            await ControlLoginAsync(context).ConfigureAwait(false);
        else if (path.Equals(ProfileApiPath, StringComparison.Ordinal))
            await ApiAsync(context, dashboard: false).ConfigureAwait(false);
        else if (path.Equals(DashboardApiPath, StringComparison.Ordinal))
            await ApiAsync(context, dashboard: true).ConfigureAwait(false);
        else if (path.Equals(ControlLoggedOutPath, StringComparison.Ordinal))
            await LoggedOutPageAsync(context).ConfigureAwait(false);
        else
            await next(context).ConfigureAwait(false);
    }

    private bool IsDefaultRoutePort(int port)
    {
        if (port == 443 || port == _options.PublicHttpsPort)
            return true;
        var ports = _mainHttpsPorts ??= MainHttpsPortsSource?.Invoke();
        return ports is not null && Array.IndexOf(ports, port) >= 0;
    }

    private int PublicHttpsPort()
    {
        if (_options.PublicHttpsPort is int configured)
            return configured;
        var ports = _mainHttpsPorts ??= MainHttpsPortsSource?.Invoke();
        return ports is { Length: > 0 } ? ports[0] : 443;
    }

    private Task TooManyRequestsAsync(HttpContext context, string name, TimeSpan retryAfter)
    {
        Pages.SetRetryAfter(context, retryAfter);
        if (name == _controlHost && context.Request.Path.Equals("/exec", StringComparison.Ordinal))
            return ExecEndpoint.ErrorAsync(context, StatusCodes.Status429TooManyRequests, "rate limit exceeded");
        return WriteTextAsync(context, StatusCodes.Status429TooManyRequests, "rate limit exceeded");
    }

    private Task RedirectToHttps(HttpContext context, string name)
    {
        int port = PublicHttpsPort();
        string authority = port == 443 ? name : $"{name}:{port}";
        var request = context.Request;
        context.Response.StatusCode = StatusCodes.Status308PermanentRedirect;
        context.Response.Headers.Location = "https://" + authority + request.PathBase + request.Path + request.QueryString;
        return Task.CompletedTask;
    }

    /// <summary>The cookie name for a request: <c>login-with-exe-&lt;public port&gt;</c>.</summary>
    private string CookieName(HttpContext context)
    {
        HeaderParsing.TryParseHost(context.Request.Host.Value, out _, out int? port);
        return FrontDoorTransformer.LoginCookiePrefix + (port ?? 443).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private async Task HandleSiteAsync(HttpContext context, string vmName, int? alternatePort)
    {
        var request = context.Request;
        var ct = context.RequestAborted;

        if (request.Path.StartsWithSegments(ExeDevPathPrefix, StringComparison.OrdinalIgnoreCase))
        {
            await HandleExeDevAsync(context, vmName).ConfigureAwait(false);
            return;
        }

        // :: Identity
        var identity = await AuthenticateAsync(context, vmName, ct).ConfigureAwait(false);
        if (identity.Rejected)
        {
            await WriteTextAsync(context, StatusCodes.Status400BadRequest, "conflicting authorization headers").ConfigureAwait(false);
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
            Log.DirectoryFailed(_logger, ex);
            await Pages.ServiceUnavailableAsync(context).ConfigureAwait(false);
            return;
        }

        var user = identity.User;
        if (site is null)
        {
            if (identity.TokenFailed)
                await Pages.InvalidAuthenticationAsync(context).ConfigureAwait(false);
            else if (user is null)
                RedirectToLogin(context);
            else
                await Pages.AccessDeniedAsync(context).ConfigureAwait(false);
            return;
        }

        bool owner = user is not null && user.UserId == site.OwnerUserId;
        var access = _access;

        if (user is not null && alternatePort is null && request.Query.TryGetValue(ShareLinkParameter, out var shareValues)
            && shareValues.Count == 1 && !string.IsNullOrEmpty(shareValues[0]))
        {
            // A share link: admit the person, then drop ?share from the URL (exe.dev), keeping every other
            // parameter byte for byte. A GET or HEAD is sent there with 302, as exe.dev does; any other method is not
            // redirected (a browser would turn a redirected POST into a GET and lose its body): the app gets it, minus share.
            if (!owner)
                await access.RedeemShareLinkAsync(site, user, shareValues[0]!, ct).ConfigureAwait(false);
            string target = WithoutQueryParameter(RequestTarget(context), ShareLinkParameter);
            if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method))
            {
                context.Response.StatusCode = StatusCodes.Status302Found;
                context.Response.Headers.Location = target;
                context.Response.Headers.CacheControl = "no-store";
                return;
            }
            SetRequestTarget(context, target);
        }

        bool allowed;
        if (alternatePort is not null)
        {
            // Alternate ports are the owner's alone, as exe.dev's: a share (or a public flag) covers the default route
            // only, so a person given the site does not reach the VM's other services (databases, dev servers, admin).
            if (user is not null && !owner && !identity.TokenFailed)
            {
                await Pages.AccessDeniedAsync(context).ConfigureAwait(false);
                return;
            }
            allowed = owner;
        }
        else if (site.IsPublic && (!identity.TokenFailed || identity.FromAuthorizationHeader))
            allowed = true; // a failed token in Authorization on a public site is the app's own credential
        else
            allowed = user is not null && (owner || await access.HasAccessAsync(site, user, ct).ConfigureAwait(false));

        if (!allowed)
        {
            if (identity.TokenFailed)
                await Pages.InvalidAuthenticationAsync(context).ConfigureAwait(false);
            else if (user is null)
                RedirectToLogin(context);
            else
                await Pages.NeedAccessAsync(context, StatusCodes.Status401Unauthorized, user.Email, _controlHost, site.Name,
                    identity.SessionKey is { } sessionKey && _accessRequests is not null ? FormToken(sessionKey) : null, ControlUrl("")).ConfigureAwait(false);
            return;
        }
        // A failed Authorization token on a public site belongs to the app: forward it untouched, anonymously.
        if (identity.TokenFailed)
            user = null;

        // :: Forward
        int targetPort = alternatePort ?? site.DefaultPort;
        IPAddress? address;
        try
        {
            address = await _locator.GetAddressAsync(site.VmId, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            Log.DirectoryFailed(_logger, ex);
            address = null;
        }
        if (address is null)
        {
            await UnreachableAsync(context, owner, targetPort).ConfigureAwait(false);
            return;
        }

        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodyLimit)
            bodyLimit.MaxRequestBodySize = HttpFrontDoorLimits.MaxProxiedRequestBodyBytes;

        var forwardState = new ForwardState
        {
            User = user,
            TokenCtx = identity.TokenCtx,
            RemoveAuthorization = identity.FromAuthorizationHeader && user is not null,
        };
        if (IsUpgrade(context))
        {
            await ForwardUpgradeAsync(context, forwardState, address, targetPort, owner, site.Name).ConfigureAwait(false);
            return;
        }

        var result = await _http1.ForwardAsync(context, new UpstreamEndpoint(address, targetPort), forwardState).ConfigureAwait(false);
        switch (result.Outcome)
        {
            case ForwardOutcome.Completed:
            case ForwardOutcome.Aborted:
                return;
            case ForwardOutcome.BadResponse:
                Log.ForwardFailed(_logger, result.Outcome.ToString(), site.Name, targetPort, result.Detail);
                await Pages.WriteAsync(context, StatusCodes.Status502BadGateway, Pages.BadGatewayTitle, Pages.BadGatewayBody).ConfigureAwait(false);
                return;
            case ForwardOutcome.RequestBodyRejected:
                await WriteTextAsync(context, result.StatusCode, result.Detail ?? "bad request body").ConfigureAwait(false);
                return;
            default:
                Log.ForwardFailed(_logger, result.Outcome.ToString(), site.Name, targetPort, result.Error?.Message);
                _locator.Forget(site.VmId); // the next request asks the engine again rather than trust this address
                await UnreachableAsync(context, owner, targetPort).ConfigureAwait(false);
                return;
        }
    }

    /// <summary>WebSocket and other upgrades (HTTP/1.1 Upgrade, HTTP/2 extended CONNECT) keep YARP's tunnel.</summary>
    private static bool IsUpgrade(HttpContext context) =>
        context.Features.Get<IHttpUpgradeFeature>()?.IsUpgradableRequest == true
        || context.Features.Get<IHttpExtendedConnectFeature>()?.IsExtendedConnect == true;

    private async Task ForwardUpgradeAsync(HttpContext context, ForwardState state, IPAddress address, int targetPort, bool owner, string siteName)
    {
        context.Features.Set(state);
        string destination = address.AddressFamily == AddressFamily.InterNetworkV6
            ? $"http://[{address}]:{targetPort}/"
            : $"http://{address}:{targetPort}/";
        var error = await _forwarder.SendAsync(context, destination, _invoker, _requestConfig, FrontDoorTransformer.Instance).ConfigureAwait(false);
        if (error != ForwarderError.None)
        {
            var feature = context.GetForwarderErrorFeature();
            Log.ForwardFailed(_logger, error.ToString(), siteName, targetPort, feature?.Exception?.Message);
            if (!context.Response.HasStarted && error is ForwarderError.Request or ForwarderError.RequestTimedOut or ForwarderError.NoAvailableDestinations)
            {
                context.Response.Clear();
                await UnreachableAsync(context, owner, targetPort).ConfigureAwait(false);
            }
        }
    }

    /// <summary>The query parameter of a share link (<c>https://NAME.domain/?share=TOKEN</c>).</summary>
    internal const string ShareLinkParameter = "share";

    /// <summary>The request's origin-form target as the client sent it (RFC 9112 §3.2.1), else rebuilt from path and query.</summary>
    private static string RequestTarget(HttpContext context)
    {
        string? raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (raw is { Length: > 0 } && raw[0] == '/')
            return raw;
        var request = context.Request;
        return request.PathBase.ToUriComponent() + request.Path.ToUriComponent() + request.QueryString.ToUriComponent();
    }

    /// <summary>Points the request at <paramref name="target"/> (an origin-form target) before it is forwarded.</summary>
    private static void SetRequestTarget(HttpContext context, string target)
    {
        int q = target.IndexOf('?', StringComparison.Ordinal);
        context.Request.QueryString = q < 0 ? QueryString.Empty : new QueryString(target[q..]);
        if (context.Features.Get<IHttpRequestFeature>() is { } feature)
            feature.RawTarget = target;
    }

    /// <summary>
    /// <paramref name="target"/> without any <paramref name="name"/>=… field of its query, the other fields kept as sent
    /// (same order, same encoding); a query left empty goes with its <c>?</c>.
    /// </summary>
    internal static string WithoutQueryParameter(string target, string name)
    {
        int q = target.IndexOf('?', StringComparison.Ordinal);
        if (q < 0)
            return target;
        var kept = new System.Text.StringBuilder(target.Length);
        foreach (var field in target.AsSpan(q + 1).Split('&'))
        {
            var text = target.AsSpan(q + 1)[field];
            int eq = text.IndexOf('=');
            var key = eq < 0 ? text : text[..eq];
            if (key.Length == 0 && text.Length == 0)
                continue;
            if (string.Equals(Uri.UnescapeDataString(key.ToString().Replace('+', ' ')), name, StringComparison.Ordinal))
                continue;
            kept.Append(kept.Length == 0 ? '?' : '&').Append(text);
        }
        return string.Concat(target.AsSpan(0, q), kept.ToString());
    }

    private static Task UnreachableAsync(HttpContext context, bool owner, int port) =>
        owner ? Pages.PortUnboundAsync(context, port) : Pages.ServiceUnavailableAsync(context);

    /// <summary>To the site's login page, coming back here afterwards. 307 keeps the method, so a POST gets 303.</summary>
    private static void RedirectToLogin(HttpContext context)
    {
        var request = context.Request;
        string relative = request.PathBase + request.Path + request.QueryString;
        context.Response.StatusCode = HttpMethods.IsPost(request.Method) ? StatusCodes.Status303SeeOther : StatusCodes.Status307TemporaryRedirect;
        context.Response.Headers.Location = ExeDevPathPrefix + "/login?redirect=" + Uri.EscapeDataString(HeaderParsing.SanitizeRedirect(relative));
        context.Response.Headers.CacheControl = "no-store";
    }

    /// <param name="SessionKey">The login session's key when the identity came from the cookie (anti-CSRF tokens are bound to it).</param>
    private readonly record struct Identity(WebUser? User, string? TokenCtx, bool FromAuthorizationHeader, bool TokenFailed, bool Rejected, string? SessionKey = null);

    private async ValueTask<Identity> AuthenticateAsync(HttpContext context, string vmName, CancellationToken ct)
    {
        var headers = context.Request.Headers;
        StringValues exeAuth = headers[ExeDevAuthorizationHeader];
        StringValues auth = headers.Authorization;
        if (exeAuth.Count == 1 && auth.Count == 1 && string.Equals(exeAuth[0], auth[0], StringComparison.Ordinal))
            return new Identity(null, null, false, false, Rejected: true);

        string? token = null;
        bool fromAuthorization = false;
        if (exeAuth.Count > 0)
        {
            // The preferred header: present but unusable is a failed token, not anonymity.
            if (exeAuth.Count != 1 || !HeaderParsing.TryGetBearer(exeAuth[0], out token))
                return new Identity(null, null, false, TokenFailed: true, false);
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
                Log.DirectoryFailed(_logger, ex);
                result = new TokenValidation(TokenValidationStatus.InternalError);
            }
            if (result.Status == TokenValidationStatus.Valid && result.Principal is { } principal)
                return new Identity(principal.User, principal.CtxJson, fromAuthorization, false, false);
            return new Identity(null, null, fromAuthorization, TokenFailed: true, false);
        }

        if (StringValues.IsNullOrEmpty(context.Request.Headers.Cookie))
            return default; // anonymous: the common case on a public site, no cookie name to build
        var session = await FindSessionAsync(context, CookieName(context), ct).ConfigureAwait(false);
        return new Identity(session?.User, null, false, false, false, session?.SessionKey);
    }

    private async ValueTask<WebSession?> FindSessionAsync(HttpContext context, string cookieName, CancellationToken ct)
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

    // ---------------------------------------------------------------- /__exe.dev/*

    private async Task HandleExeDevAsync(HttpContext context, string vmName)
    {
        var request = context.Request;
        string path = request.Path.Value!.ToLowerInvariant();
        bool get = HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method);
        switch (path)
        {
            case ExeDevPathPrefix + "/login":
                if (get)
                    await LoginPageAsync(context).ConfigureAwait(false);
                else
                    await Pages.MethodNotAllowedAsync(context, "GET, HEAD").ConfigureAwait(false);
                return;
            case ExeDevPathPrefix + "/auth":
                if (get)
                    await AuthAsync(context).ConfigureAwait(false);
                else
                    await Pages.MethodNotAllowedAsync(context, "GET, HEAD").ConfigureAwait(false);
                return;
            case ExeDevPathPrefix + "/logout":
                if (get)
                    await Pages.LogoutFormAsync(context, ControlUrl("")).ConfigureAwait(false);
                else if (HttpMethods.IsPost(request.Method))
                    await LogoutAsync(context).ConfigureAwait(false);
                else
                    await Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST").ConfigureAwait(false);
                return;
            case RequestAccessPath:
                if (get || HttpMethods.IsPost(request.Method))
                    await RequestAccessAsync(context, vmName).ConfigureAwait(false);
                else
                    await Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST").ConfigureAwait(false);
                return;
            default:
                await Pages.NotFoundAsync(context).ConfigureAwait(false);
                return;
        }
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
        context.Response.Headers.Location = ControlUrl(ControlLoginPath)
            + "?redirect=" + Uri.EscapeDataString(redirect) + "&return_host=" + Uri.EscapeDataString(host);
        context.Response.Headers.CacheControl = "no-store";
        return Task.CompletedTask;
    }

    /// <summary>An absolute URL on the control host's public HTTPS port.</summary>
    public string ControlUrl(string pathAndQuery)
    {
        int port = PublicHttpsPort();
        return "https://" + (port == 443 ? _controlHost : $"{_controlHost}:{port}") + pathAndQuery;
    }

    /// <summary>
    /// The login link for a secret issued with host = the control host: opening it logs the browser in
    /// on the control host, and from then on every site it may see logs it in with one redirect.
    /// </summary>
    public string BuildControlLoginLink(string secret) => ControlUrl(ControlAuthPath + "?secret=" + Uri.EscapeDataString(secret));

    /// <summary>Control host <c>GET /auth?secret=…&amp;redirect=…</c>: consumes the secret, sets <c>exe-auth</c>.</summary>
    private async Task ControlAuthAsync(HttpContext context)
    {
        var request = context.Request;
        if (!(HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method)))
        {
            await Pages.MethodNotAllowedAsync(context, "GET, HEAD").ConfigureAwait(false);
            return;
        }
        if (!request.Query.ContainsKey("secret"))
        {
            // exe.dev's sign-in address (https://exe.dev/auth?redirect=P&return_host=H): the same page as /login.
            await ControlLoginAsync(context).ConfigureAwait(false);
            return;
        }
        string secret = request.Query["secret"].ToString();
        string redirect = request.Query.ContainsKey("redirect") ? HeaderParsing.SanitizeRedirect(request.Query["redirect"]) : ControlLoginPath;
        string host = request.Host.Value!.ToLowerInvariant();
        LoginGrant? grant = null;
        if (secret.Length is > 0 and <= HeaderParsing.MaxTokenLength)
            grant = await _links.ConsumeAsync(secret, context.RequestAborted).ConfigureAwait(false);
        if (grant is null || !GrantMatchesHost(grant, host))
        {
            Log.LoginRejected(_logger, host);
            await Pages.WriteAsync(context, StatusCodes.Status401Unauthorized, "Login link not valid",
                $"<p>This login link is invalid, expired or already used. Run <code>ssh {Pages.E(_controlHost)} browser</code> for a new one.</p>").ConfigureAwait(false);
            return;
        }
        await StartSessionAsync(context, grant.User, ControlCookieName, host).ConfigureAwait(false);
        context.Response.StatusCode = StatusCodes.Status303SeeOther;
        context.Response.Headers.Location = redirect;
    }

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
            && returnName.EndsWith(_vmDomainSuffix, StringComparison.Ordinal)
            && HeaderParsing.IsVmLabel(returnName.AsSpan(0, returnName.Length - _vmDomainSuffix.Length)))
        {
            returnHost = returnPort is int p ? $"{returnName}:{p}" : returnName;
        }

        var session = await FindSessionAsync(context, ControlCookieName, ct).ConfigureAwait(false);
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
            + $"<p>To sign in, run</p><pre>ssh {Pages.E(_controlHost)} browser</pre><p>open the link it prints, then reload the site.</p>";
        if (_emailSender is not null)
        {
            string returnUrl = ControlLoginPath + "?redirect=" + Uri.EscapeDataString(redirect)
                + (returnHost is null ? "" : "&return_host=" + Uri.EscapeDataString(returnHost));
            body += "<form method=\"post\" action=\"" + ControlLoginPath + "\"><p>Or get a link by email:</p>"
                + $"<input type=\"hidden\" name=\"redirect\" value=\"{Pages.E(returnUrl)}\">"
                + "<input type=\"email\" name=\"email\" required autocomplete=\"email\"> <button>Email me a link</button></form>";
        }
        await Pages.WriteAsync(context, StatusCodes.Status401Unauthorized, Pages.SignInTitle, body).ConfigureAwait(false);
    }

    private bool GrantMatchesHost(LoginGrant grant, string host) =>
        grant.Host is null
        || string.Equals(grant.Host, host, StringComparison.OrdinalIgnoreCase)
        || string.Equals(grant.Host, host.Split(':')[0], StringComparison.OrdinalIgnoreCase);

    private async Task StartSessionAsync(HttpContext context, WebUser user, string cookieName, string host)
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
        Log.LoginSucceeded(_logger, user.UserId, host);
        context.Response.Headers.CacheControl = "no-store";
    }

    private async Task LoginEmailAsync(HttpContext context)
    {
        var sender = _emailSender;
        if (sender is null)
        {
            await Pages.NotFoundAsync(context).ConfigureAwait(false);
            return;
        }
        var form = await ReadOwnFormAsync(context).ConfigureAwait(false);
        if (form is null)
            return;
        string email = form["email"].ToString().Trim().ToLowerInvariant();
        string redirect = HeaderParsing.SanitizeRedirect(form["redirect"]);
        if (email.Length is > 0 and <= 254 && email.Contains('@') && _loginEmailLimiter.TryAcquire(email))
            await sender.SendLoginLinkAsync(email, redirect, context.RequestAborted).ConfigureAwait(false);
        await Pages.WriteAsync(context, StatusCodes.Status200OK, "Check your email",
            "<p>If that address may use this site, a login link is on its way.</p>").ConfigureAwait(false);
    }

    private async Task AuthAsync(HttpContext context)
    {
        var request = context.Request;
        var ct = context.RequestAborted;
        string secret = request.Query["secret"].ToString();
        string redirect = HeaderParsing.SanitizeRedirect(request.Query["redirect"]);
        string host = request.Host.Value!.ToLowerInvariant();

        LoginGrant? grant = null;
        if (secret.Length is > 0 and <= HeaderParsing.MaxTokenLength)
            grant = await _links.ConsumeAsync(secret, ct).ConfigureAwait(false);
        if (grant is null || !GrantMatchesHost(grant, host))
        {
            Log.LoginRejected(_logger, host);
            await Pages.WriteAsync(context, StatusCodes.Status401Unauthorized, "Login link not valid",
                "<p>This login link is invalid, expired or already used. Ask for a new one.</p>").ConfigureAwait(false);
            return;
        }
        await StartSessionAsync(context, grant.User, CookieName(context), host).ConfigureAwait(false);
        context.Response.StatusCode = StatusCodes.Status303SeeOther;
        context.Response.Headers.Location = redirect;
    }

    private async Task LogoutAsync(HttpContext context)
    {
        string cookieName = CookieName(context);
        string? value = HeaderParsing.GetCookie(context.Request.Headers.Cookie.ToString(), cookieName);
        if (!string.IsNullOrEmpty(value))
            await _sessions.DeleteAsync(LoginLinks.Hash(value), context.RequestAborted).ConfigureAwait(false);
        // Expired both ways (Max-Age=0 for RFC 6265 clients, a past Expires for older ones).
        context.Response.Cookies.Append(cookieName, "", new CookieOptions
        {
            Path = "/", HttpOnly = true, Secure = context.Request.IsHttps, SameSite = SameSiteMode.Lax,
            MaxAge = TimeSpan.Zero, Expires = DateTimeOffset.UnixEpoch, IsEssential = true,
        });
        // exe.dev's answer: 307 to the control host's logged-out page (which therefore also takes the repeated POST).
        context.Response.StatusCode = StatusCodes.Status307TemporaryRedirect;
        context.Response.Headers.Location = ControlUrl(ControlLoggedOutPath);
        context.Response.Headers.CacheControl = "no-store";
    }

    /// <summary>Control host <c>/logged-out</c>: GET, HEAD, or the POST a site's logout 307 repeats here.</summary>
    private static Task LoggedOutPageAsync(HttpContext context)
    {
        var method = context.Request.Method;
        if (!(HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsPost(method)))
            return Pages.MethodNotAllowedAsync(context, "GET, HEAD, POST");
        return Pages.WriteAsync(context, StatusCodes.Status200OK, "Logged out", "<p>You are logged out of that site.</p>");
    }

    internal static Task WriteTextAsync(HttpContext context, int status, string text)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync(text + "\n", context.RequestAborted);
    }

    private static class Log
    {
        private static readonly Action<ILogger, string, int, string, string?, Exception?> s_forwardFailed = LoggerMessage.Define<string, int, string, string?>(
            LogLevel.Information, EdgeEventIds.HttpForwardFailed, "Forwarding to VM {Vm} port {Port} failed: {Error} {Detail}");
        private static readonly Action<ILogger, Exception?> s_directoryFailed = LoggerMessage.Define(
            LogLevel.Error, EdgeEventIds.HttpDirectoryFailed, "A platform lookup failed during an HTTP request");
        private static readonly Action<ILogger, string, string, Exception?> s_loginOk = LoggerMessage.Define<string, string>(
            LogLevel.Information, EdgeEventIds.HttpLoginSucceeded, "User {UserId} logged in on {Host}");
        private static readonly Action<ILogger, string, Exception?> s_loginRejected = LoggerMessage.Define<string>(
            LogLevel.Information, EdgeEventIds.HttpLoginRejected, "Rejected a login link on {Host}");

        public static void ForwardFailed(ILogger l, string outcome, string vm, int port, string? detail) => s_forwardFailed(l, vm, port, outcome, detail, null);
        public static void DirectoryFailed(ILogger l, Exception ex) => s_directoryFailed(l, ex);
        public static void LoginSucceeded(ILogger l, string user, string host) => s_loginOk(l, user, host, null);
        private static readonly Action<ILogger, string, string, Exception?> s_accessRequested = LoggerMessage.Define<string, string>(
            LogLevel.Information, EdgeEventIds.HttpAccessRequested, "User {UserId} asked the owner of {Vm} for access");
        private static readonly Action<ILogger, string, string, Exception?> s_accessRequestFailed = LoggerMessage.Define<string, string>(
            LogLevel.Error, EdgeEventIds.HttpAccessRequestFailed, "Could not deliver user {UserId}'s access request for {Vm}");

        public static void LoginRejected(ILogger l, string host) => s_loginRejected(l, host, null);
        public static void AccessRequested(ILogger l, string user, string vm) => s_accessRequested(l, user, vm, null);
        public static void AccessRequestFailed(ILogger l, string user, string vm, Exception ex) => s_accessRequestFailed(l, user, vm, ex);
    }
}
