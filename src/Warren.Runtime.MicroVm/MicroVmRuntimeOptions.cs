using Warren.Runtime.Docker;

namespace Warren.Runtime.MicroVm;

public sealed class MicroVmRuntimeOptions
{
    /// <summary>Where VMs (<c>vms/&lt;id&gt;/</c>: disks, sockets, pid file) and image bases (<c>images/</c>) live. Required.</summary>
    public string DataDirectory { get; set; } = "";

    /// <summary>vmlinuz, initramfs.cpio.gz and kmods.img from scripts/build-vm-kernel.sh; default: the nearest var/vm-kernel/current.</summary>
    public string? KernelDirectory { get; set; }

    /// <summary>The engine that pulls and stores images (and the agent path, <see cref="DockerRuntimeOptions.AgentPath"/>).</summary>
    public DockerRuntimeOptions Docker { get; set; } = new();

    public string QemuPath { get; set; } = "qemu-system-x86_64";
    public string QemuImgPath { get; set; } = "qemu-img";
    public string Mke2fsPath { get; set; } = "mke2fs";

    /// <summary>Use KVM: null = when /dev/kvm can be opened; false = always TCG (emulation, for CI machines without KVM).</summary>
    public bool? UseKvm { get; set; }

    /// <summary>
    /// TCG only (no KVM): QEMU's translated-code cache per VM, in MiB (<c>-accel tcg,tb-size=</c>). QEMU's default in
    /// system emulation is 1 GiB, which a guest running dockerd fills and keeps resident (about 490 MiB of an idle VM,
    /// measured: docs/PERFORMANCE.md); a smaller cache is flushed and refilled more often. 0: QEMU's default.
    /// </summary>
    public int TcgTranslationCacheMiB { get; set; } = 64;

    /// <summary>
    /// <see cref="VmNetworkMode.Tap"/> (default): a tap per VM behind the installation's packet filter, configured by
    /// <see cref="DockerRuntimeOptions.VmNetwork"/> (Warren:Network) like the Docker runtime's VMs.
    /// <see cref="VmNetworkMode.User"/>: development fallback where taps cannot be made (not fenced from the host).
    /// </summary>
    public VmNetworkMode Network { get; set; } = VmNetworkMode.Tap;

    /// <summary>
    /// The system user QEMU runs as (it drops root after opening its devices), and the owner of the VM's tap. Empty:
    /// QEMU stays root (development only). scripts/prereqs.sh creates <c>warren-qemu</c>.
    /// </summary>
    public string? QemuUser { get; set; } = "warren-qemu";

    /// <summary>
    /// With <see cref="VmNetworkMode.User"/>: each VM's ports are forwarded from one loopback address <c>&lt;prefix&gt;N</c> (QEMU user networking, <c>hostfwd</c>).
    /// Development only: production puts a tap device on Warren's VM bridge instead.
    /// </summary>
    public string LoopbackPrefix { get; set; } = "127.0.3.";

    /// <summary>
    /// Guest TCP ports forwarded besides the image's exposed ones: user networking forwards listed ports only, so a
    /// proxy port outside this list (and the image's) is not reachable through <see cref="Warren.Platform.Runtime.IVmRuntime.GetAddressAsync"/>.
    /// </summary>
    public IReadOnlyList<int> ForwardedPorts { get; set; } = [80, 3000, 5000, 8000, 8080, 8888];

    /// <summary>How long a VM may take from QEMU start to the agent answering (TCG on a loaded machine is slow).</summary>
    public TimeSpan BootTimeout { get; set; } = TimeSpan.FromSeconds(120);

    /// <summary>How long a clean shutdown through the agent may take before QEMU is told to quit.</summary>
    public TimeSpan StopTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Memory when the spec gives none, and the least a VM gets (the kernel and initramfs need it).</summary>
    public long DefaultMemoryBytes { get; set; } = 512L * 1024 * 1024;
    public long MinMemoryBytes { get; set; } = 256L * 1024 * 1024;

    /// <summary>Root and /data disk size when the spec gives none.</summary>
    public long DefaultDiskBytes { get; set; } = 4L * 1024 * 1024 * 1024;

    /// <summary>
    /// Keep the guest's serial console in <c>vms/&lt;id&gt;/console.log</c> (truncated at each start) for debugging. Off by
    /// default: the guest writes it, and nothing bounds how much.
    /// </summary>
    public bool ConsoleLog { get; set; }
}
