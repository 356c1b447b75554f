using Warren.Platform.Runtime;
using Xunit;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// Base of tests that drive one fresh busybox VM from the host with a scratch directory beside it: both are made
/// before each test and removed after it. Without Docker, <see cref="Runtime"/> stays null (the tests check
/// <see cref="DockerTestEnvironment.UnavailableReason"/> themselves).
/// </summary>
public abstract class BusyboxVmTest(string name) : IAsyncLifetime
{
    /// <summary>Host-side scratch directory, unique per test.</summary>
    protected string ScratchDirectory { get; } = Path.Combine(Path.GetTempPath(), $"warren-{name}-" + Guid.NewGuid().ToString("N")[..8]);
    protected DockerVmRuntime? Runtime { get; private set; }
    protected string? VmId { get; private set; }

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(ScratchDirectory);
        if (DockerTestEnvironment.UnavailableReason != null) return;
        Runtime = new DockerVmRuntime(DockerTestEnvironment.Options());
        VmId = "wt-" + Guid.NewGuid().ToString("N")[..12];
        await Runtime.CreateAsync(new VmSpec(VmId, name, DockerTestEnvironment.BusyboxImage, new VmResources(1, 128L * 1024 * 1024, 0),
            new Dictionary<string, string>(), CommandMode.Auto, null, null, null), CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        if (Runtime != null && VmId != null)
        {
            await Runtime.RemoveAsync(VmId, CancellationToken.None);
            Runtime.Dispose();
        }
        try { Directory.Delete(ScratchDirectory, recursive: true); } catch (IOException) { }
    }
}
