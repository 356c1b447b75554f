using Warren.Platform.Runtime;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>What only a real VM shows: its own memory size, and a copy taken while running with its own identity.</summary>
public sealed class MicroVmOnlyTests(ITestOutputHelper output) : OwnRuntimeTest(output)
{
    private static async Task<string> ShAsync(MicroVmRuntime runtime, string vmId, string script)
    {
        var (exit, stdout, stderr) = await MicroVmRuntimeTests.RunAsync(runtime, vmId, "sh", "-c", script);
        Assert.True(exit.ExitCode == 0, $"`{script}` failed: {exit} {stderr}");
        return stdout;
    }

    private static async Task<long> MemTotalKiBAsync(MicroVmRuntime runtime, string vmId) =>
        long.Parse((await ShAsync(runtime, vmId, "awk '/^MemTotal:/ {print $2}' /proc/meminfo")).Trim(), System.Globalization.CultureInfo.InvariantCulture);

    [MicroVmFact]
    public async Task Memory_AfterResizeAndRestart_IsTheGuestsMemTotal()
    {
        MicroVmTestEnvironment.Require();
        var runtime = await NewRuntimeAsync();
        string id = NewVmId();
        await runtime.CreateAsync(BusyboxMicroVm.Spec(id, "mem"), MicroVmRuntimeTests.Timeout());
        long before = await MemTotalKiBAsync(runtime, id);
        Output.WriteLine($"MemTotal with 256 MiB: {before} KiB");
        Assert.InRange(before, 150L * 1024, 256L * 1024); // the kernel keeps some for itself

        var outcome = await runtime.ResizeAsync(id, new VmResources(1, 512L << 20, 0), MicroVmRuntimeTests.Timeout());
        Assert.False(outcome.MemoryApplied); // no hotplug on microvm: at the next start
        await runtime.RestartAsync(id, MicroVmRuntimeTests.Timeout());
        long after = await MemTotalKiBAsync(runtime, id);
        Output.WriteLine($"MemTotal with 512 MiB: {after} KiB");
        Assert.InRange(after, 400L * 1024, 512L * 1024);
        await runtime.RemoveAsync(id, MicroVmRuntimeTests.Timeout());
    }

    [MicroVmFact]
    public async Task CopyOfARunningVm_HasItsDataAndItsOwnIdentity_AndTheSourceKeepsWorking()
    {
        MicroVmTestEnvironment.Require();
        var runtime = await NewRuntimeAsync();
        string source = NewVmId(), copy = NewVmId();
        await runtime.CreateAsync(BusyboxMicroVm.Spec(source, "source"), MicroVmRuntimeTests.Timeout());
        await ShAsync(runtime, source, "echo data > /data/file; echo layer > /etc/marker; dd if=/dev/urandom of=/data/blob bs=64k count=32 2>/dev/null; md5sum /data/blob > /data/blob.md5");
        string sourceId = (await ShAsync(runtime, source, "cat /etc/machine-id")).Trim();
        Assert.Matches("^[0-9a-f]{32}$", sourceId);

        await runtime.CopyAsync(source, BusyboxMicroVm.Spec(copy, "the-copy"), MicroVmRuntimeTests.Timeout());

        // The source was thawed: it writes again at once.
        Assert.Equal("ok\n", await ShAsync(runtime, source, "echo ok > /data/after && cat /data/after"));
        Assert.Equal("data\nlayer\n", await ShAsync(runtime, copy, "cat /data/file /etc/marker"));
        Assert.Contains("OK", await ShAsync(runtime, copy, "md5sum -c /data/blob.md5"));
        Assert.Equal("the-copy\n", await ShAsync(runtime, copy, "hostname"));
        string copyId = (await ShAsync(runtime, copy, "cat /etc/machine-id")).Trim();
        Assert.Matches("^[0-9a-f]{32}$", copyId);
        Assert.NotEqual(sourceId, copyId);
        Assert.NotEqual(await runtime.GetAddressAsync(source, MicroVmRuntimeTests.Timeout()), await runtime.GetAddressAsync(copy, MicroVmRuntimeTests.Timeout()));

        // Independent from here on, both ways.
        await ShAsync(runtime, copy, "echo changed > /data/file");
        await ShAsync(runtime, source, "echo source-only > /data/new");
        Assert.Equal("data\n", await ShAsync(runtime, source, "cat /data/file"));
        Assert.Equal("absent\n", await ShAsync(runtime, copy, "test -e /data/new && echo present || echo absent"));
        foreach (var id in new[] { copy, source }) await runtime.RemoveAsync(id, MicroVmRuntimeTests.Timeout());
    }
}
