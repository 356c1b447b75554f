using System.Collections;
using Warren.Agent.Native;

namespace Warren.Agent;

/// <summary>Starting and replacing processes without the runtime's Process class (which would race PID 1's reaper).</summary>
internal static unsafe class Processes
{
    /// <summary>Signal names as SSH sends them (RFC 4254 §6.10, without "SIG") and their Linux x86-64 numbers.</summary>
    public static readonly IReadOnlyDictionary<string, int> SignalNumbers = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase)
    {
        ["HUP"] = 1, ["INT"] = 2, ["QUIT"] = 3, ["ILL"] = 4, ["TRAP"] = 5, ["ABRT"] = 6, ["BUS"] = 7, ["FPE"] = 8,
        ["KILL"] = 9, ["USR1"] = 10, ["SEGV"] = 11, ["USR2"] = 12, ["PIPE"] = 13, ["ALRM"] = 14, ["TERM"] = 15,
        ["CHLD"] = 17, ["CONT"] = 18, ["STOP"] = 19, ["TSTP"] = 20, ["TTIN"] = 21, ["TTOU"] = 22, ["WINCH"] = 28,
    };

    public static bool TryParseSignal(string text, out int signal)
    {
        if (text.StartsWith("SIG", StringComparison.OrdinalIgnoreCase)) text = text[3..];
        if (SignalNumbers.TryGetValue(text, out signal)) return true;
        return int.TryParse(text, out signal) && signal > 0 && signal < 65;
    }

    /// <summary>The current environment as KEY=VALUE strings (the managed snapshot of environ).</summary>
    public static List<string> CurrentEnvironment(IReadOnlyDictionary<string, string>? overrides = null)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry e in Environment.GetEnvironmentVariables())
            env[(string)e.Key] = (string?)e.Value ?? "";
        if (overrides != null)
            foreach (var (k, v) in overrides) env[k] = v;
        return env.Select(kv => kv.Key + "=" + kv.Value).ToList();
    }

    /// <summary>Resolves <paramref name="file"/> on PATH as execvp(3) does; null when not found.</summary>
    public static string? ResolveExecutable(string file, string? path)
    {
        if (file.Contains('/')) return file;
        foreach (var dir in (path ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").Split(':'))
        {
            var candidate = Path.Combine(dir.Length == 0 ? "." : dir, file);
            if (Libc.Stat(candidate, out var st) == 0 && !st.IsDirectory && (st.Mode & 0x49) != 0) return candidate;
        }
        return null;
    }

    /// <summary>Replaces this process with <paramref name="argv"/>. Returns only on failure (with the exit code to use).</summary>
    public static int Exec(IReadOnlyList<string> argv, List<string> env)
    {
        string? pathVar = env.FirstOrDefault(e => e.StartsWith("PATH=", StringComparison.Ordinal))?[5..];
        var resolved = ResolveExecutable(argv[0], pathVar);
        if (resolved == null)
        {
            Console.Error.Write($"warren-agent: {argv[0]}: command not found\n");
            return AgentMain.ExitNotFound;
        }
        using var a = new Libc.CStringArray(argv);
        using var e = new Libc.CStringArray(env);
        using var p = new Libc.CStringArray([resolved]);
        ResetSignalsForExec();
        Libc.Execve(p.Pointer[0], a.Pointer, e.Pointer);
        int errno = Libc.Errno;
        Console.Error.Write($"warren-agent: {argv[0]}: cannot execute (errno {errno})\n");
        return errno == Libc.ENOENT ? AgentMain.ExitNotFound : AgentMain.ExitCannotExecute;
    }

    /// <summary>
    /// Undoes signal state execve() would pass on: an ignored signal stays ignored across exec and the calling
    /// thread's blocked-signal mask is inherited (POSIX.1-2017, execve "Signals"). serve ignores SIGPIPE (so
    /// `yes | head` would never end), glibc's posix_spawn leaves its internal signals ignored, and the agent itself
    /// may have been started under nohup or from a background shell (SIGHUP, SIGINT, SIGQUIT ignored). A command
    /// must start with the defaults, as from a login shell. The raw system call is used because glibc's
    /// sigaction refuses its internal signals; it fails harmlessly for SIGKILL and SIGSTOP.
    /// </summary>
    private static void ResetSignalsForExec()
    {
        byte* action = stackalloc byte[Libc.KernelSigActionBytes];
        new Span<byte>(action, Libc.KernelSigActionBytes).Clear(); // sa_handler = SIG_DFL, no flags, empty mask
        for (int sig = 1; sig <= Libc.LastSignal; sig++)
            Libc.Syscall(Libc.SYS_rt_sigaction, sig, (nint)action, 0, Libc.KernelSigSetBytes);
        byte* empty = stackalloc byte[Libc.SigSetBytes];
        new Span<byte>(empty, Libc.SigSetBytes).Clear();
        Libc.SigProcMask(Libc.SIG_SETMASK, empty, null);
    }

    /// <summary>The agent's own OOM score adjustment: the OOM killer never picks it (proc(5), /proc/pid/oom_score_adj).</summary>
    public const int AgentOomScoreAdj = -1000;

    /// <summary>What a command the agent starts for a user gets: the kernel's default.</summary>
    public const int CommandOomScoreAdj = 0;

    private const string OomScoreAdjPath = "/proc/self/oom_score_adj";

    /// <summary>
    /// Sets this process's oom_score_adj (inherited across fork and exec). Raising it is always allowed; lowering
    /// it below what a privileged process last set needs CAP_SYS_RESOURCE (proc(5)). Must run before privileges
    /// are dropped: a process that changed uid loses write access to its own /proc files. Best effort: false when
    /// the kernel refused.
    /// </summary>
    public static bool SetOomScoreAdj(int value)
    {
        try
        {
            File.WriteAllText(OomScoreAdjPath, value.ToString(System.Globalization.CultureInfo.InvariantCulture));
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>This executable's path as seen inside the VM (the bind mount), for re-running a subcommand.</summary>
    public static string SelfPath() => File.Exists("/.warren/agent") ? "/.warren/agent" : Environment.ProcessPath ?? "/proc/self/exe";

    /// <summary>
    /// posix_spawn(3) with stdio inherited, or stdout+stderr appended to <paramref name="outputFile"/>, or
    /// <paramref name="stdio"/>[i] dup2'ed to fd i (the caller's descriptors should be O_CLOEXEC, so only the
    /// dup2'ed copies reach the child; none of them may be 0, 1 or 2).
    /// </summary>
    public static int Spawn(IReadOnlyList<string> argv, List<string> env, string? outputFile = null, IReadOnlyList<int>? stdio = null)
    {
        string? pathVar = env.FirstOrDefault(e => e.StartsWith("PATH=", StringComparison.Ordinal))?[5..];
        var resolved = ResolveExecutable(argv[0], pathVar) ?? throw new FileNotFoundException($"{argv[0]}: command not found");
        using var a = new Libc.CStringArray(argv);
        using var e = new Libc.CStringArray(env);
        using var p = new Libc.CStringArray([resolved]);
        // posix_spawn_file_actions_t is 80 bytes on glibc x86-64; over-allocate.
        const int FileActionsBytes = 256;
        byte* fa = stackalloc byte[FileActionsBytes];
        void* actions = null;
        if (outputFile != null)
        {
            PosixSpawnFileActionsInit(fa);
            PosixSpawnFileActionsAddOpen(fa, 1, outputFile, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_APPEND, 0x180 /* 0600 */);
            PosixSpawnFileActionsAddDup2(fa, 1, 2);
            PosixSpawnFileActionsAddOpen(fa, 0, "/dev/null", Libc.O_RDONLY, 0);
            actions = fa;
        }
        else if (stdio != null)
        {
            PosixSpawnFileActionsInit(fa);
            for (int fd = 0; fd < stdio.Count; fd++) PosixSpawnFileActionsAddDup2(fa, stdio[fd], fd);
            actions = fa;
        }
        // Every signal back at SIG_DFL and none blocked in the child (see ResetSignalsForExec): the set is written
        // as raw bits rather than with sigfillset(), which leaves out glibc's internal signals, so those are reset too.
        byte* attr = stackalloc byte[SpawnAttrBytes];
        byte* allSignals = stackalloc byte[Libc.SigSetBytes];
        byte* noSignals = stackalloc byte[Libc.SigSetBytes];
        new Span<byte>(allSignals, Libc.SigSetBytes).Fill(0xff);
        new Span<byte>(noSignals, Libc.SigSetBytes).Clear();
        PosixSpawnAttrInit(attr);
        PosixSpawnAttrSetSigDefault(attr, allSignals);
        PosixSpawnAttrSetSigMask(attr, noSignals);
        PosixSpawnAttrSetFlags(attr, PosixSpawnSetSigDef | PosixSpawnSetSigMask);
        try
        {
            int rc = Libc.PosixSpawn(out int pid, p.Pointer[0], actions, attr, a.Pointer, e.Pointer);
            if (rc != 0) throw new IOException($"{argv[0]}: cannot execute (errno {rc})");
            return pid;
        }
        finally
        {
            PosixSpawnAttrDestroy(attr);
            if (actions != null) PosixSpawnFileActionsDestroy(fa);
        }
    }

    /// <summary>posix_spawnattr_t is 336 bytes on glibc x86-64; over-allocate.</summary>
    private const int SpawnAttrBytes = 512;
    /// <summary>POSIX_SPAWN_SETSIGDEF and POSIX_SPAWN_SETSIGMASK (&lt;spawn.h&gt;).</summary>
    private const short PosixSpawnSetSigDef = 0x04, PosixSpawnSetSigMask = 0x08;

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawnattr_init")]
    private static extern int PosixSpawnAttrInit(byte* attr);
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawnattr_destroy")]
    private static extern int PosixSpawnAttrDestroy(byte* attr);
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawnattr_setflags")]
    private static extern int PosixSpawnAttrSetFlags(byte* attr, short flags);
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawnattr_setsigdefault")]
    private static extern int PosixSpawnAttrSetSigDefault(byte* attr, byte* signals);
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawnattr_setsigmask")]
    private static extern int PosixSpawnAttrSetSigMask(byte* attr, byte* signals);
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawn_file_actions_init")]
    private static extern int PosixSpawnFileActionsInit(byte* fa);
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawn_file_actions_destroy")]
    private static extern int PosixSpawnFileActionsDestroy(byte* fa);
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawn_file_actions_adddup2")]
    private static extern int PosixSpawnFileActionsAddDup2(byte* fa, int fd, int newFd);
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "posix_spawn_file_actions_addopen")]
    private static extern int PosixSpawnFileActionsAddOpen(byte* fa, int fd, [System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string path, int flags, uint mode);
}

/// <summary>A user resolved from the VM's /etc/passwd and /etc/group (no NSS: the agent is static).</summary>
internal sealed record UserSpec(uint Uid, uint Gid, uint[] Groups, string? Name, string? Home)
{
    public static UserSpec Resolve(string spec)
    {
        string userPart = spec, groupPart = "";
        int colon = spec.IndexOf(':');
        if (colon >= 0) { userPart = spec[..colon]; groupPart = spec[(colon + 1)..]; }

        var passwd = ReadColonFile("/etc/passwd");
        var groups = ReadColonFile("/etc/group");
        string[]? pw = uint.TryParse(userPart, out var uidNum)
            ? passwd.FirstOrDefault(f => f.Length > 2 && f[2] == userPart)
            : passwd.FirstOrDefault(f => f[0] == userPart);
        uint uid;
        if (uint.TryParse(userPart, out uidNum)) uid = uidNum;
        else if (pw != null && uint.TryParse(pw[2], out var u)) uid = u;
        else throw new AgentUsageException($"unknown user '{userPart}'");

        uint gid = pw != null && pw.Length > 3 && uint.TryParse(pw[3], out var g) ? g : uid;
        if (groupPart.Length > 0)
        {
            if (uint.TryParse(groupPart, out var gn)) gid = gn;
            else
            {
                var gr = groups.FirstOrDefault(f => f[0] == groupPart) ?? throw new AgentUsageException($"unknown group '{groupPart}'");
                gid = uint.Parse(gr[2]);
            }
        }
        string? name = pw?[0];
        var supplementary = new List<uint> { gid };
        if (name != null)
            foreach (var gr in groups)
                if (gr.Length > 3 && gr[3].Split(',').Contains(name) && uint.TryParse(gr[2], out var sg) && !supplementary.Contains(sg))
                    supplementary.Add(sg);
        return new UserSpec(uid, gid, supplementary.ToArray(), name, pw != null && pw.Length > 5 ? pw[5] : null);
    }

    private static List<string[]> ReadColonFile(string path)
    {
        try
        {
            return File.ReadAllLines(path).Where(l => l.Length > 0 && l[0] != '#').Select(l => l.Split(':')).ToList();
        }
        catch (IOException) { return []; }
        catch (UnauthorizedAccessException) { return []; }
    }
}
