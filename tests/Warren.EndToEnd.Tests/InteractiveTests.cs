using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>The interactive shell and the sign-up dialogue through a real pty (ssh -tt with scripted input).</summary>
public sealed partial class InteractiveTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;

    [GeneratedRegex(@"\x1b\[[0-9;?]*[A-Za-z]")]
    private static partial Regex Ansi();

    private Task<ProcessResult> PtyAsync(SshUser u, string input)
    {
        var args = u.SshOptions(Daemon.SshPort);
        args.Add("-tt");
        args.Add(Daemon.ControlAddress);
        return ProcessRunner.RunAsync("ssh", args, stdin: input);
    }

    [Fact]
    public async Task Repl_RunsCommands_AndExits()
    {
        var u = await Daemon.CreateUserAsync("repl@example.com");
        var r = await PtyAsync(u, "whoami\nls\nexit\n");
        var screen = Ansi().Replace(r.Stdout, "");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("repl@example.com", screen);
        Assert.Contains("No VMs found", screen);
    }

    [Fact]
    public async Task Signup_WithAnUnknownKey_CreatesTheAccount_ThenTheShellRuns()
    {
        var u = await SshUser.CreateKeyAsync(Daemon, "newcomer@example.com");
        var r = await PtyAsync(u, "newcomer@example.com\nwhoami\nexit\n");
        var screen = Ansi().Replace(r.Stdout, "");
        Assert.Contains("To sign up, please verify your email.", screen);
        Assert.Contains("newcomer@example.com", screen);

        // The key now belongs to the new account, over plain exec too.
        var who = await u.ControlAsync("whoami --json");
        Assert.True(who.ExitCode == 0, who.ToString());
        Assert.Contains("\"email\":\"newcomer@example.com\"", who.Stdout);
    }

    [Fact]
    public async Task Signup_BadEmail_IsRefused_ThenCancelled()
    {
        var u = await SshUser.CreateKeyAsync(Daemon, "x@example.com");
        var r = await PtyAsync(u, "not-an-email\n\n");
        var screen = Ansi().Replace(r.Stdout, "");
        Assert.Contains("Invalid email format", screen);
        Assert.NotEqual(0, r.ExitCode);
        var who = await u.ControlAsync("whoami --json");
        Assert.NotEqual(0, who.ExitCode);
    }
}
