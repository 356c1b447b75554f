using System.Globalization;
using System.Text.Json.Nodes;
using Warren.Runtime.MicroVm.Qmp;

namespace Warren.Runtime.MicroVm;

/// <summary>Copying a running VM's disks from one consistent point.</summary>
public sealed partial class MicroVmRuntime
{
    /// <summary>How long the source's filesystems may stay frozen: only while the backup jobs start (they are point-in-time).</summary>
    private static readonly TimeSpan JobPoll = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan LiveCopyTimeout = TimeSpan.FromMinutes(30);

    /// <summary>
    /// The running source's root (its own layer, on the same image base) and /data into the target's files, as they
    /// were at one instant with the guest's filesystems clean: the agent freezes them (FIFREEZE: flushed, writers
    /// blocked), QMP starts a backup job per disk (drive-backup copies the disk as it was when the job started, copying
    /// clusters aside before the guest overwrites them), and the agent thaws them at once; the jobs then run while the
    /// source keeps working. QEMU, unprivileged, writes the targets: they are made by the daemon and lent to its user
    /// for the copy only.
    /// </summary>
    private async Task CopyDisksLiveAsync(VmRecord record, VmLayout source, VmLayout target, CancellationToken ct)
    {
        string size = record.Resources.DiskBytes.ToString(CultureInfo.InvariantCulture);
        await HostCommand.RunAsync(_options.QemuImgPath,
            ["create", "-q", "-f", "qcow2", "-b", _disks.BasePath(record.ImageId), "-F", "qcow2", target.Root, size], TimeSpan.FromMinutes(1), ct).ConfigureAwait(false);
        await HostCommand.RunAsync(_options.QemuImgPath, ["create", "-q", "-f", "qcow2", target.Data, size], TimeSpan.FromMinutes(1), ct).ConfigureAwait(false);
        await LendAsync([target.Root, target.Data], target, ct).ConfigureAwait(false);

        string suffix = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));
        var jobs = new[] { ("root", target.Root, "top"), ("data", target.Data, "full") }
            .Select(j => (Id: $"copy-{j.Item1}-{suffix}", Device: j.Item1, Target: j.Item2, Sync: j.Item3)).ToList();
        await using var qmp = await QmpClient.ConnectAsync(source.QmpSocket, ct).ConfigureAwait(false);

        var (frozen, freezeError) = await RunAgentCommandAsync(record.VmId, [AgentGuestPath, "freeze"], ct).ConfigureAwait(false);
        if (frozen.ExitCode != 0)
            throw new MicroVmException(MicroVmErrors.AgentSessionFailed, $"cannot freeze the filesystems of VM {record.VmId}: {freezeError.Trim()}");
        try
        {
            foreach (var job in jobs)
                await qmp.ExecuteAsync("drive-backup", new JsonObject
                {
                    ["job-id"] = job.Id,
                    ["device"] = job.Device,
                    ["target"] = job.Target,
                    ["format"] = "qcow2",
                    ["sync"] = job.Sync,
                    ["mode"] = "existing",
                    ["auto-dismiss"] = false,
                }, ct).ConfigureAwait(false);
        }
        finally
        {
            // Thawed whatever happened: a frozen guest hangs every writer.
            var (thawed, thawError) = await RunAgentCommandAsync(record.VmId, [AgentGuestPath, "thaw"], CancellationToken.None).ConfigureAwait(false);
            if (thawed.ExitCode != 0) LogThawFailed(record.VmId, thawError.Trim());
        }

        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(LiveCopyTimeout);
        var pending = jobs.Select(j => j.Id).ToHashSet(StringComparer.Ordinal);
        string? failure = null;
        while (pending.Count > 0)
        {
            var list = await qmp.ExecuteAsync("query-jobs", null, limit.Token).ConfigureAwait(false) as JsonArray ?? [];
            foreach (var job in list.OfType<JsonObject>())
            {
                string id = job["id"]?.GetValue<string>() ?? "";
                if (!pending.Contains(id) || job["status"]?.GetValue<string>() != "concluded") continue;
                if (job["error"]?.GetValue<string>() is { } error) failure ??= $"{id}: {error}";
                await qmp.ExecuteAsync("job-dismiss", new JsonObject { ["id"] = id }, limit.Token).ConfigureAwait(false);
                pending.Remove(id);
            }
            if (pending.Count > 0) await Task.Delay(JobPoll, limit.Token).ConfigureAwait(false);
        }
        await ReclaimAsync([target.Root, target.Data], ct).ConfigureAwait(false);
        if (failure != null) throw new MicroVmException(MicroVmErrors.HostToolFailed, $"copying the disks of VM {record.VmId} failed: {failure}");
    }

    /// <summary>Lets the unprivileged QEMU open these files (and reach them through the VM's directory, 0711).</summary>
    private async Task LendAsync(string[] files, VmLayout vm, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(_options.QemuUser)) return;
        File.SetUnixFileMode(vm.Directory, VmLayout.DirectoryMode | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        await HostCommand.RunAsync("chown", [_options.QemuUser, .. files], TimeSpan.FromSeconds(30), ct).ConfigureAwait(false);
    }

    private async Task ReclaimAsync(string[] files, CancellationToken ct)
    {
        if (!string.IsNullOrEmpty(_options.QemuUser))
            await HostCommand.RunAsync("chown", ["root", .. files], TimeSpan.FromSeconds(30), ct).ConfigureAwait(false);
        foreach (var f in files) File.SetUnixFileMode(f, VmLayout.FileMode);
    }

    [Microsoft.Extensions.Logging.LoggerMessage(Level = Microsoft.Extensions.Logging.LogLevel.Error, Message = "microVM {VmId}: thaw after a copy failed: {Reason}")]
    private partial void LogThawFailed(string vmId, string reason);
}
