using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// Base of a test class that boots its own VMs under its own runtime and data directory (removed afterwards), and
/// writes a VM's guest console to the test output when a test fails.
/// </summary>
public abstract class OwnRuntimeTest(ITestOutputHelper output) : IAsyncLifetime
{
    protected readonly ITestOutputHelper Output = output;
    protected readonly string DataDirectory = MicroVmTestEnvironment.NewDataDirectory();
    private MicroVmRuntime? _runtime;

    /// <summary>A fresh runtime over <see cref="DataDirectory"/>; the previous one is disposed (a daemon restart).</summary>
    protected async Task<MicroVmRuntime> NewRuntimeAsync(TimeSpan? bootTimeout = null)
    {
        if (_runtime != null) await _runtime.DisposeAsync();
        _runtime = BusyboxMicroVm.NewRuntime(DataDirectory, bootTimeout);
        return _runtime;
    }

    protected static string NewVmId() => "wt-" + Guid.NewGuid().ToString("N")[..12];

    protected void WriteConsole(string vmId)
    {
        string log = Path.Combine(DataDirectory, "vms", vmId, "console.log");
        if (File.Exists(log)) Output.WriteLine(File.ReadAllText(log));
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_runtime != null)
        {
            // A failed test leaves its VMs: their QEMU, tap and cgroup go with them.
            foreach (var vm in await _runtime.ListAsync(CancellationToken.None))
                try { await _runtime.RemoveAsync(vm.VmId, CancellationToken.None); }
                catch (MicroVmException e) { Output.WriteLine($"cleanup of {vm.VmId}: {e.Message}"); }
            await _runtime.DisposeAsync();
        }
        if (Directory.Exists(DataDirectory)) Directory.Delete(DataDirectory, recursive: true);
    }
}
