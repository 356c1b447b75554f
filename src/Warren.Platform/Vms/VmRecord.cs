using Warren.Platform.Runtime;

namespace Warren.Platform.Vms;

/// <summary>
/// A VM's lifecycle state. Allowed transitions (<see cref="VmStates.CanTransition"/>):
/// <code>
/// Creating → Running | Failed | Deleting
/// Running  → Running (restart) | Stopped | Failed | Deleting
/// Stopped  → Running | Failed | Deleting
/// Failed   → Running | Stopped | Deleting
/// Deleting → (record removed)
/// </code>
/// </summary>
public enum VmState { Creating, Running, Stopped, Failed, Deleting }

public static class VmStates
{
    public static bool CanTransition(VmState from, VmState to) => (from, to) switch
    {
        (VmState.Creating, VmState.Running or VmState.Failed or VmState.Deleting) => true,
        (VmState.Running, VmState.Running or VmState.Stopped or VmState.Failed or VmState.Deleting) => true,
        (VmState.Stopped, VmState.Running or VmState.Failed or VmState.Deleting) => true,
        (VmState.Failed, VmState.Running or VmState.Stopped or VmState.Deleting) => true,
        _ => false,
    };

    /// <summary>States from which <paramref name="to"/> may be entered.</summary>
    public static IReadOnlyList<VmState> From(VmState to)
        => Enum.GetValues<VmState>().Where(f => CanTransition(f, to)).ToArray();

    /// <summary>Creating and Deleting: an operation is in flight (or was interrupted and awaits reconciliation).</summary>
    public static bool IsTransient(VmState s) => s is VmState.Creating or VmState.Deleting;

    /// <summary>Lower-case name as stored and as <c>ls --json</c> prints it.</summary>
    public static string ToWire(this VmState s) => s switch
    {
        VmState.Creating => "creating",
        VmState.Running => "running",
        VmState.Stopped => "stopped",
        VmState.Failed => "failed",
        VmState.Deleting => "deleting",
        _ => throw new ArgumentOutOfRangeException(nameof(s)),
    };

    public static VmState Parse(string s) => s switch
    {
        "creating" => VmState.Creating,
        "running" => VmState.Running,
        "stopped" => VmState.Stopped,
        "failed" => VmState.Failed,
        "deleting" => VmState.Deleting,
        _ => throw new FormatException($"Unknown VM state \"{s}\"."),
    };
}

/// <summary>
/// A VM as stored. <see cref="SlotName"/> is the VM's DNS slot (NAME.domain CNAME sNNN.domain); whether a
/// given account reaches it directly on that slot is per account — see
/// <see cref="Addressing.SshRouteTable.GetSshEndpoint"/>. <see cref="ProxyPort"/> is the port the HTTPS
/// proxy uses (the override set by <c>share port</c>, else the one chosen from EXPOSE at create).
/// <see cref="Env"/> holds only non-secret variables given with <c>--env</c>.
/// </summary>
public sealed record VmRecord(
    string Id,
    string Name,
    string AccountId,
    string Image,
    VmState State,
    string? SlotName,
    IReadOnlyList<string> Tags,
    string Comment,
    double Cpus,
    long MemoryBytes,
    long DiskBytes,
    int ProxyPort,
    IReadOnlyList<int> ExposedPorts,
    DateTimeOffset CreatedAt,
    DateTimeOffset UpdatedAt,
    IReadOnlyDictionary<string, string> Env,
    CommandMode CommandMode)
{
    /// <summary>Why the VM is Failed (or what a transient state is doing); null otherwise.</summary>
    public string? StateReason { get; init; }
    public string? ImageDigest { get; init; }
    public IReadOnlyList<string>? CustomCommand { get; init; }
    public string? SetupScript { get; init; }
    /// <summary>The image's USER, when it names one; the front door falls back to PlatformOptions.DefaultLoginUser.</summary>
    public string? LoginUser { get; init; }
    /// <summary>For a VM being created by <c>cp</c>: the source VM's id.</summary>
    public string? SourceVmId { get; init; }
    /// <summary><c>share set-public</c>.</summary>
    public bool IsPublic { get; init; }
    /// <summary>The port chosen at create from the image's EXPOSE list (before any <c>share port</c>).</summary>
    public int AutoProxyPort { get; init; }
    /// <summary><c>share receive-email on</c>.</summary>
    public bool ReceiveEmail { get; init; }

    public VmResources Resources => new(Cpus, MemoryBytes, DiskBytes);
}

/// <summary>Parameters of <c>new</c>. Sizes are bytes (parse with <see cref="ByteSize.TryParse"/>); nulls take the defaults.</summary>
public sealed record VmCreateRequest
{
    public string? Name { get; init; }
    public string? Image { get; init; }
    /// <summary>Passed to the runtime only; never stored, logged or audited.</summary>
    public RegistryCredential? RegistryAuth { get; init; }
    public IReadOnlyList<string> Tags { get; init; } = [];
    public IReadOnlyDictionary<string, string> Env { get; init; } = new Dictionary<string, string>();
    public double? Cpus { get; init; }
    public long? MemoryBytes { get; init; }
    public long? DiskBytes { get; init; }
    public CommandMode CommandMode { get; init; } = CommandMode.Auto;
    public IReadOnlyList<string>? CustomCommand { get; init; }
    public string? Comment { get; init; }
    public string? SetupScript { get; init; }
}

/// <summary>Parameters of <c>cp SRC [NEW] [--copy-tags=false] [--cpu --memory --disk]</c>; resources default to the source's.</summary>
public sealed record VmCopyRequest
{
    public required string SourceName { get; init; }
    public string? NewName { get; init; }
    public bool CopyTags { get; init; } = true;
    public double? Cpus { get; init; }
    public long? MemoryBytes { get; init; }
    public long? DiskBytes { get; init; }
}

/// <summary>Parameters of <c>resize</c>; null = unchanged.</summary>
public sealed record VmResizeRequest(double? Cpus = null, long? MemoryBytes = null, long? DiskBytes = null);

public sealed record VmResizeResult(VmRecord Before, VmRecord After, ResizeOutcome Outcome);

/// <summary>What <see cref="VmService.ReconcileAsync"/> did, by VM name.</summary>
public sealed record ReconcileReport(
    IReadOnlyList<string> Adopted,
    IReadOnlyList<string> Redriven,
    IReadOnlyList<string> MarkedFailed,
    IReadOnlyList<string> Deleted,
    IReadOnlyList<string> StateSynced,
    IReadOnlyList<string> OrphansRemoved);
