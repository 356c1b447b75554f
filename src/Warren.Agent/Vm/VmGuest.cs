using System.Text;
using Warren.Agent.Native;

namespace Warren.Agent.Vm;

/// <summary>
/// What <c>init --vm</c> does before the usual init, as PID 1 of a microVM (switch_root'ed to by the initramfs, which
/// already mounted the disks and configured the network): the mounts a container runtime would have made, the
/// hostname, and the image's configuration from the read-only seed disk at <see cref="SeedDirectory"/>. The seed
/// holds one small file per setting, lists NUL-separated, so no value ever needs quoting.
/// </summary>
internal static class VmGuest
{
    public const string SeedDirectory = "/.warren";
    /// <summary>The host's agent channel: a virtio-serial port named by QEMU's <c>virtserialport name=</c> (udev-less: found through sysfs).</summary>
    public const string PortName = "warren.agent";

    /// <summary>The runtime's init arguments after <c>--vm</c>: <c>[--setup-script P] [--user U] -- CMD…</c>, NUL-separated.</summary>
    private const string InitArgsFile = SeedDirectory + "/init-args";
    /// <summary>KEY=VALUE entries, NUL-separated: the image's environment, then the VM's.</summary>
    private const string EnvFile = SeedDirectory + "/env";
    private const string HostnameFile = SeedDirectory + "/hostname";
    private const string WorkdirFile = SeedDirectory + "/workdir";

    /// <summary>Used when the image sets no PATH (as Docker's default).</summary>
    private const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// <summary>The session socket directory is a tmpfs this small (as the Docker runtime's run volume): it only holds agent.sock.</summary>
    private const string RunDirectoryOptions = "size=65536,mode=0700";

    // <sys/mount.h>
    private const ulong MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8;

    /// <summary>Prepares the VM and returns the arguments for the usual init.</summary>
    public static string[] Prepare()
    {
        MarkBoot("init started");
        Mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, null);
        Mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, null);
        Mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
        // /dev/ptmx must reach this devpts instance (as in containers): a symlink into it.
        if (File.Exists("/dev/pts/ptmx"))
        {
            Libc.Unlink("/dev/ptmx");
            Libc.Symlink("pts/ptmx", "/dev/ptmx");
        }
        Mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
        Mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
        Mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
        Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, null);
        Mount("tmpfs", InitCommand.SessionSocketDirectory, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, RunDirectoryOptions);

        MarkBoot("mounted");
        if (ReadText(HostnameFile) is { Length: > 0 } hostname) SetHostname(hostname);
        // /data may be larger than its filesystem (grown while the VM was stopped): grown before anyone uses it, as it
        // is the user's. A no-op at first boot (the runtime makes /data at its full size). / is grown in the background.
        GrowFsCommand.Grow("/data");
        s_sshHostKeysWanted = VmIdentity.Apply();
        Environment.SetEnvironmentVariable("PATH", DefaultPath);
        Environment.SetEnvironmentVariable("HOME", "/root");
        foreach (var entry in ReadList(EnvFile))
        {
            int eq = entry.IndexOf('=');
            if (eq > 0) Environment.SetEnvironmentVariable(entry[..eq], entry[(eq + 1)..]);
        }
        if (ReadText(WorkdirFile) is { Length: > 0 } workdir && Libc.Chdir(workdir) != 0)
            Log($"cannot enter working directory {workdir} (errno {Libc.Errno}); staying in /");
        return ReadList(InitArgsFile).ToArray();
    }

    /// <summary>Set by <see cref="Prepare"/>: the VM's identity changed and its image has SSH host keys to make anew.</summary>
    private static bool s_sshHostKeysWanted;

    /// <summary>nice(2)'s lowest priority: the background boot steps take the CPU only when serve and mux do not need it.</summary>
    private const int BackgroundNice = 19;

    /// <summary>
    /// The boot steps the agent's first answer to the host does not need, on a thread of their own at the lowest CPU
    /// priority (so serve and mux, started meanwhile, come first under an emulated CPU): new SSH host keys when
    /// <see cref="VmIdentity"/> removed inherited ones (ssh-keygen makes several, slow on an emulated CPU), then growing / to its disk (first boot: the image's filesystem is
    /// smaller; or grown while the VM was stopped; an online resize, so / stays in use meanwhile). The image's command and the setup
    /// script wait for the returned task: sshd needs its host keys, and a program may fill the disk.
    /// <paramref name="spawn"/> starts a child that init's reaper tracks (PID 1 reaps every child itself).
    /// </summary>
    public static Task PrepareInBackground(Func<string[], (int Pid, Task<int> Exited)> spawn)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        new Thread(() =>
        {
            try
            {
                if (Libc.SetPriority(Libc.PRIO_PROCESS, 0, BackgroundNice) != 0) Log($"setpriority failed: errno {Libc.Errno}");
                if (s_sshHostKeysWanted)
                {
                    VmIdentity.MakeSshHostKeys(spawn);
                    MarkBoot("ssh host keys made");
                }
                GrowFsCommand.Grow("/");
                MarkBoot("root grown");
            }
            catch (Exception e)
            {
                // An exception leaving this thread would end PID 1, and with it the VM (kernel panic).
                Log($"background boot steps failed: {e.Message}");
            }
            finally
            {
                done.SetResult();
            }
        }) { IsBackground = true, Name = "vm-prepare" }.Start();
        return done.Task;
    }

    /// <summary>
    /// Free page reporting's smallest block, as a page order (Linux Documentation/mm/free_page_reporting: the guest
    /// tells the host which free blocks of at least this order it may take back). The kernel's default is a pageblock
    /// (order 9, 2 MiB), which a guest whose free memory is scattered in smaller pieces rarely has whole; order 0 reports
    /// every free page, so an idle VM gives back all it does not use.
    /// </summary>
    private const string PageReportingOrderFile = "/sys/module/page_reporting/parameters/page_reporting_order";
    private const string PageReportingOrder = "0";

    /// <summary>How often the CPU is sampled to see whether boot has settled.</summary>
    private static readonly TimeSpan SettleSample = TimeSpan.FromSeconds(5);
    /// <summary>Boot has settled when the CPU was idle at least this share of one <see cref="SettleSample"/>.</summary>
    private const double SettledIdleShare = 0.9;
    /// <summary>Not before this long after the image's command started (a service may pause between its steps) ...</summary>
    private static readonly TimeSpan SettleAtLeast = TimeSpan.FromSeconds(20);
    /// <summary>... and at the latest this long after, settled or not (a VM that is never idle drops its boot reads once too).</summary>
    private static readonly TimeSpan SettleAtMost = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Lets an idle VM hand its unused memory back to the host (QEMU's virtio-balloon free-page-reporting): free page
    /// reporting down to single pages now, and once boot has settled (the CPU idle for a <see cref="SettleSample"/>,
    /// between <see cref="SettleAtLeast"/> and <see cref="SettleAtMost"/> after the command started) the page cache
    /// its reads filled (the image's files, read once at boot) is dropped and memory compacted, once (Linux
    /// Documentation/admin-guide/sysctl/vm: drop_caches, compact_memory), so those pages are free and reported. Later
    /// reads fill the cache again as usual.
    /// </summary>
    public static void SettleMemoryLater()
    {
        TryWriteText(PageReportingOrderFile, PageReportingOrder);
        new Thread(() =>
        {
            Libc.SetPriority(Libc.PRIO_PROCESS, 0, BackgroundNice);
            long started = Environment.TickCount64;
            Thread.Sleep(SettleAtLeast);
            var last = CpuTimes();
            while (Environment.TickCount64 - started < (long)SettleAtMost.TotalMilliseconds)
            {
                Thread.Sleep(SettleSample);
                var now = CpuTimes();
                long total = now.Total - last.Total, idle = now.Idle - last.Idle;
                last = now;
                if (total > 0 && idle >= SettledIdleShare * total) break;
            }
            Libc.Sync();
            TryWriteText("/proc/sys/vm/drop_caches", "3");
            TryWriteText("/proc/sys/vm/compact_memory", "1");
            MarkBoot("caches dropped");
        }) { IsBackground = true, Name = "vm-memory-settle" }.Start();
    }

    /// <summary>All CPUs' time and their idle + iowait time, in clock ticks, from the first line of /proc/stat (proc(5)); zeros when unreadable.</summary>
    private static (long Total, long Idle) CpuTimes()
    {
        try
        {
            using var reader = new StreamReader("/proc/stat");
            var fields = (reader.ReadLine() ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 6 || fields[0] != "cpu") return (0, 0);
            long total = 0;
            for (int i = 1; i < fields.Length; i++) total += long.Parse(fields[i], System.Globalization.CultureInfo.InvariantCulture);
            return (total, long.Parse(fields[4], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[5], System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or FormatException or OverflowException) { return (0, 0); }
    }

    private static void TryWriteText(string path, string value)
    {
        try { File.WriteAllText(path, value); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Log($"cannot write {path}: {e.Message}"); }
    }

    /// <summary>The port's device node: /dev/vportNpM whose sysfs name is <see cref="PortName"/> (no udev to make a by-name link).</summary>
    public static string? FindPort()
    {
        try
        {
            foreach (var dir in Directory.EnumerateDirectories("/sys/class/virtio-ports"))
                if (ReadText(Path.Combine(dir, "name")) == PortName) return "/dev/" + Path.GetFileName(dir);
        }
        catch (IOException) { }
        return null;
    }

    /// <summary>Ends the VM: flush the disks, then power off (QEMU runs with -no-reboot, so a reboot ends it too).</summary>
    public static void PowerOff()
    {
        const int RB_POWER_OFF = 0x4321fedc;
        Libc.Sync();
        Libc.Reboot(RB_POWER_OFF);
        Log($"reboot(RB_POWER_OFF) failed: errno {Libc.Errno}");
    }

    /// <summary>Whether a process other than PID 1 and kernel threads (whose cmdline is empty) is still there.</summary>
    public static bool AnyUserProcessLeft()
    {
        try
        {
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), out int pid) || pid == 1) continue;
                try
                {
                    using var cmdline = File.OpenRead(Path.Combine(dir, "cmdline"));
                    if (cmdline.ReadByte() >= 0) return true;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // gone meanwhile
            }
        }
        catch (IOException) { }
        return false;
    }

    /// <summary><c>hostname NAME</c>: sets the kernel's hostname (a rename reaches a running VM without relying on the image's tools).</summary>
    public static int Hostname(string[] args)
    {
        if (args.Length != 1 || args[0].Length == 0 || args[0].Length > MaxHostnameBytes) throw new AgentUsageException("hostname: NAME (1-64 bytes)");
        if (!SetHostname(args[0])) return 1;
        // The new name resolves too; the old name's line (if the agent added it) goes.
        HostsFile.EnsureOwnName(args[0], Log);
        return 0;
    }

    /// <summary>HOST_NAME_MAX on Linux.</summary>
    private const int MaxHostnameBytes = 64;

    private static unsafe bool SetHostname(string name)
    {
        var bytes = Encoding.UTF8.GetBytes(name);
        fixed (byte* p = bytes)
            if (Libc.SetHostname(p, (nuint)bytes.Length) != 0)
            {
                Log($"sethostname failed: errno {Libc.Errno}");
                return false;
            }
        return true;
    }

    private static void Mount(string source, string target, string type, ulong flags, string? options)
    {
        try { Directory.CreateDirectory(target); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        if (Libc.Mount(source, target, type, flags, options) != 0) Log($"mount {type} on {target} failed: errno {Libc.Errno}");
    }

    private static string? ReadText(string path)
    {
        try { return File.ReadAllText(path).TrimEnd('\n'); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    private static List<string> ReadList(string path)
    {
        var text = ReadText(path);
        return text == null ? [] : text.Split('\0', StringSplitOptions.RemoveEmptyEntries).ToList();
    }

    private static void Log(string message) => Console.Error.Write($"warren-agent init: {message}\n");

    /// <summary>
    /// Writes "warren-agent: boot: WHAT" to the kernel log (/dev/kmsg, Linux Documentation/ABI/testing/dev-kmsg) at
    /// level info, which the kernel timestamps like its own lines: <c>dmesg</c> in a VM then shows the kernel's,
    /// the initramfs's and the agent's boot steps on one clock. Never fails (a missing /dev/kmsg only loses the mark).
    /// </summary>
    public static unsafe void MarkBoot(string what)
    {
        int fd = Libc.Open("/dev/kmsg", Libc.O_WRONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return;
        var line = Encoding.UTF8.GetBytes($"<6>warren-agent: boot: {what}\n");
        fixed (byte* p = line) Libc.Write(fd, p, (nuint)line.Length);
        Libc.Close(fd);
    }
}
