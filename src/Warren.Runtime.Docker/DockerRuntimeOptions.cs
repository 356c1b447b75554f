using Warren.Runtime.HostNetwork;

namespace Warren.Runtime.Docker;

/// <summary>Settings of <see cref="DockerVmRuntime"/>.</summary>
public sealed class DockerRuntimeOptions
{
    /// <summary>
    /// Engine endpoint. Null: DOCKER_HOST when set, else unix:///var/run/docker.sock.
    /// </summary>
    public Uri? Endpoint { get; set; }

    /// <summary>
    /// Host path of the static guest agent (scripts/build-images.sh publishes it to var/agent/warren-agent).
    /// Null: WARREN_AGENT_PATH when set, else var/agent/warren-agent in the current directory or any parent
    /// of the application's base directory. Bind-mounted read-only at <see cref="DockerVmRuntime.AgentMountPath"/>.
    /// </summary>
    public string? AgentPath { get; set; }

    /// <summary>
    /// Pull images whose reference names a registry host (e.g. registry.example:5000/app:1) on every
    /// PrepareImageAsync, even when cached, so the registry checks the caller's credential each time
    /// (a private image cached for one account is not handed to another without it). Default true.
    /// </summary>
    public bool AlwaysPullRegistryImages { get; set; } = true;

    /// <summary>Seconds the engine waits after SIGTERM before SIGKILL on stop/restart (Docker's default is 10).</summary>
    public int StopTimeoutSeconds { get; set; } = 10;

    /// <summary>
    /// VM networking: each VM on its own engine network and bridge with an address Warren picks from a pool, and the
    /// installation's packet-filter rules (<see cref="HostNetworkOptions"/>, configuration section <c>Warren:Network</c>).
    /// </summary>
    public HostNetworkOptions VmNetwork { get; set; } = new();

    /// <summary>Most processes (and threads) one VM may have at once (the pids cgroup): a fork bomb stops there.</summary>
    public long PidsLimit { get; set; } = 4096;

    /// <summary>
    /// Open files per process in a VM (RLIMIT_NOFILE, soft and hard; 0: the engine's own). It cannot exceed the
    /// engine's own hard limit (the container's init may lower a limit, never raise it), which on some hosts is only
    /// 20000 — hence a default below that.
    /// </summary>
    public long OpenFilesLimit { get; set; } = 16384;

    /// <summary>
    /// Capabilities taken from the engine's default set. NET_RAW: raw sockets forge packets (ARP and address spoofing);
    /// MKNOD: device nodes. What a VM user needs (setuid/setgid for sudo and su, chown, binding low ports) stays.
    /// </summary>
    public string[] DroppedCapabilities { get; set; } = ["NET_RAW", "MKNOD"];

    /// <summary>
    /// Host directory of the VMs' disk images, used when the engine's storage driver cannot limit a container's size:
    /// each VM with a disk size gets <c>&lt;dir&gt;/&lt;vmId&gt;.ext4</c>, a sparse ext4 image of that size, loop-mounted
    /// at <c>&lt;dir&gt;/&lt;vmId&gt;.mnt</c> and bind-mounted at /data, so /data cannot grow past its size. Null: /data is
    /// a plain engine volume and the size is only recorded. The daemon's composition sets <c>&lt;data dir&gt;/disks</c>.
    /// </summary>
    public string? DiskDirectory { get; set; }

    /// <summary>
    /// Which Warren installation owns the VMs (label <c>warren.instance</c>). ListAsync returns only this
    /// instance's VMs, so two Warren daemons (or a daemon and a test run) on one engine never reconcile away
    /// each other's VMs. Container and volume names are still global: VM ids must be unique per engine.
    /// </summary>
    public string Instance { get; set; } = "default";

    /// <summary>Extra labels put on every container and volume (e.g. to tell test runs apart).</summary>
    public IReadOnlyDictionary<string, string> ExtraLabels { get; set; } = new Dictionary<string, string>();

    /// <summary>
    /// Host directory of the agent session tokens (docs/AGENT-PROTOCOL.md): each VM gets <c>&lt;dir&gt;/&lt;vmId&gt;/token</c>
    /// (directory 0700, file 0600) bind-mounted read-only at <see cref="DockerVmRuntime.AgentTokenMountPath"/>, and a
    /// 64 KiB tmpfs volume at <see cref="DockerVmRuntime.AgentRunMountPath"/> where the agent binds its socket; sessions
    /// go straight to that socket instead of through Docker exec. Null: no token, no run volume, every session is a
    /// Docker exec. The daemon's composition sets <c>&lt;data dir&gt;/run</c>.
    /// </summary>
    public string? AgentSocketDirectory { get; set; }

    /// <summary>Whether exec and connect use the agent session socket (needs <see cref="AgentSocketDirectory"/>).</summary>
    public SessionSocketMode SessionSocket { get; set; } = SessionSocketMode.Auto;

    /// <summary>
    /// With <see cref="SessionSocketMode.Required"/>: how long an exec or connect waits for the agent to bind its socket
    /// (it does so first thing at boot, so this only covers a VM that is just starting or restarting).
    /// </summary>
    internal TimeSpan RequiredSocketWait { get; set; } = TimeSpan.FromSeconds(15);
}

/// <summary>How <see cref="DockerVmRuntime"/> reaches processes inside a VM.</summary>
public enum SessionSocketMode
{
    /// <summary>The agent session socket when it answers; Docker exec when it is absent or refuses the connection
    /// (agent not up yet, VM created before the socket directory was configured).</summary>
    Auto,
    /// <summary>Always Docker exec (the directory is still created and mounted, so switching back needs no restart of VMs).</summary>
    Disabled,
    /// <summary>Never Docker exec: a missing socket is waited for (bounded) and then an error. For tests and diagnosis.</summary>
    Required,
}
