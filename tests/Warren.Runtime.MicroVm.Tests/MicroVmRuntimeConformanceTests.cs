using Warren.Platform.Runtime;
using Warren.Runtime.Docker.Tests.Conformance;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// The runtime conformance suite (the same assertions the Docker runtime passes) against QEMU microVMs with the
/// busybox image: each test boots its own VMs under TCG, on taps behind the packet filter.
/// </summary>
public sealed class MicroVmRuntimeConformanceTests : RuntimeConformanceTests
{
    private readonly string _dataDirectory = MicroVmTestEnvironment.NewDataDirectory();
    private readonly MicroVmRuntime? _runtime;

    public MicroVmRuntimeConformanceTests()
    {
        if (MicroVmTestEnvironment.UnavailableReason == null) _runtime = BusyboxMicroVm.NewRuntime(_dataDirectory);
    }

    protected override IVmRuntime Runtime => _runtime ?? throw new InvalidOperationException(MicroVmTestEnvironment.UnavailableReason);
    protected override string TestImage => MicroVmTestEnvironment.BusyboxImage;
    protected override void RequireEnvironment() => MicroVmTestEnvironment.Require();

    /// <summary>The agent is the guest kernel's PID 1: the kernel never OOM-kills init, and the agent sets -1000 for clarity.</summary>
    protected override int ExpectedAgentOomScoreAdj => -1000;

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        if (_runtime != null) await _runtime.DisposeAsync();
        if (Directory.Exists(_dataDirectory)) Directory.Delete(_dataDirectory, recursive: true);
    }
}
