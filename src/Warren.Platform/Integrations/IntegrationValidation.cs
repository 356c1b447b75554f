using System.Net;
using System.Text.RegularExpressions;

namespace Warren.Platform.Integrations;

/// <summary>The checks on what <c>integrations add</c> is given; each failure is a <c>invalid_argument</c> with a clear message.</summary>
public static partial class IntegrationValidation
{
    /// <summary>RFC 1035 §2.3.1 label, lower case: the name becomes <c>NAME.int.&lt;vm-domain&gt;</c>.</summary>
    public const int MaxNameLength = 63;

    /// <summary>Fields the reflection integration can serve (exe.dev's docs: reflection).</summary>
    public static readonly IReadOnlyList<string> ReflectionFields = ["email", "integrations", "tags", "comment", "default_port"];

    /// <summary>
    /// Request headers an integration may not inject: hop-by-hop and framing headers (RFC 9110 §7.6.1, RFC 9112 §6),
    /// Host (the proxy sets it to the target's), and Warren's own <c>X-Exedev-*</c> namespace.
    /// </summary>
    private static readonly HashSet<string> s_forbiddenHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "Host", "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
        "Content-Length", "Expect", "Proxy-Authorization", "Proxy-Authenticate",
    };

    public const string ExeDevHeaderPrefix = "X-Exedev-";

    [GeneratedRegex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", RegexOptions.CultureInvariant)]
    private static partial Regex NameShape();

    /// <summary>RFC 9110 §5.6.2 token characters.</summary>
    [GeneratedRegex("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", RegexOptions.CultureInvariant)]
    private static partial Regex TokenShape();

    public static bool IsValidName(string? name) => name is { Length: > 0 and <= MaxNameLength } && NameShape().IsMatch(name);

    public static void ValidateName(string? name)
    {
        if (!IsValidName(name))
            throw Invalid($"invalid integration name \"{Shown(name ?? "")}\": use 1-{MaxNameLength} lower-case letters, digits and '-' (a DNS label; no leading or trailing '-')");
    }

    /// <summary>A parsed <c>--target</c>: the URL without user info, and the basic-auth pair it carried.</summary>
    public sealed record ParsedTarget(Uri Url, string? BasicUser, string? BasicPassword);

    /// <summary>
    /// <c>--target https://[user:password@]HOST[:PORT][/path]</c>: https only, a DNS name (never a literal IP address,
    /// never localhost or Warren's own domains), no query or fragment.
    /// </summary>
    public static ParsedTarget ParseTarget(string? target, PlatformOptions platform)
    {
        if (string.IsNullOrWhiteSpace(target)) throw Invalid("missing --target (https://HOST[:PORT][/path])");
        if (target.Length > IntegrationLimits.MaxTargetLength) throw Invalid($"--target is longer than {IntegrationLimits.MaxTargetLength} characters");
        if (!Uri.TryCreate(target, UriKind.Absolute, out var uri) || uri.IsFile || uri.IsUnc)
            throw Invalid("--target is not a URL; use https://HOST[:PORT][/path]");
        if (uri.Scheme != Uri.UriSchemeHttps) throw Invalid($"--target must use https (got \"{uri.Scheme}\")");
        if (uri.HostNameType is not UriHostNameType.Dns || IPAddress.TryParse(uri.IdnHost.Trim('[', ']'), out _))
            throw Invalid("--target must name a host, not an IP address");
        string host = uri.IdnHost.TrimEnd('.').ToLowerInvariant();
        if (host.Length == 0 || !host.Contains('.'))
            throw Invalid($"--target host \"{Shown(host)}\" is not a fully qualified domain name");
        if (host == "localhost" || host.EndsWith(".localhost", StringComparison.Ordinal) || host.EndsWith(".local", StringComparison.Ordinal)
            || host.EndsWith(".internal", StringComparison.Ordinal))
            throw Invalid("--target may not be a local host name");
        foreach (var own in new[] { platform.ControlHost, platform.VmDomain })
        {
            string o = own.TrimEnd('.').ToLowerInvariant();
            if (o.Length > 0 && (host == o || host.EndsWith("." + o, StringComparison.Ordinal)))
                throw Invalid($"--target may not be one of Warren's own names ({o}); use --peer --target VM for another of your VMs");
        }
        if (uri.Query.Length > 0 || uri.Fragment.Length > 0) throw Invalid("--target may not have a query or fragment");

        string? user = null, password = null;
        if (uri.UserInfo.Length > 0)
        {
            int colon = uri.UserInfo.IndexOf(':');
            user = Uri.UnescapeDataString(colon < 0 ? uri.UserInfo : uri.UserInfo[..colon]);
            password = colon < 0 ? "" : Uri.UnescapeDataString(uri.UserInfo[(colon + 1)..]);
            if (user.Contains(':') || user.Any(char.IsControl) || password.Any(char.IsControl))
                throw Invalid("--target user info is not a valid user:password pair");
        }
        var clean = new UriBuilder(uri) { UserName = "", Password = "" }.Uri;
        return new ParsedTarget(clean, user, password);
    }

    /// <summary>One <c>--header NAME:VALUE</c>. Errors name the header, never the value.</summary>
    public static (string Name, string Value) ParseHeader(string spec)
    {
        int colon = spec.IndexOf(':');
        if (colon <= 0) throw Invalid("--header must be NAME:VALUE");
        string name = spec[..colon].Trim();
        string value = spec[(colon + 1)..].Trim();
        ValidateHeader(name, value);
        return (name, value);
    }

    public static void ValidateHeader(string name, string value)
    {
        if (!TokenShape().IsMatch(name)) throw Invalid($"invalid header name \"{Shown(name)}\"");
        if (name.StartsWith(ExeDevHeaderPrefix, StringComparison.OrdinalIgnoreCase))
            throw Invalid($"header \"{Shown(name)}\" is reserved: X-Exedev-* headers are set by Warren");
        if (s_forbiddenHeaders.Contains(name)) throw Invalid($"header \"{name}\" cannot be injected");
        if (value.Length == 0) throw Invalid($"header \"{name}\" has an empty value");
        if (name.Length + value.Length > IntegrationLimits.MaxHeaderValueLength) throw Invalid($"header \"{name}\" is too long");
        // RFC 9110 §5.5: no CR, LF or NUL in a field value (they would split or end the header).
        foreach (char c in value)
            if (c is '\r' or '\n' or '\0' || (c < ' ' && c != '\t') || c == '\x7f')
                throw Invalid($"header \"{name}\" has a control character in its value");
    }

    /// <summary><c>--fields a,b</c> for reflection: a non-empty subset of <see cref="ReflectionFields"/>.</summary>
    public static IReadOnlyList<string> ParseFields(string spec)
    {
        var fields = spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToList();
        if (fields.Count == 0) throw Invalid("--fields is empty");
        foreach (var f in fields)
            if (!ReflectionFields.Contains(f))
                throw Invalid($"unknown reflection field \"{Shown(f)}\"; known: {string.Join(", ", ReflectionFields)}");
        return fields;
    }

    internal static PlatformException Invalid(string message) => new(PlatformErrorCodes.InvalidArgument, message);

    /// <summary>User text in a message, cut short.</summary>
    internal static string Shown(string s) => s.Length > 64 ? s[..64] + "…" : s;
}
