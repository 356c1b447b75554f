using System.Net.Http.Headers;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;
using Yarp.ReverseProxy.Forwarder;

namespace Warren.Edge.Http.Forwarding;

/// <summary>Per-request facts the transformer needs, set by the front door (<c>FrontDoor/HttpFrontDoor</c>) before forwarding.</summary>
internal sealed class ForwardState
{
    public WebUser? User;
    public string? TokenCtx;
    /// <summary>The token came in <c>Authorization</c>: remove it before the VM sees it (exe.dev).</summary>
    public bool RemoveAuthorization;
}

/// <summary>
/// Header rules between client and VM for upgraded requests (WebSockets), which stay on YARP's tunnel — every
/// decision and name from <see cref="ForwardedHeaderRules"/>, as <see cref="UpstreamHeadWriter"/> takes them (exe.dev):
/// request — every client <c>X-ExeDev-*</c>, name with <c>_</c>, <c>Forwarded</c> and <c>X-Real-IP</c> removed, <c>login-with-exe-*</c> cookies removed, the token's
/// header removed, <c>X-Forwarded-For</c> (appended) / <c>-Proto</c> / <c>-Host</c> set, identity headers added,
/// original Host kept; response — <c>Domain=</c> removed from every Set-Cookie.
/// </summary>
internal sealed class FrontDoorTransformer : HttpTransformer
{
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
            headers.Remove(ForwardedHeaderRules.CookieHeader);
            if (ForwardedHeaderRules.ForwardedCookie(cookies) is { } kept)
                headers.TryAddWithoutValidation(ForwardedHeaderRules.CookieHeader, kept);
        }

        headers.Host = request.Host.Value;

        string? client = httpContext.Connection.RemoteIpAddress?.ToString();
        var existing = request.Headers[ForwardedHeaderRules.ForwardedForHeader];
        headers.Remove(ForwardedHeaderRules.ForwardedForHeader);
        if (client is not null)
            headers.TryAddWithoutValidation(ForwardedHeaderRules.ForwardedForHeader, ForwardedHeaderRules.ForwardedFor(existing, client));
        headers.Remove(ForwardedHeaderRules.ForwardedProtoHeader);
        headers.TryAddWithoutValidation(ForwardedHeaderRules.ForwardedProtoHeader, request.Scheme);
        headers.Remove(ForwardedHeaderRules.ForwardedHostHeader);
        headers.TryAddWithoutValidation(ForwardedHeaderRules.ForwardedHostHeader, request.Host.Value);

        if (state?.User is { } user)
        {
            headers.TryAddWithoutValidation(ForwardedHeaderRules.UserIdHeader, user.UserId);
            headers.TryAddWithoutValidation(ForwardedHeaderRules.EmailHeader, user.Email);
            if (state.TokenCtx is { } ctx)
                headers.TryAddWithoutValidation(ForwardedHeaderRules.TokenCtxHeader, ctx);
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
