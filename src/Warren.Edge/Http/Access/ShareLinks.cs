using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Warren.Edge.Http.Access;

/// <summary>
/// Share links (<c>https://NAME.domain/?share=TOKEN</c>, exe.dev's docs: sharing): after the person is admitted the
/// parameter leaves the URL, every other parameter kept byte for byte.
/// </summary>
public static class ShareLinks
{
    /// <summary>The query parameter of a share link.</summary>
    public const string Parameter = "share";

    /// <summary>The share token of a request, when it carries exactly one non-empty one.</summary>
    public static string? TokenOf(HttpRequest request) =>
        request.Query.TryGetValue(Parameter, out var values) && values.Count == 1 && !string.IsNullOrEmpty(values[0]) ? values[0] : null;

    /// <summary>The request's origin-form target as the client sent it (RFC 9112 §3.2.1), else rebuilt from path and query.</summary>
    public static string RequestTarget(HttpContext context)
    {
        string? raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (raw is { Length: > 0 } && raw[0] == '/')
            return raw;
        var request = context.Request;
        return request.PathBase.ToUriComponent() + request.Path.ToUriComponent() + request.QueryString.ToUriComponent();
    }

    /// <summary>Points the request at <paramref name="target"/> (an origin-form target) before it is forwarded.</summary>
    public static void SetRequestTarget(HttpContext context, string target)
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
    public static string WithoutQueryParameter(string target, string name)
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
}
