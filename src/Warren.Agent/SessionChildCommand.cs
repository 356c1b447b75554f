using Warren.Agent.Native;

namespace Warren.Agent;

/// <summary>
/// <c>session-child [--tty] [--user USER] [--cwd DIR] [--nofile N] -- CMD…</c>: the first process of a session on the agent
/// socket (docs/AGENT-PROTOCOL.md). <c>serve</c> posix_spawns it with the session's pipes or pty slave already on
/// fds 0/1/2 and the session's environment; it does what must happen in the child between fork and exec, then
/// execve()s CMD in place (same pid, so STARTED's pid and the exit status are the command's own):
/// <list type="number">
/// <item>setsid(): a new session, so SIGHUP and job control stay within it;</item>
/// <item>oom_score_adj back to 0 (serve has the agent's -1000);</item>
/// <item>with --tty, the pty slave on fd 0 becomes the controlling terminal (TIOCSCTTY);</item>
/// <item>switches to USER (default root) as <c>as-user</c> does and sets HOME/USER/LOGNAME from /etc/passwd;</item>
/// <item>changes to DIR, else to the user's home, else to /;</item>
/// <item>with --nofile, puts back the soft descriptor limit serve raised for itself (programs expect the usual one);</item>
/// <item>every signal back at its default action and none blocked (ignores and masks survive execve).</item>
/// </list>
/// Failures before exec print a message on stderr (the session's) and exit 126, or 127 when CMD is not found.
/// </summary>
internal static unsafe class SessionChildCommand
{
    public static int Run(string[] args)
    {
        bool tty = false;
        string user = "", cwd = "";
        ulong? nofile = null;
        int i = 0;
        for (; i < args.Length; i++)
        {
            if (args[i] == "--") { i++; break; }
            if (args[i] == "--tty") { tty = true; continue; }
            if (args[i] == "--user" && i + 1 < args.Length) { user = args[++i]; continue; }
            if (args[i] == "--cwd" && i + 1 < args.Length) { cwd = args[++i]; continue; }
            if (args[i] == "--nofile" && i + 1 < args.Length && ulong.TryParse(args[++i], out ulong n)) { nofile = n; continue; }
            throw new AgentUsageException($"session-child: unexpected '{args[i]}'");
        }
        var argv = args[i..];
        if (argv.Length == 0) throw new AgentUsageException("session-child: no command");

        if (Libc.SetSid() < 0) return Fail($"setsid: errno {Libc.Errno}");
        // serve inherited the agent's OOM exemption; a user's command competes like any process.
        Processes.SetOomScoreAdj(Processes.CommandOomScoreAdj);
        if (nofile is { } soft)
        {
            RLimit limit;
            if (Libc.GetRLimit(Libc.RLIMIT_NOFILE, &limit) == 0 && soft < limit.Current)
            {
                limit.Current = soft;
                Libc.SetRLimit(Libc.RLIMIT_NOFILE, &limit);
            }
        }
        if (tty && Libc.IoctlArg(0, Libc.TIOCSCTTY, 0) != 0) return Fail($"cannot set the controlling terminal: errno {Libc.Errno}");

        UserSpec target;
        // "" is root (the protocol's default); serve already refused unknown users, so this only fails if
        // /etc/passwd changed in between.
        try { target = UserSpec.Resolve(user.Length == 0 ? "0" : user); }
        catch (Exception e) when (e is AgentUsageException or FormatException or OverflowException or IndexOutOfRangeException)
        {
            return Fail(e.Message);
        }

        var overrides = new Dictionary<string, string>(StringComparer.Ordinal);
        if (target.Home != null) overrides["HOME"] = target.Home;
        if (target.Name != null) overrides["USER"] = overrides["LOGNAME"] = target.Name;
        // Unprivileged (serve run by a user, as in tests) the only user reachable is oneself: nothing to drop.
        bool switchNeeded = Libc.GetUid() == 0 || target.Uid != Libc.GetUid();
        if (switchNeeded && !ExecCommands.DropPrivileges(target)) return AgentMain.ExitCannotExecute;

        if (cwd.Length > 0)
        {
            // An explicit directory that cannot be entered ends the session: running the command elsewhere
            // (say `rm -r *`) could do harm.
            if (Libc.Chdir(cwd) != 0) return Fail($"cd {cwd}: errno {Libc.Errno}");
        }
        else if (target.Home == null || Libc.Chdir(target.Home) != 0)
        {
            Libc.Chdir("/");
        }
        return Processes.Exec(argv, Processes.CurrentEnvironment(overrides));
    }

    private static int Fail(string message)
    {
        Console.Error.Write($"warren-agent: {message}\n");
        return AgentMain.ExitCannotExecute;
    }
}
