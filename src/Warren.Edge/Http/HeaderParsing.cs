using System.Buffers;
using System.Text;

namespace Warren.Edge.Http;

/// <summary>
/// Parsers for the request headers the front door acts on. They face the network: every
/// input is bounded, none throws, and each is property-tested (HeaderParsingTests).
/// </summary>
public static class HeaderParsing
{
    /// <summary>Largest token accepted (exe.dev: the whole token ≤ 8192 bytes).</summary>
    public const int MaxTokenLength = 8192;

    /// <summary>Largest Basic credential we decode: base64 of user:token with a maximal token and a generous user name.</summary>
    public const int MaxBasicCredentialsLength = 4 * (MaxTokenLength + 1024) / 3 + 4;

    /// <summary>Largest redirect target kept; longer ones become "/".</summary>
    public const int MaxRedirectLength = 4096;

    /// <summary>
    /// <c>Bearer TOKEN</c> with the scheme case-insensitive (RFC 9110 §11.1, RFC 6750 §2.1).
    /// The token is the rest after whitespace; it may not contain whitespace or be longer than <see cref="MaxTokenLength"/>.
    /// </summary>
    public static bool TryGetBearer(string? value, out string token) => TryGetCredentials(value, "Bearer", MaxTokenLength, out token);

    /// <summary><c>Basic base64(user:password)</c> (RFC 7617): returns the password (the token), which must be non-empty.</summary>
    public static bool TryGetBasicPassword(string? value, out string password)
    {
        password = "";
        if (!TryGetCredentials(value, "Basic", MaxBasicCredentialsLength, out string encoded))
            return false;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(encoded.Length);
        try
        {
            if (!Convert.TryFromBase64String(encoded, buffer, out int written))
                return false;
            string decoded;
            try
            {
                decoded = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(buffer, 0, written);
            }
            catch (DecoderFallbackException)
            {
                return false;
            }
            int colon = decoded.IndexOf(':');
            if (colon < 0 || colon == decoded.Length - 1)
                return false;
            password = decoded[(colon + 1)..];
            return password.Length <= MaxTokenLength;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
        }
    }

    private static bool TryGetCredentials(string? value, string scheme, int maxLength, out string credentials)
    {
        credentials = "";
        if (string.IsNullOrEmpty(value))
            return false;
        var span = value.AsSpan().Trim();
        if (span.Length <= scheme.Length || !span.StartsWith(scheme, StringComparison.OrdinalIgnoreCase) || !IsSpace(span[scheme.Length]))
            return false;
        var rest = span[scheme.Length..].TrimStart();
        if (rest.Length == 0 || rest.Length > maxLength)
            return false;
        foreach (char c in rest)
        {
            if (c <= ' ' || c >= '\u007f')
                return false;
        }
        credentials = rest.ToString();
        return true;
    }

    private static bool IsSpace(char c) => c is ' ' or '\t';

    /// <summary>
    /// The value of cookie <paramref name="name"/> in a Cookie header (RFC 6265 §4.2.1: <c>a=b; c=d</c>),
    /// or null. The first occurrence wins (RFC 6265 §5.4: longer paths first; ours are all <c>/</c>).
    /// </summary>
    public static string? GetCookie(string? header, string name)
    {
        if (string.IsNullOrEmpty(header))
            return null;
        foreach (var range in header.AsSpan().Split(';'))
        {
            var pair = header.AsSpan()[range].Trim();
            int eq = pair.IndexOf('=');
            if (eq <= 0)
                continue;
            if (pair[..eq].Trim().Equals(name, StringComparison.Ordinal))
                return pair[(eq + 1)..].Trim().Trim('"').ToString();
        }
        return null;
    }

    /// <summary>
    /// A Cookie header without the cookies whose name starts with <paramref name="prefix"/>
    /// (case-insensitive), or null when nothing remains. Other pairs are kept byte for byte.
    /// </summary>
    public static string? RemoveCookies(string header, string prefix)
    {
        if (string.IsNullOrWhiteSpace(header))
            return null;
        if (header.IndexOf(prefix, StringComparison.OrdinalIgnoreCase) < 0)
            return header;
        var result = new StringBuilder(header.Length);
        foreach (var range in header.AsSpan().Split(';'))
        {
            var pair = header.AsSpan()[range].Trim();
            if (pair.IsEmpty)
                continue;
            int eq = pair.IndexOf('=');
            var name = (eq < 0 ? pair : pair[..eq]).Trim();
            if (name.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
                continue;
            if (result.Length > 0)
                result.Append("; ");
            result.Append(pair);
        }
        return result.Length == 0 ? null : result.ToString();
    }

    /// <summary>A Set-Cookie value without any <c>Domain=</c> attribute (RFC 6265 §5.2.3), so the cookie stays host-only.</summary>
    public static string RemoveDomainAttribute(string setCookie)
    {
        if (setCookie.IndexOf("domain", StringComparison.OrdinalIgnoreCase) < 0)
            return setCookie;
        var result = new StringBuilder(setCookie.Length);
        bool first = true;
        foreach (var range in setCookie.AsSpan().Split(';'))
        {
            var part = setCookie.AsSpan()[range];
            if (!first)
            {
                var trimmed = part.Trim();
                int eq = trimmed.IndexOf('=');
                var attribute = (eq < 0 ? trimmed : trimmed[..eq]).Trim();
                if (attribute.Equals("domain", StringComparison.OrdinalIgnoreCase))
                    continue;
                result.Append(';');
            }
            result.Append(part);
            first = false;
        }
        return result.ToString();
    }

    /// <summary>
    /// Splits a Host header into a lower-case name (trailing dot removed) and an optional port.
    /// False for empty names, bad ports, or IPv6 literals (never a VM name).
    /// </summary>
    public static bool TryParseHost(string? host, out string name, out int? port)
    {
        name = "";
        port = null;
        if (string.IsNullOrEmpty(host) || host[0] == '[')
            return false;
        var span = host.AsSpan();
        int colon = span.LastIndexOf(':');
        if (colon >= 0)
        {
            var portText = span[(colon + 1)..];
            if (portText.Length is 0 or > 5 || !int.TryParse(portText, System.Globalization.NumberStyles.None, null, out int p) || p is 0 or > ushort.MaxValue)
                return false;
            port = p;
            span = span[..colon];
        }
        if (span.EndsWith("."))
            span = span[..^1];
        if (span.IsEmpty || span.Contains(':'))
            return false;
        name = span.ToString().ToLowerInvariant();
        return true;
    }

    /// <summary>A VM name as a DNS label: 1–63 of <c>a-z 0-9 -</c> (RFC 1035 §2.3.1, lower case), no leading or trailing hyphen.</summary>
    public static bool IsVmLabel(ReadOnlySpan<char> label)
    {
        if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-')
            return false;
        foreach (char c in label)
        {
            if (c is not ((>= 'a' and <= 'z') or (>= '0' and <= '9') or '-'))
                return false;
        }
        return true;
    }

    /// <summary>
    /// A redirect target that stays on this site: a path starting with one <c>/</c> (not <c>//</c> or
    /// <c>/\</c>, which browsers treat as another host), without control characters; anything else → <c>/</c>.
    /// </summary>
    public static string SanitizeRedirect(string? redirect)
    {
        if (string.IsNullOrEmpty(redirect) || redirect.Length > MaxRedirectLength || redirect[0] != '/')
            return "/";
        if (redirect.Length > 1 && redirect[1] is '/' or '\\')
            return "/";
        foreach (char c in redirect)
        {
            if (char.IsControl(c) || c == '\\')
                return "/";
        }
        return redirect;
    }
}
