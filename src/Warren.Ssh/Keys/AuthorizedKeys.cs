using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;

namespace Warren.Ssh.Keys;

/// <summary>One option of an authorized_keys line: a flag (<see cref="Value"/> null) or name="value".</summary>
public sealed record AuthorizedKeyOption(string Name, string? Value);

/// <summary>
/// One line of an authorized_keys file: [options] keytype base64-key [comment]
/// (sshd(8), "AUTHORIZED_KEYS FILE FORMAT").
/// </summary>
/// <remarks>
/// Options are comma-separated with no whitespace outside double quotes; a quoted value
/// may contain <c>\"</c>. Option names are case-insensitive. Unknown options, flags given a
/// value and valued options without one make the line invalid, as in sshd.
/// </remarks>
public sealed class AuthorizedKeyLine
{
    /// <summary>
    /// Longest line accepted. sshd reads authorized_keys lines of up to 8 KiB
    /// (SSH_MAX_PUBKEY_BYTES is 16 KiB for the decoded key); we allow 16 KiB of text.
    /// </summary>
    public const int MaxLineChars = 16 * 1024;

    /// <summary>Options that take a quoted value (sshd auth-options.c).</summary>
    private static readonly HashSet<string> s_valued = new(StringComparer.OrdinalIgnoreCase)
    {
        "command", "environment", "expiry-time", "from", "permitlisten", "permitopen", "principals", "tunnel",
    };

    /// <summary>Flag options (sshd auth-options.c).</summary>
    private static readonly HashSet<string> s_flags = new(StringComparer.OrdinalIgnoreCase)
    {
        "agent-forwarding", "cert-authority", "no-agent-forwarding", "no-port-forwarding", "no-pty", "no-user-rc",
        "no-X11-forwarding", "port-forwarding", "pty", "user-rc", "X11-forwarding", "restrict",
        "no-touch-required", "touch-required", "verify-required",
    };

    private AuthorizedKeyLine(IReadOnlyList<AuthorizedKeyOption> options, SshPublicKey key, string? comment)
    {
        Options = options;
        Key = key;
        Comment = comment;
    }

    public IReadOnlyList<AuthorizedKeyOption> Options { get; }
    public SshPublicKey Key { get; }
    public string? Comment { get; }

    /// <summary>True when the flag is present (case-insensitive), e.g. "no-pty", "restrict".</summary>
    public bool HasFlag(string name) => Options.Any(o => o.Value is null && string.Equals(o.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>The first value of a valued option, or null.</summary>
    public string? GetValue(string name) => Options.FirstOrDefault(o => o.Value is not null && string.Equals(o.Name, name, StringComparison.OrdinalIgnoreCase))?.Value;

    /// <summary>All values of a repeatable option (permitopen, environment, ...).</summary>
    public IEnumerable<string> GetValues(string name) => Options.Where(o => o.Value is not null && string.Equals(o.Name, name, StringComparison.OrdinalIgnoreCase)).Select(o => o.Value!);

    /// <summary>command="..." forced command, or null.</summary>
    public string? Command => GetValue("command");

    /// <summary>from="pattern-list" split on commas, or empty when absent.</summary>
    public IReadOnlyList<string> From => GetValue("from")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];

    /// <summary>All permitopen="host:port" values.</summary>
    public IReadOnlyList<string> PermitOpen => GetValues("permitopen").ToList();

    /// <summary>
    /// expiry-time="YYYYMMDD[HHMM[SS]][Z]" as an instant; without Z the time is the local
    /// zone's, as sshd reads it. Validated at parse time.
    /// </summary>
    public DateTimeOffset? ExpiryTime => GetValue("expiry-time") is { } v && TryParseExpiry(v, out var t) ? t : null;

    /// <summary>Parses one line; <see cref="FormatException"/> if it is not a valid key line (comments and blank lines included).</summary>
    public static AuthorizedKeyLine Parse(string line)
        => TryParse(line, out var result, out var error) ? result : throw new FormatException("Invalid authorized_keys line: " + error);

    public static bool TryParse(string? line, [NotNullWhen(true)] out AuthorizedKeyLine? result) => TryParse(line, out result, out _);

    /// <summary>Parses one line; false with a reason (safe to show; never echoes the key) otherwise. Never throws.</summary>
    public static bool TryParse(string? line, [NotNullWhen(true)] out AuthorizedKeyLine? result, out string? error)
    {
        result = null;
        error = null;
        if (line is null || line.Length > MaxLineChars) { error = "line missing or too long"; return false; }
        var s = line.AsSpan().Trim();
        if (s.IsEmpty || s[0] == '#') { error = "blank or comment line"; return false; }

        // sshd first tries the line as a bare key, then as options followed by a key.
        if (SshPublicKey.TryParseOpenSsh(s.ToString(), out var bare, out var bareComment))
        {
            result = new AuthorizedKeyLine([], bare, bareComment);
            return true;
        }

        if (!TryParseOptions(ref s, out var options, out error)) return false;
        if (!SshPublicKey.TryParseOpenSsh(s.ToString(), out var key, out var comment))
        {
            error = "no supported public key after the options";
            return false;
        }
        result = new AuthorizedKeyLine(options, key, comment);
        return true;
    }

    private static bool TryParseOptions(ref ReadOnlySpan<char> s, out List<AuthorizedKeyOption> options, out string? error)
    {
        options = [];
        error = null;
        while (true)
        {
            int i = 0;
            while (i < s.Length && s[i] is not ('=' or ',' or ' ' or '\t')) i++;
            var name = s[..i].ToString();
            if (name.Length == 0) { error = "empty option name"; return false; }
            s = s[i..];
            string? value = null;
            if (!s.IsEmpty && s[0] == '=')
            {
                if (s.Length < 2 || s[1] != '"') { error = $"option {Escape(name)} needs a quoted value"; return false; }
                var sb = new StringBuilder();
                int j = 2;
                bool closed = false;
                for (; j < s.Length; j++)
                {
                    char c = s[j];
                    if (c == '\\' && j + 1 < s.Length && s[j + 1] == '"') { sb.Append('"'); j++; continue; }
                    if (c == '"') { closed = true; j++; break; }
                    sb.Append(c);
                }
                if (!closed) { error = $"unterminated quote in option {Escape(name)}"; return false; }
                value = sb.ToString();
                s = s[j..];
            }
            if (value is null ? !s_flags.Contains(name) : !s_valued.Contains(name))
            {
                error = s_flags.Contains(name) || s_valued.Contains(name)
                    ? $"option {Escape(name)} used with the wrong form"
                    : $"unknown option {Escape(name)}";
                return false;
            }
            if (name.Equals("expiry-time", StringComparison.OrdinalIgnoreCase) && !TryParseExpiry(value!, out _))
            {
                error = "invalid expiry-time";
                return false;
            }
            options.Add(new AuthorizedKeyOption(name, value));
            if (s.IsEmpty) { error = "options without a key"; return false; }
            if (s[0] == ',') { s = s[1..]; continue; }
            if (s[0] is ' ' or '\t') { s = s.TrimStart(); return true; }
            error = "malformed options";
            return false;
        }
    }

    private static readonly string[] s_expiryFormats = ["yyyyMMdd", "yyyyMMddHHmm", "yyyyMMddHHmmss"];

    internal static bool TryParseExpiry(string value, out DateTimeOffset time)
    {
        time = default;
        bool utc = value.EndsWith('Z') || value.EndsWith('z');
        var digits = utc ? value[..^1] : value;
        if (!DateTime.TryParseExact(digits, s_expiryFormats, CultureInfo.InvariantCulture, DateTimeStyles.None, out var dt)) return false;
        try
        {
            time = utc ? new DateTimeOffset(DateTime.SpecifyKind(dt, DateTimeKind.Utc)) : new DateTimeOffset(DateTime.SpecifyKind(dt, DateTimeKind.Local));
            return true;
        }
        catch (ArgumentOutOfRangeException)
        {
            return false;
        }
    }

    /// <summary>Peer/user text in error messages: printable ASCII only, bounded.</summary>
    private static string Escape(string s)
    {
        const int MaxShown = 40;
        var sb = new StringBuilder("\"");
        foreach (var c in s.Length > MaxShown ? s[..MaxShown] : s)
            sb.Append(c is >= ' ' and <= '~' and not '"' and not '\\' ? c : '?');
        return sb.Append('"').ToString();
    }
}

/// <summary>An authorized_keys file: one entry per valid line; comments and blank lines skipped.</summary>
public sealed class AuthorizedKeysFile
{
    private AuthorizedKeysFile(IReadOnlyList<AuthorizedKeyLine> entries, IReadOnlyList<(int LineNumber, string Error)> invalid)
    {
        Entries = entries;
        InvalidLines = invalid;
    }

    public IReadOnlyList<AuthorizedKeyLine> Entries { get; }

    /// <summary>1-based numbers and reasons of lines that were neither blank, comments nor valid (skipped, as sshd does).</summary>
    public IReadOnlyList<(int LineNumber, string Error)> InvalidLines { get; }

    public static AuthorizedKeysFile Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var entries = new List<AuthorizedKeyLine>();
        var invalid = new List<(int, string)>();
        int number = 0;
        foreach (var raw in text.Split('\n'))
        {
            number++;
            var line = raw.TrimEnd('\r').Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            if (AuthorizedKeyLine.TryParse(line, out var entry, out var error)) entries.Add(entry);
            else invalid.Add((number, error ?? "invalid"));
        }
        return new AuthorizedKeysFile(entries, invalid);
    }
}
