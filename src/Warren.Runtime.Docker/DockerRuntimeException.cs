using Warren.Platform.Runtime;

namespace Warren.Runtime.Docker;

/// <summary>
/// A runtime failure with a stable <see cref="Code"/> and a message safe to show users
/// (it never contains a registry credential).
/// </summary>
/// <remarks><see cref="VmRuntimeException.Code"/> is one of <see cref="DockerRuntimeErrors"/>.</remarks>
public sealed class DockerRuntimeException(string code, string message, Exception? inner = null) : VmRuntimeException(code, message, inner);

/// <summary>The stable error codes of <see cref="DockerRuntimeException"/>.</summary>
public static class DockerRuntimeErrors
{
    /// <summary>The engine did not answer (socket missing, daemon down).</summary>
    public const string EngineUnavailable = "runtime.engine-unavailable";
    /// <summary>The image is neither cached nor pullable (unknown name, registry unreachable).</summary>
    public const string ImageNotFound = "runtime.image-not-found";
    /// <summary>The registry refused the credential, or one is needed and none was given.</summary>
    public const string ImageUnauthorized = "runtime.image-unauthorized";
    /// <summary>The agent binary is missing on the host (run scripts/build-images.sh).</summary>
    public const string AgentMissing = "runtime.agent-missing";
    /// <summary>No VM with that id in this runtime.</summary>
    public const string VmNotFound = "runtime.vm-not-found";
    /// <summary>The VM must be running for this operation.</summary>
    public const string VmNotRunning = "runtime.vm-not-running";
    /// <summary>A connection inside the VM was refused or could not be made.</summary>
    public const string ConnectFailed = Agent.AgentErrors.ConnectFailed;
    /// <summary>
    /// The VM's agent refused a session (an ERROR frame: bad token, unknown user, busy), broke the session protocol,
    /// or its session socket is unusable where <see cref="SessionSocketMode.Required"/> forbids falling back.
    /// </summary>
    public const string AgentSessionFailed = Agent.AgentErrors.AgentSessionFailed;
    /// <summary>
    /// VM isolation cannot be enforced (packet-filter rules refused, nftables missing, no free VM subnet): no VM is
    /// created without it unless isolation is explicitly off.
    /// </summary>
    public const string IsolationUnavailable = Warren.Platform.Runtime.IVmHostFence.IsolationUnavailable;
    /// <summary>The VM's disk image could not be made, mounted or resized (host tools missing or failing).</summary>
    public const string DiskFailed = "runtime.disk-failed";
    /// <summary>Any other engine error.</summary>
    public const string EngineError = "runtime.engine-error";
}
