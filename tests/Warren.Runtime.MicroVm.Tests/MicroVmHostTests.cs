using System.Diagnostics;
using System.Globalization;
using Warren.Platform.Runtime;
using Warren.Runtime.HostNetwork;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// QEMU as a host process: unprivileged, sandboxed, in its CPU cgroup; its death noticed (Failed) apart from a guest
/// poweroff (Stopped); and what a daemon killed in the middle of new or rm leaves behind removed at the next start.
/// </summary>
public sealed class MicroVmHostTests(ITestOutputHelper output) : OwnRuntimeTest(output)
{
    private static int QemuPid(string dataDirectory, string vmId) =>
        int.Parse(File.ReadAllText(Path.Combine(dataDirectory, "vms", vmId, "run", "qemu.pid")).Trim(), CultureInfo.InvariantCulture);

    private static string StatusField(int pid, string field) =>
        File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith(field + ":", StringComparison.Ordinal))[(field.Length + 1)..].Trim();

    private static string CgroupOf(MicroVmRuntime runtime, string vmId) => Path.Combine("/sys/fs/cgroup/cpu", runtime.Firewall.TableName, vmId);

    private static async Task<int> HostIdAsync(string user)
    {
        var r = await Warren.Runtime.HostNetwork.HostCommand.RunAsync("id", ["-u", user]);
        Assert.True(r.Ok, $"system user {user} missing (run scripts/prereqs.sh): {r.Message}");
        return int.Parse(r.Stdout.Trim(), CultureInfo.InvariantCulture);
    }

    [MicroVmFact]
    public async Task Qemu_RunsUnprivileged_Sandboxed_InItsCpuCgroup_AndRemoveLeavesNothing()
    {
        MicroVmTestEnvironment.Require();
        var runtime = await NewRuntimeAsync();
        string id = NewVmId();
        await runtime.CreateAsync(BusyboxMicroVm.Spec(id, "host"), MicroVmRuntimeTests.Timeout());
        Assert.Equal("ok\n", (await MicroVmRuntimeTests.RunAsync(runtime, id, "echo", "ok")).Stdout);
        int pid = QemuPid(DataDirectory, id);

        // Real, effective, saved and filesystem uid all the QEMU user's: no way back to root.
        int uid = await HostIdAsync("warren-qemu");
        var uids = StatusField(pid, "Uid").Split('\t', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
        Assert.All(uids, u => Assert.Equal(uid, u));
        Assert.Equal("2", StatusField(pid, "Seccomp")); // SECCOMP_MODE_FILTER: QEMU's -sandbox

        string cgroup = CgroupOf(runtime, id);
        Assert.Contains(pid.ToString(CultureInfo.InvariantCulture), File.ReadAllLines(Path.Combine(cgroup, "cgroup.procs")));
        Assert.Equal("100000", File.ReadAllText(Path.Combine(cgroup, "cpu.cfs_quota_us")).Trim());
        var outcome = await runtime.ResizeAsync(id, new VmResources(0.5, 0, 0), MicroVmRuntimeTests.Timeout());
        Assert.True(outcome.CpuApplied);
        Assert.Equal("50000", File.ReadAllText(Path.Combine(cgroup, "cpu.cfs_quota_us")).Trim());

        string tap = VmRecord.TryRead(Path.Combine(DataDirectory, "vms", id, "vm.json"))!.Tap!;
        Assert.True(VmTap.IsTap(tap));
        await runtime.RemoveAsync(id, MicroVmRuntimeTests.Timeout());
        Assert.False(Directory.Exists($"/proc/{pid}") && File.ReadAllText($"/proc/{pid}/cmdline").Contains(id, StringComparison.Ordinal));
        Assert.False(VmTap.Exists(tap));
        Assert.False(Directory.Exists(cgroup));
        Assert.False(Directory.Exists(Path.Combine(DataDirectory, "vms", id)));
    }

    [MicroVmFact]
    public async Task QemuKilled_IsFailed_GuestPoweroff_IsStopped_AndRestartBringsBackData()
    {
        MicroVmTestEnvironment.Require();
        var runtime = await NewRuntimeAsync();
        string id = NewVmId();
        await runtime.CreateAsync(BusyboxMicroVm.Spec(id, "crash"), MicroVmRuntimeTests.Timeout());
        Assert.Equal(0, (await MicroVmRuntimeTests.RunAsync(runtime, id, "sh", "-c", "echo kept > /data/marker && sync")).Exit.ExitCode);

        // A crash (as SIGKILL: QEMU gets no say) is Failed, like a container that died.
        Process.GetProcessById(QemuPid(DataDirectory, id)).Kill();
        await PollStateAsync(runtime, id, RuntimeVmState.Failed);

        await runtime.StartAsync(id, MicroVmRuntimeTests.Timeout());
        Assert.Equal("kept\n", (await MicroVmRuntimeTests.RunAsync(runtime, id, "cat", "/data/marker")).Stdout);

        // The guest powering itself off is a normal stop.
        await using (var p = await runtime.ExecAsync(id, new ExecSpec(["poweroff"]), MicroVmRuntimeTests.Timeout()))
        {
            await p.CloseStandardInputAsync();
            try { await p.Completion.WaitAsync(TimeSpan.FromMinutes(1)); } catch (Exception) { /* the session may end with the VM */ }
        }
        await PollStateAsync(runtime, id, RuntimeVmState.Stopped);
        Assert.Null(await runtime.GetAddressAsync(id, MicroVmRuntimeTests.Timeout()));

        await runtime.RestartAsync(id, MicroVmRuntimeTests.Timeout());
        Assert.Equal("kept\n", (await MicroVmRuntimeTests.RunAsync(runtime, id, "cat", "/data/marker")).Stdout);
        await runtime.RemoveAsync(id, MicroVmRuntimeTests.Timeout());
    }

    private static async Task PollStateAsync(MicroVmRuntime runtime, string id, RuntimeVmState expected)
    {
        RuntimeVmState? state = null;
        for (int i = 0; i < 600; i++)
        {
            state = (await runtime.InspectAsync(id, MicroVmRuntimeTests.Timeout()))?.State;
            if (state == expected) return;
            await Task.Delay(100);
        }
        Assert.Fail($"VM {id} is {state}, not {expected}");
    }

    /// <summary>
    /// The states a SIGKILLed daemon leaves (the runtime writes vm.json last on create and copy, and deletes it first
    /// on remove): a running QEMU with its tap and cgroup but no vm.json (killed mid-rm), and a directory with only the
    /// address reservation and a tap (killed mid-new). A restarted daemon's PrepareHostAsync removes all of it and
    /// adopts the VM that is whole.
    /// </summary>
    [MicroVmFact]
    public async Task DaemonKilledMidNewOrRemove_LeavesNoQemuDiskTapOrCgroup_AfterTheNextStart()
    {
        MicroVmTestEnvironment.Require();
        var runtime = await NewRuntimeAsync();
        string whole = NewVmId(), halfRemoved = NewVmId(), halfMade = NewVmId();
        await runtime.CreateAsync(BusyboxMicroVm.Spec(whole, "whole"), MicroVmRuntimeTests.Timeout());
        await runtime.CreateAsync(BusyboxMicroVm.Spec(halfRemoved, "half-removed"), MicroVmRuntimeTests.Timeout());
        int orphanPid = QemuPid(DataDirectory, halfRemoved);
        string orphanTap = VmRecord.TryRead(Path.Combine(DataDirectory, "vms", halfRemoved, "vm.json"))!.Tap!;
        Assert.True(VmTap.Exists(orphanTap));
        File.Delete(Path.Combine(DataDirectory, "vms", halfRemoved, "vm.json"));

        // Mid-new: the address is reserved and (as if made by a start that raced) its tap exists.
        string halfDir = Path.Combine(DataDirectory, "vms", halfMade);
        Directory.CreateDirectory(halfDir);
        int slot = 60;
        var pool = new VmSubnetPool(MicroVmTestEnvironment.Pool, 30);
        File.WriteAllText(Path.Combine(halfDir, "address"), pool[slot].VmAddress.ToString());
        string halfTap = runtime.Firewall.BridgeName(pool[slot]);
        await VmTap.CreateAsync(halfTap, pool[slot], null, MicroVmRuntimeTests.Timeout());

        var restarted = await NewRuntimeAsync();
        var report = await restarted.PrepareHostAsync(MicroVmRuntimeTests.Timeout());
        Output.WriteLine(report.ToString());
        Assert.Equal(1, report.Running);
        Assert.Equal(2, report.LeftoversRemoved);

        Assert.False(Directory.Exists($"/proc/{orphanPid}") && File.ReadAllText($"/proc/{orphanPid}/cmdline").Contains(halfRemoved, StringComparison.Ordinal),
            "the QEMU of the half-removed VM still runs");
        Assert.False(Directory.Exists(Path.Combine(DataDirectory, "vms", halfRemoved)));
        Assert.False(Directory.Exists(halfDir));
        Assert.False(VmTap.Exists(halfTap));
        Assert.False(VmTap.Exists(orphanTap));
        Assert.False(Directory.Exists(CgroupOf(restarted, halfRemoved)));
        Assert.Equal("adopted\n", (await MicroVmRuntimeTests.RunAsync(restarted, whole, "echo", "adopted")).Stdout);
        await restarted.RemoveAsync(whole, MicroVmRuntimeTests.Timeout());
    }
}
