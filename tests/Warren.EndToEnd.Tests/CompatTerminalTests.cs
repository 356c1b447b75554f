using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Terminal details exe.dev users rely on, through a real pty (OpenSSH <c>ssh -tt</c> with scripted input): line
/// continuation in the REPL, and a terminal's shell-init preamble (Warp) sent as an exec request.
/// </summary>
public sealed partial class CompatTerminalTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;

    /// <summary>What Warp sends as the command of a session it opens (its bootstrap starts this way), shortened.</summary>
    private const string WarpPreamble = "export TERM_PROGRAM=WarpTerminal; export WARP_SESSION_ID=7126; echo warp-bootstrap";

    [GeneratedRegex(@"\x1b\[[0-9;?]*[A-Za-z]")]
    private static partial Regex Ansi();

    private async Task<string> PtyAsync(SshUser u, string input, string? command = null)
    {
        var args = u.SshOptions(Daemon.SshPort);
        args.Add("-tt");
        args.Add(Daemon.ControlAddress);
        if (command is not null) args.Add(command);
        var r = await ProcessRunner.RunAsync("ssh", args, stdin: input);
        return Ansi().Replace(r.Stdout + r.Stderr, "");
    }

    [Fact]
    public async Task Repl_ALineEndingInABackslash_ContinuesAfterAGreaterThanPrompt()
    {
        var u = await Daemon.CreateUserAsync("continuation@example.com");
        var screen = await PtyAsync(u, "whoami \\\n--json\nexit\n");
        Assert.Contains("\n> ", screen);
        Assert.Contains("\"email\": \"continuation@example.com\"", screen);
        Assert.DoesNotContain("unknown command", screen);
    }

    [Fact]
    public async Task WarpPreamble_FromAnUnknownKey_GetsTheSignupDialogue_ThenTheRepl()
    {
        var u = await SshUser.CreateKeyAsync(Daemon, "warp-user@example.com");
        var screen = await PtyAsync(u, "warp-user@example.com\nwhoami --json\nexit\n", WarpPreamble);
        Assert.DoesNotContain("Please complete registration", screen);
        Assert.Contains("To sign up, please verify your email.", screen);
        Assert.Contains("\"email\": \"warp-user@example.com\"", screen);
        Assert.DoesNotContain("warp-bootstrap", screen.Replace(WarpPreamble, ""));

        // The key is registered now: the same preamble opens the REPL directly.
        var again = await PtyAsync(u, "whoami --json\nexit\n", WarpPreamble);
        Assert.DoesNotContain("To sign up", again);
        Assert.Contains("\"email\": \"warp-user@example.com\"", again);
    }

    [Fact]
    public async Task AnOrdinaryExecFromAnUnknownKey_IsStillToldToRegister()
    {
        var u = await SshUser.CreateKeyAsync(Daemon, "plain@example.com");
        var r = await u.ControlAsync("echo TERM_PROGRAM=xterm");
        Assert.NotEqual(0, r.ExitCode);
        Assert.DoesNotContain("To sign up", r.Stdout);
    }
}
