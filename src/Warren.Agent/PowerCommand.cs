using Warren.Agent.Native;

namespace Warren.Agent;

/// <summary>
/// <c>shutdown</c>, <c>poweroff</c>, <c>halt</c> and <c>reboot</c> for images that have none (a Debian minbase has no
/// init system, so no such commands): init links these names to the agent at boot (<see cref="InstallMissingLinks"/>),
/// and the agent, called by one of them, asks PID 1 with the signal BusyBox's commands send to init (BusyBox
/// init/halt.c): SIGUSR1 halt, SIGUSR2 power off, SIGTERM reboot. init answers as <see cref="InitCommand"/> describes.
/// </summary>
internal static class PowerCommand
{
    /// <summary>The names the agent answers to when called through a link (argv[0]).</summary>
    public static readonly string[] Names = ["shutdown", "poweroff", "halt", "reboot"];

    /// <summary>Where a missing command is linked: the first that exists (merged-/usr images have /usr/sbin; BusyBox ones /sbin).</summary>
    private static readonly string[] LinkDirectories = ["/usr/sbin", "/sbin"];

    /// <summary>Directories a command of that name may already be in (Debian's sudo secure_path, which `sudo shutdown` searches).</summary>
    private static readonly string[] SearchDirectories = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

    private enum PowerAction { Halt, PowerOff, Reboot }

    /// <summary>
    /// Links each of <see cref="Names"/> that no search directory has to <paramref name="agentPath"/>. An image's own
    /// command (BusyBox's applet, a systemctl link) always wins: it is never replaced.
    /// </summary>
    public static void InstallMissingLinks(string agentPath, Action<string> log)
    {
        var directory = LinkDirectories.FirstOrDefault(d => Directory.Exists(d) && !IsSymlink(d));
        if (directory is null) return;
        foreach (var name in Names)
        {
            if (SearchDirectories.Any(d => Exists(Path.Combine(d, name)))) continue;
            try { File.CreateSymbolicLink(Path.Combine(directory, name), agentPath); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                log($"cannot link {name} in {directory}: {e.Message}");
            }
        }
    }

    private static bool Exists(string path) => File.Exists(path) || new FileInfo(path).LinkTarget is not null;

    private static bool IsSymlink(string path) => new DirectoryInfo(path).LinkTarget is not null;

    /// <summary>Runs as <paramref name="name"/> (one of <see cref="Names"/>).</summary>
    public static int Run(string name, string[] args)
    {
        PowerAction action = name switch { "halt" => PowerAction.Halt, "reboot" => PowerAction.Reboot, _ => PowerAction.PowerOff };
        bool warnOnly = false;
        string? when = null;
        foreach (var arg in args)
        {
            switch (arg)
            {
                case "--help":
                    Console.Out.Write($"usage: {name}{(name == "shutdown" ? " [-h|-P|-H|-r] [now|+0]" : " [-f]")}\n");
                    return 0;
                case "-H" or "--halt": action = PowerAction.Halt; break;
                case "-P" or "-p" or "--poweroff": action = PowerAction.PowerOff; break;
                case "-h": action = name == "shutdown" ? PowerAction.PowerOff : action; break;
                case "-r" or "--reboot": action = PowerAction.Reboot; break;
                case "-k": warnOnly = true; break;
                case "-c":
                    Console.Error.Write($"{name}: no shutdown is scheduled\n");
                    return 1;
                // BusyBox and systemd options that change nothing here: force, no sync, no wtmp record, no wall message.
                case "-f" or "--force" or "-n" or "--no-sync" or "-d" or "--no-wtmp" or "-w" or "--wtmp-only" or "--no-wall" or "-q": break;
                default:
                    if (arg.StartsWith('-')) { Console.Error.Write($"{name}: unknown option {arg}\n"); return AgentMain.ExitUsage; }
                    // shutdown TIME [MESSAGE]: only an immediate time is supported; the rest is a wall message.
                    when ??= arg;
                    break;
            }
        }
        if (name == "shutdown" && when is not null && when is not ("now" or "+0" or "0"))
        {
            Console.Error.Write($"shutdown: scheduled shutdown is not supported here; use: shutdown now\n");
            return 1;
        }
        if (warnOnly) return 0;
        // As the real commands do (systemctl: "Must be root"), checked first: only root may stop the machine.
        if (Libc.GetUid() != 0)
        {
            Console.Error.Write($"{name}: must be superuser\n");
            return 1;
        }
        int signal = action switch { PowerAction.Halt => Libc.SIGUSR1, PowerAction.PowerOff => Libc.SIGUSR2, _ => Libc.SIGTERM };
        if (Libc.Kill(1, signal) != 0)
        {
            int errno = Libc.Errno;
            Console.Error.Write($"{name}: cannot signal init (errno {errno})\n");
            return 1;
        }
        return 0;
    }

    /// <summary>The name the agent was started under (argv[0] of /proc/self/cmdline, without its directory).</summary>
    public static string InvokedName()
    {
        try
        {
            var cmdline = File.ReadAllBytes("/proc/self/cmdline");
            int end = Array.IndexOf(cmdline, (byte)0);
            var argv0 = System.Text.Encoding.UTF8.GetString(cmdline, 0, end < 0 ? cmdline.Length : end);
            return Path.GetFileName(argv0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "";
        }
    }
}
