using System.Diagnostics.CodeAnalysis;

namespace Warren.Platform.Commands;

/// <summary>How a flag takes its value.</summary>
public enum FlagKind
{
    /// <summary><c>--json</c>, <c>--copy-tags=false</c>: never consumes the next token.</summary>
    Bool,
    /// <summary><c>--name=x</c> or <c>--name x</c>; given twice, the last wins (Go's flag package).</summary>
    Value,
    /// <summary><c>--tag a --tag b</c>: every occurrence is kept, in order.</summary>
    Repeated,
}

/// <summary>
/// One flag of a command. <see cref="Name"/> has no dashes; <c>-x</c> and <c>--x</c> are the same flag.
/// <see cref="Secret"/>: the value is never recorded (the audit log keeps <c>***</c>).
/// </summary>
public sealed record FlagDefinition(string Name, FlagKind Kind, string Help, string? ValueName = null, bool Hidden = false, bool Secret = false);

/// <summary>The result of <see cref="ArgParser.TryParse"/>.</summary>
public sealed class ParsedArgs
{
    private readonly Dictionary<string, List<string>> _values;

    internal ParsedArgs(List<string> positionals, Dictionary<string, List<string>> values)
    {
        Positionals = positionals;
        _values = values;
    }

    public IReadOnlyList<string> Positionals { get; }

    /// <summary>True when the flag appeared at all.</summary>
    public bool Has(string name) => _values.ContainsKey(name);

    /// <summary>The last value given for a value flag, or null.</summary>
    public string? Value(string name) => _values.TryGetValue(name, out var v) ? v[^1] : null;

    /// <summary>Every value given for a repeated flag, in order (empty when absent).</summary>
    public IReadOnlyList<string> Values(string name) => _values.TryGetValue(name, out var v) ? v : Array.Empty<string>();

    /// <summary>A boolean flag's value: <paramref name="defaultValue"/> when absent.</summary>
    public bool Flag(string name, bool defaultValue = false)
        => _values.TryGetValue(name, out var v) ? v[^1] == "true" : defaultValue;
}

/// <summary>
/// exe.dev's flag rules: flags may appear anywhere; <c>-x</c> and <c>--x</c> are equal;
/// a value flag written without <c>=</c> takes the next token as its value unless that token starts
/// with a dash; <c>--</c> ends flag parsing; a bare <c>-</c> is a positional argument; boolean flags
/// take <c>=true|false</c> (Go's strconv.ParseBool spellings).
/// </summary>
public static class ArgParser
{
    /// <summary>Accepted by every command.</summary>
    public static readonly FlagDefinition JsonFlag = new("json", FlagKind.Bool, "print JSON");

    /// <summary>Accepted by every command: prints the command's help.</summary>
    public static readonly FlagDefinition HelpFlag = new("help", FlagKind.Bool, "show help for the command", Hidden: true);

    private static readonly FlagDefinition s_shortHelp = new("h", FlagKind.Bool, "show help for the command", Hidden: true);

    public static bool TryParse(
        IReadOnlyList<string> args,
        IReadOnlyList<FlagDefinition> flags,
        [NotNullWhen(true)] out ParsedArgs? parsed,
        [NotNullWhen(false)] out string? error,
        bool stopAtFirstPositional = false)
    {
        parsed = null;
        var positionals = new List<string>();
        var values = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var t in Scan(args, flags, stopAtFirstPositional))
        {
            if (t.IsPositional)
            {
                positionals.Add(args[t.Index]);
                continue;
            }
            var def = t.Flag;
            if (def is null)
            {
                error = UnknownFlag(t.Name!, flags);
                return false;
            }
            string value;
            if (def.Kind == FlagKind.Bool)
            {
                if (t.Inline is null) value = "true";
                else if (!TryParseBool(t.Inline, out bool b))
                {
                    error = $"invalid boolean value \"{t.Inline}\" for --{def.Name}";
                    return false;
                }
                else value = b ? "true" : "false";
            }
            else if (t.Inline is not null) value = t.Inline;
            else if (t.ValueIndex >= 0) value = args[t.ValueIndex];
            else
            {
                error = $"flag needs an argument: --{def.Name}";
                return false;
            }
            string key = def == s_shortHelp ? HelpFlag.Name : def.Name;
            if (!values.TryGetValue(key, out var list)) values[key] = list = new List<string>();
            if (def.Kind != FlagKind.Repeated) list.Clear();
            list.Add(value);
        }
        parsed = new ParsedArgs(positionals, values);
        error = null;
        return true;
    }

    /// <summary>
    /// <paramref name="args"/> with every secret value replaced by <paramref name="mask"/>, read exactly as
    /// <see cref="TryParse"/> reads it (any spelling: <c>-f=v</c>, <c>--f=v</c>, <c>-f v</c>, <c>--f v</c>): the values
    /// of <see cref="FlagDefinition.Secret"/> flags, of flags the command does not have (a mistyped secret flag is
    /// still a secret), and the positionals at <paramref name="secretPositionals"/>.
    /// </summary>
    public static string[] RedactSecrets(IReadOnlyList<string> args, IReadOnlyList<FlagDefinition> flags, bool stopAtFirstPositional,
        IReadOnlyCollection<int> secretPositionals, string mask)
    {
        var result = args.ToArray();
        int position = 0;
        foreach (var t in Scan(args, flags, stopAtFirstPositional))
        {
            if (t.IsPositional)
            {
                if (secretPositionals.Contains(position++)) result[t.Index] = mask;
                continue;
            }
            if (t.Flag is { Secret: false }) continue;
            if (t.Inline is not null) result[t.Index] = args[t.Index][..(args[t.Index].IndexOf('=') + 1)] + mask;
            if (t.ValueIndex >= 0) result[t.ValueIndex] = mask;
        }
        return result;
    }

    /// <summary>
    /// One token as the parser reads it: a positional (<see cref="Name"/> null), or a flag with its definition
    /// (null when the command has no such flag), its <c>=value</c> and the index of a value given as the next word.
    /// </summary>
    private readonly record struct ArgToken(int Index, string? Name, FlagDefinition? Flag, string? Inline, int ValueIndex)
    {
        public bool IsPositional => Name is null;
    }

    /// <summary>exe.dev's flag rules (see the class summary), as a token stream shared by parsing and redaction.</summary>
    private static IEnumerable<ArgToken> Scan(IReadOnlyList<string> args, IReadOnlyList<FlagDefinition> flags, bool stopAtFirstPositional)
    {
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            if (a == "--")
            {
                for (int j = i + 1; j < args.Count; j++) yield return new ArgToken(j, null, null, null, -1);
                yield break;
            }
            if (a.Length < 2 || a[0] != '-')
            {
                yield return new ArgToken(i, null, null, null, -1);
                if (stopAtFirstPositional)
                {
                    for (int j = i + 1; j < args.Count; j++) yield return new ArgToken(j, null, null, null, -1);
                    yield break;
                }
                continue;
            }
            int start = i;
            string body = a[1] == '-' ? a[2..] : a[1..];
            string name = body;
            string? inline = null;
            int eq = body.IndexOf('=');
            if (eq >= 0) { name = body[..eq]; inline = body[(eq + 1)..]; }
            var def = Find(flags, name);
            int valueIndex = -1;
            // A value flag (or an unknown one) without '=' takes the next word unless that word starts with a dash.
            if (def is not { Kind: FlagKind.Bool } && inline is null && i + 1 < args.Count && !(args[i + 1].Length > 1 && args[i + 1][0] == '-'))
                valueIndex = ++i;
            yield return new ArgToken(start, name, def, inline, valueIndex);
        }
    }

    /// <summary>Go's strconv.ParseBool spellings.</summary>
    public static bool TryParseBool(string s, out bool value)
    {
        switch (s)
        {
            case "1" or "t" or "T" or "true" or "TRUE" or "True": value = true; return true;
            case "0" or "f" or "F" or "false" or "FALSE" or "False": value = false; return true;
            default: value = false; return false;
        }
    }

    /// <summary>The definition for <paramref name="name"/> among the command's flags and the global ones, or null.</summary>
    public static FlagDefinition? Find(IReadOnlyList<FlagDefinition> flags, string name)
    {
        foreach (var f in flags) if (f.Name == name) return f;
        if (name == JsonFlag.Name) return JsonFlag;
        if (name == HelpFlag.Name) return HelpFlag;
        if (name == s_shortHelp.Name) return s_shortHelp;
        return null;
    }

    private static string UnknownFlag(string name, IReadOnlyList<FlagDefinition> flags)
    {
        var candidates = flags.Where(f => !f.Hidden).Select(f => f.Name).Append(JsonFlag.Name);
        var near = Suggest.Nearest(name, candidates);
        string shown = name.Length == 1 ? "-" + name : "--" + name;
        return near is null
            ? $"unknown flag: {shown}"
            : $"unknown flag: {shown} (did you mean {(near.Length == 1 ? "-" : "--")}{near}?)";
    }
}

/// <summary>"Did you mean" suggestions by edit distance.</summary>
public static class Suggest
{
    /// <summary>Largest edit distance still offered as a suggestion (git offers up to about this for short words).</summary>
    public const int MaxDistance = 2;

    /// <summary>Inputs longer than this are not worth a suggestion (and would make the O(n·m) table large).</summary>
    public const int MaxInputLength = 64;

    /// <summary>The closest candidate within <see cref="MaxDistance"/> (or a candidate the input is a prefix of), or null.</summary>
    public static string? Nearest(string input, IEnumerable<string> candidates)
    {
        if (input.Length == 0 || input.Length > MaxInputLength) return null;
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var c in candidates)
        {
            int d = Distance(input, c);
            if (d < bestDistance) { best = c; bestDistance = d; }
        }
        if (best is null) return null;
        if (bestDistance <= Math.Min(MaxDistance, Math.Max(1, input.Length / 2))) return best;
        if (input.Length >= 2)
        {
            var prefixed = candidates.Where(c => c.StartsWith(input, StringComparison.Ordinal)).ToList();
            if (prefixed.Count == 1) return prefixed[0];
        }
        return null;
    }

    /// <summary>Optimal string alignment distance (Damerau–Levenshtein with adjacent transpositions).</summary>
    public static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                int v = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) v = Math.Min(v, d[i - 2, j - 2] + 1);
                d[i, j] = v;
            }
        }
        return d[a.Length, b.Length];
    }
}
