using Warren.Platform.Runtime;
using System.Net;
using Microsoft.Extensions.Logging;
using Warren.Runtime.HostNetwork;

namespace Warren.Runtime.MicroVm;

/// <summary>The host side at daemon start: the VMs' fence, and QEMU processes, taps and cgroups agreeing with vms/*.</summary>
public sealed partial class MicroVmRuntime : IVmHostFence
{
    /// <summary>What <see cref="PrepareHostAsync"/> found and did.</summary>
    public sealed record HostPreparation(bool IsolationEnforced, string RulesTable, int Running, int Failed, int LeftoversRemoved, int OrphanTapsRemoved)
    {
        public override string ToString() =>
            $"isolation {(IsolationEnforced ? "enforced (nftables table inet " + RulesTable + ")" : "OFF")}, " +
            $"{Running} VM(s) running (adopted), {Failed} found dead, {LeftoversRemoved} half-made or half-removed VM(s) cleaned up, {OrphanTapsRemoved} orphan tap(s) removed";
    }

    /// <summary>Whether VM network isolation is enforced (taps behind the packet filter).</summary>
    public bool IsolationEnforced => IsolationOn;

    /// <summary>
    /// Start-up, before any VM is used. Installs and verifies the packet-filter rules (throws
    /// <see cref="MicroVmErrors.IsolationUnavailable"/> when they cannot be enforced and isolation is on). Then: running
    /// QEMU processes are adopted (found by their pid file, checked against their command line; their QMP and agent
    /// sockets are in the VM's directory, so nothing else is needed, and they go back into their cgroup); a directory
    /// without vm.json is what a daemon killed during new, cp or rm leaves, and its process, tap, cgroup and disks are
    /// removed; taps and cgroups of this installation that belong to no VM are removed.
    /// </summary>
    async Task<string> IVmHostFence.PrepareHostFenceAsync(CancellationToken ct) => (await PrepareHostAsync(ct).ConfigureAwait(false)).ToString();

    public async Task<HostPreparation> PrepareHostAsync(CancellationToken ct)
    {
        if (UsesTap) await EnsureHostNetworkAsync(ct).ConfigureAwait(false);
        if (!string.IsNullOrEmpty(_options.QemuUser) && UntraversableAncestor() is { } closed) LogNotTraversable(closed, _options.QemuUser);
        int running = 0, failed = 0, leftovers = 0, taps = 0;
        var taken = new HashSet<string>(StringComparer.Ordinal);
        var known = new HashSet<string>(StringComparer.Ordinal);
        foreach (var dir in Directory.EnumerateDirectories(Path.Combine(_options.DataDirectory, "vms")))
        {
            string id = Path.GetFileName(dir);
            VmLayout vm;
            try { vm = Layout(id); }
            catch (ArgumentException) { continue; } // not a directory this runtime made
            var gate = VmLock(id);
            await gate.WaitAsync(ct).ConfigureAwait(false);
            try
            {
                if (VmRecord.TryRead(vm.Record) is not { } record || record.VmId != id)
                {
                    await RemoveLeftoversAsync(id, vm, null, ct).ConfigureAwait(false);
                    leftovers++;
                    continue;
                }
                known.Add(id);
                if (record.Tap != null) taken.Add(record.Tap);
                if (QemuProcess.ReadPid(vm) is int pid)
                {
                    running++;
                    if (!_cgroup.Processes(id).Contains(pid)) _cgroup.Apply(id, pid, record.Resources.Cpus);
                    if (record.Tap != null && !VmTap.Exists(record.Tap))
                        LogTapMissing(id, record.Tap); // the VM runs unreachable until restarted; its tap is made at the next start
                }
                else if (Info(record, vm).State == Platform.Runtime.RuntimeVmState.Failed)
                {
                    failed++;
                }
            }
            finally
            {
                gate.Release();
            }
        }
        foreach (var tap in VmTap.List(_firewall.InterfacePrefix))
        {
            // The engine's bridges share the prefix (same installation, Docker runtime): only taps are this runtime's.
            if (taken.Contains(tap) || !VmTap.IsTap(tap)) continue;
            await VmTap.DeleteAsync(tap, ct).ConfigureAwait(false);
            taps++;
        }
        foreach (var id in _cgroup.VmIds())
            if (!known.Contains(id)) await _cgroup.RemoveAsync(id, ct).ConfigureAwait(false);
        return new HostPreparation(IsolationOn, _firewall.TableName, running, failed, leftovers, taps);
    }

    /// <summary>
    /// Everything a VM has on the host besides vm.json: its QEMU (killed: the disks are about to go), its agent
    /// connection, its tap (named in vm.json, else derived from the address reservation), its cgroup, its directory.
    /// </summary>
    private async Task RemoveLeftoversAsync(string vmId, VmLayout vm, VmRecord? record, CancellationToken ct)
    {
        if (QemuProcess.ReadPid(vm) is int pid)
        {
            QemuProcess.Kill(pid, vm);
            await QemuProcess.WaitExitAsync(pid, vm, QuitTimeout, ct).ConfigureAwait(false);
        }
        await DropConnectionAsync(vmId).ConfigureAwait(false);
        record ??= ReservationOf(vm);
        await ReleaseNetworkAsync(record, ct).ConfigureAwait(false);
        await _cgroup.RemoveAsync(vmId, ct).ConfigureAwait(false);
        DeleteDirectory(vm.Directory);
    }

    /// <summary>A stand-in record naming the tap of a VM that never got (or already lost) its vm.json, from its address reservation.</summary>
    private VmRecord? ReservationOf(VmLayout vm)
    {
        string address;
        try { address = File.ReadAllText(vm.AddressMarker).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        if (!IPAddress.TryParse(address, out var a) || SubnetIndexOf(a) is not int index) return null;
        return new VmRecord(Path.GetFileName(vm.Directory), "", "", "", new Platform.Runtime.VmResources(0, 0, 0), address, [], [], [], null, null,
            _firewall.BridgeName(_pool[index]));
    }

    /// <summary>At shutdown: with no VM left, the packet-filter table and the installation's CPU cgroup go too (they would hold nothing).</summary>
    public async Task<bool> RemoveHostRulesIfNoVmsAsync(CancellationToken ct)
    {
        if ((await ListAsync(ct).ConfigureAwait(false)).Count > 0) return false;
        _cgroup.RemoveParentIfEmpty();
        if (!IsolationOn) return false;
        await _firewall.RemoveAsync(ct).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// The unprivileged QEMU reaches two things by path after dropping root: its pid file (removed at a normal exit) and
    /// a live copy's target disks. Both lie under vms/, so every directory above must let others search it (x).
    /// </summary>
    private string? UntraversableAncestor()
    {
        for (var dir = new DirectoryInfo(Path.Combine(_options.DataDirectory, "vms")); dir != null; dir = dir.Parent)
        {
            try
            {
                if ((File.GetUnixFileMode(dir.FullName) & UnixFileMode.OtherExecute) == 0) return dir.FullName;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return dir.FullName; }
        }
        return null;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Directory} is not searchable by others: QEMU, running as {User}, cannot reach its pid file or a live copy's disks under it (a guest poweroff then reads as Failed, and copying a running VM fails); chmod o+x it")]
    private partial void LogNotTraversable(string directory, string user);

    [LoggerMessage(Level = LogLevel.Warning, Message = "microVM {VmId} runs but its tap {Tap} is gone: unreachable until restarted")]
    private partial void LogTapMissing(string vmId, string tap);
}
