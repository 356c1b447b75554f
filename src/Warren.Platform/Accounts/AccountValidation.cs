using System.Text;
using System.Text.RegularExpressions;

namespace Warren.Platform.Accounts;

/// <summary>E-mail address checks: lower-cased, one '@', a dotted domain, no spaces or control characters.</summary>
public static partial class EmailAddress
{
    /// <summary>RFC 5321 §4.5.3.1.3: a path is at most 256 octets, so an address at most 254.</summary>
    public const int MaxLength = 254;
    /// <summary>RFC 5321 §4.5.3.1.1: local part at most 64 octets.</summary>
    public const int MaxLocalPartLength = 64;

    [GeneratedRegex(@"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$", RegexOptions.CultureInvariant)]
    private static partial Regex Shape();

    /// <summary>Trims and lower-cases; false when it is not a plausible address.</summary>
    public static bool TryNormalize(string? input, out string email)
    {
        email = (input ?? "").Trim().ToLowerInvariant();
        if (email.Length == 0 || email.Length > MaxLength) return false;
        int at = email.IndexOf('@');
        if (at <= 0 || at > MaxLocalPartLength) return false;
        if (email.StartsWith('.') || email.Contains("..", StringComparison.Ordinal) || email[..at].EndsWith('.')) return false;
        return Shape().IsMatch(email);
    }

    /// <summary>The normalized address, or <see cref="PlatformException"/> <c>invalid_email</c>.</summary>
    public static string Normalize(string? input)
        => TryNormalize(input, out var e) ? e
           : throw new PlatformException(PlatformErrorCodes.InvalidEmail, $"Invalid email format: \"{input?.Trim()}\"");
}

/// <summary>
/// Domains that no mail can reach because they are reserved for documentation and testing (RFC 2606 §2 and §3:
/// the TLDs .test, .example, .invalid and .localhost; the second-level example.com, example.net and example.org).
/// Warren does not send mail there: the person is told instead, rather than waiting for a message that never comes.
/// </summary>
public static class ReservedEmailDomains
{
    private static readonly string[] ReservedTopLevel = ["test", "example", "invalid", "localhost"];
    private static readonly string[] ReservedSecondLevel = ["example.com", "example.net", "example.org"];

    /// <summary>Whether <paramref name="email"/> (normalized) is at a reserved domain or a name under one.</summary>
    public static bool IsReserved(string email)
    {
        int at = email.LastIndexOf('@');
        var domain = at < 0 ? email : email[(at + 1)..];
        foreach (var tld in ReservedTopLevel)
            if (domain == tld || domain.EndsWith("." + tld, StringComparison.Ordinal)) return true;
        foreach (var name in ReservedSecondLevel)
            if (domain == name || domain.EndsWith("." + name, StringComparison.Ordinal)) return true;
        return false;
    }

    /// <summary>What the person is told instead of being mailed.</summary>
    public static string Message(string email)
        => $"{email} is at a domain reserved for examples (RFC 2606), so no mail can reach it and none was sent. Please use an address you can receive mail at.";
}

/// <summary>SSH key names, sanitised as exe.dev's sshkey/comment.go: shell metacharacters removed, spaces to '-', at most 64 bytes.</summary>
public static class KeyNames
{
    /// <summary>exe.dev truncates key names to 64 bytes.</summary>
    public const int MaxBytes = 64;

    private const string ShellMetacharacters = "`$&|;<>()[]{}*?!~#'\"\\";

    /// <summary>The sanitised name; empty when nothing usable is left.</summary>
    public static string Sanitize(string? name)
    {
        if (string.IsNullOrWhiteSpace(name)) return "";
        var sb = new StringBuilder(name.Length);
        foreach (var ch in name.Trim())
        {
            if (char.IsControl(ch) || ShellMetacharacters.Contains(ch)) continue;
            sb.Append(char.IsWhiteSpace(ch) ? '-' : ch);
        }
        var s = sb.ToString();
        if (Encoding.UTF8.GetByteCount(s) <= MaxBytes) return s;
        // Truncate on a rune boundary.
        var outp = new StringBuilder();
        int bytes = 0;
        foreach (var r in s.EnumerateRunes())
        {
            if (bytes + r.Utf8SequenceLength > MaxBytes) break;
            bytes += r.Utf8SequenceLength;
            outp.Append(r.ToString());
        }
        return outp.ToString();
    }

    /// <summary>"key-N": the default name of a key added without one.</summary>
    public static string Default(int n) => $"key-{n}";
}
