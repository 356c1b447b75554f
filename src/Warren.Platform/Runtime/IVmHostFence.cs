namespace Warren.Platform.Runtime;

/// <summary>
/// What a runtime puts on the host before any VM runs (packet filter, per-VM networks, disks) and takes away when the
/// last VM is gone. The daemon runs it first at start-up and refuses to start when the fence cannot be enforced.
/// </summary>
public interface IVmHostFence
{
    /// <summary>The <see cref="VmRuntimeException.Code"/> of "the fence cannot be enforced": no VM runs without it.</summary>
    public const string IsolationUnavailable = "runtime.isolation-unavailable";

    /// <summary>False when configuration turned isolation off (development only).</summary>
    bool IsolationEnforced { get; }

    /// <summary>Installs and checks the fence, adopts or cleans up what a previous run left; returns a line for the log.</summary>
    Task<string> PrepareHostFenceAsync(CancellationToken ct);

    /// <summary>Removes the host rules when no VM is left; true when it did.</summary>
    Task<bool> RemoveHostRulesIfNoVmsAsync(CancellationToken ct);
}
