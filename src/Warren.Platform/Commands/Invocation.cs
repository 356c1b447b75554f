using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Warren.Platform.Commands;

/// <summary>One running command: its context, parsed arguments and output helpers.</summary>
public sealed class Invocation
{
    /// <summary>One line per document: ssh exec and POST /exec (exe.dev).</summary>
    internal static readonly JsonSerializerOptions CompactJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, WriteIndented = false };

    /// <summary>2-space indentation: the interactive REPL (exe.dev).</summary>
    internal static readonly JsonSerializerOptions IndentedJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, WriteIndented = true, IndentSize = 2 };

    internal Invocation(CommandContext context, CommandDefinition command, ParsedArgs args)
    {
        Context = context;
        Command = command;
        Args = args;
        Json = context.ForceJson || args.Flag(ArgParser.JsonFlag.Name);
    }

    public CommandContext Context { get; }
    public CommandDefinition Command { get; }
    public ParsedArgs Args { get; }

    /// <summary>JSON output: <c>--json</c> or forced by the front door.</summary>
    public bool Json { get; }

    public CancellationToken CancellationToken => Context.CancellationToken;

    public Accounts.Account Account => Context.Account ?? throw new InvalidOperationException("No account.");

    /// <summary>Positional argument <paramref name="index"/>, or a usage error naming <paramref name="what"/>.</summary>
    public string Arg(int index, string what)
        => index < Args.Positionals.Count ? Args.Positionals[index] : throw Usage($"missing {what}");

    public string? OptionalArg(int index) => index < Args.Positionals.Count ? Args.Positionals[index] : null;

    /// <summary>Refuses more than <paramref name="max"/> positional arguments.</summary>
    public void MaxArgs(int max)
    {
        if (Args.Positionals.Count > max) throw Usage($"unexpected argument \"{Args.Positionals[max]}\"");
    }

    public CommandException Usage(string problem)
        => new($"{problem}; usage: {Command.Path}{(Command.Usage.Length > 0 ? " " + Command.Usage : "")}");

    /// <summary>Writes one JSON document (compact, or 2-space indented in the REPL) and a newline.</summary>
    public void WriteJson(JsonNode node)
    {
        Context.Stdout.Write(node.ToJsonString(Context.Interactive ? IndentedJson : CompactJson));
        Context.Stdout.Write('\n');
    }

    /// <summary>A text line; ignored in JSON mode (progress and human output are hidden there).</summary>
    public void Line(string text = "")
    {
        if (Json) return;
        Context.Stdout.Write(text);
        Context.Stdout.Write('\n');
    }

    /// <summary>Bold text when a pty is attached; plain otherwise.</summary>
    public string Bold(string s) => Context.Interactive ? $"\x1b[1m{s}\x1b[0m" : s;

    public static string Rfc3339(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    public static JsonArray Array(IEnumerable<string> items) => new(items.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray());
}
