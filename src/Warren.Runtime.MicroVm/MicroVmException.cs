namespace Warren.Runtime.MicroVm;

/// <summary>A microVM runtime failure with a stable <see cref="Code"/> and a message safe to show users.</summary>
public sealed class MicroVmException(string code, string message, Exception? inner = null) : Warren.Platform.Runtime.VmRuntimeException(code, message, inner);

/// <summary>Codes of <see cref="MicroVmException"/>; the ones shared with the Docker runtime have the same values.</summary>
public static class MicroVmErrors
{
    public const string VmNotFound = Docker.DockerRuntimeErrors.VmNotFound;
    public const string VmNotRunning = Docker.DockerRuntimeErrors.VmNotRunning;
    public const string AgentSessionFailed = Docker.DockerRuntimeErrors.AgentSessionFailed;
    /// <summary>vmlinuz/initramfs/kmods.img missing (run scripts/build-vm-kernel.sh).</summary>
    public const string KernelMissing = "runtime.vm-kernel-missing";
    /// <summary>QEMU would not start, or exited before the agent answered.</summary>
    public const string VmStartFailed = "runtime.vm-start-failed";
    /// <summary>qemu-img, mke2fs, tar … missing.</summary>
    public const string HostToolMissing = "runtime.host-tool-missing";
    public const string HostToolFailed = "runtime.host-tool-failed";
    /// <summary>An operation this runtime does not do yet (said plainly instead of pretending).</summary>
    public const string NotSupported = "runtime.not-supported";
    public const string NoAddressLeft = "runtime.no-address-left";
    /// <summary>The VM's network fence (packet filter, tap, forwarding) cannot be set up: no VM runs without it.</summary>
    public const string IsolationUnavailable = Docker.DockerRuntimeErrors.IsolationUnavailable;
}
