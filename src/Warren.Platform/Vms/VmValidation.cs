using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Warren.Platform.Vms;

/// <summary>VM names: DNS labels (RFC 1035 §2.3.1), unique platform-wide, some reserved.</summary>
public static partial class VmNames
{
    /// <summary>RFC 1035 §2.3.4: a label is at most 63 octets.</summary>
    public const int MaxLength = 63;
    public const int MinLength = 1;

    [GeneratedRegex("^[a-z][a-z0-9-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex Shape();

    /// <summary>Names that would collide with Warren's own host names or confuse users.</summary>
    public static readonly IReadOnlySet<string> Reserved = new HashSet<string>(StringComparer.Ordinal)
    {
        "www", "api", "app", "admin", "root", "mail", "smtp", "imap", "pop", "mx", "ns", "ns1", "ns2", "ns3", "ns4", "dns",
        "localhost", "vm", "vms", "int", "reflection", "proxy", "login", "auth", "logout", "status", "support", "help",
        "docs", "static", "cdn", "ssh", "control", "warren", "metadata", "gateway", "exec", "box", "shelley", "xterm",
    };

    [GeneratedRegex("^s[0-9]{3,}$", RegexOptions.CultureInvariant)]
    private static partial Regex SlotShape();

    /// <summary>Shape check only (not availability).</summary>
    public static bool IsValid(string? name)
        => name is { Length: >= MinLength and <= MaxLength } && Shape().IsMatch(name) && !name.EndsWith('-');

    /// <summary>Shape check; <c>vm_name_invalid</c> when the shape is wrong.</summary>
    public static void Validate(string? name)
    {
        if (!IsValid(name))
            throw new PlatformException(PlatformErrorCodes.VmNameInvalid,
                $"invalid VM name \"{name}\": must be {MinLength}-{MaxLength} characters of a-z, 0-9 and '-', start with a letter and not end with '-'");
    }

    /// <summary>
    /// Reserved names: <see cref="Reserved"/>, slot names (sNNN), the control host's first label, and
    /// names containing "--" (IDNA's reserved "xn--" form and friends).
    /// </summary>
    public static bool IsReserved(string name, PlatformOptions options)
    {
        if (Reserved.Contains(name) || SlotShape().IsMatch(name) || name.Contains("--", StringComparison.Ordinal)) return true;
        var controlLabel = options.ControlHost.Split('.')[0].ToLowerInvariant();
        if (name == controlLabel) return true;
        var domainLabel = options.VmDomain.Split('.')[0].ToLowerInvariant();
        return name == domainLabel;
    }

    /// <summary>exe.dev's message for a name that is taken or reserved.</summary>
    public static PlatformException Unavailable(string name)
        => new(PlatformErrorCodes.VmNameUnavailable, $"VM name \"{name}\" is not available");

    /// <summary>"name.box.localhost" (any case, optional trailing dot) → "name"; other text is returned trimmed.</summary>
    public static string Normalize(string input, string vmDomain)
    {
        var s = input.Trim().TrimEnd('.');
        var suffix = "." + vmDomain.Trim('.');
        if (s.Length > suffix.Length && s.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            s = s[..^suffix.Length];
        return s;
    }
}

/// <summary>Tags: <c>^[a-z][a-z0-9_-]*$</c> (exe.dev ssh_tag_command.go).</summary>
public static partial class VmTags
{
    /// <summary>exe.dev sets no cap; Warren caps a tag at a DNS label's 63 octets so tags stay usable in host names.</summary>
    public const int MaxLength = 63;
    /// <summary>Tags per VM.</summary>
    public const int MaxPerVm = 64;

    [GeneratedRegex("^[a-z][a-z0-9_-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex Shape();

    public static bool IsValid(string? tag) => tag is { Length: > 0 and <= MaxLength } && Shape().IsMatch(tag);

    public static void Validate(string? tag)
    {
        if (!IsValid(tag))
            throw new PlatformException(PlatformErrorCodes.TagInvalid,
                $"invalid tag \"{tag}\": must start with a letter and contain only a-z, 0-9, '_' and '-' (at most {MaxLength} characters)");
    }

    /// <summary>Validates every tag and refuses duplicates ("specified more than once").</summary>
    public static IReadOnlyList<string> ValidateList(IEnumerable<string> tags)
    {
        var seen = new List<string>();
        foreach (var t in tags)
        {
            Validate(t);
            if (seen.Contains(t)) throw new PlatformException(PlatformErrorCodes.TagDuplicate, $"tag \"{t}\" specified more than once");
            seen.Add(t);
        }
        if (seen.Count > MaxPerVm) throw new PlatformException(PlatformErrorCodes.TagInvalid, $"a VM can have at most {MaxPerVm} tags");
        return seen;
    }

    /// <summary>The words of tag arguments, each of which may be a comma list (<c>--tag=a,b</c>); empty items dropped.</summary>
    public static IReadOnlyList<string> SplitLists(IEnumerable<string> arguments)
        => arguments.SelectMany(a => a.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)).ToList();

    /// <summary>A VM's tags as stored and shown: each valid, once, in ordinal order (so text and JSON agree).</summary>
    public static IReadOnlyList<string> Canonical(IEnumerable<string> tags)
    {
        var distinct = tags.Distinct(StringComparer.Ordinal).ToList();
        ValidateList(distinct);
        distinct.Sort(StringComparer.Ordinal);
        return distinct;
    }
}

/// <summary>
/// Comments (exe.dev ssh_comment_command.go): trimmed UTF-8 of at most 200 bytes; no tabs, newlines, control
/// characters, bidi or zero-width characters, nor any of <c>&lt;&gt;&amp;"'`</c>.
/// </summary>
public static class VmComments
{
    public const int MaxBytes = 200;
    private const string Forbidden = "<>&\"'`";

    public static bool TryNormalize(string? input, out string comment, out string? error)
    {
        comment = (input ?? "").Trim();
        error = null;
        if (Encoding.UTF8.GetByteCount(comment) > MaxBytes) { error = $"comment is too long (max {MaxBytes} bytes)"; return false; }
        foreach (var r in comment.EnumerateRunes())
        {
            if (Rune.IsControl(r)) { error = "comment cannot contain tabs, newlines or control characters"; return false; }
            if (r.IsAscii && Forbidden.Contains((char)r.Value)) { error = "comment cannot contain any of < > & \" ' `"; return false; }
            var cat = Rune.GetUnicodeCategory(r);
            if (cat == UnicodeCategory.Format || IsBidiOrZeroWidth(r.Value)) { error = "comment cannot contain bidirectional or zero-width characters"; return false; }
            if (cat is UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator) { error = "comment cannot contain tabs, newlines or control characters"; return false; }
        }
        return true;
    }

    public static string Normalize(string? input)
        => TryNormalize(input, out var c, out var err) ? c : throw new PlatformException(PlatformErrorCodes.CommentInvalid, err!);

    private static bool IsBidiOrZeroWidth(int cp)
        => cp is >= 0x200B and <= 0x200F or >= 0x202A and <= 0x202E or >= 0x2066 and <= 0x2069 or 0x061C or 0xFEFF or 0x2060;
}

/// <summary><c>--env KEY=VALUE</c> entries (non-secret; stored with the VM).</summary>
public static partial class VmEnv
{
    public const int MaxEntries = 128;
    public const int MaxValueBytes = 4096;
    public const int MaxKeyLength = 128;

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$", RegexOptions.CultureInvariant)]
    private static partial Regex KeyShape();

    /// <summary>Parses "KEY=VALUE"; exe.dev's error on bad shape.</summary>
    public static KeyValuePair<string, string> Parse(string entry)
    {
        int eq = entry.IndexOf('=');
        if (eq <= 0 || !KeyShape().IsMatch(entry[..eq]) || eq > MaxKeyLength)
            throw new PlatformException(PlatformErrorCodes.EnvInvalid, $"invalid environment variable format \"{entry}\": must be KEY=VALUE");
        var value = entry[(eq + 1)..];
        if (Encoding.UTF8.GetByteCount(value) > MaxValueBytes || value.Contains('\0'))
            throw new PlatformException(PlatformErrorCodes.EnvInvalid, $"environment variable {entry[..eq]} is too long or contains a NUL byte");
        return new(entry[..eq], value);
    }

    public static void Validate(IReadOnlyDictionary<string, string> env)
    {
        if (env.Count > MaxEntries) throw new PlatformException(PlatformErrorCodes.EnvInvalid, $"at most {MaxEntries} environment variables");
        foreach (var (k, v) in env) Parse(k + "=" + v);
    }
}

/// <summary>Word-word names for <c>new</c> without <c>--name</c>.</summary>
public static class VmNameGenerator
{
    private static readonly string[] First =
    [
        "amber", "brisk", "calm", "dapper", "eager", "fancy", "gentle", "happy", "icy", "jolly", "keen", "lucky",
        "mellow", "nimble", "olive", "proud", "quick", "rapid", "sunny", "tidy", "upbeat", "vivid", "witty", "young",
        "zesty", "bold", "clever", "daring", "early", "fuzzy", "golden", "humble", "ivory", "jade", "kind", "lively",
        "merry", "noble", "opal", "plucky", "quiet", "rustic", "silver", "tranquil", "urban", "velvet", "wild", "bright",
    ];
    private static readonly string[] Second =
    [
        "otter", "falcon", "maple", "river", "comet", "harbor", "meadow", "badger", "cedar", "dune", "ember", "fjord",
        "grove", "heron", "island", "juniper", "kestrel", "lagoon", "marsh", "nebula", "orchid", "pebble", "quartz", "raven",
        "summit", "tundra", "valley", "willow", "yarrow", "zephyr", "acorn", "beacon", "canyon", "delta", "forest", "glacier",
        "hollow", "lantern", "mesa", "nectar", "oasis", "prairie", "reef", "sparrow", "thistle", "vortex", "walrus", "breeze",
    ];

    public static string Next(Random random)
        => $"{First[random.Next(First.Length)]}-{Second[random.Next(Second.Length)]}";

    /// <summary>With a numeric suffix, for when the plain pairs keep colliding.</summary>
    public static string NextWithSuffix(Random random)
        => $"{Next(random)}-{random.Next(100, 10_000).ToString(CultureInfo.InvariantCulture)}";
}
