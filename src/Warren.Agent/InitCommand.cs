using System.Runtime.InteropServices;
using Warren.Agent.Native;
using Warren.Agent.Vm;

namespace Warren.Agent;

/// <summary>
/// <c>init [--setup-script PATH] [--user USER] [--] [CMD…]</c>: the VM's PID 1.
/// <list type="number">
/// <item>Reaps every zombie (waitpid(-1)); orphans of docker-exec'd processes land here.</item>
/// <item>Runs <c>serve</c> on <see cref="SessionSocketDirectory"/> (the agent session socket, docs/AGENT-PROTOCOL.md) when the
///   runtime mounted it, before anything else, and restarts it whenever it exits.</item>
/// <item>Runs the setup script once per /data volume (marker <see cref="SetupMarker"/>, output in <see cref="SetupLog"/>).</item>
/// <item>Runs CMD (as USER when given) and keeps the VM alive after it exits; a bare shell is not run at all,
///   since with no terminal it would exit at once. CMD starts with default signal dispositions, no blocked
///   signals and oom_score_adj 0, while the agent itself has <see cref="Processes.AgentOomScoreAdj"/>.</item>
/// <item>SIGTERM/SIGINT/SIGQUIT/SIGHUP go to CMD; SIGTERM/SIGINT also end the VM: every process gets SIGTERM,
///   then init exits after at most <see cref="StopGrace"/>, with status 128+N (the runtime restarts the VM only when
///   the engine, not the user, stopped it).</item>
/// <item>halt/poweroff from inside (SIGUSR1/SIGUSR2 as BusyBox sends them, SIGRTMIN+3/+4 as systemctl does) end the
///   VM the same way with status 0, which the runtime's restart policy leaves stopped; images lacking these commands
///   get the agent's own (<see cref="PowerCommand"/>).</item>
/// </list>
/// </summary>
internal static class InitCommand
{
    public const string SetupDirectory = "/data/.warren";
    public const string SetupLog = SetupDirectory + "/setup.log";
    public const string SetupMarker = SetupDirectory + "/setup.done";

    /// <summary>Where the runtime mounts the session socket directory (a tmpfs volume; agent.sock out, and the token in for VMs from before /.warren/token).</summary>
    public const string SessionSocketDirectory = "/.warren/run";

    /// <summary>serve is restarted at most this often, so one that cannot start (bad token file) does not spin.</summary>
    private static readonly TimeSpan ServeRestartInterval = TimeSpan.FromSeconds(1);

    /// <summary>A serve that keeps failing at once is restarted less and less often, down to this, so the log stays readable.</summary>
    private static readonly TimeSpan ServeRestartMaxInterval = TimeSpan.FromSeconds(30);

    /// <summary>A serve that ran this long was healthy: the next restart is after the base interval again.</summary>
    private static readonly TimeSpan ServeHealthyRun = TimeSpan.FromSeconds(10);

    /// <summary>How long init waits for processes after forwarding SIGTERM (below Docker's default 10 s stop timeout).</summary>
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(7);
    private static readonly TimeSpan StopPoll = TimeSpan.FromMilliseconds(100);

    private static readonly HashSet<string> BareShells = new(StringComparer.Ordinal)
    {
        "sh", "bash", "ash", "dash", "zsh", "fish", "/bin/sh", "/bin/bash", "/bin/ash", "/bin/dash",
        "/usr/bin/bash", "/usr/bin/zsh", "/bin/zsh", "/usr/bin/fish",
    };

    private static readonly object s_lock = new();
    private static readonly Dictionary<int, TaskCompletionSource<int>> s_waiters = new();
    private static readonly ManualResetEventSlim s_stop = new();
    private static int s_mainPid;
    private static readonly bool s_debug = Environment.GetEnvironmentVariable("WARREN_AGENT_DEBUG") == "1";

    /// <summary>Where `exec --pid-file` records pids (DockerVmRuntime.PidFileDirectory/PidFilePrefix).</summary>
    private const string PidFileDirectory = "/dev/shm";
    private const string PidFilePattern = ".warren-exec-*";
    private static readonly TimeSpan PidFileSweepInterval = TimeSpan.FromMinutes(1);

    /// <summary>Deletes pid files of exec'd processes that have ended (kill(pid, 0) fails with ESRCH).</summary>
    private static void SweepPidFiles()
    {
        const int ESRCH = 3;
        try
        {
            foreach (var file in Directory.EnumerateFiles(PidFileDirectory, PidFilePattern))
            {
                try
                {
                    if (!int.TryParse(File.ReadAllText(file).Trim(), out int pid) || (Libc.Kill(pid, 0) != 0 && Libc.Errno == ESRCH))
                        File.Delete(file);
                }
                catch (IOException) { }
                catch (UnauthorizedAccessException) { }
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    public static int Run(string[] args)
    {
        // init --vm: PID 1 of a microVM (Vm/VmGuest.cs); its arguments come from the seed disk.
        bool vm = args.Length > 0 && args[0] == "--vm";
        if (vm) args = VmGuest.Prepare();
        string? setupScript = null, user = null;
        int i = 0;
        for (; i < args.Length; i++)
        {
            if (args[i] == "--") { i++; break; }
            if (args[i] == "--setup-script" && i + 1 < args.Length) { setupScript = args[++i]; continue; }
            if (args[i] == "--user" && i + 1 < args.Length) { user = args[++i]; continue; }
            break;
        }
        var command = args[i..];

        if (Libc.GetPid() != 1) Libc.Prctl(Libc.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // The agent keeps the VM reachable: the OOM killer must take the app instead. The Docker runtime already set
        // this (a container lacks CAP_SYS_RESOURCE); in a microVM init sets it itself. serve and mux inherit it;
        // every command run for a user goes through `exec`/`as-user`/`session-child`, which put back 0.
        if (!Processes.SetOomScoreAdj(Processes.AgentOomScoreAdj) && Libc.GetPid() == 1)
            Log($"cannot set oom_score_adj to {Processes.AgentOomScoreAdj}; the OOM killer may pick the agent");

        // SIGTERM (the engine's stop, BusyBox's reboot) and SIGINT (ctrl-alt-del) end the VM with the status of a
        // process killed by that signal: not a clean power-off, so the runtime's restart policy brings the VM back
        // after an engine restart or a reboot from inside, while an explicit stop keeps it stopped.
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => OnStopSignal(c, Libc.SIGTERM, SignalledStatus(Libc.SIGTERM)));
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => OnStopSignal(c, Libc.SIGINT, SignalledStatus(Libc.SIGINT)));
        using var quit = PosixSignalRegistration.Create(PosixSignal.SIGQUIT, c => Forward(c, 3));
        using var hup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c => Forward(c, 1));
        // halt and poweroff, as BusyBox's commands (and the agent's own, PowerCommand) send them to PID 1 (SIGUSR1,
        // SIGUSR2), and as systemctl sends them to a systemd PID 1 (SIGRTMIN+3, SIGRTMIN+4; systemd(1) "Signals"):
        // the VM powers off, as a real machine does, and stays off (status 0: a clean exit the restart policy leaves alone).
        using var halt = PosixSignalRegistration.Create((PosixSignal)Libc.SIGUSR1, c => OnStopSignal(c, Libc.SIGTERM, PowerOffStatus));
        using var powerOff = PosixSignalRegistration.Create((PosixSignal)Libc.SIGUSR2, c => OnStopSignal(c, Libc.SIGTERM, PowerOffStatus));
        using var systemdHalt = TryRegister(SystemdSigRtMin + 3, c => OnStopSignal(c, Libc.SIGTERM, PowerOffStatus));
        using var systemdPowerOff = TryRegister(SystemdSigRtMin + 4, c => OnStopSignal(c, Libc.SIGTERM, PowerOffStatus));
        using var systemdReboot = TryRegister(SystemdSigRtMin + 5, c => OnStopSignal(c, Libc.SIGTERM, SignalledStatus(Libc.SIGTERM)));
        // An image without shutdown/poweroff/halt/reboot (Debian minbase has no init system) gets the agent's.
        if (!vm && Libc.GetPid() == 1) PowerCommand.InstallMissingLinks(Processes.SelfPath(), Log);
        // The VM's own name resolves in every image (only PID 1 of a VM: never a host's /etc/hosts).
        if (Libc.GetPid() == 1) HostsFile.EnsureOwnName(HostsFile.KernelHostname(), Log);
        // As PID 1 the runtime's own SIGCHLD handling lets exited children vanish before waitpid() sees their
        // status (observed: no zombie, no status). SIGCHLD back at SIG_DFL (which, unlike SIG_IGN, keeps
        // zombies for waitpid) makes this reaper the only one. We never use the Process class, which needs it.
        Libc.Signal(Libc.SIGCHLD, Libc.SIG_DFL);

        new Thread(ReapLoop) { IsBackground = true, Name = "reaper" }.Start();
        new Thread(SweepLoop) { IsBackground = true, Name = "pid-file-sweep" }.Start();

        var env = Processes.CurrentEnvironment();
        if (Directory.Exists(SessionSocketDirectory))
        {
            // The first serve starts here, synchronously, so the socket comes up before the setup script runs.
            string[] serveArgv = [Processes.SelfPath(), "serve", SessionSocketDirectory];
            var serve = StartSupervised(serveArgv, env);
            new Thread(() => Supervise(serveArgv, serve, env)) { IsBackground = true, Name = "serve-supervisor" }.Start();
            if (vm)
            {
                // The host reaches serve through the multiplexer on the VM's virtio-serial port.
                string[] muxArgv = [Processes.SelfPath(), "mux", Path.Combine(SessionSocketDirectory, ServeCommand.SocketFile)];
                var mux = StartSupervised(muxArgv, env);
                new Thread(() => Supervise(muxArgv, mux, env)) { IsBackground = true, Name = "mux-supervisor" }.Start();
                VmGuest.MarkBoot("serve and mux started");
            }
        }
        // In a VM, after serve and mux: the steps the host's first session does not need (VmGuest.PrepareInBackground).
        // The setup script and the image's command wait for them.
        // A stop meanwhile skips both.
        bool stopped = false;
        if (vm)
        {
            var prepared = VmGuest.PrepareInBackground(argv => SpawnTracked(argv, env, null));
            stopped = WaitHandle.WaitAny([((IAsyncResult)prepared).AsyncWaitHandle, s_stop.WaitHandle]) == 1;
        }
        if (setupScript != null && !stopped) RunSetupOnce(setupScript, env);

        if (!stopped && command.Length > 0 && !(command.Length == 1 && BareShells.Contains(command[0])))
        {
            try
            {
                var argv = AsUserCommand(command, user);
                var (pid, exited) = SpawnTracked(argv, env, null);
                Volatile.Write(ref s_mainPid, pid);
                Log($"started {command[0]} (pid {pid})");
                _ = exited.ContinueWith(t => Log($"{command[0]} exited ({Describe(t.Result)}); VM stays up"), TaskScheduler.Default);
            }
            catch (Exception e) when (e is IOException or FileNotFoundException)
            {
                Log($"cannot start {command[0]}: {e.Message}; VM stays up");
            }
        }
        if (vm && !stopped) VmGuest.SettleMemoryLater();

        s_stop.Wait();
        var deadline = DateTime.UtcNow + StopGrace;
        if (Libc.GetPid() == 1)
        {
            // Only as PID 1 of a pid namespace does kill(-1) mean "every process in this VM". Outside one it
            // would signal every process the user may signal on the host, so it is never used there.
            Log("stopping: SIGTERM to all processes");
            Libc.Kill(-1, 15);
            while (DateTime.UtcNow < deadline)
            {
                // kill(-1, 0) fails (ESRCH) once no other process is left in the namespace. In a VM it never does
                // (kernel threads count), so there /proc is asked instead.
                if (vm ? !VmGuest.AnyUserProcessLeft() : Libc.Kill(-1, 0) != 0) break;
                Thread.Sleep(StopPoll);
            }
            if (vm)
            {
                // PID 1 must never exit in a VM (the kernel panics): end the machine instead.
                Log("powering off");
                Libc.Kill(-1, 9);
                VmGuest.PowerOff();
            }
        }
        else
        {
            int main = Volatile.Read(ref s_mainPid);
            while (main > 0 && DateTime.UtcNow < deadline && Libc.Kill(main, 0) == 0)
                Thread.Sleep(StopPoll);
        }
        int status = Volatile.Read(ref s_exitStatus);
        return status == NoExitStatus ? 0 : status;
    }

    private static void RunSetupOnce(string script, List<string> env)
    {
        if (File.Exists(SetupMarker) || !File.Exists(script)) return;
        try
        {
            Directory.CreateDirectory(SetupDirectory);
            File.AppendAllText(SetupLog, $"# warren setup {DateTime.UtcNow:O}: {script}\n");
            string shell = File.Exists("/bin/sh") ? "/bin/sh" : Processes.SelfPath();
            var (_, exited) = SpawnTracked(AsUserCommand([shell, script], null), env, SetupLog);
            int status = exited.GetAwaiter().GetResult();
            File.AppendAllText(SetupLog, $"# setup {Describe(status)}\n");
            File.WriteAllText(SetupMarker, Describe(status) + "\n");
            Log($"setup script {Describe(status)}; output in {SetupLog}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log($"setup script failed to run: {e.Message}");
        }
    }

    /// <summary>
    /// A user's program (the image's command, the setup script) runs through the agent's <c>as-user</c> or
    /// <c>exec</c>, which give it the defaults a program expects: oom_score_adj 0 rather than the agent's, default
    /// signal dispositions, no blocked signals (posix_spawn alone cannot set the first).
    /// </summary>
    private static string[] AsUserCommand(string[] command, string? user) =>
        user is null or "" or "root" or "0" or "0:0"
            ? [Processes.SelfPath(), "exec", "--", .. command]
            : [Processes.SelfPath(), "as-user", user, "--", .. command];

    /// <summary>Starts a helper (<c>serve</c>, <c>mux</c>); the task completes when it exits (at once, with -1, if it could not be spawned).</summary>
    private static (Task<int> Exited, DateTime StartedAt) StartSupervised(string[] argv, List<string> env)
    {
        var startedAt = DateTime.UtcNow;
        try
        {
            var (pid, exited) = SpawnTracked(argv, env, null);
            if (s_debug) Log($"started {argv[1]} (pid {pid})");
            return (exited, startedAt);
        }
        catch (Exception e) when (e is IOException or FileNotFoundException)
        {
            Log($"cannot start {argv[1]}: {e.Message}");
            return (Task.FromResult(-1), startedAt);
        }
    }

    /// <summary>
    /// Restarts a helper whenever it exits, until the VM stops: at most once per <see cref="ServeRestartInterval"/>, and
    /// with the interval doubling (up to <see cref="ServeRestartMaxInterval"/>) while it keeps failing quickly.
    /// </summary>
    private static void Supervise(string[] argv, (Task<int> Exited, DateTime StartedAt) serve, List<string> env)
    {
        var interval = ServeRestartInterval;
        while (true)
        {
            int status = serve.Exited.GetAwaiter().GetResult();
            if (s_stop.IsSet) return;
            var ran = DateTime.UtcNow - serve.StartedAt;
            if (ran >= ServeHealthyRun) interval = ServeRestartInterval;
            var wait = interval - ran;
            if (status != -1) Log($"{argv[1]} exited ({Describe(status)}); restarting{(wait > TimeSpan.Zero ? $" in {wait.TotalSeconds:F0} s" : "")}");
            if (wait > TimeSpan.Zero && s_stop.Wait(wait)) return;
            interval = TimeSpan.FromTicks(Math.Min(interval.Ticks * 2, ServeRestartMaxInterval.Ticks));
            serve = StartSupervised(argv, env);
        }
    }

    /// <summary>Spawns under the lock the reaper takes, so the exit can't be reaped before it is awaited.</summary>
    private static (int Pid, Task<int> Exited) SpawnTracked(IReadOnlyList<string> argv, List<string> env, string? outputFile)
    {
        lock (s_lock)
        {
            int pid = Processes.Spawn(argv, env, outputFile);
            var tcs = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
            s_waiters[pid] = tcs;
            return (pid, tcs.Task);
        }
    }

    private static readonly TimeSpan ReapIdleWait = TimeSpan.FromMilliseconds(200);

    private static void ReapLoop()
    {
        while (true)
        {
            // Blocks until any child (ours or an orphan re-parented to PID 1) exits.
            int pid = Libc.WaitPid(-1, out int status, 0);
            if (pid <= 0)
            {
                // ECHILD: no children right now; orphans may be re-parented to us later.
                Thread.Sleep(ReapIdleWait);
                continue;
            }
            TaskCompletionSource<int>? tcs;
            lock (s_lock) s_waiters.Remove(pid, out tcs);
            // Orphans nobody waits for are simply reaped.
            if (s_debug) Log($"reaped pid {pid} ({Describe(status)}){(tcs == null ? " (orphan)" : "")}");
            tcs?.TrySetResult(status);
        }
    }

    private static void SweepLoop()
    {
        while (true)
        {
            Thread.Sleep(PidFileSweepInterval);
            SweepPidFiles();
        }
    }

    private static void OnStopSignal(PosixSignalContext context, int forwardSignal, int exitStatus)
    {
        context.Cancel = true;
        // The first request decides how the VM ends; a SIGTERM from the engine during a guest's poweroff changes nothing.
        Interlocked.CompareExchange(ref s_exitStatus, exitStatus, NoExitStatus);
        int main = Volatile.Read(ref s_mainPid);
        if (main > 0) Libc.Kill(main, forwardSignal);
        s_stop.Set();
    }

    /// <summary>glibc's SIGRTMIN (signal(7)), from which systemctl numbers the signals it sends to PID 1.</summary>
    private const int SystemdSigRtMin = 34;

    /// <summary>init's exit status after halt/poweroff: a clean exit.</summary>
    private const int PowerOffStatus = 0;

    private const int NoExitStatus = -1;
    private static int s_exitStatus = NoExitStatus;

    /// <summary>The status a shell reports for a process killed by <paramref name="signal"/> (128 + N).</summary>
    private static int SignalledStatus(int signal) => 128 + signal;

    /// <summary>A handler for a real-time signal, or null where the runtime cannot take that signal.</summary>
    private static PosixSignalRegistration? TryRegister(int signal, Action<PosixSignalContext> handler)
    {
        try { return PosixSignalRegistration.Create((PosixSignal)signal, handler); }
        catch (Exception e) when (e is ArgumentException or PlatformNotSupportedException or IOException or System.ComponentModel.Win32Exception)
        {
            Log($"signal {signal} cannot be handled: {e.Message}");
            return null;
        }
    }

    private static void Forward(PosixSignalContext context, int signal)
    {
        context.Cancel = true;
        int main = Volatile.Read(ref s_mainPid);
        if (main > 0) Libc.Kill(main, signal);
    }

    private static string Describe(int status) =>
        Libc.WIfSignaled(status) ? $"killed by signal {Libc.WTermSig(status)}" : $"exit status {Libc.WExitStatus(status)}";

    private static void Log(string message) => Console.Error.Write($"warren-agent init: {message}\n");
}
