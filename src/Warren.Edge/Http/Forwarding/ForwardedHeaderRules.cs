using System.Text;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace Warren.Edge.Http.Forwarding;

/// <summary>
/// Which headers pass between client and VM, for every forwarding path (the lane, <see cref="Http1Forwarder"/> and
/// the YARP path that carries upgrades). As exe.dev: client <c>X-ExeDev-*</c> never reaches the VM, the
/// <c>login-with-exe-*</c> cookies stay at the front door, X-Forwarded-* are the front door's own.
/// Hop-by-hop fields (RFC 9110 §7.6.1) end at each hop.
/// </summary>
/// <remarks>
/// Field names containing <c>_</c> are dropped, as nginx does by default (<c>underscores_in_headers off</c>):
/// CGI, PHP and WSGI turn both <c>-</c> and <c>_</c> into <c>_</c> (RFC 3875 §4.1.18), so <c>X_ExeDev_Email</c>
/// or <c>X_Forwarded_For</c> would reach an app as the front door's own <c>HTTP_X_EXEDEV_EMAIL</c> or
/// <c>HTTP_X_FORWARDED_FOR</c>. <c>Forwarded</c> (RFC 7239) and <c>X-Real-IP</c> are removed rather than
/// set: the front door's account of the client is X-Forwarded-For/-Proto/-Host, and a client's copy of the
/// other two would be believed by apps that read them.
/// </remarks>
internal static class ForwardedHeaderRules
{
    public const string ExeDevHeaderPrefix = "X-ExeDev-";
    /// <summary>The fields the front door writes itself: the client's copies are replaced (X-Forwarded-*) or dropped (X-ExeDev-*).</summary>
    public const string ForwardedForHeader = "X-Forwarded-For";
    public const string ForwardedProtoHeader = "X-Forwarded-Proto";
    public const string ForwardedHostHeader = "X-Forwarded-Host";
    public const string UserIdHeader = "X-ExeDev-UserID";
    public const string EmailHeader = "X-ExeDev-Email";
    public const string TokenCtxHeader = "X-ExeDev-Token-Ctx";
    public const string CookieHeader = "Cookie";

    /// <summary>Login cookies never reach the VM (the identity stage's name for them).</summary>
    public const string LoginCookiePrefix = Identity.CredentialFields.LoginCookiePrefix;

    /// <summary>
    /// A client request header the forwarder does not copy: hop-by-hop, framing (re-derived), Host (written
    /// first), Cookie (filtered), X-Forwarded-* (rewritten), X-ExeDev-* (never from clients), and
    /// Authorization when it carried the front door's own token.
    /// </summary>
    public static bool IsReplacedRequestHeader(string name, bool removeAuthorization) =>
        IsReplacedRequestHeader(name.AsSpan(), removeAuthorization);

    /// <summary>The same rule for a field name still in the client's bytes (a validated token, so ASCII).</summary>
    public static bool IsReplacedRequestHeader(ReadOnlySpan<byte> name, bool removeAuthorization)
    {
        if (name.IndexOf((byte)'_') >= 0)
            return true;
        // Only names up to 17 characters or with the X-ExeDev- prefix can match; the prefix is all a longer name needs.
        Span<char> chars = stackalloc char[32];
        int length = Math.Min(name.Length, chars.Length);
        System.Text.Ascii.ToUtf16(name[..length], chars, out _);
        return name.Length > chars.Length
            ? name.Length >= ExeDevHeaderPrefix.Length && Ascii.EqualsIgnoreCase(name[..ExeDevHeaderPrefix.Length], "X-ExeDev-"u8)
            : IsReplacedRequestHeader(chars[..length], removeAuthorization);
    }

    private static bool IsReplacedRequestHeader(ReadOnlySpan<char> name, bool removeAuthorization)
    {
        if (name.Length > 0 && name[0] == ':')
            return true;
        if (IsClientOnlyRequestHeader(name))
            return true;
        return name.Length switch
        {
            2 => Is(name, HeaderNames.TE),
            4 => Is(name, HeaderNames.Host),
            6 => Is(name, HeaderNames.Cookie) || Is(name, HeaderNames.Expect),
            7 => Is(name, HeaderNames.Upgrade) || Is(name, HeaderNames.Trailer),
            10 => Is(name, HeaderNames.Connection) || Is(name, HeaderNames.KeepAlive),
            13 => removeAuthorization && Is(name, HeaderNames.Authorization),
            14 => Is(name, HeaderNames.ContentLength),
            15 => Is(name, ForwardedForHeader),
            16 => Is(name, HeaderNames.ProxyConnection) || Is(name, ForwardedHostHeader),
            17 => Is(name, HeaderNames.TransferEncoding) || Is(name, ForwardedProtoHeader),
            _ => false,
        };
    }

    /// <summary>
    /// A client request field that never reaches a VM on any path, upgrades included: a name with <c>_</c>, any
    /// <c>X-ExeDev-*</c>, <c>Forwarded</c> and <c>X-Real-IP</c> (see the remarks above). No allocation.
    /// </summary>
    public static bool IsClientOnlyRequestHeader(ReadOnlySpan<char> name) =>
        name.Contains('_')
        || name.StartsWith(ExeDevHeaderPrefix, StringComparison.OrdinalIgnoreCase)
        || name.Length == 9 && (Is(name, "Forwarded") || Is(name, "X-Real-IP"));

    private static bool Is(ReadOnlySpan<char> a, string b) => a.Equals(b, StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether a Connection header value lists <paramref name="name"/> (so that field is hop-by-hop too).</summary>
    public static bool IsNamedBy(StringValues connection, string name)
    {
        foreach (string? value in connection)
        {
            if (value is null)
                continue;
            foreach (var range in value.AsSpan().Split(','))
            {
                if (value.AsSpan()[range].Trim().Equals(name, StringComparison.OrdinalIgnoreCase))
                    return true;
            }
        }
        return false;
    }

    /// <summary>A field name is a token (RFC 9110 §5.1); HTTP/2 clients can send any bytes in a name.</summary>
    public static bool IsValidName(string name)
    {
        foreach (char c in name)
        {
            if (c > 0x7F || !Http1ResponseHead.IsTokenChar((byte)c))
                return false;
        }
        return name.Length > 0;
    }

    /// <summary>The Cookie header the VM gets: every value joined, the front door's login cookies removed; null for none.</summary>
    public static string? ForwardedCookie(StringValues cookies)
    {
        if (StringValues.IsNullOrEmpty(cookies))
            return null;
        string joined = cookies.Count == 1 ? cookies[0]! : string.Join("; ", cookies.ToArray());
        return HeaderParsing.RemoveCookies(joined, LoginCookiePrefix);
    }

    /// <summary>
    /// X-Forwarded-For: the client's own chain (it may be behind proxies of its own), every field in order as one
    /// list (RFC 9110 §5.3), empty values left out, with the peer appended — as <see cref="UpstreamHeadWriter"/> writes it.
    /// </summary>
    public static string ForwardedFor(StringValues existing, string client)
    {
        var chain = new StringBuilder();
        foreach (string? value in existing)
        {
            if (!string.IsNullOrEmpty(value))
                chain.Append(value).Append(", ");
        }
        return chain.Length == 0 ? client : chain.Append(client).ToString();
    }

    /// <summary>A VM response header that is not copied to the client: hop-by-hop, or framing Kestrel redoes.</summary>
    public static bool IsHopByHopResponseHeader(ReadOnlySpan<byte> name) => name.Length switch
    {
        2 => Ascii.EqualsIgnoreCase(name, "TE"u8),
        7 => Ascii.EqualsIgnoreCase(name, "Upgrade"u8) || Ascii.EqualsIgnoreCase(name, "Trailer"u8),
        10 => Ascii.EqualsIgnoreCase(name, "Connection"u8) || Ascii.EqualsIgnoreCase(name, "Keep-Alive"u8),
        14 => Ascii.EqualsIgnoreCase(name, "Content-Length"u8),
        16 => Ascii.EqualsIgnoreCase(name, "Proxy-Connection"u8),
        17 => Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8),
        _ => false,
    };

    /// <summary>
    /// A VM response field the client gets: not hop-by-hop (<see cref="IsHopByHopResponseHeader"/>) and not named by
    /// the response's Connection field (RFC 9110 §7.6.1). <paramref name="bytes"/> holds the parsed head.
    /// </summary>
    public static bool IsRelayedResponseField(Http1ResponseHead head, ReadOnlySpan<byte> bytes, ReadOnlySpan<byte> name) =>
        !IsHopByHopResponseHeader(name) && !head.IsNamedByConnection(bytes, name);

    /// <summary>The shared constant for a common response header name (no allocation; Kestrel's known-header fast path), else null.</summary>
    public static string? KnownResponseHeaderName(ReadOnlySpan<byte> name)
    {
        string? known = name.Length switch
        {
            4 => Ascii.EqualsIgnoreCase(name, "Date"u8) ? HeaderNames.Date : Ascii.EqualsIgnoreCase(name, "ETag"u8) ? HeaderNames.ETag
                : Ascii.EqualsIgnoreCase(name, "Vary"u8) ? HeaderNames.Vary : null,
            6 => Ascii.EqualsIgnoreCase(name, "Server"u8) ? HeaderNames.Server : null,
            7 => Ascii.EqualsIgnoreCase(name, "Expires"u8) ? HeaderNames.Expires : null,
            8 => Ascii.EqualsIgnoreCase(name, "Location"u8) ? HeaderNames.Location : null,
            10 => Ascii.EqualsIgnoreCase(name, "Set-Cookie"u8) ? HeaderNames.SetCookie : null,
            12 => Ascii.EqualsIgnoreCase(name, "Content-Type"u8) ? HeaderNames.ContentType : null,
            13 => Ascii.EqualsIgnoreCase(name, "Cache-Control"u8) ? HeaderNames.CacheControl
                : Ascii.EqualsIgnoreCase(name, "Last-Modified"u8) ? HeaderNames.LastModified
                : Ascii.EqualsIgnoreCase(name, "Accept-Ranges"u8) ? HeaderNames.AcceptRanges : null,
            16 => Ascii.EqualsIgnoreCase(name, "Content-Encoding"u8) ? HeaderNames.ContentEncoding : null,
            _ => null,
        };
        return known;
    }
}
