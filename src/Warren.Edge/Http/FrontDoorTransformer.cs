using System.Net.Http.Headers;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;
using Warren.Edge.Http.Forwarding;
using Yarp.ReverseProxy.Forwarder;

namespace Warren.Edge.Http;

/// <summary>Per-request facts the transformer needs, set by <see cref="HttpFrontDoor"/> before forwarding.</summary>
internal sealed class ForwardState
{
    public WebUser? User;
    public string? TokenCtx;
    /// <summary>The token came in <c>Authorization</c>: remove it before the VM sees it (exe.dev).</summary>
    public bool RemoveAuthorization;
}

/// <summary>
/// Header rules between client and VM for upgraded requests (WebSockets), which stay on YARP's tunnel —
/// the same rules as <see cref="Http1Forwarder"/>'s (exe.dev):
/// request — every client <c>X-ExeDev-*</c>, name with <c>_</c>, <c>Forwarded</c> and <c>X-Real-IP</c> removed, <c>login-with-exe-*</c> cookies removed, the token's
/// header removed, <c>X-Forwarded-For</c> (appended) / <c>-Proto</c> / <c>-Host</c> set, identity headers added,
/// original Host kept; response — <c>Domain=</c> removed from every Set-Cookie.
/// </summary>
internal sealed class FrontDoorTransformer : HttpTransformer
{
    public const string ExeDevHeaderPrefix = ForwardedHeaderRules.ExeDevHeaderPrefix;
    public const string LoginCookiePrefix = ForwardedHeaderRules.LoginCookiePrefix;
    public const string UserIdHeader = "X-ExeDev-UserID";
    public const string EmailHeader = "X-ExeDev-Email";
    public const string TokenCtxHeader = "X-ExeDev-Token-Ctx";

    public static readonly FrontDoorTransformer Instance = new();

    public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix, CancellationToken cancellationToken)
    {
        await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken).ConfigureAwait(false);
        var state = httpContext.Features.Get<ForwardState>();
        var headers = proxyRequest.Headers;
        var request = httpContext.Request;

        // Client-supplied X-ExeDev-* never reaches the VM, X-Exedev-Source-Vm included: Warren sets that one
        // only on VM-to-VM requests, which do not pass through here. Nor do names with '_', Forwarded or X-Real-IP
        // (ForwardedHeaderRules: the one rule of every path).
        List<string>? strip = null;
        foreach (var header in request.Headers)
        {
            if (ForwardedHeaderRules.IsClientOnlyRequestHeader(header.Key))
                (strip ??= new()).Add(header.Key);
        }
        if (strip is not null)
        {
            foreach (var name in strip)
                headers.Remove(name);
        }

        if (state?.RemoveAuthorization == true)
            headers.Remove("Authorization");

        var cookies = request.Headers.Cookie;
        if (!StringValues.IsNullOrEmpty(cookies))
        {
            headers.Remove("Cookie");
            if (ForwardedHeaderRules.ForwardedCookie(cookies) is { } kept)
                headers.TryAddWithoutValidation("Cookie", kept);
        }

        headers.Host = request.Host.Value;

        string? client = httpContext.Connection.RemoteIpAddress?.ToString();
        var existing = request.Headers["X-Forwarded-For"];
        headers.Remove("X-Forwarded-For");
        if (client is not null)
            headers.TryAddWithoutValidation("X-Forwarded-For", ForwardedHeaderRules.ForwardedFor(existing, client));
        headers.Remove("X-Forwarded-Proto");
        headers.TryAddWithoutValidation("X-Forwarded-Proto", request.Scheme);
        headers.Remove("X-Forwarded-Host");
        headers.TryAddWithoutValidation("X-Forwarded-Host", request.Host.Value);

        if (state?.User is { } user)
        {
            headers.TryAddWithoutValidation(UserIdHeader, user.UserId);
            headers.TryAddWithoutValidation(EmailHeader, user.Email);
            if (state.TokenCtx is { } ctx)
                headers.TryAddWithoutValidation(TokenCtxHeader, ctx);
        }
    }

    public override async ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse, CancellationToken cancellationToken)
    {
        bool result = await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken).ConfigureAwait(false);
        var setCookie = httpContext.Response.Headers.SetCookie;
        if (setCookie.Count > 0)
        {
            var rewritten = new string?[setCookie.Count];
            bool changed = false;
            for (int i = 0; i < setCookie.Count; i++)
            {
                rewritten[i] = HeaderParsing.RemoveDomainAttribute(setCookie[i] ?? "");
                changed |= !ReferenceEquals(rewritten[i], setCookie[i]);
            }
            if (changed)
                httpContext.Response.Headers.SetCookie = new StringValues(rewritten);
        }
        return result;
    }
}
