using System.Collections.Concurrent;
using System.Net;
using Warren.Platform.Runtime;

namespace Warren.Platform.Tests.TestSupport;

/// <summary>Where a <see cref="FakeVmRuntime"/> stops: hangs forever (a SIGKILL stand-in) or throws.</summary>
public enum FakeStep
{
    None,
    PrepareImage,
    CreateBeforeContainer,
    CreateAfterContainer,
    CopyBeforeContainer,
    CopyAfterContainer,
    RemoveBeforeContainer,
    RemoveAfterContainer,
}

/// <summary>The "engine" that survives a daemon restart: containers by VM id.</summary>
public sealed class FakeEngine
{
    public ConcurrentDictionary<string, RuntimeVmInfo> Containers { get; } = new(StringComparer.Ordinal);
    public ConcurrentBag<string> CredentialsSeen { get; } = new();
    /// <summary>Every reference PrepareImageAsync was asked for, with whether a credential came along.</summary>
    public ConcurrentQueue<(string Image, bool WithCredential)> ImagesPrepared { get; } = new();
    public Dictionary<string, IReadOnlyList<int>> ExposedPorts { get; } = new(StringComparer.Ordinal);
    /// <summary>When set, the "registry" serves images named *private* only with this secret (else any credential).</summary>
    public string? PrivateImageSecret { get; set; }
}

/// <summary>
/// In-memory IVmRuntime for unit tests. <see cref="HangAt"/> makes that step never complete (the test then
/// abandons the call, as a killed daemon would); <see cref="FailAt"/> makes it throw.
/// </summary>
public sealed class FakeVmRuntime : IVmRuntime
{
    private readonly FakeEngine _engine;

    public FakeVmRuntime(FakeEngine? engine = null) => _engine = engine ?? new FakeEngine();

    public FakeEngine Engine => _engine;
    public FakeStep HangAt { get; set; }
    public FakeStep FailAt { get; set; }
    public string FailMessage { get; set; } = "simulated runtime failure";

    /// <summary>Completes when the runtime reached <see cref="HangAt"/>.</summary>
    public TaskCompletionSource Hung { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public string Name => "fake";

    private async Task StepAsync(FakeStep step)
    {
        if (FailAt == step) throw new InvalidOperationException(FailMessage);
        if (HangAt == step)
        {
            Hung.TrySetResult();
            await new TaskCompletionSource().Task; // never completes
        }
    }

    public async Task<ImageInfo> PrepareImageAsync(string image, RegistryCredential? auth, CancellationToken ct)
    {
        if (auth is not null) _engine.CredentialsSeen.Add(auth.Secret);
        _engine.ImagesPrepared.Enqueue((image, auth is not null));
        await StepAsync(FakeStep.PrepareImage);
        if (image.Contains("missing", StringComparison.Ordinal))
            throw new InvalidOperationException($"pull access denied for {image} (auth {auth?.Secret})");
        if (image.Contains("private", StringComparison.Ordinal)
            && (auth is null || (_engine.PrivateImageSecret is { } secret && auth.Secret != secret)))
            throw new InvalidOperationException($"pull access denied for {image}: authentication required");
        // Keys may be written as people type them; the platform asks by canonical name (docker.io/library/img:1).
        var ports = _engine.ExposedPorts.FirstOrDefault(e => SameImage(e.Key, image)).Value ?? [];
        return new ImageInfo(image, "sha256:" + new string('0', 64), ports, "warren", [], ["sleep", "infinity"], []);
    }

    private static bool SameImage(string a, string b)
        => ImageReference.TryParse(a, out var x) && ImageReference.TryParse(b, out var y) && x.Repository == y.Repository && (x.Tag ?? "latest") == (y.Tag ?? "latest");

    public async Task CreateAsync(VmSpec spec, CancellationToken ct)
    {
        await StepAsync(FakeStep.CreateBeforeContainer);
        _engine.Containers[spec.VmId] = new RuntimeVmInfo(spec.VmId, spec.Name, RuntimeVmState.Running, spec.Image, DateTimeOffset.UnixEpoch);
        await StepAsync(FakeStep.CreateAfterContainer);
    }

    public async Task CopyAsync(string sourceVmId, VmSpec target, CancellationToken ct)
    {
        if (!_engine.Containers.ContainsKey(sourceVmId)) throw new InvalidOperationException("no such source VM");
        await StepAsync(FakeStep.CopyBeforeContainer);
        _engine.Containers[target.VmId] = new RuntimeVmInfo(target.VmId, target.Name, RuntimeVmState.Running, target.Image, DateTimeOffset.UnixEpoch);
        await StepAsync(FakeStep.CopyAfterContainer);
    }

    public async Task RemoveAsync(string vmId, CancellationToken ct)
    {
        await StepAsync(FakeStep.RemoveBeforeContainer);
        _engine.Containers.TryRemove(vmId, out _);
        await StepAsync(FakeStep.RemoveAfterContainer);
    }

    public Task StartAsync(string vmId, CancellationToken ct) => SetState(vmId, RuntimeVmState.Running);
    public Task StopAsync(string vmId, CancellationToken ct) => SetState(vmId, RuntimeVmState.Stopped);
    public Task RestartAsync(string vmId, CancellationToken ct) => SetState(vmId, RuntimeVmState.Running);

    private Task SetState(string vmId, RuntimeVmState s)
    {
        if (!_engine.Containers.TryGetValue(vmId, out var v)) throw new InvalidOperationException("no such VM");
        _engine.Containers[vmId] = v with { State = s };
        return Task.CompletedTask;
    }

    public Task<RuntimeVmInfo?> InspectAsync(string vmId, CancellationToken ct)
        => Task.FromResult(_engine.Containers.TryGetValue(vmId, out var v) ? v : null);

    public Task<IReadOnlyList<RuntimeVmInfo>> ListAsync(CancellationToken ct)
        => Task.FromResult<IReadOnlyList<RuntimeVmInfo>>(_engine.Containers.Values.ToList());

    public Task<IVmProcess> ExecAsync(string vmId, ExecSpec spec, CancellationToken ct) => throw new NotSupportedException();
    public Task<Stream> ConnectAsync(string vmId, string host, int port, CancellationToken ct) => throw new NotSupportedException();
    public Task<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct) => Task.FromResult<IPAddress?>(IPAddress.Loopback);

    public Task RenameAsync(string vmId, string newName, CancellationToken ct)
    {
        if (FailAt == FakeStep.None && _engine.Containers.TryGetValue(vmId, out var v)) _engine.Containers[vmId] = v with { Name = newName };
        return Task.CompletedTask;
    }

    public Task<ResizeOutcome> ResizeAsync(string vmId, VmResources resources, CancellationToken ct)
        => Task.FromResult(new ResizeOutcome(true, true, false, "disk is recorded, not enforced"));

    public Task<VmStatsSample?> SampleStatsAsync(string vmId, CancellationToken ct)
        => Task.FromResult<VmStatsSample?>(_engine.Containers.ContainsKey(vmId)
            ? new VmStatsSample(DateTimeOffset.UnixEpoch, 1, 1, 2, 3, 4, 5) : null);
}
