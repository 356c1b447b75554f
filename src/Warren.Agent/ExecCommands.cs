using Warren.Agent.Native;

namespace Warren.Agent;

/// <summary>
/// Helpers for Docker exec, which has no signal API:
/// <c>exec --pid-file F [--tty-size COLSxROWS] -- CMD…</c> records its pid and execve()s CMD (same pid, so the file names the
/// command itself and the exit status is the command's own); <c>signal SIG F</c>, run by a second exec,
/// kill()s that pid. <c>as-user USER -- CMD…</c> drops to USER (from /etc/passwd) and execs CMD.
/// Both give CMD oom_score_adj 0 (the agent's own -1000 is inherited otherwise) and default signal dispositions.
/// </summary>
internal static unsafe class ExecCommands
{
    public static int Exec(string[] args)
    {
        string? pidFile = null, ttySize = null;
        int i = 0;
        for (; i < args.Length; i++)
        {
            if (args[i] == "--") { i++; break; }
            if (args[i] == "--pid-file" && i + 1 < args.Length) { pidFile = args[++i]; continue; }
            if (args[i] == "--tty-size" && i + 1 < args.Length) { ttySize = args[++i]; continue; }
            break;
        }
        var argv = args[i..];
        if (argv.Length == 0) throw new AgentUsageException("exec: no command");
        Processes.SetOomScoreAdj(Processes.CommandOomScoreAdj);
        if (pidFile != null)
        {
            try
            {
                File.WriteAllText(pidFile, Libc.GetPid().ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Console.Error.Write($"warren-agent: cannot write pid file: {e.Message}\n");
            }
        }
        if (ttySize != null) SetWindowSize(ttySize);
        else WaitForWindowSize();
        return Processes.Exec(argv, Processes.CurrentEnvironment());
    }

    /// <summary>How long exec waits for the runtime's first resize of a new TTY (Docker API 1.41 exec has no initial size).</summary>
    private const int WindowSizeAttempts = 40;
    private static readonly TimeSpan WindowSizePoll = TimeSpan.FromMilliseconds(5);

    /// <summary>
    /// <c>--tty-size COLSxROWS</c>: Docker API 1.41 exec has no initial console size, so the agent sets it on
    /// its terminal before exec'ing the command; the command never sees 0x0 and no resize race exists.
    /// </summary>
    private static void SetWindowSize(string spec)
    {
        var parts = spec.Split('x');
        if (parts.Length != 2 || !ushort.TryParse(parts[0], out var cols) || !ushort.TryParse(parts[1], out var rows)) return;
        if (Libc.IsATty(0) != 1) return;
        var size = new WinSize { Columns = cols, Rows = rows };
        Libc.Ioctl(0, Libc.TIOCSWINSZ, &size);
    }

    /// <summary>
    /// Without --tty-size: a TTY exec starts at 0x0 and the runtime resizes it just after start; waiting (at most ~200 ms) here
    /// means the command sees its real size at once instead of racing the resize.
    /// </summary>
    private static void WaitForWindowSize()
    {
        if (Libc.IsATty(0) != 1) return;
        WinSize size;
        for (int i = 0; i < WindowSizeAttempts; i++)
        {
            if (Libc.Ioctl(0, Libc.TIOCGWINSZ, &size) != 0 || size.Rows != 0 || size.Columns != 0) return;
            Thread.Sleep(WindowSizePoll);
        }
    }

    /// <summary>Upper bound on waits for the pid file to appear (the exec may still be starting).</summary>
    private const int PidFileAttempts = 50;
    private static readonly TimeSpan PidFilePoll = TimeSpan.FromMilliseconds(20);

    public static int Signal(string[] args)
    {
        if (args.Length != 2) throw new AgentUsageException("signal: SIG PIDFILE");
        if (!Processes.TryParseSignal(args[0], out int sig)) throw new AgentUsageException($"signal: unknown signal '{args[0]}'");
        for (int attempt = 0; attempt < PidFileAttempts; attempt++)
        {
            string text;
            try { text = File.ReadAllText(args[1]).Trim(); }
            catch (FileNotFoundException) { Thread.Sleep(PidFilePoll); continue; }
            catch (IOException) { Thread.Sleep(PidFilePoll); continue; }
            if (!int.TryParse(text, out int pid) || pid <= 1) { Thread.Sleep(PidFilePoll); continue; }
            if (Libc.Kill(pid, sig) == 0) return 0;
            Console.Error.Write($"warren-agent: kill {pid}: errno {Libc.Errno}\n");
            return 1;
        }
        Console.Error.Write("warren-agent: no pid file\n");
        return 1;
    }

    public static int AsUser(string[] args)
    {
        if (args.Length < 2) throw new AgentUsageException("as-user: USER CMD...");
        var user = UserSpec.Resolve(args[0]);
        int i = 1;
        if (args[i] == "--") i++;
        var argv = args[i..];
        if (argv.Length == 0) throw new AgentUsageException("as-user: no command");
        var overrides = new Dictionary<string, string>();
        Processes.SetOomScoreAdj(Processes.CommandOomScoreAdj);
        if (user.Home != null) overrides["HOME"] = user.Home;
        if (user.Name != null) overrides["USER"] = overrides["LOGNAME"] = user.Name;
        if (!DropPrivileges(user)) return AgentMain.ExitCannotExecute;
        if (user.Home != null && Environment.CurrentDirectory == "/") Libc.Chdir(user.Home);
        return Processes.Exec(argv, Processes.CurrentEnvironment(overrides));
    }

    public static bool DropPrivileges(UserSpec user)
    {
        fixed (uint* groups = user.Groups)
        {
            if (Libc.SetGroups((nuint)user.Groups.Length, groups) != 0 && Libc.GetUid() == 0)
            {
                Console.Error.Write($"warren-agent: setgroups: errno {Libc.Errno}\n");
                return false;
            }
        }
        if (Libc.SetGid(user.Gid) != 0 || Libc.SetUid(user.Uid) != 0)
        {
            Console.Error.Write($"warren-agent: cannot switch to uid {user.Uid}: errno {Libc.Errno}\n");
            return false;
        }
        return true;
    }
}
