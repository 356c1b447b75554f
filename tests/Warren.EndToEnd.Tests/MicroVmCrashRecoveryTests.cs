using System.Diagnostics;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// The microVM runtime under a real crash: the daemon is SIGKILLed in the middle of <c>new</c> (while the VM's disks are
/// made; and again once its QEMU runs but before its agent answered) and of <c>cp</c> of a running VM, then started
/// again. After each restart: no QEMU, tap, cgroup or VM directory without its VM, the VM that ran before the kill is
/// adopted (same QEMU process) and answers over SSH, every record is settled, and <c>ls</c> agrees with the host.
/// VMs run on taps behind the packet filter (the runtime's default networking), so the taps are real leftovers.
/// </summary>
public sealed class MicroVmCrashRecoveryTests(ITestOutputHelper output)
{
    private const string Slot = "127.0.1.1";
    private static readonly TimeSpan KillPointTimeout = TimeSpan.FromMinutes(3);

    private static Dictionary<string, string> Config => MicroVmDaemonFixture.DaemonConfig(Slot);

    [Fact]
    public async Task SigkillDuringNewAndCp_RestartAdoptsRunningVmAndLeavesNoOrphans()
    {
        var daemon = new WarrenDaemon(extraConfig: Config);
        // QEMU runs unprivileged and reaches a live copy's disks by path: every directory above them must be searchable
        // (the runtime warns otherwise); a temp directory is 0700.
        File.SetUnixFileMode(daemon.DataDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        string vms = Path.Combine(daemon.DataDirectory, "microvm", "vms");
        try
        {
            await daemon.StartAsync();
            var u = await daemon.CreateUserAsync("crash-vm@example.com");
            var keep = await u.ControlAsync("new --name=keep --image=warren/busybox:1 --json", timeout: TimeSpan.FromMinutes(5));
            Assert.True(keep.ExitCode == 0, keep.ToString() + daemon.Log);
            var first = await u.VmAsync(Slot, "echo up", user: "vm+keep");
            Assert.True(first.ExitCode == 0 && first.Stdout.Trim() == "up", first.ToString());
            string keepId = Assert.Single(VmDirectories(vms));
            int keepPid = QemuPidOf(vms, keepId) ?? throw new Xunit.Sdk.XunitException("keep has no QEMU");
            // The installation's cgroup is named as its packet-filter table (warren_ + a digest of the installation).
            string cgroupParent = CgroupParentOf(keepId) ?? throw new Xunit.Sdk.XunitException("keep has no CPU cgroup");

            // 1. new, killed before its QEMU runs (its disks, config and tap being made): a VM directory and no QEMU.
            // Not "no vm.json yet": that window is a few milliseconds now that the disks are made at once, and a
            // poll on a loaded host can miss it.
            await KillDuringAsync(daemon, u, "new --name=half-disks --image=warren/busybox:1",
                () => VmDirectories(vms).Any(d => d != keepId && QemuPidOf(vms, d) == null), "a new VM directory without its QEMU");
            await RestartAndCheckAsync(daemon, u, vms, keepId, keepPid);

            // 2. new, killed once its QEMU runs, before its agent answered (the guest needs seconds to boot).
            var known = VmDirectories(vms).ToHashSet();
            await KillDuringAsync(daemon, u, "new --name=half-boot --image=warren/busybox:1",
                () => VmDirectories(vms).Any(d => !known.Contains(d) && QemuPidOf(vms, d) != null), "a new VM's QEMU");
            await RestartAndCheckAsync(daemon, u, vms, keepId, keepPid);

            // 3. cp of the running VM, killed once the copy's directory exists.
            known = VmDirectories(vms).ToHashSet();
            await KillDuringAsync(daemon, u, "cp keep keep-copy",
                () => VmDirectories(vms).Any(d => !known.Contains(d)), "the copy's VM directory");
            await RestartAndCheckAsync(daemon, u, vms, keepId, keepPid);

            // Everything goes with rm: nothing of any VM stays on the host.
            foreach (var name in await NamesAsync(u, daemon))
            {
                var rm = await u.ControlAsync($"rm {name}", timeout: TimeSpan.FromMinutes(2));
                Assert.True(rm.ExitCode == 0, rm.ToString());
            }
            Assert.Empty(VmDirectories(vms));
            Assert.Empty(MicroVmDaemonFixture.QemuUnder(daemon.DataDirectory));
            // And a clean stop with no VM takes the installation's packet-filter table and CPU cgroup with it.
            await daemon.StopAsync();
            Assert.False(Directory.Exists(cgroupParent), $"{cgroupParent} left after the last VM and a clean stop");
            var tables = await ProcessRunner.RunAsync("nft", ["list", "tables"]);
            Assert.DoesNotContain(Path.GetFileName(cgroupParent), tables.Stdout);
        }
        finally
        {
            output.WriteLine(daemon.Log.Length > 20000 ? daemon.Log[^20000..] : daemon.Log);
            await daemon.StopAsync();
            await CleanupAsync(daemon.DataDirectory, vms);
            await daemon.DisposeAsync();
        }
    }

    /// <summary>Runs a control command over real ssh and SIGKILLs the daemon once <paramref name="killPoint"/> holds.</summary>
    private static async Task KillDuringAsync(WarrenDaemon daemon, SshUser u, string command, Func<bool> killPoint, string what)
    {
        var psi = new ProcessStartInfo("ssh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in u.SshOptions(daemon.SshPort)) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(daemon.ControlAddress);
        psi.ArgumentList.Add(command);
        using var client = Process.Start(psi)!;
        var clock = Stopwatch.StartNew();
        while (!killPoint())
        {
            if (client.HasExited || clock.Elapsed > KillPointTimeout)
                throw new Xunit.Sdk.XunitException($"`{command}` never reached {what} (client exited: {client.HasExited})\n{daemon.Log}");
            await Task.Delay(5);
        }
        daemon.Kill();
        try { client.Kill(); } catch (InvalidOperationException) { }
    }

    private async Task RestartAndCheckAsync(WarrenDaemon daemon, SshUser u, string vms, string keepId, int keepPid)
    {
        await daemon.StartAsync();
        // Records settle in the background reconciliation (a half-made new is driven again): wait for no transient state.
        var clock = Stopwatch.StartNew();
        List<JsonElement> list;
        while (true)
        {
            list = await ListAsync(u, daemon);
            if (list.All(v => v.GetProperty("status").GetString() is "running" or "stopped" or "failed")) break;
            if (clock.Elapsed > KillPointTimeout)
                throw new Xunit.Sdk.XunitException("records still in a transient state: " + string.Join(", ", list.Select(v => v.ToString())));
            await Task.Delay(500);
        }
        output.WriteLine("after restart: " + string.Join(", ", list.Select(v => $"{v.GetProperty("vm_name")}={v.GetProperty("status")}")));

        // The VM that ran before the kill was adopted, not restarted, and answers.
        Assert.Equal(keepPid, QemuPidOf(vms, keepId));
        var ssh = await u.VmAsync(Slot, "echo still-up", user: "vm+keep");
        Assert.True(ssh.ExitCode == 0 && ssh.Stdout.Trim() == "still-up", ssh.ToString() + daemon.Log);

        var records = Records(daemon.DataDirectory);
        Assert.Equal(list.Count, records.Count);
        var directories = VmDirectories(vms).ToHashSet();
        // Every VM directory is a whole VM with a record (no half-made overlay or seed left), and every record has its VM.
        foreach (var dir in directories)
        {
            Assert.True(File.Exists(Path.Combine(vms, dir, "vm.json")), $"VM directory {dir} without vm.json");
            Assert.True(records.ContainsKey(dir), $"VM directory {dir} without a record");
        }
        foreach (var (id, state) in records)
        {
            if (state == "failed") continue;
            Assert.True(directories.Contains(id), $"record {id} ({state}) without its VM");
            if (state == "running") Assert.True(QemuPidOf(vms, id) != null, $"record {id} running without QEMU");
        }
        // Every QEMU of this installation belongs to a VM with a record.
        foreach (int pid in MicroVmDaemonFixture.QemuUnder(daemon.DataDirectory))
        {
            string dir = VmDirectories(vms).FirstOrDefault(d => QemuPidOf(vms, d) == pid)
                         ?? throw new Xunit.Sdk.XunitException($"orphan QEMU {pid}");
            Assert.True(records.ContainsKey(dir), $"QEMU {pid} of {dir} without a record");
        }
        // Taps: every tap of this installation is named by a VM's vm.json.
        var taps = directories.Select(d => TapOf(vms, d)).OfType<string>().ToHashSet();
        string prefix = TapOf(vms, keepId)![..7];
        foreach (var link in Directory.EnumerateDirectories("/sys/class/net").Select(Path.GetFileName))
            if (link!.StartsWith(prefix, StringComparison.Ordinal) && File.Exists($"/sys/class/net/{link}/tun_flags"))
                Assert.True(taps.Contains(link), $"orphan tap {link}");
        // CPU cgroups: one per VM directory, none left of removed VMs.
        if (CgroupParentOf(keepId) is { } parent)
            foreach (var group in Directory.EnumerateDirectories(parent).Select(Path.GetFileName))
                Assert.True(directories.Contains(group!), $"orphan cgroup {group}");
    }

    private static IEnumerable<string> VmDirectories(string vms) =>
        Directory.Exists(vms) ? Directory.EnumerateDirectories(vms).Select(d => Path.GetFileName(d)!) : [];

    /// <summary>The live QEMU of a VM directory: its pid file names a process whose command line has that pid file.</summary>
    private static int? QemuPidOf(string vms, string id)
    {
        string pidFile = Path.Combine(vms, id, "run", "qemu.pid");
        if (!File.Exists(pidFile)) pidFile = Path.Combine(vms, id, "qemu.pid");
        try
        {
            if (!int.TryParse(File.ReadAllText(pidFile).Trim(), out int pid)) return null;
            var argv = File.ReadAllText($"/proc/{pid}/cmdline");
            return argv.Contains("\0-pidfile\0" + pidFile + "\0", StringComparison.Ordinal) ? pid : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    private static string? TapOf(string vms, string id)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(vms, id, "vm.json")));
            foreach (var p in doc.RootElement.EnumerateObject())
                if (p.Name.Equals("tap", StringComparison.OrdinalIgnoreCase) && p.Value.ValueKind == JsonValueKind.String) return p.Value.GetString();
            return null;
        }
        catch (Exception e) when (e is IOException or JsonException) { return null; }
    }

    /// <summary>The installation's CPU cgroup directory (cgroup v1 <c>cpu/</c> or v2), found as the parent of a VM's group.</summary>
    private static string? CgroupParentOf(string vmId)
    {
        foreach (var root in new[] { "/sys/fs/cgroup/cpu", "/sys/fs/cgroup" })
        {
            if (!Directory.Exists(root)) continue;
            foreach (var dir in Directory.EnumerateDirectories(root, "warren_*"))
                if (Directory.Exists(Path.Combine(dir, vmId))) return dir;
        }
        return null;
    }

    private static Dictionary<string, string> Records(string dataDirectory)
    {
        var records = new Dictionary<string, string>(StringComparer.Ordinal);
        using var c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(dataDirectory, "warren.db")};Mode=ReadOnly;Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT id, state FROM vms";
        using var r = cmd.ExecuteReader();
        while (r.Read()) records[r.GetString(0)] = r.GetString(1);
        return records;
    }

    private static async Task<List<JsonElement>> ListAsync(SshUser u, WarrenDaemon d)
    {
        var ls = await u.ControlAsync("ls --json");
        Assert.True(ls.ExitCode == 0, ls.ToString() + d.Log);
        return JsonDocument.Parse(ls.Stdout).RootElement.GetProperty("vms").EnumerateArray().Select(v => v.Clone()).ToList();
    }

    private static async Task<List<string>> NamesAsync(SshUser u, WarrenDaemon d) =>
        (await ListAsync(u, d)).Select(v => v.GetProperty("vm_name").GetString()!).ToList();

    /// <summary>What a failed run leaves: QEMUs (by pid), then taps named in vm.json and the VMs' cgroups.</summary>
    private static async Task CleanupAsync(string dataDirectory, string vms)
    {
        foreach (int pid in MicroVmDaemonFixture.QemuUnder(dataDirectory))
            await ProcessRunner.RunAsync("kill", ["-KILL", pid.ToString()]);
        foreach (var id in VmDirectories(vms).ToList())
        {
            if (TapOf(vms, id) is { } tap && Directory.Exists("/sys/class/net/" + tap)) await ProcessRunner.RunAsync("ip", ["link", "del", tap]);
            if (CgroupParentOf(id) is { } parent)
                try { Directory.Delete(Path.Combine(parent, id)); } catch (IOException) { }
        }
    }
}
