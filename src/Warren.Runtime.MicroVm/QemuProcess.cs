using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Warren.Runtime.MicroVm;

/// <summary>
/// One VM's QEMU process: the command line (QEMU's <c>microvm</c> machine, virtio-mmio devices only), the launch
/// (<c>-daemonize</c>: QEMU outlives a daemon restart, as containers outlive one), and finding it again through its pid
/// file, checked against <c>/proc/&lt;pid&gt;/cmdline</c> so a reused pid is never taken for the VM.
/// </summary>
internal static class QemuProcess
{
    /// <summary>
    /// Debian's cloud kernel under QEMU's TCG on microvm hangs calibrating the TSC without these (no PIT/HPET reference):
    /// a fixed early TSC frequency, a TSC trusted as stable, and no timer check.
    /// </summary>
    private const string TcgKernelArgs = "tsc_early_khz=2000000 tsc=reliable no_timer_check";

    /// <summary>Guest addressing of QEMU user networking (its defaults): the VM, the host's gateway, and its DNS forwarder.</summary>
    internal const string UserGuestNetwork = "10.0.2.15/24,10.0.2.2,10.0.2.3";

    private static readonly TimeSpan LaunchTimeout = TimeSpan.FromSeconds(60);

    public static string ProcessName(string vmId) => "warren-" + vmId;

    /// <summary>
    /// /dev/kvm opens and is hardware virtualization (kvm_intel or kvm_amd). Some cloud guests offer /dev/kvm through
    /// kvm_pvm (PVM, a page-table-based nested KVM), which runs only PVM-aware guest kernels: Debian's cloud kernel
    /// hangs right after decompression there (measured), so that counts as no KVM.
    /// </summary>
    public static bool KvmUsable()
    {
        if (!Directory.Exists("/sys/module/kvm_intel") && !Directory.Exists("/sys/module/kvm_amd")) return false;
        try
        {
            using var kvm = new FileStream("/dev/kvm", FileMode.Open, FileAccess.ReadWrite);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>
    /// The memory a VM boots with (-m): its limit, but at least what the kernel and initramfs need. A lower limit is
    /// then set with the balloon (<see cref="MicroVmRuntime"/>), as is a lower limit given while it runs.
    /// </summary>
    public static long BootMemoryBytes(VmRecord vm, long minimum) => Math.Max(vm.Resources.MemoryBytes, minimum);

    public static List<string> Arguments(VmRecord vm, VmLayout layout, string kernelDirectory, bool kvm, bool consoleLog, string? user = null,
        long minMemoryBytes = 0, int tcgCacheMiB = 0)
    {
        int cpus = Math.Max(1, (int)Math.Ceiling(vm.Resources.Cpus));
        long memoryMiB = BootMemoryBytes(vm, minMemoryBytes) / (1024 * 1024);
        var append = new StringBuilder("console=ttyS0 reboot=t panic=-1 quiet");
        if (!kvm) append.Append(' ').Append(TcgKernelArgs);
        append.Append(" warren.net=").Append(vm.GuestNetwork ?? UserGuestNetwork);

        var netdev = new StringBuilder();
        if (vm.Tap != null)
        {
            // The daemon made the tap (and owns its addressing); QEMU only attaches to it, running no scripts.
            netdev.Append("tap,id=net0,ifname=").Append(vm.Tap).Append(",script=no,downscript=no");
        }
        else
        {
            netdev.Append("user,id=net0");
            foreach (int port in vm.Ports)
                netdev.Append(CultureInfo.InvariantCulture, $",hostfwd=tcp:{vm.Address}:{port}-:{port}");
        }

        var args = new List<string>
        {
            "-name", $"{ProcessName(vm.VmId)},process={ProcessName(vm.VmId)}",
            // ACPI is how the cloud kernel finds virtio-mmio devices (it lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
            "-M", "microvm,acpi=on,pit=on,pic=on,rtc=on",
            "-accel", kvm ? "kvm" : tcgCacheMiB > 0 ? "tcg,tb-size=" + tcgCacheMiB.ToString(CultureInfo.InvariantCulture) : "tcg",
        };
        if (kvm) args.AddRange(["-cpu", "host"]);
        args.AddRange([
            "-smp", cpus.ToString(CultureInfo.InvariantCulture),
            "-m", memoryMiB.ToString(CultureInfo.InvariantCulture),
            "-nodefaults", "-no-user-config", "-display", "none",
            // A guest reboot ends the process: restart is always a relaunch with the current configuration.
            "-no-reboot",
            // QEMU's seccomp filter. Not spawn=deny nor elevateprivileges=deny: -daemonize forks and calls setsid after the
            // filter is in place, and QEMU 7.2 then dies of SIGSYS or exits 1 (measured).
            "-sandbox", "on,obsolete=deny,resourcecontrol=deny",
            "-daemonize", "-pidfile", layout.PidFile,
        ]);
        // QEMU 7.2 opens every disk, socket and the tap as root, then drops to this user (setuid/setgid) before the
        // guest runs; QEMU 9.1 renames the option -run-with user=.
        if (!string.IsNullOrEmpty(user)) args.AddRange(["-runas", user]);
        args.AddRange([
            "-serial", consoleLog ? "file:" + layout.ConsoleLog : "null",
            "-kernel", Path.Combine(kernelDirectory, "vmlinuz"),
            "-initrd", Path.Combine(kernelDirectory, "initramfs.cpio.gz"),
            "-append", append.ToString(),
            "-drive", $"id=root,file={layout.Root},format=qcow2,if=none,discard=unmap",
            "-device", "virtio-blk-device,drive=root",
            "-drive", $"id=data,file={layout.Data},format=qcow2,if=none,discard=unmap",
            "-device", "virtio-blk-device,drive=data",
            "-drive", $"id=seed,file={layout.Seed},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=seed",
            "-drive", $"id=kmods,file={Path.Combine(kernelDirectory, "kmods.img")},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=kmods",
            "-netdev", netdev.ToString(),
            "-device", "virtio-net-device,netdev=net0,mac=" + MacAddress(vm.Address),
            "-device", "virtio-rng-device",
            // Lowers the guest's memory below -m while it runs (resize --memory down, live). free-page-reporting: the guest
            // hands pages it freed back to QEMU, which discards them (virtio 1.2 "Free Page Reporting"; Linux
            // Documentation/mm/free_page_reporting), so an idle VM does not keep the peak it once touched resident.
            // deflate-on-oom: a guest ballooned down that runs out of memory takes pages back instead of OOM-killing.
            "-device", "virtio-balloon-device,id=balloon0,free-page-reporting=on,deflate-on-oom=on",
            "-device", "virtio-serial-device,id=vs0",
            "-chardev", $"socket,id=agent,path={layout.AgentSocket},server=on,wait=off",
            "-device", "virtserialport,bus=vs0.0,chardev=agent,name=warren.agent",
            "-qmp", $"unix:{layout.QmpSocket},server=on,wait=off",
        ]);
        return args;
    }

    /// <summary>A locally administered unicast MAC (IEEE 802: bit 1 of the first octet set) from the VM's IPv4 address: stable and unique per VM.</summary>
    internal static string MacAddress(string address)
    {
        Span<byte> b = stackalloc byte[4];
        if (!System.Net.IPAddress.TryParse(address, out var ip) || !ip.TryWriteBytes(b, out int n) || n != 4) b.Clear();
        return $"52:54:{b[0]:x2}:{b[1]:x2}:{b[2]:x2}:{b[3]:x2}";
    }

    /// <summary>Starts QEMU; returns once it daemonized (devices set up, sockets listening) with its pid.</summary>
    public static async Task<int> LaunchAsync(string qemu, IReadOnlyList<string> args, VmLayout layout, string vmId, string? user, CancellationToken ct)
    {
        Directory.CreateDirectory(layout.RunDirectory, VmLayout.DirectoryMode);
        foreach (var stale in new[] { layout.PidFile, layout.AgentSocket, layout.QmpSocket }) File.Delete(stale);
        // The unprivileged QEMU must be able to remove its pid file at exit (how a clean exit is told from a crash): its
        // own run directory, reached through the VM's directory, which it may traverse but not list or write (0711;
        // every file in it is 0600 root, and QEMU opens its disks before dropping root).
        if (!string.IsNullOrEmpty(user))
        {
            await HostCommand.RunAsync("chown", [user, layout.RunDirectory], TimeSpan.FromSeconds(30), ct).ConfigureAwait(false);
            File.SetUnixFileMode(layout.Directory, VmLayout.DirectoryMode | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        }
        var start = new ProcessStartInfo(qemu)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = new Process { StartInfo = start };
        try { process.Start(); }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new MicroVmException(MicroVmErrors.HostToolMissing, $"cannot run {qemu}: {e.Message} (run scripts/prereqs.sh)", e);
        }
        process.StandardInput.Close();
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(LaunchTimeout);
        // The daemon's stdio is /dev/null after daemonizing: only the parent's errors arrive here.
        var stderr = process.StandardError.ReadToEndAsync(limit.Token);
        try
        {
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw new MicroVmException(MicroVmErrors.VmStartFailed, $"QEMU did not start VM {vmId} within {LaunchTimeout.TotalSeconds:0} s");
        }
        string error = (await stderr.ConfigureAwait(false)).Trim();
        if (process.ExitCode != 0 || ReadPid(layout) is not int pid)
            throw new MicroVmException(MicroVmErrors.VmStartFailed,
                $"QEMU could not start VM {vmId} (exit {process.ExitCode}){(error.Length > 0 ? ": " + (error.Length > 1000 ? error[..1000] : error) : "")}");
        return pid;
    }

    /// <summary>The running QEMU of this VM, or null: pid file present, process alive, and its command line names this very pid file.</summary>
    public static int? ReadPid(VmLayout layout)
    {
        string text;
        try { text = File.ReadAllText(layout.PidFile).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || pid <= 1) return null;
        return IsVmProcess(pid, layout) ? pid : null;
    }

    /// <summary>
    /// Whether <paramref name="pid"/> is this VM's QEMU: its command line holds <c>-pidfile</c> with the VM's own path, which
    /// also tells apart two installations' VMs of the same id. A zombie's command line is empty: no longer the VM.
    /// </summary>
    public static bool IsVmProcess(int pid, VmLayout layout)
    {
        try
        {
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline");
            return cmdline.Contains("\0-pidfile\0" + layout.PidFile + "\0", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>The -m (MiB) a running QEMU was started with, from its command line; null when unreadable.</summary>
    public static long? RunningMemoryBytes(int pid)
    {
        try
        {
            var argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0');
            int i = Array.IndexOf(argv, "-m");
            return i >= 0 && i + 1 < argv.Length && long.TryParse(argv[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out long mib) ? mib * 1024 * 1024 : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>When the process started (from /proc/&lt;pid&gt;, to the second).</summary>
    public static DateTimeOffset? StartedAt(int pid)
    {
        try { return new DateTimeOffset(Directory.GetCreationTimeUtc($"/proc/{pid}"), TimeSpan.Zero); }
        catch (IOException) { return null; }
    }

    /// <summary>Waits for the process to be gone (polling: it is not our child after daemonizing).</summary>
    public static async Task<bool> WaitExitAsync(int pid, VmLayout layout, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        while (IsVmProcess(pid, layout))
        {
            if (deadline.Elapsed >= timeout) return false;
            await Task.Delay(ExitPoll, ct).ConfigureAwait(false);
        }
        return true;
    }

    private static readonly TimeSpan ExitPoll = TimeSpan.FromMilliseconds(50);

    public static void Kill(int pid, VmLayout layout)
    {
        if (!IsVmProcess(pid, layout)) return;
        try { Process.GetProcessById(pid).Kill(); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception) { }
    }
}
