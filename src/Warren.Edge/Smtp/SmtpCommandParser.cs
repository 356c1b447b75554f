using System.Globalization;

namespace Warren.Edge.Smtp;

/// <summary>The commands this server knows (RFC 5321 §4.1.1, RFC 3207 STARTTLS).</summary>
public enum SmtpVerb { Unknown, Helo, Ehlo, Mail, Rcpt, Data, Rset, Noop, Quit, Vrfy, Expn, Help, StartTls }

/// <summary>A mailbox as RFC 5321 §4.1.2 writes it: the local part as sent (quotes kept), and the domain.</summary>
public sealed record SmtpAddress(string LocalPart, string Domain)
{
    public override string ToString() => Domain.Length == 0 ? LocalPart : LocalPart + "@" + Domain;
}

/// <summary>A command line split into verb and argument (the text after the first space).</summary>
public readonly record struct SmtpCommand(SmtpVerb Verb, string Argument);

/// <summary>
/// Strict parsing of the command lines the network sends: verbs, <c>MAIL FROM:&lt;path&gt; [params]</c>,
/// <c>RCPT TO:&lt;path&gt;</c> (RFC 5321 §4.1.1.2–§4.1.2) and the HELO/EHLO argument. Total over every
/// input: anything malformed is an answer (<see cref="SmtpReply"/>), never an exception.
/// </summary>
public static class SmtpCommandParser
{
    /// <summary>Largest SIZE= value taken as a number (RFC 1870 §3: up to 20 digits); anything longer is too big anyway.</summary>
    private const int MaxSizeDigits = 18;

    public static readonly SmtpReply BadSenderSyntax = new(501, "5.1.7", "bad sender address syntax");
    public static readonly SmtpReply BadRecipientSyntax = new(501, "5.1.3", "bad recipient address syntax");
    public static readonly SmtpReply BadParameters = new(501, "5.5.4", "syntax error in parameters");
    public static readonly SmtpReply UnknownParameter = new(555, "5.5.4", "MAIL FROM/RCPT TO parameter not recognized");

    /// <summary>Splits a line (already checked to be printable ASCII) into verb and argument.</summary>
    public static SmtpCommand ParseLine(string line)
    {
        int space = line.IndexOf(' ');
        string verb = space < 0 ? line : line[..space];
        string argument = space < 0 ? "" : line[(space + 1)..].TrimEnd(' ');
        return new SmtpCommand(VerbOf(verb), argument);
    }

    private static SmtpVerb VerbOf(string verb) => verb.ToUpperInvariant() switch
    {
        "HELO" => SmtpVerb.Helo,
        "EHLO" => SmtpVerb.Ehlo,
        "MAIL" => SmtpVerb.Mail,
        "RCPT" => SmtpVerb.Rcpt,
        "DATA" => SmtpVerb.Data,
        "RSET" => SmtpVerb.Rset,
        "NOOP" => SmtpVerb.Noop,
        "QUIT" => SmtpVerb.Quit,
        "VRFY" => SmtpVerb.Vrfy,
        "EXPN" => SmtpVerb.Expn,
        "HELP" => SmtpVerb.Help,
        "STARTTLS" => SmtpVerb.StartTls,
        _ => SmtpVerb.Unknown,
    };

    /// <summary>
    /// <c>FROM:&lt;reverse-path&gt; [SIZE=n] [BODY=7BIT|8BITMIME]</c>. The null path <c>&lt;&gt;</c> (bounces) gives a null sender.
    /// </summary>
    public static bool TryParseMailFrom(string argument, out SmtpAddress? sender, out long? declaredSize, out SmtpReply error)
    {
        sender = null;
        declaredSize = null;
        int pos = 0;
        if (!TryKeyword(argument, "FROM:", ref pos) || !TryParsePath(argument, ref pos, allowNull: true, out sender))
        {
            error = BadSenderSyntax;
            return false;
        }
        if (!ParametersWellFormed(argument, pos))
        {
            error = BadParameters;
            return false;
        }
        bool sawSize = false, sawBody = false;
        foreach (var (keyword, value) in Parameters(argument, pos))
        {
            switch (keyword.ToUpperInvariant())
            {
                case "SIZE" when !sawSize && value is { Length: > 0 } && value.All(char.IsAsciiDigit):
                    sawSize = true;
                    declaredSize = value.Length <= MaxSizeDigits ? long.Parse(value, NumberStyles.None, CultureInfo.InvariantCulture) : long.MaxValue;
                    break;
                case "BODY" when !sawBody && value is not null
                    && (value.Equals("7BIT", StringComparison.OrdinalIgnoreCase) || value.Equals("8BITMIME", StringComparison.OrdinalIgnoreCase)):
                    sawBody = true;
                    break;
                case "SIZE" or "BODY":
                    error = BadParameters;
                    return false;
                default:
                    error = UnknownParameter;
                    return false;
            }
        }
        error = default;
        return true;
    }

    /// <summary>
    /// <c>TO:&lt;forward-path&gt;</c>, or <c>TO:&lt;Postmaster&gt;</c> without a domain (RFC 5321 §4.1.1.3, §4.5.1), which
    /// comes back with an empty domain. No parameters are offered for RCPT.
    /// </summary>
    public static bool TryParseRcptTo(string argument, out SmtpAddress? recipient, out SmtpReply error)
    {
        int pos = 0;
        if (TryKeyword(argument, "TO:", ref pos) && argument.AsSpan(pos).StartsWith("<Postmaster>", StringComparison.OrdinalIgnoreCase))
        {
            recipient = new SmtpAddress(argument.Substring(pos + 1, "Postmaster".Length), "");
            pos += "<Postmaster>".Length;
        }
        else if (!TryKeyword(argument, "TO:", ref pos) || !TryParsePath(argument, ref pos, allowNull: false, out recipient) || recipient is null)
        {
            recipient = null;
            error = BadRecipientSyntax;
            return false;
        }
        if (pos < argument.Length)
        {
            recipient = null;
            error = ParametersWellFormed(argument, pos) ? UnknownParameter : BadParameters;
            return false;
        }
        error = default;
        return true;
    }

    /// <summary>HELO/EHLO argument: a domain or an address literal (RFC 5321 §4.1.1.1).</summary>
    public static bool IsValidHeloArgument(string argument)
    {
        if (argument.Length is 0 or > SmtpLimits.MaxDomainLength) return false;
        int pos = 0;
        return argument[0] == '['
            ? TryAddressLiteral(argument, ref pos) && pos == argument.Length
            : TryDomain(argument, ref pos) && pos == argument.Length;
    }

    /// <summary>Matches <paramref name="keyword"/> case-insensitively, then tolerates spaces before the path (common, though §4.1.2 has none).</summary>
    private static bool TryKeyword(string s, string keyword, ref int pos)
    {
        if (!s.StartsWith(keyword, StringComparison.OrdinalIgnoreCase)) return false;
        pos = keyword.Length;
        while (pos < s.Length && s[pos] == ' ') pos++;
        return true;
    }

    /// <summary>
    /// Path = "&lt;" [ A-d-l ":" ] Mailbox "&gt;" (RFC 5321 §4.1.2). A source route is accepted and ignored (§C).
    /// </summary>
    internal static bool TryParsePath(string s, ref int pos, bool allowNull, out SmtpAddress? address)
    {
        address = null;
        int start = pos;
        if (pos >= s.Length || s[pos] != '<') return false;
        pos++;
        if (pos < s.Length && s[pos] == '>')
        {
            pos++;
            return allowNull;
        }
        if (pos < s.Length && s[pos] == '@')
        {
            // A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain
            while (true)
            {
                if (pos >= s.Length || s[pos] != '@') return false;
                pos++;
                if (!TryDomain(s, ref pos)) return false;
                if (pos < s.Length && s[pos] == ',') { pos++; continue; }
                if (pos < s.Length && s[pos] == ':') { pos++; break; }
                return false;
            }
        }
        int localStart = pos;
        if (!(pos < s.Length && s[pos] == '"' ? TryQuotedString(s, ref pos) : TryDotString(s, ref pos))) return false;
        string local = s[localStart..pos];
        if (local.Length > SmtpLimits.MaxLocalPartLength) return false;
        if (pos >= s.Length || s[pos] != '@') return false;
        pos++;
        int domainStart = pos;
        if (!(pos < s.Length && s[pos] == '[' ? TryAddressLiteral(s, ref pos) : TryDomain(s, ref pos))) return false;
        string domain = s[domainStart..pos];
        if (domain.Length > SmtpLimits.MaxDomainLength) return false;
        if (pos >= s.Length || s[pos] != '>') return false;
        pos++;
        if (pos - start > SmtpLimits.MaxPathLength) return false;
        address = new SmtpAddress(local, domain);
        return true;
    }

    /// <summary>Dot-string = Atom *("." Atom) (RFC 5321 §4.1.2).</summary>
    private static bool TryDotString(string s, ref int pos)
    {
        while (true)
        {
            int atom = pos;
            while (pos < s.Length && IsAtext(s[pos])) pos++;
            if (pos == atom) return false;
            if (pos < s.Length && s[pos] == '.') { pos++; continue; }
            return true;
        }
    }

    /// <summary>Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP = %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP = "\" %d32-126.</summary>
    private static bool TryQuotedString(string s, ref int pos)
    {
        pos++; // opening quote
        while (pos < s.Length)
        {
            char c = s[pos];
            if (c == '"') { pos++; return true; }
            if (c == '\\')
            {
                if (pos + 1 >= s.Length || s[pos + 1] is < ' ' or > '~') return false;
                pos += 2;
                continue;
            }
            if (c is < ' ' or > '~') return false;
            pos++;
        }
        return false;
    }

    /// <summary>Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str] (RFC 5321 §4.1.2, at most 63 octets a label).</summary>
    private static bool TryDomain(string s, ref int pos)
    {
        int start = pos;
        while (true)
        {
            int label = pos;
            if (pos >= s.Length || !char.IsAsciiLetterOrDigit(s[pos])) return false;
            pos++;
            while (pos < s.Length && (char.IsAsciiLetterOrDigit(s[pos]) || s[pos] == '-')) pos++;
            if (s[pos - 1] == '-' || pos - label > 63) return false;
            if (pos < s.Length && s[pos] == '.' && pos + 1 < s.Length && char.IsAsciiLetterOrDigit(s[pos + 1])) { pos++; continue; }
            return pos - start <= SmtpLimits.MaxDomainLength;
        }
    }

    /// <summary>address-literal = "[" ( IPv4 / "IPv6:" IPv6 / tag ":" content ) "]" (RFC 5321 §4.1.3), checked by parsing the address.</summary>
    private static bool TryAddressLiteral(string s, ref int pos)
    {
        int close = s.IndexOf(']', pos);
        if (close < 0) return false;
        string inner = s[(pos + 1)..close];
        bool ok = inner.StartsWith("IPv6:", StringComparison.OrdinalIgnoreCase)
            ? System.Net.IPAddress.TryParse(inner[5..], out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 && !inner[5..].Contains('%')
            : inner.Count(c => c == '.') == 3 && inner.All(c => char.IsAsciiDigit(c) || c == '.')
              && System.Net.IPAddress.TryParse(inner, out var v4) && v4.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork;
        if (!ok) return false;
        pos = close + 1;
        return true;
    }

    private static bool IsAtext(char c) =>
        char.IsAsciiLetterOrDigit(c) || c is '!' or '#' or '$' or '%' or '&' or '\'' or '*' or '+' or '-' or '/' or '=' or '?' or '^' or '_' or '`' or '{' or '|' or '}' or '~';

    /// <summary>Mail-parameters = esmtp-param *(SP esmtp-param), after <see cref="ParametersWellFormed"/> said yes.</summary>
    private static IEnumerable<(string Keyword, string? Value)> Parameters(string s, int pos)
    {
        foreach (var part in s[pos..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            yield return eq < 0 ? (part, null) : (part[..eq], part[(eq + 1)..]);
        }
    }

    /// <summary>esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); esmtp-value = 1*(%d33-60 / %d62-126); separated by spaces.</summary>
    private static bool ParametersWellFormed(string s, int pos)
    {
        if (pos == s.Length) return true;
        if (s[pos] != ' ') return false;
        foreach (var part in s[pos..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            string keyword = eq < 0 ? part : part[..eq];
            if (keyword.Length == 0 || !char.IsAsciiLetterOrDigit(keyword[0]) || !keyword.All(c => char.IsAsciiLetterOrDigit(c) || c == '-')) return false;
            if (eq >= 0)
            {
                string value = part[(eq + 1)..];
                if (value.Length == 0 || value.Any(c => c is < '!' or > '~' or '=')) return false;
            }
        }
        return true;
    }
}
