using System.Formats.Tar;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Docker.DotNet;
using Docker.DotNet.Models;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Platform.Runtime;
using Warren.Runtime.HostNetwork;
using Warren.Runtime.Agent;

namespace Warren.Runtime.Docker;

/// <summary>
/// <see cref="IVmRuntime"/> over the Docker Engine API. A VM is:
/// <list type="bullet">
/// <item>container <c>warren-&lt;vmId&gt;</c>, labelled <see cref="LabelVmId"/>, <see cref="LabelVmName"/>,
///   <see cref="LabelManaged"/>=true, hostname = VM name, restart policy on-failure (<see cref="VmRestartPolicy"/>);</item>
/// <item>named volume <c>warren-data-&lt;vmId&gt;</c> at /data;</item>
/// <item>the static guest agent bind-mounted read-only at <see cref="AgentMountPath"/> as the entrypoint:
///   <c>/.warren/agent init [--setup-script F] [--user U] -- CMD…</c>, so any image (even FROM scratch) works;</item>
/// <item>with <see cref="DockerRuntimeOptions.AgentSocketDirectory"/>: named volume <c>warren-run-&lt;vmId&gt;</c>, a
///   64 KiB tmpfs, at <see cref="AgentRunMountPath"/>, where the agent serves the session socket that exec and connect
///   use instead of Docker exec, and the host file <c>&lt;dir&gt;/&lt;vmId&gt;/token</c> bind-mounted read-only at
///   <see cref="AgentTokenMountPath"/> (docs/AGENT-PROTOCOL.md). VMs created before the run volume have
///   <c>&lt;dir&gt;/&lt;vmId&gt;</c> bind-mounted read-write at <see cref="AgentRunMountPath"/> instead, token inside.</item>
/// </list>
/// Rename and copy commit the container's filesystem to a local image <c>warren-vm/&lt;vmId&gt;:TAG</c> and
/// create a container from it (Docker cannot change a container's hostname in place); RemoveAsync deletes those images.
/// </summary>
public sealed partial class DockerVmRuntime : IVmRuntime, IDisposable
{
    public const string LabelVmId = "warren.vm-id";
    public const string LabelVmName = "warren.vm-name";
    public const string LabelManaged = "warren.managed";
    /// <summary>The owning installation (<see cref="DockerRuntimeOptions.Instance"/>).</summary>
    public const string LabelInstance = "warren.instance";
    /// <summary>The image reference the VM was created from (copies and renames run from a committed image).</summary>
    public const string LabelImage = "warren.image";
    /// <summary>The disk size asked for, in bytes (recorded even where the storage driver can't enforce it).</summary>
    public const string LabelDiskBytes = "warren.disk-bytes";

    public const string AgentMountPath = GuestAgent.Path;

    /// <summary>
    /// on-failure, with no retry limit: the engine restarts a VM whose init exited non-zero (a crash, the OOM killer,
    /// the engine's own restart: init reports SIGTERM as 143) and leaves alone one that powered itself off (init exits
    /// 0 after <c>poweroff</c>/<c>halt</c>/<c>shutdown</c> inside, as a real machine stays off) or that Warren stopped
    /// (Docker never restarts a container stopped through its API; Docker Engine docs, "Start containers automatically").
    /// </summary>
    public static readonly RestartPolicy VmRestartPolicy = new() { Name = RestartPolicyKind.OnFailure };
    public const string SetupScriptPath = "/.warren/setup.sh";
    public const string DataMountPath = "/data";
    /// <summary>Where the VM's session socket directory is mounted; the agent serves <c>agent.sock</c> there.</summary>
    public const string AgentRunMountPath = "/.warren/run";
    /// <summary>Where the VM's session token is bind-mounted read-only.</summary>
    public const string AgentTokenMountPath = "/.warren/token";
    /// <summary>
    /// The run volume's size: a tmpfs of 64 KiB (a socket needs no space), so root in the VM cannot fill the
    /// host's disk or memory through it. Root-only, like the directory it replaces.
    /// </summary>
    internal const string RunVolumeMountOptions = "size=65536,mode=0700";
    /// <summary>Where exec'd processes record their pid for <see cref="IVmProcess.SignalAsync"/> (tmpfs in every container).</summary>
    internal const string PidFileDirectory = "/dev/shm";
    internal const string PidFilePrefix = ".warren-exec-";

    private static readonly Regex VmIdPattern = VmIdRegex();

    private readonly DockerClient _client;
    private readonly DockerRuntimeOptions _options;
    private readonly ILogger _log;
    private readonly string _agentPath;
    private readonly AgentSessionDirectory? _sessions;
    /// <summary>Host mountpoints of the VMs' run volumes (stable for a volume name), by VM id.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> _runMountpoints = new(StringComparer.Ordinal);
    private bool? _diskQuotaSupported;
    private readonly DockerVmNetworks _networks;
    /// <summary>Per-VM disk images for /data (<see cref="DockerRuntimeOptions.DiskDirectory"/>), or null.</summary>
    private readonly VmDiskImages? _disks;

    public DockerVmRuntime(DockerRuntimeOptions? options = null, ILogger<DockerVmRuntime>? logger = null)
    {
        _options = options ?? new DockerRuntimeOptions();
        _log = (ILogger?)logger ?? NullLogger.Instance;
        _agentPath = ResolveAgentPath(_options.AgentPath);
        if (!string.IsNullOrEmpty(_options.AgentSocketDirectory)) _sessions = new AgentSessionDirectory(_options.AgentSocketDirectory);
        _client = new DockerClientConfiguration(_options.Endpoint ?? DefaultEndpoint()).CreateClient();
        _networks = new DockerVmNetworks(_client, _options, _log);
        if (!string.IsNullOrEmpty(_options.DiskDirectory)) _disks = new VmDiskImages(Path.GetFullPath(_options.DiskDirectory));
    }

    public string Name => "docker";

    /// <summary>The host path of the agent in use.</summary>
    public string AgentPath => _agentPath;

    internal DockerClient Client => _client;

    public static string ContainerName(string vmId) => "warren-" + vmId;
    public static string VolumeName(string vmId) => "warren-data-" + vmId;
    /// <summary>The VM's run volume: a small tmpfs at <see cref="AgentRunMountPath"/> holding the agent's session socket.</summary>
    public static string RunVolumeName(string vmId) => "warren-run-" + vmId;
    internal static string SnapshotRepository(string vmId) => "warren-vm/" + vmId.ToLowerInvariant();

    public void Dispose() => _client.Dispose();

    // ------------------------------------------------------------------ lifecycle

    public async Task CreateAsync(VmSpec spec, CancellationToken ct)
    {
        ValidateVmId(spec.VmId);
        var existing = await TryInspectContainerAsync(spec.VmId, ct);
        if (existing != null)
        {
            if (existing.State?.Running != true) await StartAsync(spec.VmId, ct);
            return;
        }
        var image = await PrepareImageAsync(spec.Image, spec.RegistryAuth, ct);
        var command = spec.CommandMode switch
        {
            CommandMode.None => [],
            CommandMode.Custom => spec.CustomCommand?.ToList() ?? [],
            _ => image.Entrypoint.Concat(image.Command).ToList(),
        };
        await CreateContainerAsync(spec, spec.Image, spec.Image, image.User, command, ct);
        if (!string.IsNullOrEmpty(spec.SetupScript)) await PutSetupScriptAsync(spec.VmId, spec.SetupScript, ct);
        await StartAsync(spec.VmId, ct);
    }

    /// <summary>Creates the volume (idempotent) and the container, without starting it.</summary>
    private async Task CreateContainerAsync(VmSpec spec, string runImage, string labelImage, string? user,
        IReadOnlyList<string> command, CancellationToken ct, bool? hasSetupScript = null)
    {
        string volume = VolumeName(spec.VmId);
        var labels = Labels(spec.VmId, spec.Name);
        labels[LabelImage] = labelImage;
        labels[LabelDiskBytes] = spec.Resources.DiskBytes.ToString(CultureInfo.InvariantCulture);
        // No VM without its fence: the rules are checked (and restored) before each VM is made.
        await _networks.EnsureIsolationAsync(ct);
        var endpoint = await _networks.AllocateAsync(spec.VmId, Labels(spec.VmId, spec.Name), ct);
        bool diskImage = _disks != null && spec.Resources.DiskBytes > 0;
        if (diskImage) await PrepareDiskMountPointAsync(spec.VmId, ct);
        else await Engine(() => _client.Volumes.CreateAsync(new VolumesCreateParameters { Name = volume, Labels = Labels(spec.VmId, spec.Name) }, ct));

        var entrypoint = new List<string> { AgentMountPath, "init" };
        if (hasSetupScript ?? !string.IsNullOrEmpty(spec.SetupScript)) entrypoint.AddRange(["--setup-script", SetupScriptPath]);
        if (!string.IsNullOrEmpty(user)) entrypoint.AddRange(["--user", user]);
        entrypoint.Add("--");
        entrypoint.AddRange(command);

        var mounts = new List<Mount>
        {
            new() { Type = "bind", Source = _agentPath, Target = AgentMountPath, ReadOnly = true },
            diskImage
                ? new() { Type = "bind", Source = _disks!.MountPath(spec.VmId), Target = DataMountPath }
                : new() { Type = "volume", Source = volume, Target = DataMountPath },
        };
        if (_sessions != null)
        {
            // The token must be on disk before the agent can start and read it, and before it is bind-mounted.
            try
            {
                _sessions.Prepare(spec.VmId);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new DockerRuntimeException(DockerRuntimeErrors.EngineError,
                    $"cannot prepare the session directory of VM {spec.VmId} under {_sessions.Root}: {e.Message}", e);
            }
            // The socket's directory is a small tmpfs volume, not a host directory: root in the VM must not be able
            // to write to the host's disk outside its quota. The token comes in as one read-only file.
            string run = RunVolumeName(spec.VmId);
            _runMountpoints.TryRemove(spec.VmId, out _);
            await Engine(() => _client.Volumes.CreateAsync(new VolumesCreateParameters
            {
                Name = run,
                Driver = "local",
                DriverOpts = new Dictionary<string, string> { ["type"] = "tmpfs", ["device"] = "tmpfs", ["o"] = RunVolumeMountOptions },
                Labels = Labels(spec.VmId, spec.Name),
            }, ct));
            mounts.Add(new Mount { Type = "volume", Source = run, Target = AgentRunMountPath });
            mounts.Add(new Mount { Type = "bind", Source = _sessions.TokenPath(spec.VmId), Target = AgentTokenMountPath, ReadOnly = true });
        }
        var host = new HostConfig
        {
            Mounts = mounts,
            RestartPolicy = VmRestartPolicy,
            // The agent (PID 1) keeps the VM reachable over SSH, so the kernel's OOM killer must take the app, not it
            // (proc(5), /proc/pid/oom_score_adj: -1000 exempts a process). The engine sets it while privileged; the
            // agent gives every command it starts 0 again.
            OomScoreAdj = AgentOomScoreAdj ?? 0,
            NanoCPUs = await NanoCpusAsync(spec.Resources.Cpus, ct),
            Memory = Math.Max(0, spec.Resources.MemoryBytes),
            // Swap limit = memory limit: no swap beyond the VM's memory.
            MemorySwap = spec.Resources.MemoryBytes > 0 ? spec.Resources.MemoryBytes : 0,
            NetworkMode = endpoint.NetworkName,
            DNS = _networks.ContainerDnsServers(),
            PidsLimit = _options.PidsLimit > 0 ? _options.PidsLimit : null,
            CapDrop = _options.DroppedCapabilities,
            Ulimits = _options.OpenFilesLimit > 0
                ? [new Ulimit { Name = "nofile", Soft = _options.OpenFilesLimit, Hard = _options.OpenFilesLimit }]
                : null,
        };
        bool disk = spec.Resources.DiskBytes > 0 && await DiskQuotaSupportedAsync(ct);
        if (disk) host.StorageOpt = new Dictionary<string, string> { ["size"] = spec.Resources.DiskBytes.ToString(CultureInfo.InvariantCulture) };

        var create = new CreateContainerParameters
        {
            Name = ContainerName(spec.VmId),
            Image = runImage,
            Hostname = spec.Name,
            Labels = labels,
            // The whole argv is the entrypoint; overriding it also drops the image's Cmd.
            Entrypoint = entrypoint,
            Cmd = [],
            User = "0",
            Env = spec.Env.Select(kv => kv.Key + "=" + kv.Value).ToList(),
            HostConfig = host,
            NetworkingConfig = DockerVmNetworks.Join(endpoint),
        };
        try
        {
            await _client.Containers.CreateContainerAsync(create, ct);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.Conflict)
        {
            // Created concurrently by another call for the same id: idempotent.
        }
        catch (DockerApiException e) when (disk && e.ResponseBody?.Contains("storage", StringComparison.OrdinalIgnoreCase) == true)
        {
            _diskQuotaSupported = false;
            host.StorageOpt = null;
            await Engine(() => _client.Containers.CreateContainerAsync(create, ct));
        }
        // After the container: a crash before this point leaves a container whose start makes the image (StartAsync).
        if (diskImage) await DiskAsync(() => _disks!.EnsureAsync(spec.VmId, spec.Resources.DiskBytes, ct));
    }

    private async Task PutSetupScriptAsync(string vmId, string script, CancellationToken ct)
    {
        using var tar = new MemoryStream();
        using (var writer = new TarWriter(tar, TarEntryFormat.Pax, leaveOpen: true))
        {
            writer.WriteEntry(new PaxTarEntry(TarEntryType.Directory, ".warren/") { Mode = (UnixFileMode)0x1ED });
            var bytes = Encoding.UTF8.GetBytes(script.Replace("\r\n", "\n", StringComparison.Ordinal));
            writer.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, ".warren/setup.sh")
            {
                Mode = (UnixFileMode)0x1C0, // 0700, root only
                DataStream = new MemoryStream(bytes),
            });
        }
        tar.Position = 0;
        await Engine(() => _client.Containers.ExtractArchiveToContainerAsync(ContainerName(vmId),
            new ContainerPathStatParameters { Path = "/", AllowOverwriteDirWithFile = false }, tar, ct));
    }

    public async Task StartAsync(string vmId, CancellationToken ct)
    {
        ValidateVmId(vmId);
        await EnsureDiskMountedAsync(vmId, ct);
        try
        {
            await _client.Containers.StartContainerAsync(ContainerName(vmId), new ContainerStartParameters(), ct);
        }
        catch (DockerContainerNotFoundException e)
        {
            throw NotFound(vmId, e);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            throw NotFound(vmId, e);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotModified)
        {
            // Already running.
        }
    }

    public async Task StopAsync(string vmId, CancellationToken ct)
    {
        ValidateVmId(vmId);
        try
        {
            await _client.Containers.StopContainerAsync(ContainerName(vmId),
                new ContainerStopParameters { WaitBeforeKillSeconds = (uint)_options.StopTimeoutSeconds }, ct);
        }
        catch (DockerContainerNotFoundException e)
        {
            throw NotFound(vmId, e);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            throw NotFound(vmId, e);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotModified)
        {
            // Already stopped.
        }
    }

    public async Task RestartAsync(string vmId, CancellationToken ct)
    {
        ValidateVmId(vmId);
        try
        {
            await _client.Containers.RestartContainerAsync(ContainerName(vmId),
                new ContainerRestartParameters { WaitBeforeKillSeconds = (uint)_options.StopTimeoutSeconds }, ct);
        }
        catch (DockerContainerNotFoundException e)
        {
            throw NotFound(vmId, e);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            throw NotFound(vmId, e);
        }
    }

    public async Task RemoveAsync(string vmId, CancellationToken ct)
    {
        ValidateVmId(vmId);
        try
        {
            await _client.Containers.RemoveContainerAsync(ContainerName(vmId), new ContainerRemoveParameters { Force = true }, ct);
        }
        catch (DockerContainerNotFoundException) { }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound) { }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.Conflict)
        {
            // "removal already in progress": wait for it below via the volume removal retry.
        }

        await RemoveVolumeAsync(VolumeName(vmId), ct);
        await _networks.ReleaseAsync(vmId, ct);
        if (_disks != null) await DiskAsync(() => _disks.DeleteAsync(vmId, ct));
        // Removed whether or not a socket directory is configured now: the VM may have been created with one.
        await RemoveVolumeAsync(RunVolumeName(vmId), ct);
        _runMountpoints.TryRemove(vmId, out _);
        // After the container is gone, so no agent is left to bind a socket in it again.
        _sessions?.Delete(vmId);
        await RemoveSnapshotImagesAsync(vmId, ct);
    }

    /// <summary>Removes a volume; absent is fine. It can briefly stay "in use" while the engine finishes removing the container.</summary>
    private async Task RemoveVolumeAsync(string name, CancellationToken ct)
    {
        const int VolumeRemoveAttempts = 20;
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                await _client.Volumes.RemoveAsync(name, force: true, ct);
                return;
            }
            catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
            {
                return;
            }
            catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.Conflict && attempt < VolumeRemoveAttempts)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(100 * attempt), ct);
            }
        }
    }

    private async Task RemoveSnapshotImagesAsync(string vmId, CancellationToken ct)
    {
        var images = await Engine(() => _client.Images.ListImagesAsync(new ImagesListParameters
        {
            Filters = new Dictionary<string, IDictionary<string, bool>> { ["reference"] = new Dictionary<string, bool> { [SnapshotRepository(vmId)] = true } },
        }, ct));
        foreach (var tag in images.SelectMany(i => i.RepoTags ?? []).Where(t => t.StartsWith(SnapshotRepository(vmId) + ":", StringComparison.Ordinal)))
        {
            try
            {
                await _client.Images.DeleteImageAsync(tag, new ImageDeleteParameters { Force = false }, ct);
            }
            catch (DockerApiException e) when (e.StatusCode is HttpStatusCode.Conflict or HttpStatusCode.NotFound)
            {
                // Still the base of another VM's snapshot (a copy of a copy): the tag stays until that one goes.
            }
        }
    }

    public async Task<RuntimeVmInfo?> InspectAsync(string vmId, CancellationToken ct)
    {
        ValidateVmId(vmId);
        var c = await TryInspectContainerAsync(vmId, ct);
        if (c == null) return null;
        return new RuntimeVmInfo(
            Label(c.Config?.Labels, LabelVmId) ?? vmId,
            Label(c.Config?.Labels, LabelVmName) ?? c.Config?.Hostname ?? "",
            StateOf(c.State?.Status, c.State?.Running == true),
            Label(c.Config?.Labels, LabelImage) ?? c.Config?.Image ?? "",
            ParseTime(c.State?.StartedAt));
    }

    public async Task<IReadOnlyList<RuntimeVmInfo>> ListAsync(CancellationToken ct)
    {
        var list = await Engine(() => _client.Containers.ListContainersAsync(new ContainersListParameters
        {
            All = true,
            Filters = new Dictionary<string, IDictionary<string, bool>>
            {
                ["label"] = new Dictionary<string, bool> { [LabelManaged + "=true"] = true, [LabelInstance + "=" + _options.Instance] = true },
            },
        }, ct));
        var result = new List<RuntimeVmInfo>();
        foreach (var c in list)
        {
            if (c.Labels == null || !c.Labels.TryGetValue(LabelVmId, out var id)) continue;
            result.Add(new RuntimeVmInfo(id, Label(c.Labels, LabelVmName) ?? "",
                StateOf(c.State, c.State == "running"), Label(c.Labels, LabelImage) ?? c.Image, null));
        }
        return result;
    }

    private static RuntimeVmState StateOf(string? status, bool running) => status switch
    {
        _ when running => RuntimeVmState.Running,
        "created" => RuntimeVmState.Creating,
        "restarting" => RuntimeVmState.Running,
        "exited" or "paused" => RuntimeVmState.Stopped,
        "dead" or "removing" => RuntimeVmState.Failed,
        _ => RuntimeVmState.Stopped,
    };

    private static DateTimeOffset? ParseTime(string? text)
    {
        // The engine reports the zero time for never-started containers.
        if (string.IsNullOrEmpty(text) || text.StartsWith("0001-", StringComparison.Ordinal)) return null;
        return DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t) ? t : null;
    }

    // ------------------------------------------------------------------ exec, connect, address

    /// <summary>How the shared agent client reports a broken or refused session: as this runtime's exception (same codes in both runtimes).</summary>
    private static VmRuntimeException SessionFailure(string code, string message, Exception? inner) => new DockerRuntimeException(code, message, inner);

    /// <summary>Listens inside the VM with the guest agent's <c>listen</c> (shared with every agent runtime: <see cref="AgentListener"/>).</summary>
    public async Task<IVmListener> ListenAsync(string vmId, ListenSpec spec, CancellationToken ct)
        => await AgentListener.StartAsync(this, vmId, spec, ct).ConfigureAwait(false);

    public async Task<IVmProcess> ExecAsync(string vmId, ExecSpec spec, CancellationToken ct)
    {
        ValidateVmId(vmId);
        ArgumentNullException.ThrowIfNull(spec);
        // SSH session kinds become the guest agent's programs here, on the runtime side of the seam.
        spec = GuestAgent.ToProcess(spec);
        if (spec.Command.Count == 0) throw new ArgumentException("empty command", nameof(spec));
        // "" asks the agent for no pty, so a TTY always names a terminal type.
        string term = spec.Tty == null ? "" : string.IsNullOrEmpty(spec.Tty.Term) ? DefaultTerm : spec.Tty.Term;
        var env = spec.Env?.Select(kv => kv.Key + "=" + kv.Value).ToList() ?? [];
        if (spec.Tty != null && !env.Any(e => e.StartsWith("TERM=", StringComparison.Ordinal))) env.Add("TERM=" + term);

        var request = new AgentExecRequest(spec.User ?? "", spec.WorkingDirectory ?? "", term,
            spec.Tty?.Columns ?? 0, spec.Tty?.Rows ?? 0, spec.Command, env);
        if (await TryOpenSessionAsync(vmId, request, ct) is { } session) return new AgentVmProcess(session);

        string pidFile = $"{PidFileDirectory}/{PidFilePrefix}{Guid.NewGuid():N}";
        var argv = new List<string> { AgentMountPath, "exec", "--pid-file", pidFile };
        if (spec.Tty is { Columns: > 0, Rows: > 0 } tty)
            argv.AddRange(["--tty-size", $"{tty.Columns.ToString(CultureInfo.InvariantCulture)}x{tty.Rows.ToString(CultureInfo.InvariantCulture)}"]);
        argv.Add("--");
        argv.AddRange(spec.Command);
        return await DockerVmProcess.StartAsync(this, vmId, argv, env, spec.User, spec.WorkingDirectory, spec.Tty, pidFile, ct);
    }

    /// <summary>TERM for a TTY whose spec names none (the agent needs one to allocate a pty).</summary>
    private const string DefaultTerm = "xterm";

    /// <summary>
    /// The session-socket path (docs/AGENT-PROTOCOL.md). Null means "use Docker exec": no socket directory, the mode
    /// is Disabled, the VM has no token (created before the directory was configured), the request exceeds the
    /// protocol's limits, or the socket is absent or refuses (agent not up yet). Once connected, failures throw.
    /// </summary>
    private async Task<AgentSession?> TryOpenSessionAsync(string vmId, AgentOpenRequest request, CancellationToken ct)
    {
        if (_sessions == null || _options.SessionSocket == SessionSocketMode.Disabled) return null;
        bool required = _options.SessionSocket == SessionSocketMode.Required;
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            using var open = BuildOpenFrame(vmId, request, out string? unusable);
            if (open == null)
            {
                if (!required) { LogSessionFallback(vmId, unusable!); return null; }
                throw new DockerRuntimeException(DockerRuntimeErrors.AgentSessionFailed, $"no session with the agent of VM {vmId}: {unusable}");
            }
            var (socket, refused) = await ConnectAgentAsync(vmId, ct);
            if (socket != null) return await AgentSession.OpenAsync(socket, vmId, request, open, SessionFailure, ct);
            if (!required)
            {
                LogSessionFallback(vmId, refused!);
                return null;
            }
            if (waited.Elapsed >= _options.RequiredSocketWait)
                throw new DockerRuntimeException(DockerRuntimeErrors.AgentSessionFailed,
                    $"no session with the agent of VM {vmId} after {_options.RequiredSocketWait.TotalSeconds:0} s: {refused}");
            await Task.Delay(RequiredSocketPoll, ct);
        }
    }

    /// <summary>
    /// Connects to the VM's session socket: <c>agent.sock</c> at the host mountpoint of its run volume, or, for a VM
    /// created before the run volume, in its directory under the socket directory (in the current layout the VM cannot
    /// write to that directory, so a socket there is always the old layout's). The old path is tried first while the
    /// mountpoint is not known, so VMs of the old layout cost no engine call. Null socket: use Docker exec, and why.
    /// </summary>
    private async Task<(System.Net.Sockets.Socket? Socket, string? Unusable)> ConnectAgentAsync(string vmId, CancellationToken ct)
    {
        if (!_runMountpoints.TryGetValue(vmId, out var mountpoint))
        {
            var legacy = await _sessions!.TryConnectAsync(vmId, ct);
            if (!legacy.Absent) return (legacy.Socket, legacy.Unusable);
            var (found, why) = await RunVolumeMountpointAsync(vmId, ct);
            if (found == null) return (null, why == null ? legacy.Unusable : $"{legacy.Unusable}; {why}");
            mountpoint = found;
        }
        var (socket, unusable, _) = await _sessions!.TryConnectAsync(vmId, Path.Combine(mountpoint, AgentSessionDirectory.SocketName), ct);
        return (socket, unusable);
    }

    /// <summary>
    /// The host mountpoint of the VM's run volume, asked of the engine and cached (it is stable for a volume name).
    /// (null, null): no run volume (a VM of the old layout, or none at all); (null, why): the engine could not tell, or
    /// reported a mountpoint the daemon cannot use.
    /// </summary>
    private async Task<(string? Mountpoint, string? Unusable)> RunVolumeMountpointAsync(string vmId, CancellationToken ct)
    {
        VolumeResponse volume;
        try
        {
            volume = await _client.Volumes.InspectAsync(RunVolumeName(vmId), ct);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            // Not cached: the VM may yet be (re)created with a run volume, possibly by another runtime instance.
            return (null, null);
        }
        catch (DockerApiException e)
        {
            return (null, $"cannot inspect the run volume: {(int)e.StatusCode} {Truncate(e.ResponseBody)}");
        }
        catch (Exception e) when (e is HttpRequestException or IOException or System.Net.Sockets.SocketException or TimeoutException
                                   || (e is OperationCanceledException && !ct.IsCancellationRequested))
        {
            // An engine that is down or slow must mean "no socket found" (fallback, or keep waiting in Required mode),
            // not an exec that fails: how Docker.DotNet reports a refused or missing endpoint varies by transport.
            return (null, $"cannot inspect the run volume: container engine unavailable: {e.Message}");
        }
        string? mountpoint = volume.Mountpoint;
        if (string.IsNullOrEmpty(mountpoint) || !Path.IsPathFullyQualified(mountpoint))
            return (null, $"the run volume has no usable host mountpoint ({mountpoint})");
        _runMountpoints[vmId] = mountpoint;
        return (mountpoint, null);
    }

    /// <summary>Poll interval while <see cref="SessionSocketMode.Required"/> waits for a booting agent to bind its socket.</summary>
    private static readonly TimeSpan RequiredSocketPoll = TimeSpan.FromMilliseconds(20);

    /// <summary>The OPEN frame with the VM's token, or null (and why) when the VM has no usable token or the request is too big.</summary>
    private RentedFrame? BuildOpenFrame(string vmId, AgentOpenRequest request, out string? unusable)
    {
        Span<byte> token = stackalloc byte[AgentProtocol.TokenBytes];
        try
        {
            if (!_sessions!.TryReadToken(vmId, token))
            {
                unusable = "no session token (VM missing, or created before the socket directory was configured)";
                return null;
            }
            var frame = request.BuildOpenFrame(token);
            unusable = frame == null ? "the request exceeds the session protocol's limits" : null;
            return frame;
        }
        finally
        {
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(token);
        }
    }

    public async Task<Stream> ConnectAsync(string vmId, string host, int port, CancellationToken ct)
    {
        ValidateVmId(vmId);
        ArgumentException.ThrowIfNullOrWhiteSpace(host);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        if (await TryOpenSessionAsync(vmId, new AgentConnectRequest(host, port), ct) is { } session) return new AgentConnectionStream(session);
        var argv = new List<string> { AgentMountPath, "connect", "--ready", host, port.ToString(CultureInfo.InvariantCulture) };
        var process = await DockerVmProcess.StartAsync(this, vmId, argv, [], null, null, null, null, ct);
        return await VmConnectionStream.OpenAsync(process, host, port, ct);
    }

    public async Task<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct)
    {
        ValidateVmId(vmId);
        var c = await TryInspectContainerAsync(vmId, ct);
        if (c?.State?.Running != true || c.NetworkSettings == null) return null;
        string? ip = c.NetworkSettings.Networks?.Values.Select(n => n.IPAddress).FirstOrDefault(a => !string.IsNullOrEmpty(a));
        if (string.IsNullOrEmpty(ip)) ip = c.NetworkSettings.IPAddress;
        return IPAddress.TryParse(ip, out var address) ? address : null;
    }

    // ------------------------------------------------------------------ copy, rename, resize

    public async Task CopyAsync(string sourceVmId, VmSpec target, CancellationToken ct)
    {
        ValidateVmId(sourceVmId);
        ValidateVmId(target.VmId);
        if (await TryInspectContainerAsync(target.VmId, ct) != null)
        {
            await StartAsync(target.VmId, ct);
            return;
        }
        var source = await TryInspectContainerAsync(sourceVmId, ct) ?? throw NotFound(sourceVmId, null);
        var (user, command, hadSetup) = ParseInitArgv(source.Config?.Entrypoint);
        if (target.CommandMode == CommandMode.None) command = [];
        else if (target.CommandMode == CommandMode.Custom) command = target.CustomCommand?.ToList() ?? [];
        string snapshot = $"{SnapshotRepository(target.VmId)}:copy";
        string labelImage = Label(source.Config?.Labels, LabelImage) ?? target.Image;
        bool paused = false;
        try
        {
            // Pause so the filesystem and /data are copied at one instant.
            if (source.State?.Running == true && source.State?.Paused != true)
            {
                await Engine(() => _client.Containers.PauseContainerAsync(source.ID, ct));
                paused = true;
            }
            await Engine(() => _client.Images.CommitContainerChangesAsync(new CommitContainerChangesParameters
            {
                ContainerID = source.ID,
                RepositoryName = SnapshotRepository(target.VmId),
                Tag = "copy",
                Pause = false,
                Comment = $"warren copy of {sourceVmId}",
            }, ct));
            await CreateContainerAsync(target, snapshot, labelImage, user, command, ct,
                hasSetupScript: hadSetup || !string.IsNullOrEmpty(target.SetupScript));
            if (!string.IsNullOrEmpty(target.SetupScript)) await PutSetupScriptAsync(target.VmId, target.SetupScript, ct);
            // /data: a tar of the source volume straight into the new container's volume (ownership, modes and
            // links preserved by the engine's archive API; works on created-but-not-started containers).
            var archive = await Engine(() => _client.Containers.GetArchiveFromContainerAsync(source.ID,
                new GetArchiveFromContainerParameters { Path = DataMountPath }, statOnly: false, ct));
            using (archive.Stream)
            {
                await Engine(() => _client.Containers.ExtractArchiveToContainerAsync(ContainerName(target.VmId),
                    new ContainerPathStatParameters { Path = "/", AllowOverwriteDirWithFile = false }, archive.Stream, ct));
            }
        }
        catch
        {
            await RemoveAsync(target.VmId, CancellationToken.None);
            throw;
        }
        finally
        {
            if (paused)
            {
                try { await _client.Containers.UnpauseContainerAsync(source.ID, CancellationToken.None); }
                catch (DockerApiException e) { LogUnpauseFailed(sourceVmId, e.StatusCode); }
            }
        }
        await StartAsync(target.VmId, ct);
    }

    /// <summary>
    /// Docker can't change a container's hostname in place (and the VM lacks CAP_SYS_ADMIN to do it from inside),
    /// so rename commits the container's filesystem to <c>warren-vm/&lt;id&gt;:r&lt;time&gt;</c> and recreates the
    /// container from it with the same volume, labels, limits and command: data, installed packages and the VM id
    /// are kept; processes restart (like a reboot).
    /// </summary>
    public async Task RenameAsync(string vmId, string newName, CancellationToken ct)
    {
        ValidateVmId(vmId);
        ArgumentException.ThrowIfNullOrWhiteSpace(newName);
        var c = await TryInspectContainerAsync(vmId, ct) ?? throw NotFound(vmId, null);
        if (c.Config?.Hostname == newName && Label(c.Config.Labels, LabelVmName) == newName) return;
        bool wasRunning = c.State?.Running == true;
        if (wasRunning) await StopAsync(vmId, ct);
        string tag = "r" + DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);
        await Engine(() => _client.Images.CommitContainerChangesAsync(new CommitContainerChangesParameters
        {
            ContainerID = c.ID,
            RepositoryName = SnapshotRepository(vmId),
            Tag = tag,
            Comment = $"warren rename of {vmId}",
        }, ct));
        await Engine(() => _client.Containers.RemoveContainerAsync(c.ID, new ContainerRemoveParameters { Force = true }, ct));

        var labels = new Dictionary<string, string>(c.Config?.Labels ?? new Dictionary<string, string>()) { [LabelVmName] = newName };
        var create = new CreateContainerParameters
        {
            Name = ContainerName(vmId),
            Image = $"{SnapshotRepository(vmId)}:{tag}",
            Hostname = newName,
            Labels = labels,
            Entrypoint = c.Config?.Entrypoint,
            Cmd = [],
            User = "0",
            Env = c.Config?.Env,
            WorkingDir = c.Config?.WorkingDir,
            HostConfig = c.HostConfig,
            NetworkingConfig = await _networks.FindAsync(vmId, ct) is { } endpoint ? DockerVmNetworks.Join(endpoint) : null,
        };
        await Engine(() => _client.Containers.CreateContainerAsync(create, ct));
        if (wasRunning) await StartAsync(vmId, ct);
    }

    public async Task<ResizeOutcome> ResizeAsync(string vmId, VmResources resources, CancellationToken ct)
    {
        ValidateVmId(vmId);
        var c = await TryInspectContainerAsync(vmId, ct) ?? throw NotFound(vmId, null);
        // One engine call sets CPU and memory together, so the engine applies both or neither.
        long nanoCpus = await NanoCpusAsync(resources.Cpus, ct);
        await Engine(() => _client.Containers.UpdateContainerAsync(c.ID, new ContainerUpdateParameters
        {
            NanoCPUs = nanoCpus,
            Memory = Math.Max(0, resources.MemoryBytes),
            // -1 = unlimited swap when memory is unlimited; else swap limit = memory limit (no extra swap).
            MemorySwap = resources.MemoryBytes > 0 ? resources.MemoryBytes : -1,
        }, ct));

        long currentDisk = long.TryParse(Label(c.Config?.Labels, LabelDiskBytes), out var d) ? d : 0;
        if (_disks != null && _disks.Exists(vmId) && resources.DiskBytes > 0)
        {
            (long size, bool needsOffline) grown;
            try { grown = await DiskAsync(() => _disks.GrowAsync(vmId, resources.DiskBytes, ct)); }
            catch (Exception) when (c.HostConfig is { } before)
            {
                // A resize applies all of its flags or none: the disk could not grow, so CPU and memory go back.
                await Engine(() => _client.Containers.UpdateContainerAsync(c.ID, new ContainerUpdateParameters
                {
                    NanoCPUs = before.NanoCPUs,
                    Memory = before.Memory,
                    MemorySwap = before.Memory > 0 ? before.MemorySwap : -1,
                }, CancellationToken.None));
                throw;
            }
            var (size, needsOffline) = grown;
            string? diskNote = size > resources.DiskBytes ? $"disks only grow: /data stays {size} bytes" : null;
            if (needsOffline)
            {
                bool running = c.State?.Running == true;
                if (running) await StopAsync(vmId, ct);
                await DiskAsync(() => _disks.FinishGrowOfflineAsync(vmId, ct));
                if (running) await StartAsync(vmId, ct);
                diskNote = "the VM restarted to grow its disk (this host does not allow growing a mounted filesystem)";
            }
            return new ResizeOutcome(CpuApplied: true, MemoryApplied: true, DiskEnforced: true, diskNote);
        }
        bool quota = await DiskQuotaSupportedAsync(ct);
        string? note;
        bool diskEnforced;
        if (resources.DiskBytes <= 0)
        {
            diskEnforced = false;
            note = null;
        }
        else if (!quota)
        {
            diskEnforced = false;
            note = $"disk size recorded but not enforced: the engine's storage driver ({await StorageDescriptionAsync(ct)}) has no per-container quota";
        }
        else if (resources.DiskBytes == currentDisk && c.HostConfig?.StorageOpt?.ContainsKey("size") == true)
        {
            diskEnforced = true;
            note = null;
        }
        else
        {
            diskEnforced = false;
            note = "disk quota is fixed when the container is created; the new size is recorded and applies when the VM is next recreated (copy or rename)";
        }
        return new ResizeOutcome(CpuApplied: true, MemoryApplied: true, diskEnforced, note);
    }

    // ------------------------------------------------------------------ stats

    public async Task<VmStatsSample?> SampleStatsAsync(string vmId, CancellationToken ct)
    {
        ValidateVmId(vmId);
        var c = await TryInspectContainerAsync(vmId, ct);
        if (c?.State?.Running != true) return null;
        ContainerStatsResponse? stats = null;
        try
        {
            await _client.Containers.GetContainerStatsAsync(c.ID, new ContainerStatsParameters { Stream = false },
                new SyncProgress<ContainerStatsResponse>(s => stats = s), ct);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
        if (stats == null) return null;

        double cpuPercent = 0;
        ulong cpuDelta = stats.CPUStats.CPUUsage.TotalUsage - stats.PreCPUStats.CPUUsage.TotalUsage;
        ulong systemDelta = stats.CPUStats.SystemUsage - stats.PreCPUStats.SystemUsage;
        if (systemDelta > 0 && stats.CPUStats.CPUUsage.TotalUsage >= stats.PreCPUStats.CPUUsage.TotalUsage)
        {
            uint cpus = stats.CPUStats.OnlineCPUs > 0 ? stats.CPUStats.OnlineCPUs : (uint)(stats.CPUStats.CPUUsage.PercpuUsage?.Count ?? 1);
            cpuPercent = (double)cpuDelta / systemDelta * cpus * 100.0;
        }
        // Like `docker stats`: usage less page cache (cgroup v1 "total_inactive_file", v2 "inactive_file").
        ulong usage = stats.MemoryStats.Usage;
        if (stats.MemoryStats.Stats != null)
        {
            if (stats.MemoryStats.Stats.TryGetValue("total_inactive_file", out var inactive) && inactive < usage) usage -= inactive;
            else if (stats.MemoryStats.Stats.TryGetValue("inactive_file", out inactive) && inactive < usage) usage -= inactive;
        }
        long rx = 0, tx = 0;
        if (stats.Networks != null)
            foreach (var n in stats.Networks.Values) { rx += (long)n.RxBytes; tx += (long)n.TxBytes; }
        long disk = await WritableLayerBytesAsync(vmId, ct) + (_disks?.UsedBytes(vmId) ?? 0);
        return new VmStatsSample(
            stats.Read == default ? DateTimeOffset.UtcNow : new DateTimeOffset(DateTime.SpecifyKind(stats.Read, DateTimeKind.Utc)),
            cpuPercent,
            (long)usage,
            (long)stats.MemoryStats.Limit,
            disk,
            rx,
            tx);
    }

    /// <summary>Bytes in the container's writable layer (the engine's SizeRw); a /data volume's usage is not known to the engine.</summary>
    private async Task<long> WritableLayerBytesAsync(string vmId, CancellationToken ct)
    {
        var list = await Engine(() => _client.Containers.ListContainersAsync(new ContainersListParameters
        {
            All = true,
            Size = true,
            Filters = new Dictionary<string, IDictionary<string, bool>> { ["name"] = new Dictionary<string, bool> { ["^/" + ContainerName(vmId) + "$"] = true } },
        }, ct));
        return list.FirstOrDefault()?.SizeRw ?? 0;
    }

    // ------------------------------------------------------------------ helpers

    internal async Task<ContainerInspectResponse?> TryInspectContainerAsync(string vmId, CancellationToken ct)
    {
        try
        {
            return await _client.Containers.InspectContainerAsync(ContainerName(vmId), ct);
        }
        catch (DockerContainerNotFoundException)
        {
            return null;
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
        catch (HttpRequestException e)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.EngineUnavailable, $"container engine unavailable: {e.Message}", e);
        }
    }

    internal static async Task<T> Engine<T>(Func<Task<T>> call)
    {
        try
        {
            return await call();
        }
        catch (DockerApiException e)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.EngineError, $"container engine: {(int)e.StatusCode} {Truncate(e.ResponseBody)}", e);
        }
        catch (HttpRequestException e)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.EngineUnavailable, $"container engine unavailable: {e.Message}", e);
        }
    }

    internal static Task Engine(Func<Task> call) => Engine(async () => { await call(); return true; });

    private static string Truncate(string? s)
    {
        const int MaxEngineMessageChars = 300;
        s = (s ?? "").Trim();
        return s.Length <= MaxEngineMessageChars ? s : s[..MaxEngineMessageChars] + "…";
    }

    private static string? Label(IDictionary<string, string>? labels, string key) =>
        labels != null && labels.TryGetValue(key, out var value) ? value : null;

    internal static DockerRuntimeException NotFound(string vmId, Exception? inner) =>
        new(DockerRuntimeErrors.VmNotFound, $"no VM {vmId} in the container engine", inner);

    private Dictionary<string, string> Labels(string vmId, string name)
    {
        var labels = new Dictionary<string, string>(_options.ExtraLabels)
        {
            [LabelVmId] = vmId,
            [LabelVmName] = name,
            [LabelManaged] = "true",
            [LabelInstance] = _options.Instance,
        };
        return labels;
    }

    /// <summary>
    /// The agent's oom_score_adj: -1000, the OOM killer never picks it (proc(5)); null where the engine could not
    /// set it. Lowering an oom_score_adj needs CAP_SYS_RESOURCE (capabilities(7)), and an engine without it fails
    /// every container start (runc: "can't get final child's PID from pipe") instead of ignoring the setting. The
    /// engine is taken to have it when this process's bounding set does: true of a host, false of a sandbox or
    /// container that dropped it (where dockerd usually runs with the same set).
    /// </summary>
    public static int? AgentOomScoreAdj { get; } = BoundingSetHas(CapSysResource) ? -1000 : null;

    /// <summary>CAP_SYS_RESOURCE's bit in the capability sets (&lt;linux/capability.h&gt;).</summary>
    private const int CapSysResource = 24;

    /// <summary>Whether the capability is in this process's bounding set (CapBnd in /proc/self/status, proc(5)).</summary>
    private static bool BoundingSetHas(int capability)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("CapBnd:", StringComparison.Ordinal)
                    && ulong.TryParse(line.AsSpan(7).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong set))
                    return (set & (1UL << capability)) != 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return false;
    }

    /// <summary>
    /// The engine's CPU limit for <paramref name="cpus"/>. A VM's CPUs are a share of the host, not a reservation:
    /// the platform's plan limit decides what may be asked for, and a number above the host's CPU count (which the
    /// engine refuses: "range of CPUs is from 0.01 to N") means the whole host, so it is capped there.
    /// </summary>
    private async Task<long> NanoCpusAsync(double cpus, CancellationToken ct)
    {
        const double NanoPerCpu = 1e9;
        if (cpus <= 0) return 0;
        if (_hostCpus is not { } host)
        {
            var info = await Engine(() => _client.System.GetSystemInfoAsync(ct));
            _hostCpus = host = info.NCPU > 0 ? info.NCPU : int.MaxValue;
        }
        return (long)Math.Round(Math.Min(cpus, host) * NanoPerCpu);
    }

    /// <summary>The engine host's CPU count, asked once.</summary>
    private long? _hostCpus;

    /// <summary>
    /// Whether the storage driver takes a per-container size (--storage-opt size): overlay2 only on xfs with
    /// pquota, devicemapper, btrfs and zfs. Probed once from the engine's info.
    /// </summary>
    private async Task<bool> DiskQuotaSupportedAsync(CancellationToken ct)
    {
        if (_diskQuotaSupported is { } known) return known;
        var info = await Engine(() => _client.System.GetSystemInfoAsync(ct));
        string backing = info.DriverStatus?.FirstOrDefault(p => p.Length == 2 && p[0] == "Backing Filesystem")?[1] ?? "";
        bool supported = info.Driver switch
        {
            "devicemapper" or "btrfs" or "zfs" => true,
            // overlay2 needs xfs mounted with pquota; the driver reports xfs either way, so creation may still
            // fail — CreateContainerAsync then retries without and clears this flag.
            "overlay2" => backing.Equals("xfs", StringComparison.OrdinalIgnoreCase),
            _ => false,
        };
        _diskQuotaSupported = supported;
        return supported;
    }

    private async Task<string> StorageDescriptionAsync(CancellationToken ct)
    {
        var info = await Engine(() => _client.System.GetSystemInfoAsync(ct));
        string backing = info.DriverStatus?.FirstOrDefault(p => p.Length == 2 && p[0] == "Backing Filesystem")?[1] ?? "unknown";
        return $"{info.Driver} on {backing}";
    }

    /// <summary>Reads back our own init argv: [agent, init, (--setup-script F)?, (--user U)?, --, CMD…].</summary>
    internal static (string? User, List<string> Command, bool HasSetup) ParseInitArgv(IList<string>? entrypoint)
    {
        string? user = null;
        bool setup = false;
        if (entrypoint == null || entrypoint.Count < 2 || entrypoint[1] != "init") return (null, [], false);
        int i = 2;
        for (; i < entrypoint.Count; i++)
        {
            if (entrypoint[i] == "--") { i++; break; }
            if (entrypoint[i] == "--user" && i + 1 < entrypoint.Count) user = entrypoint[++i];
            else if (entrypoint[i] == "--setup-script" && i + 1 < entrypoint.Count) { setup = true; i++; }
        }
        return (user, entrypoint.Skip(i).ToList(), setup);
    }

    internal static void ValidateVmId(string vmId)
    {
        if (string.IsNullOrEmpty(vmId) || !VmIdPattern.IsMatch(vmId))
            throw new ArgumentException("VM id must be 1-64 characters of [A-Za-z0-9_.-], starting with a letter or digit", nameof(vmId));
    }

    private static Uri DefaultEndpoint()
    {
        string? host = Environment.GetEnvironmentVariable("DOCKER_HOST");
        return string.IsNullOrEmpty(host) ? new Uri("unix:///var/run/docker.sock") : new Uri(host);
    }

    internal static string ResolveAgentPath(string? configured)
    {
        string? path = configured ?? Environment.GetEnvironmentVariable("WARREN_AGENT_PATH");
        if (string.IsNullOrEmpty(path))
        {
            foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            {
                for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
                {
                    var candidate = Path.Combine(dir.FullName, "var", "agent", "warren-agent");
                    if (File.Exists(candidate)) return candidate;
                }
            }
            throw new DockerRuntimeException(DockerRuntimeErrors.AgentMissing,
                "guest agent not found (var/agent/warren-agent); run scripts/build-images.sh or set DockerRuntimeOptions.AgentPath");
        }
        if (!File.Exists(path))
            throw new DockerRuntimeException(DockerRuntimeErrors.AgentMissing, $"guest agent not found at {path}; run scripts/build-images.sh");
        return Path.GetFullPath(path);
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    private static partial Regex VmIdRegex();

    [LoggerMessage(EventId = 4001, Level = LogLevel.Information, Message = "runtime.image-pull: pulling {Image} (credential given: {WithCredential})")]
    private partial void LogPulling(string image, bool withCredential);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Warning, Message = "runtime.unpause-failed: could not unpause VM {VmId} after copy ({Status})")]
    private partial void LogUnpauseFailed(string vmId, HttpStatusCode status);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Debug, Message = "runtime.session-fallback: Docker exec for VM {VmId}: {Reason}")]
    private partial void LogSessionFallback(string vmId, string reason);

    /// <summary>IProgress that runs synchronously (Progress&lt;T&gt; would post to the thread pool and race the return).</summary>
    private sealed class SyncProgress<T>(Action<T> action) : IProgress<T>
    {
        public void Report(T value) => action(value);
    }
}
