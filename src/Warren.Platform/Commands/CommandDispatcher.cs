using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Platform.Audit;
using Warren.Platform.Tokens;

namespace Warren.Platform.Commands;

/// <summary>
/// Runs one control-plane command line (exe.dev's command set) for a front door.
/// </summary>
/// <remarks>
/// Steps of <see cref="RunAsync"/>:
/// 1. no argv → help; resolve the command path (unknown → nearest suggestion);
/// 2. unknown key → "Please complete registration…";
/// 3. token permissions (exact canonical path), then the SSH key's own (<see cref="KeyScope"/>);
/// 4. flags (exe.dev rules, <see cref="ArgParser"/>); <c>--help</c> prints the command's help;
/// 5. the handler; a <see cref="CommandException"/> or <see cref="PlatformException"/> becomes one error
///    line (<c>{"error":…}</c> on stdout in JSON mode, text on stderr otherwise) and exit status 1; anything
///    else is logged with a trace id and reported as exe.dev does: <c>"CMD": internal error, trace ID: ID</c>.
/// </remarks>
public sealed partial class CommandDispatcher
{
    public const string RegistrationMessage = "Please complete registration by running: ssh {0}";
    public const string SshNeedsSession = "ssh command requires an SSH session";

    private readonly CommandServices _s;
    private readonly ILogger _log;
    private readonly Dictionary<string, Func<Invocation, Task<int>>> _handlers = new(StringComparer.Ordinal);

    public CommandDispatcher(CommandServices services, ILogger<CommandDispatcher>? logger = null)
    {
        _s = services ?? throw new ArgumentNullException(nameof(services));
        _log = (ILogger?)logger ?? NullLogger.Instance;
        RegisterHandlers();
    }

    public PlatformOptions Options => _s.Options;

    /// <summary>
    /// The canonical command path argv names ("ssh-key list", "ls"), or null when it names no command.
    /// Used for token <c>cmds</c> checks: exact match, so "ssh-key" does not grant "ssh-key list".
    /// </summary>
    public static string? Resolve(IReadOnlyList<string> argv)
        => CommandCatalog.Resolve(argv, out _, out _, out _)?.Path;

    /// <summary>
    /// Whether a token's command list allows argv: its canonical path is listed, or for <c>ssh VM …</c>
    /// the entry "ssh VM" is. Null <paramref name="allowed"/> allows everything.
    /// </summary>
    public static bool IsAllowed(IReadOnlyList<string>? allowed, IReadOnlyList<string> argv)
    {
        if (allowed is null) return true;
        var def = CommandCatalog.Resolve(argv, out var rest, out _, out _);
        if (def is null) return false;
        if (allowed.Contains(def.Path)) return true;
        if (def.Path == "ssh")
        {
            var vm = rest.FirstOrDefault(a => !(a.Length > 1 && a[0] == '-'));
            return vm is not null && allowed.Contains("ssh " + vm);
        }
        return false;
    }

    /// <summary>Runs argv; returns the exit status (0 ok, 1 error). Never throws except on cancellation.</summary>
    public async Task<int> RunAsync(CommandContext ctx, IReadOnlyList<string> argv)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ArgumentNullException.ThrowIfNull(argv);
        long started = _s.Time.GetTimestamp();
        var outcome = new Outcome();
        try
        {
            return outcome.Exit = await RunCoreAsync(ctx, argv, outcome).ConfigureAwait(false);
        }
        finally
        {
            await AuditAsync(ctx, argv, outcome, _s.Time.GetElapsedTime(started)).ConfigureAwait(false);
        }
    }

    /// <summary>What the audit log records about one run.</summary>
    private sealed class Outcome
    {
        public string Path = "";
        public int Exit = 1;
        public string? ErrorCode;
    }

    private async Task<int> RunCoreAsync(CommandContext ctx, IReadOnlyList<string> argv, Outcome outcome)
    {
        bool jsonWanted = ctx.ForceJson || argv.Any(a => a is "--json" or "-json" or "--json=true" or "-json=true");
        try
        {
            if (ctx.Account is null)
            {
                outcome.ErrorCode = "unregistered";
                return await FailAsync(ctx, jsonWanted, string.Format(RegistrationMessage, _s.Options.ControlHost));
            }

            if (argv.Count == 0 || argv.All(a => a is "--json" or "-json"))
                argv = ["help", .. argv];

            var def = CommandCatalog.Resolve(argv, out var rest, out var unknownWord, out var parent);
            if (def is null)
            {
                outcome.ErrorCode = "unknown_command";
                return await FailAsync(ctx, jsonWanted, UnknownCommandMessage(unknownWord ?? "", parent, ctx.Interactive));
            }
            outcome.Path = def.Path;

            if (!IsAllowed(ctx.AllowedCommands, argv))
            {
                outcome.ErrorCode = "not_allowed";
                return await FailAsync(ctx, jsonWanted, TokenErrors.NotAllowed);
            }
            if (!KeyScope.AllowsCommand(ctx.CurrentKey, argv))
            {
                outcome.ErrorCode = "not_allowed";
                return await FailAsync(ctx, jsonWanted, KeyScope.NotAllowed);
            }

            if (!ArgParser.TryParse(rest, def.Flags, out var parsed, out var flagError, def.StopAtFirstPositional))
            {
                outcome.ErrorCode = "usage";
                return await FailAsync(ctx, jsonWanted, flagError);
            }

            var inv = new Invocation(ctx, def, parsed);
            if (parsed.Flag(ArgParser.HelpFlag.Name) || def.HasSubcommands)
            {
                WriteHelp(inv, def);
                return 0;
            }
            if (!_handlers.TryGetValue(def.Path, out var handler))
                return await FailAsync(ctx, inv.Json, $"{def.Path} is not available");
            var result = await handler(inv).ConfigureAwait(false);
            await ctx.Stdout.FlushAsync(ctx.CancellationToken).ConfigureAwait(false);
            if (result != 0) outcome.ErrorCode ??= "partial";
            return result;
        }
        catch (CommandException e)
        {
            outcome.ErrorCode = "command_error";
            return await FailAsync(ctx, jsonWanted, e.Message);
        }
        catch (PlatformException e)
        {
            outcome.ErrorCode = e.Code;
            return await FailAsync(ctx, jsonWanted, e.UserMessage);
        }
        catch (OperationCanceledException) when (ctx.CancellationToken.IsCancellationRequested)
        {
            outcome.ErrorCode = "cancelled";
            throw;
        }
        catch (Exception e)
        {
            string traceId = Guid.NewGuid().ToString("N")[..16];
            outcome.ErrorCode = "internal";
            _log.LogError(e, "Command {Command} failed (trace {TraceId})", outcome.Path.Length > 0 ? outcome.Path : "?", traceId);
            return await FailAsync(ctx, jsonWanted, $"\"{(outcome.Path.Length > 0 ? outcome.Path : "command")}\": internal error, trace ID: {traceId}");
        }
    }

    private async Task AuditAsync(CommandContext ctx, IReadOnlyList<string> argv, Outcome outcome, TimeSpan duration)
    {
        if (_s.Audit is null) return;
        try
        {
            // The log redacts by the command's parsed flags (AuditRedaction), whatever the spelling.
            await _s.Audit.AppendAsync(new AuditEntry(
                _s.Time.GetUtcNow(), ctx.Account?.Id, ctx.CurrentKey?.Fingerprint, ctx.Source,
                outcome.Path.Length > 0 ? outcome.Path : "(unknown)", argv,
                outcome.Exit == 0 ? "ok" : "error", outcome.Exit == 0 ? null : outcome.ErrorCode ?? "error", duration),
                CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            _log.LogWarning(e, "Could not write the audit entry for {Command}", outcome.Path);
        }
    }

    /// <summary>The error line: <c>{"error":…}</c> on stdout in JSON mode, else text on stderr (red with a pty).</summary>
    private static async Task<int> FailAsync(CommandContext ctx, bool json, string message)
    {
        // Best effort: the error must not be lost to a cancelled token, but a dead channel ends here.
        var ct = CancellationToken.None;
        if (json)
        {
            var o = new JsonObject { ["error"] = message };
            await ctx.Stdout.WriteAsync(o.ToJsonString(ctx.Interactive ? Invocation.IndentedJson : Invocation.CompactJson) + "\n").ConfigureAwait(false);
            await ctx.Stdout.FlushAsync(ct).ConfigureAwait(false);
        }
        else
        {
            await ctx.Stderr.WriteAsync(ctx.Interactive ? $"\x1b[31m{message}\x1b[0m\n" : message + "\n").ConfigureAwait(false);
            await ctx.Stderr.FlushAsync(ct).ConfigureAwait(false);
        }
        return 1;
    }

    private static string UnknownCommandMessage(string word, CommandDefinition? parent, bool interactive)
    {
        var candidates = parent is null
            ? CommandCatalog.Commands.Where(c => !c.Hidden && (interactive || !c.InteractiveOnly)).Select(c => c.Name)
            : parent.Subcommands.Select(c => c.Name);
        var near = Suggest.Nearest(word, candidates);
        string what = parent is null ? "command" : parent.Name + " subcommand";
        string shown = word.Length > Suggest.MaxInputLength ? word[..Suggest.MaxInputLength] + "…" : word;
        return near is null
            ? $"unknown {what} \"{shown}\"; run 'help' for a list of commands"
            : $"unknown {what} \"{shown}\" (did you mean \"{near}\"?)";
    }

    private void RegisterHandlers()
    {
        _handlers["help"] = HelpAsync;
        _handlers["exit"] = ExitAsync;
        _handlers["quit"] = ExitAsync;
        _handlers["ssh"] = SshAsync;
        _handlers["browser"] = BrowserAsync;
        RegisterAccountHandlers();
        RegisterVmHandlers();
        RegisterShareHandlers();
        RegisterMailHandlers();
        RegisterDefaultsHandlers();
        RegisterIntegrationHandlers();
    }

    private Task<int> ExitAsync(Invocation inv)
    {
        if (!inv.Context.Interactive) throw new CommandException($"{inv.Command.Name} is only available in the interactive shell");
        return Task.FromResult(0);
    }

    /// <summary><c>ssh VM [command]</c>: the SSH front door intercepts it; here there is no session to hop from.</summary>
    private Task<int> SshAsync(Invocation inv)
    {
        if (!inv.Context.Interactive) throw new CommandException(SshNeedsSession);
        // In the REPL the session is already the control plane's; the hop is made per connection.
        string vm = inv.OptionalArg(0) is { } v ? Vms.VmNames.Normalize(v, _s.Options.VmDomain) : "VM";
        string port = _s.Options.SshPort == 22 ? "" : $"-p {_s.Options.SshPort} ";
        throw new CommandException($"ssh does not run inside the shell; from your terminal run: ssh {port}{vm}.{_s.Options.VmDomain} (or: ssh -t {port}{_s.Options.ControlHost} ssh {vm})");
    }

    private async Task<int> BrowserAsync(Invocation inv)
    {
        inv.MaxArgs(0);
        if (_s.LoginLinks is null)
            throw new CommandException("browser login links are not available: the HTTPS front door is not running");
        // A browser session tells sites who you are (X-ExeDev-Email): only for an address that was proven.
        var account = await _s.Accounts.GetAsync(inv.Account.Id, inv.CancellationToken).ConfigureAwait(false) ?? inv.Account;
        if (!account.EmailVerified)
            throw new CommandException($"your e-mail address {account.Email} is not verified yet, so no browser login: "
                + $"on https://{_s.Options.ControlHost}/ ask for a login link by e-mail; opening it verifies the address");
        var url = await _s.LoginLinks.IssueLoginLinkAsync(account, inv.CancellationToken).ConfigureAwait(false);
        // exe.dev's field is magic_link; url stays for scripts written against earlier Warren output.
        if (inv.Json) inv.WriteJson(new JsonObject { ["magic_link"] = url.ToString(), ["url"] = url.ToString() });
        else
        {
            inv.Line("Open this link in your browser to log in (it works once):");
            inv.Line(url.ToString());
        }
        return 0;
    }

    // ---- help ----

    private Task<int> HelpAsync(Invocation inv)
    {
        if (inv.Args.Positionals.Count > 0)
        {
            var def = CommandCatalog.Resolve(inv.Args.Positionals, out _, out var unknown, out var parent);
            if (def is null) throw new CommandException(UnknownCommandMessage(unknown ?? "", parent, inv.Context.Interactive));
            WriteHelp(inv, def, inv.Args.Flag("verbose"));
            return Task.FromResult(0);
        }
        var visible = CommandCatalog.Commands.Where(c => !c.Hidden && (inv.Context.Interactive || !c.InteractiveOnly)).ToList();
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject
            {
                ["commands"] = new JsonArray(visible.SelectMany(c => c.HasSubcommands ? c.Subcommands.AsEnumerable() : [c])
                    .Select(c => (JsonNode?)HelpEntryJson(c)).ToArray()),
            });
            return Task.FromResult(0);
        }
        var rows = new List<(string, string)>();
        foreach (var c in visible)
        {
            if (c.HasSubcommands) foreach (var s in c.Subcommands) rows.Add((UsageLine(s, withFlags: false), s.Summary));
            else rows.Add((UsageLine(c, withFlags: false), c.Summary));
        }
        int width = rows.Max(r => r.Item1.Length) + 2;
        inv.Line(inv.Bold("Commands:"));
        foreach (var (u, s) in rows) inv.Line("  " + u.PadRight(width) + s);
        inv.Line();
        inv.Line("Every command accepts --json. Run 'help COMMAND' for its flags.");
        return Task.FromResult(0);
    }

    private static string UsageLine(CommandDefinition c, bool withFlags = true)
    {
        var sb = new StringBuilder(c.Path);
        if (withFlags && c.Flags.Any(f => !f.Hidden)) sb.Append(" [flags]");
        if (c.Usage.Length > 0) sb.Append(' ').Append(c.Usage);
        return sb.ToString();
    }

    /// <summary>
    /// One command in <c>help --json</c>: exe.dev's <c>name</c> and <c>description</c>, plus the usage line
    /// (<c>summary</c> repeats the description for scripts written against earlier Warren output).
    /// </summary>
    private static JsonObject HelpEntryJson(CommandDefinition c)
        => new() { ["name"] = c.Path, ["description"] = c.Summary, ["usage"] = UsageLine(c), ["summary"] = c.Summary };

    private static JsonArray FlagsJson(CommandDefinition def, bool verbose)
        => new(def.Flags.Where(f => verbose || !f.Hidden).Append(ArgParser.JsonFlag)
            .Select(f => (JsonNode?)new JsonObject { ["name"] = "--" + f.Name, ["help"] = f.Help }).ToArray());

    /// <summary><c>help CMD</c>; <paramref name="verbose"/> adds hidden flags and, for a group, each subcommand's flags.</summary>
    private static void WriteHelp(Invocation inv, CommandDefinition def, bool verbose = false)
    {
        if (inv.Json)
        {
            var o = HelpEntryJson(def);
            if (def.HasSubcommands)
                o["subcommands"] = new JsonArray(def.Subcommands.Select(s =>
                {
                    var entry = HelpEntryJson(s);
                    if (verbose) entry["flags"] = FlagsJson(s, verbose);
                    return (JsonNode?)entry;
                }).ToArray());
            o["flags"] = FlagsJson(def, verbose);
            inv.WriteJson(o);
            return;
        }
        inv.Line("Usage: " + UsageLine(def));
        inv.Line(def.Summary);
        if (def.Details is not null) { inv.Line(); inv.Line(def.Details); }
        if (def.HasSubcommands)
        {
            inv.Line();
            inv.Line(inv.Bold("Subcommands:"));
            int w = def.Subcommands.Max(s => UsageLine(s, false).Length) + 2;
            foreach (var s in def.Subcommands) inv.Line("  " + UsageLine(s, false).PadRight(w) + s.Summary);
        }
        WriteFlags(inv, def, verbose, "Flags:");
        if (verbose)
            foreach (var s in def.Subcommands.Where(s => s.Flags.Count > 0)) WriteFlags(inv, s, verbose, $"Flags of {s.Path}:");
    }

    private static void WriteFlags(Invocation inv, CommandDefinition def, bool verbose, string heading)
    {
        var flags = def.Flags.Where(f => verbose || !f.Hidden).Append(ArgParser.JsonFlag).ToList();
        inv.Line();
        inv.Line(inv.Bold(heading));
        var names = flags.Select(f => (f.Name.Length == 1 ? "-" : "--") + f.Name + (f.Kind == FlagKind.Bool ? "" : " " + (f.ValueName ?? "VALUE"))).ToList();
        int width = names.Max(n => n.Length) + 2;
        for (int i = 0; i < flags.Count; i++) inv.Line("  " + names[i].PadRight(width) + flags[i].Help + (flags[i].Hidden ? " (hidden)" : ""));
    }
}
