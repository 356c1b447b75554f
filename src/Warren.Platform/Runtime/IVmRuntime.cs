namespace Warren.Platform.Runtime;

/// <summary>
/// What runs a VM. Docker is the first implementation (Warren.Runtime.Docker);
/// a microVM runtime can be added behind the same interface. Every
/// implementation passes the one conformance suite (RuntimeConformanceTests).
/// Ids are Warren's VM ids (stable across rename), never engine ids.
/// </summary>
public interface IVmRuntime
{
    /// <summary>Short name for logs and config: "docker".</summary>
    string Name { get; }

    /// <summary>
    /// Makes the image available (pulling with <paramref name="auth"/> when given)
    /// and returns what the VM needs from its config. The credential is passed to
    /// the engine only; implementations never log or persist it.
    /// <para>
    /// Tenants name the image: <paramref name="image"/> is an <see cref="ImageReference"/>, and an implementation
    /// hands out exactly the image of that name, never one found by engine id or id prefix, and never its own
    /// snapshots. A reference that names its registry host (the platform passes every image that is not
    /// operator-provided that way), or any call with a credential, is confirmed with the registry for this caller on
    /// every call, even when the image is already present (a digest reference included): that answer is the only
    /// access check a private image gets. Failures read <see cref="ImageMessages"/>.
    /// <see cref="ImageInfo.Digest"/> is then the manifest digest the registry served.
    /// </para>
    /// </summary>
    Task<ImageInfo> PrepareImageAsync(string image, RegistryCredential? auth, CancellationToken ct);

    /// <summary>Creates and starts the VM with its /data volume. Idempotent per <see cref="VmSpec.VmId"/>.</summary>
    Task CreateAsync(VmSpec spec, CancellationToken ct);

    Task StartAsync(string vmId, CancellationToken ct);
    Task StopAsync(string vmId, CancellationToken ct);
    Task RestartAsync(string vmId, CancellationToken ct);

    /// <summary>Removes the VM and its /data volume. Succeeds when already gone.</summary>
    Task RemoveAsync(string vmId, CancellationToken ct);

    /// <summary>Current state, or null when the runtime has no such VM.</summary>
    Task<RuntimeVmInfo?> InspectAsync(string vmId, CancellationToken ct);

    /// <summary>Every VM this runtime manages for Warren (by label), for reconciliation at start.</summary>
    Task<IReadOnlyList<RuntimeVmInfo>> ListAsync(CancellationToken ct);

    /// <summary>
    /// Runs a process in the VM, or an SSH session of <see cref="ExecSpec.Kind"/> (shell, command, sftp): how a kind
    /// becomes a program in the VM is the runtime's business (its guest agent). With <see cref="ExecSpec.Tty"/>
    /// stdout and stderr are one stream.
    /// </summary>
    Task<IVmProcess> ExecAsync(string vmId, ExecSpec spec, CancellationToken ct);

    /// <summary>
    /// Listens inside the VM as <see cref="ListenSpec.User"/> (TCP in the VM's network namespace, or a private unix
    /// socket) for SSH remote forwarding (RFC 4254 §7.1) and agent forwarding (OpenSSH PROTOCOL.agent). Connections
    /// made to it inside the VM are offered by <see cref="IVmListener.AcceptAsync"/>; disposing stops listening.
    /// </summary>
    Task<IVmListener> ListenAsync(string vmId, ListenSpec spec, CancellationToken ct)
        => throw new NotSupportedException($"the {Name} runtime cannot listen inside VMs");

    /// <summary>A byte stream to TCP <paramref name="port"/> on the VM (made inside the VM's network namespace).</summary>
    Task<Stream> ConnectAsync(string vmId, string host, int port, CancellationToken ct);

    /// <summary>The VM's address reachable from the host (for the HTTP proxy), or null when none.</summary>
    Task<System.Net.IPAddress?> GetAddressAsync(string vmId, CancellationToken ct);

    /// <summary>Snapshots the source VM's filesystem and /data into a new VM described by <paramref name="target"/>, and starts it.</summary>
    Task CopyAsync(string sourceVmId, VmSpec target, CancellationToken ct);

    /// <summary>Changes the hostname shown inside the VM to the new name, keeping data and identity.</summary>
    Task RenameAsync(string vmId, string newName, CancellationToken ct);

    /// <summary>Applies cpu/memory/disk in place; data is kept.</summary>
    Task<ResizeOutcome> ResizeAsync(string vmId, VmResources resources, CancellationToken ct);

    /// <summary>One resource sample, or null when the VM is not running.</summary>
    Task<VmStatsSample?> SampleStatsAsync(string vmId, CancellationToken ct);
}

/// <summary>
/// A runtime failure with a stable <see cref="Code"/> ("runtime.…") and a message safe to show users (never a
/// credential). Each runtime throws its own subclass; code shared by runtimes (the guest agent's client) makes
/// them through the runtime.
/// </summary>
public abstract class VmRuntimeException(string code, string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>Stable code, e.g. "runtime.vm-not-found".</summary>
    public string Code { get; } = code;
}

public sealed record RegistryCredential(string Username, string Secret)
{
    /// <summary>Never prints the secret.</summary>
    public override string ToString() => $"RegistryCredential {{ Username = {Username}, Secret = *** }}";
}

/// <summary>What the image config says (Docker image config / OCI image spec).</summary>
public sealed record ImageInfo(
    string Reference,
    string Digest,
    IReadOnlyList<int> ExposedTcpPorts,
    string? User,
    IReadOnlyList<string> Entrypoint,
    IReadOnlyList<string> Command,
    IReadOnlyList<string> Env);

public sealed record VmResources(double Cpus, long MemoryBytes, long DiskBytes);

/// <summary>How the image's own command runs under the agent: auto (image entrypoint+cmd), none, or custom.</summary>
public enum CommandMode { Auto, None, Custom }

public sealed record VmSpec(
    string VmId,
    string Name,
    string Image,
    VmResources Resources,
    IReadOnlyDictionary<string, string> Env,
    CommandMode CommandMode,
    IReadOnlyList<string>? CustomCommand,
    string? SetupScript,
    RegistryCredential? RegistryAuth);

public enum RuntimeVmState { Creating, Running, Stopped, Missing, Failed }

public sealed record RuntimeVmInfo(string VmId, string Name, RuntimeVmState State, string Image, DateTimeOffset? StartedAt);

public sealed record ResizeOutcome(bool CpuApplied, bool MemoryApplied, bool DiskEnforced, string? Note);

public sealed record VmStatsSample(
    DateTimeOffset Timestamp,
    double CpuPercent,
    long MemoryUsedBytes,
    long MemoryLimitBytes,
    long DiskUsedBytes,
    long NetworkRxBytes,
    long NetworkTxBytes);

public sealed record TtySpec(string Term, int Columns, int Rows);

/// <summary>
/// What <see cref="IVmRuntime.ExecAsync"/> starts. <see cref="Kind"/> <see cref="ExecSessionKind.Process"/> runs
/// <see cref="Command"/> as an argv; the SSH session kinds (RFC 4254 §6.5) leave the program to the runtime:
/// <see cref="ExecSessionKind.Command"/> takes the client's command line as the one element of <see cref="Command"/>,
/// <see cref="ExecSessionKind.Shell"/> and <see cref="ExecSessionKind.Sftp"/> take none.
/// </summary>
public sealed record ExecSpec(
    IReadOnlyList<string> Command,
    string? User = null,
    IReadOnlyDictionary<string, string>? Env = null,
    TtySpec? Tty = null,
    string? WorkingDirectory = null,
    ExecSessionKind Kind = ExecSessionKind.Process);

/// <summary>What an exec is: a plain process, or one of the session programs an SSH client asks for (RFC 4254 §6.5).</summary>
public enum ExecSessionKind
{
    /// <summary><see cref="ExecSpec.Command"/> is the argv.</summary>
    Process,
    /// <summary>The login user's shell, started in their home directory as sshd starts it ("shell" request).</summary>
    Shell,
    /// <summary>The client's command line, run by the shell in the home directory as sshd runs it ("exec" request); legacy scp (<c>scp -t</c>/<c>-f</c>) included.</summary>
    Command,
    /// <summary>An SFTP server on stdin/stdout ("subsystem" request for "sftp").</summary>
    Sftp,
}

/// <summary>
/// Where <see cref="IVmRuntime.ListenAsync"/> listens: TCP on <see cref="Host"/>:<see cref="Port"/> (0 picks a port),
/// or, when <see cref="Host"/> is null, a unix socket in a fresh directory only <see cref="User"/> can enter.
/// </summary>
public sealed record ListenSpec(string User, string? Host, uint Port)
{
    public static ListenSpec Tcp(string user, string host, uint port) => new(user, host, port);
    public static ListenSpec Unix(string user) => new(user, null, 0);
}

/// <summary>A listening socket inside a VM (<see cref="IVmRuntime.ListenAsync"/>). Disposing stops it and drops what it holds.</summary>
public interface IVmListener : IAsyncDisposable
{
    /// <summary>The TCP port listened on (the chosen one when 0 was asked); 0 for a unix socket.</summary>
    uint BoundPort { get; }

    /// <summary>The unix socket's path inside the VM; null for TCP.</summary>
    string? SocketPath { get; }

    /// <summary>Connections accepted inside the VM, until the listener ends; each must be accepted or rejected.</summary>
    IAsyncEnumerable<IVmIncomingConnection> AcceptAsync(CancellationToken ct);
}

/// <summary>A connection made to an <see cref="IVmListener"/> inside the VM, waiting for the host to take it.</summary>
public interface IVmIncomingConnection
{
    /// <summary>The connecting peer's address and port (for a unix socket whatever the runtime reports).</summary>
    string OriginatorAddress { get; }
    uint OriginatorPort { get; }

    /// <summary>The connection's byte stream (write to it = send to the peer in the VM).</summary>
    Task<Stream> AcceptAsync(CancellationToken ct);

    /// <summary>Closes the connection unaccepted (the SSH client refused the channel).</summary>
    Task RejectAsync(CancellationToken ct);
}

/// <summary>A process started by <see cref="IVmRuntime.ExecAsync"/>.</summary>
public interface IVmProcess : IAsyncDisposable
{
    /// <summary>Write to the process's stdin; dispose/complete it to send EOF.</summary>
    Stream StandardInput { get; }
    Stream StandardOutput { get; }
    /// <summary>Null when a TTY merges stderr into stdout.</summary>
    Stream? StandardError { get; }
    Task CloseStandardInputAsync();
    Task ResizeAsync(int columns, int rows, CancellationToken ct);
    /// <summary>Sends a signal by its SSH name without "SIG" (RFC 4254 §6.10): "INT", "TERM", "KILL", …</summary>
    Task SignalAsync(string signal, CancellationToken ct);
    /// <summary>Completes when the process ended.</summary>
    Task<ExitResult> Completion { get; }
}

/// <summary>Exit status, or the signal that ended the process (RFC 4254 §6.10 exit-status / exit-signal).</summary>
public sealed record ExitResult(int? ExitCode, string? Signal, bool CoreDumped = false);

/// <summary>
/// A stream whose sending side can be closed while reading goes on (a TCP half-close), such as the
/// one <see cref="IVmRuntime.ConnectAsync"/> returns. Port forwarding uses it to pass a client's EOF
/// on without cutting off the answer (RFC 4254 §5.3 EOF is one-directional).
/// </summary>
public interface IHalfClosableStream
{
    Task ShutdownWriteAsync();
}
