using System.Text;
using Warren.Platform.Commands;

namespace Warren.Platform.Interactive;

/// <summary>
/// The REPL behind <c>ssh CONTROL-HOST</c> with a pty: a prompt with line editing, history and tab
/// completion; each line is split with <see cref="ShellLexer"/> and run by <see cref="CommandDispatcher"/>
/// with ANSI allowed and JSON indented. A line ending in <c>\</c> continues after a <c>&gt; </c> prompt. <c>exit</c>, <c>quit</c>, ^D or end of input leave it.
/// </summary>
/// <remarks>
/// Input is not read while a command runs, so ^C does not interrupt a running command (commands are
/// short control-plane operations; a long <c>new</c> still completes and reports).
/// </remarks>
public sealed class InteractiveShell
{
    private readonly CommandDispatcher _dispatcher;
    private readonly CommandCompleter _completer;

    public InteractiveShell(CommandDispatcher dispatcher, CommandCompleter completer)
    {
        _dispatcher = dispatcher;
        _completer = completer;
    }

    /// <summary>The prompt: "warren.localhost ▶ " in bold.</summary>
    public string Prompt => $"\x1b[1m{_dispatcher.Options.ControlHost} ▶\x1b[0m ";

    /// <summary>
    /// Runs until exit; returns the exit status for the SSH session (0). <paramref name="ctx"/> supplies the
    /// account, key and cancellation; its streams are replaced by CRLF writers over <paramref name="output"/>.
    /// </summary>
    public async Task<int> RunAsync(CommandContext ctx, Stream input, Stream output, LineEditor? editor = null)
    {
        var ct = ctx.CancellationToken;
        Func<string, int, Completion?> complete = (line, cursor) => _completer.Complete(ctx.Account, line, cursor);
        // A given editor (the sign-up dialogue's) keeps what was typed ahead; the shell adds completion.
        editor = editor is null ? new LineEditor(input, output, complete) : editor.WithCompletion(complete);
        var stdout = new CrlfWriter(output);
        var commandCtx = new CommandContext
        {
            Account = ctx.Account,
            CurrentKey = ctx.CurrentKey,
            Stdin = TextReader.Null,
            Stdout = stdout,
            Stderr = stdout,
            ForceJson = false,
            Interactive = true,
            AllowedCommands = ctx.AllowedCommands,
            TokenVm = ctx.TokenVm,
            Source = ctx.Source,
            CancellationToken = ct,
        };
        await stdout.WriteRawAsync($"Welcome to Warren on {_dispatcher.Options.ControlHost}. Type 'help' for commands, 'exit' to leave.\r\n", ct);
        while (!ct.IsCancellationRequested)
        {
            var line = await ReadLogicalLineAsync(editor, stdout, ct, Prompt);
            if (line is null) break;
            if (string.IsNullOrWhiteSpace(line)) continue;
            editor.AddHistory(line);
            if (!ShellLexer.TrySplit(line, out var argv, out var error))
            {
                await stdout.WriteRawAsync($"\x1b[31m{error}\x1b[0m\r\n", ct);
                continue;
            }
            if (argv.Count == 0) continue;
            if (argv[0] is "exit" or "quit" && argv.Count == 1) break;
            await _dispatcher.RunAsync(commandCtx, argv);
            await stdout.FlushAsync(ct);
        }
        await stdout.FlushAsync(ct);
        return 0;
    }

    /// <summary>The prompt for a continued line (a POSIX shell's default PS2, "> ").</summary>
    public const string ContinuationPrompt = "> ";

    /// <summary>Most characters one command may have across its continued lines (as much as one POST /exec body).</summary>
    public const int MaxLogicalLineChars = 64 * 1024;

    /// <summary>
    /// One command, read over as many lines as it needs: a line that ends in an unescaped backslash continues on the
    /// next, read after <see cref="ContinuationPrompt"/>; the backslash and the line break are removed, as a POSIX
    /// shell removes a backslash-newline pair (POSIX.1-2017 XCU 2.2.1, "Escape Character"). Null at end of input
    /// (also in the middle of a continued command, which is then dropped, as sh drops it); "" after ^C.
    /// </summary>
    public static async Task<string?> ReadLogicalLineAsync(LineEditor editor, CrlfWriter stdout, CancellationToken ct, string? prompt = null)
    {
        var line = await editor.ReadLineAsync(prompt ?? "", ct);
        if (line is null) return null;
        var joined = new StringBuilder();
        while (EndsWithLineContinuation(line))
        {
            joined.Append(line, 0, line.Length - 1);
            if (joined.Length > MaxLogicalLineChars)
            {
                await stdout.WriteRawAsync($"\x1b[31mcommand too long (more than {MaxLogicalLineChars} characters)\x1b[0m\r\n", ct);
                return "";
            }
            line = await editor.ReadLineAsync(ContinuationPrompt, ct);
            if (line is null) return null;
            // ^C at the continuation prompt abandons the whole command, as in sh.
            if (line.Length == 0 && editor.LastLineInterrupted) return "";
        }
        if (joined.Length == 0) return line;
        joined.Append(line);
        return joined.Length > MaxLogicalLineChars ? "" : joined.ToString();
    }

    /// <summary>Whether the line ends in a backslash that is not itself escaped (an odd run of trailing backslashes).</summary>
    public static bool EndsWithLineContinuation(string line)
    {
        int run = 0;
        for (int i = line.Length - 1; i >= 0 && line[i] == '\\'; i--) run++;
        return run % 2 == 1;
    }

    /// <summary>
    /// A TextWriter over a channel stream: buffers text and writes it on <see cref="FlushAsync()"/>,
    /// with LF turned into CRLF for a raw pty (<c>translateNewlines</c>). <see cref="Flush"/> is a
    /// no-op: command handlers write synchronously, and the front door flushes asynchronously so
    /// no thread blocks on the SSH window.
    /// </summary>
    public sealed class CrlfWriter : TextWriter
    {
        private readonly Stream _output;
        private readonly StringBuilder _buffer = new();
        private readonly object _gate = new();
        private readonly bool _translateNewlines;

        public CrlfWriter(Stream output, bool translateNewlines = true)
        {
            _output = output;
            _translateNewlines = translateNewlines;
        }

        public override Encoding Encoding => Encoding.UTF8;

        public override void Write(char value)
        {
            lock (_gate)
            {
                if (_translateNewlines && value == '\n' && (_buffer.Length == 0 || _buffer[^1] != '\r')) _buffer.Append('\r');
                _buffer.Append(value);
            }
        }

        public override void Write(string? value)
        {
            if (value is null) return;
            foreach (char c in value) Write(c);
        }

        public override void Flush() { }

        public override Task FlushAsync() => FlushAsync(CancellationToken.None);

        public override async Task FlushAsync(CancellationToken cancellationToken)
        {
            string text;
            lock (_gate)
            {
                if (_buffer.Length == 0) return;
                text = _buffer.ToString();
                _buffer.Clear();
            }
            await _output.WriteAsync(Encoding.UTF8.GetBytes(text), cancellationToken);
            await _output.FlushAsync(cancellationToken);
        }

        /// <summary>Writes text as is (already CRLF), after anything buffered.</summary>
        public async Task WriteRawAsync(string text, CancellationToken ct)
        {
            await FlushAsync(ct);
            await _output.WriteAsync(Encoding.UTF8.GetBytes(text), ct);
            await _output.FlushAsync(ct);
        }
    }
}
