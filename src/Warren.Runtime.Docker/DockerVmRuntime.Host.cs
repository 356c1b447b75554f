using Warren.Platform.Runtime;
using System.Globalization;
using Docker.DotNet.Models;
using Microsoft.Extensions.Logging;
using Warren.Runtime.HostNetwork;

namespace Warren.Runtime.Docker;

/// <summary>The host side of VMs: network isolation at start-up, and the per-VM disk images.</summary>
public sealed partial class DockerVmRuntime : IVmHostFence
{
    /// <summary>What <see cref="PrepareHostAsync"/> found and did.</summary>
    public sealed record HostPreparation(bool IsolationEnforced, string RulesTable, int VmsMoved, int DisksMounted, int DisksRemoved)
    {
        public override string ToString() =>
            $"isolation {(IsolationEnforced ? "enforced (nftables table inet " + RulesTable + ")" : "OFF")}, " +
            $"{VmsMoved} VM(s) moved to their own network, {DisksMounted} disk(s) mounted, {DisksRemoved} orphan disk(s) removed";
    }

    /// <summary>Whether VM network isolation is on (<see cref="HostNetworkOptions.Isolation"/>).</summary>
    public bool IsolationEnforced => _networks.IsolationOn;

    /// <summary>Whether VMs reach Warren's metadata service and resolver at 169.254.169.254 (isolation on and ports bound).</summary>
    public bool ServesMetadata => _networks.IsolationOn && _networks.Firewall.ServesMetadata;

    /// <summary>The VM whose own network has <paramref name="hostAddress"/> as the host's address (metadata caller identity), or null.</summary>
    public Task<string?> FindVmIdByHostAddressAsync(System.Net.IPAddress hostAddress, CancellationToken ct) =>
        _networks.FindVmIdByHostAddressAsync(hostAddress, ct);

    /// <summary>
    /// Start-up, before any VM is used: installs and verifies the packet-filter rules (throws
    /// <see cref="DockerRuntimeException"/> with <see cref="DockerRuntimeErrors.IsolationUnavailable"/> when they cannot
    /// be enforced and isolation is on), moves this installation's VMs still on the engine's shared default bridge
    /// onto networks of their own, and brings disk images and containers into agreement: half-made images deleted,
    /// images of VMs that no longer exist deleted, the others mounted (a running container that started before its
    /// image was mounted is restarted to see it).
    /// </summary>
    async Task<string> IVmHostFence.PrepareHostFenceAsync(CancellationToken ct) => (await PrepareHostAsync(ct).ConfigureAwait(false)).ToString();

    public async Task<HostPreparation> PrepareHostAsync(CancellationToken ct)
    {
        await _networks.EnsureIsolationAsync(ct);
        var vms = await ListAsync(ct);
        int moved = 0;
        foreach (var vm in vms)
        {
            var c = await TryInspectContainerAsync(vm.VmId, ct);
            if (c == null) continue;
            if (await _networks.AdoptAsync(vm.VmId, c, Labels(vm.VmId, vm.Name), ct))
            {
                moved++;
                LogVmMoved(vm.VmId);
            }
            // The pids limit applies in place; dropped capabilities need the container recreated (copy or rename).
            if (_options.PidsLimit > 0 && (c.HostConfig?.PidsLimit ?? 0) <= 0)
                await Engine(() => _client.Containers.UpdateContainerAsync(c.ID, new ContainerUpdateParameters { PidsLimit = _options.PidsLimit }, ct));
            // VMs made before the restart policy became on-failure: with unless-stopped the engine would start a VM again
            // that its guest powered off. The policy, too, applies in place.
            if (c.HostConfig?.RestartPolicy?.Name != VmRestartPolicy.Name)
                await Engine(() => _client.Containers.UpdateContainerAsync(c.ID, new ContainerUpdateParameters { RestartPolicy = VmRestartPolicy }, ct));
        }
        int mounted = 0, removed = 0;
        if (_disks != null)
        {
            _disks.RemovePartials();
            var known = vms.Select(v => v.VmId).ToHashSet(StringComparer.Ordinal);
            foreach (var vmId in _disks.VmIds())
            {
                if (!known.Contains(vmId))
                {
                    // Only a VM's own container refers to its disk: without it (deleted, or a create that died before
                    // making the container) the image is nobody's.
                    await DiskAsync(() => _disks.DeleteAsync(vmId, ct));
                    removed++;
                    continue;
                }
                if (!_disks.Exists(vmId)) continue;
                if (await DiskAsync(() => _disks.MountAsync(vmId, ct)))
                {
                    mounted++;
                    if (vms.First(v => v.VmId == vmId).State == Warren.Platform.Runtime.RuntimeVmState.Running) await RestartAsync(vmId, ct);
                }
            }
        }
        return new HostPreparation(_networks.IsolationOn, _networks.Firewall.TableName, moved, mounted, removed);
    }

    /// <summary>
    /// At shutdown: when the installation has no VM left, its packet-filter table goes too (it would match nothing);
    /// otherwise the rules stay, so VMs the engine keeps running stay fenced while the daemon is down.
    /// </summary>
    public async Task<bool> RemoveHostRulesIfNoVmsAsync(CancellationToken ct)
    {
        if (!_networks.IsolationOn || (await ListAsync(ct)).Count > 0) return false;
        await _networks.Firewall.RemoveAsync(ct);
        return true;
    }

    internal VmFirewall Firewall => _networks.Firewall;

    private Task PrepareDiskMountPointAsync(string vmId, CancellationToken ct) => DiskAsync(async () =>
    {
        await _disks!.PrepareMountPointAsync(vmId, ct);
        return true;
    });

    /// <summary>
    /// Before a start: a VM with a disk mount point gets its image mounted (made first if a crash came between the
    /// container and the image), so it never runs on the bare mount point.
    /// </summary>
    private async Task EnsureDiskMountedAsync(string vmId, CancellationToken ct)
    {
        if (_disks == null || !Directory.Exists(_disks.MountPath(vmId))) return;
        if (_disks.Exists(vmId))
        {
            await DiskAsync(() => _disks.MountAsync(vmId, ct));
            return;
        }
        var c = await TryInspectContainerAsync(vmId, ct);
        if (c?.Config?.Labels is { } labels && labels.TryGetValue(LabelDiskBytes, out var text)
            && long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long bytes) && bytes > 0)
            await DiskAsync(async () => { await _disks.EnsureAsync(vmId, bytes, ct); return true; });
    }

    /// <summary>Host-side disk work: file system errors become <see cref="DockerRuntimeErrors.DiskFailed"/>.</summary>
    private static async Task<T> DiskAsync<T>(Func<Task<T>> work)
    {
        try
        {
            return await work();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or TimeoutException)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.DiskFailed, $"VM disk: {e.Message}", e);
        }
    }

    private static Task DiskAsync(Func<Task> work) => DiskAsync(async () => { await work(); return true; });

    [LoggerMessage(EventId = 4011, Level = LogLevel.Warning, Message = "runtime.vm-moved: VM {VmId} was on the engine's shared default bridge; moved to a network of its own (its address changed)")]
    private partial void LogVmMoved(string vmId);
}
