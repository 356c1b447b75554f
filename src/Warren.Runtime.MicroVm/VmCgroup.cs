using System.Globalization;

namespace Warren.Runtime.MicroVm;

/// <summary>
/// One VM's CPU cgroup: the QEMU process (all its threads, vCPUs included) limited to <c>--cpu</c> CPUs of time by the
/// CFS bandwidth controller (the kernel's Documentation/scheduler/sched-bwc.rst). cgroup v1 (<c>cpu/</c> hierarchy,
/// cpu.cfs_quota_us) or v2 (unified, cpu.max), whichever the host mounts. The group is
/// <c>&lt;hierarchy&gt;/&lt;group&gt;/&lt;vm id&gt;</c>, made at start and removed with the VM.
/// </summary>
internal sealed class VmCgroup
{
    private const string CgroupRoot = "/sys/fs/cgroup";
    /// <summary>The CFS period: 100 ms, the kernel's default.</summary>
    private const long PeriodMicroseconds = 100_000;

    private readonly string? _parent;
    private readonly bool _v2;

    public VmCgroup(string group)
    {
        string v1 = Path.Combine(CgroupRoot, "cpu");
        if (File.Exists(Path.Combine(v1, "cpu.cfs_quota_us")))
            _parent = Path.Combine(v1, group);
        else if (File.Exists(Path.Combine(CgroupRoot, "cgroup.controllers")))
        {
            _parent = Path.Combine(CgroupRoot, group);
            _v2 = true;
        }
    }

    /// <summary>Whether the host has a CPU controller this can use.</summary>
    public bool Available => _parent != null;

    public string? PathOf(string vmId) => _parent == null ? null : Path.Combine(_parent, vmId);

    /// <summary>Puts <paramref name="pid"/> (every thread) into the VM's group with a quota of <paramref name="cpus"/> CPUs (0: no quota).</summary>
    public void Apply(string vmId, int pid, double cpus)
    {
        if (PathOf(vmId) is not { } dir) return;
        if (_v2 && !Directory.Exists(_parent))
        {
            Directory.CreateDirectory(_parent!);
            // v2: a child gets the cpu controller only when the parent delegates it.
            TryWrite(Path.Combine(_parent!, "cgroup.subtree_control"), "+cpu");
        }
        Directory.CreateDirectory(dir);
        SetQuota(vmId, cpus);
        // cgroup.procs moves the whole process, all threads (cgroup v1 and v2 alike).
        File.WriteAllText(Path.Combine(dir, "cgroup.procs"), pid.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>Changes the quota live (resize --cpu).</summary>
    public void SetQuota(string vmId, double cpus)
    {
        if (PathOf(vmId) is not { } dir || !Directory.Exists(dir)) return;
        long quota = cpus > 0 ? (long)Math.Ceiling(cpus * PeriodMicroseconds) : -1;
        if (_v2)
        {
            File.WriteAllText(Path.Combine(dir, "cpu.max"), (quota > 0 ? quota.ToString(CultureInfo.InvariantCulture) : "max") + " " + PeriodMicroseconds.ToString(CultureInfo.InvariantCulture));
            return;
        }
        File.WriteAllText(Path.Combine(dir, "cpu.cfs_period_us"), PeriodMicroseconds.ToString(CultureInfo.InvariantCulture));
        File.WriteAllText(Path.Combine(dir, "cpu.cfs_quota_us"), quota.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>The quota in CPUs, or null when the group is absent or unlimited.</summary>
    public double? ReadQuota(string vmId)
    {
        if (PathOf(vmId) is not { } dir || !Directory.Exists(dir)) return null;
        try
        {
            if (_v2)
            {
                var parts = File.ReadAllText(Path.Combine(dir, "cpu.max")).Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return parts[0] == "max" ? null : double.Parse(parts[0], CultureInfo.InvariantCulture) / double.Parse(parts[1], CultureInfo.InvariantCulture);
            }
            long quota = long.Parse(File.ReadAllText(Path.Combine(dir, "cpu.cfs_quota_us")).Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            long period = long.Parse(File.ReadAllText(Path.Combine(dir, "cpu.cfs_period_us")).Trim(), CultureInfo.InvariantCulture);
            return quota <= 0 ? null : (double)quota / period;
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException) { return null; }
    }

    /// <summary>The pids in the VM's group (empty when absent).</summary>
    public IReadOnlyList<int> Processes(string vmId)
    {
        if (PathOf(vmId) is not { } dir) return [];
        try
        {
            return File.ReadAllLines(Path.Combine(dir, "cgroup.procs"))
                .Select(l => int.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out int p) ? p : 0).Where(p => p > 0).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return []; }
    }

    /// <summary>
    /// Removes the VM's group (rmdir, which the kernel refuses while a task is in it: a QEMU just killed leaves it a
    /// moment later, hence the bounded retry). Still busy after that: the next start-up sweep removes it.
    /// </summary>
    public async Task RemoveAsync(string vmId, CancellationToken ct)
    {
        const int Attempts = 40;
        if (PathOf(vmId) is not { } dir) return;
        for (int attempt = 1; Directory.Exists(dir); attempt++)
        {
            try
            {
                Directory.Delete(dir);
                return;
            }
            catch (IOException) when (attempt < Attempts)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(25), ct).ConfigureAwait(false);
            }
            catch (IOException)
            {
                return;
            }
        }
    }

    /// <summary>The installation's own group, when no VM's group is left in it (at shutdown with no VM: nothing of it stays).</summary>
    public void RemoveParentIfEmpty()
    {
        if (_parent == null || !Directory.Exists(_parent) || Directory.EnumerateDirectories(_parent).Any()) return;
        try { Directory.Delete(_parent); }
        catch (IOException) { } // a VM's group made meanwhile: it is the next start-up's
    }

    /// <summary>VM ids that have a group (start-up sweep).</summary>
    public IReadOnlyList<string> VmIds()
    {
        if (_parent == null || !Directory.Exists(_parent)) return [];
        return Directory.EnumerateDirectories(_parent).Select(Path.GetFileName).Where(n => n != null).Select(n => n!).ToList();
    }

    private static void TryWrite(string path, string text)
    {
        try { File.WriteAllText(path, text); }
        catch (IOException) { }
    }
}
