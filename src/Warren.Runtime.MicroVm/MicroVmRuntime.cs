using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Docker.DotNet;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Platform.Runtime;
using Warren.Runtime.Docker;
using Warren.Runtime.HostNetwork;
using Warren.Runtime.MicroVm.Mux;
using Warren.Runtime.MicroVm.Qmp;
using Warren.Runtime.Agent;

namespace Warren.Runtime.MicroVm;

/// <summary>
/// <see cref="IVmRuntime"/> over QEMU microVMs: each VM is one QEMU process (<see cref="QemuProcess"/>) with its own
/// kernel (scripts/build-vm-kernel.sh), booted from the VM's OCI image (<see cref="VmDisks"/>), with the guest agent as
/// PID 1 (<c>init --vm</c>). Exec and connect are channels of the VM's multiplexer (<see cref="MuxConnection"/>) on a
/// virtio-serial port, each carrying the agent session protocol unchanged (docs/AGENT-PROTOCOL.md); control (quit) is
/// QMP (<see cref="QmpClient"/>). Networking is a tap device per VM behind the installation's packet filter
/// (<see cref="VmFirewall"/>, shared with the Docker runtime); QEMU user networking remains as a development fallback.
/// </summary>
public sealed partial class MicroVmRuntime : IVmRuntime, IAsyncDisposable
{
    private const string SetupScriptGuestPath = "/.warren/setup";
    private const string AgentGuestPath = "/.warren/agent";
    private const int TokenRandomBytes = 32;
    /// <summary>A closed channel is retried this often while the agent's serve is not up yet (early boot).</summary>
    private static readonly TimeSpan AgentRetryInterval = TimeSpan.FromMilliseconds(50);
    /// <summary>After asking QMP to quit, how long QEMU gets before SIGKILL.</summary>
    private static readonly TimeSpan QuitTimeout = TimeSpan.FromSeconds(5);

    private readonly MicroVmRuntimeOptions _options;
    private readonly ILogger _log;
    private readonly DockerVmRuntime _images;
    private readonly DockerClient _docker;
    private readonly VmDisks _disks;
    private readonly string _kernelDirectory;
    private readonly bool _kvm;
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _vmLocks = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, MuxConnection> _connections = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (DateTimeOffset At, double CpuSeconds)> _lastCpu = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _addressLock = new(1, 1);
    private readonly VmFirewall _firewall;
    private readonly VmSubnetPool _pool;
    private readonly AddressQuarantine _quarantine;
    private readonly VmCgroup _cgroup;

    public MicroVmRuntime(MicroVmRuntimeOptions options, ILogger<MicroVmRuntime>? logger = null)
    {
        _options = options;
        if (!Path.IsPathFullyQualified(options.DataDirectory)) throw new ArgumentException("DataDirectory must be an absolute path", nameof(options));
        _log = (ILogger?)logger ?? NullLogger.Instance;
        _images = new DockerVmRuntime(options.Docker);
        _docker = new DockerClientConfiguration(options.Docker.Endpoint ?? DockerEndpoint()).CreateClient();
        _disks = new VmDisks(options, _docker);
        _kernelDirectory = ResolveKernelDirectory(options.KernelDirectory);
        _kvm = options.UseKvm ?? QemuProcess.KvmUsable();
        _firewall = new VmFirewall(options.Docker.VmNetwork, options.Docker.Instance);
        _pool = new VmSubnetPool(options.Docker.VmNetwork.Pool, options.Docker.VmNetwork.SubnetPrefixLength);
        _cgroup = new VmCgroup(_firewall.TableName);
        _quarantine = new AddressQuarantine(TimeSpan.FromSeconds(Math.Max(0, options.Docker.VmNetwork.AddressQuarantineSeconds)));
        Directory.CreateDirectory(Path.Combine(options.DataDirectory, "vms"));
    }

    public string Name => "microvm";

    /// <summary>Whether VMs run with KVM (else TCG emulation).</summary>
    public bool UsesKvm => _kvm;

    private static Uri DockerEndpoint()
    {
        string? host = Environment.GetEnvironmentVariable("DOCKER_HOST");
        return string.IsNullOrEmpty(host) ? new Uri("unix:///var/run/docker.sock") : new Uri(host);
    }

    /// <summary>The configured directory, else the nearest var/vm-kernel/current above the working or app directory.</summary>
    internal static string ResolveKernelDirectory(string? configured)
    {
        if (!string.IsNullOrEmpty(configured)) return RequireKernel(Path.GetFullPath(configured));
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "var", "vm-kernel", "current");
                if (File.Exists(Path.Combine(candidate, "vmlinuz"))) return RequireKernel(candidate);
            }
        throw new MicroVmException(MicroVmErrors.KernelMissing, "VM kernel not found (var/vm-kernel/current); run scripts/build-vm-kernel.sh");
    }

    private static string RequireKernel(string dir)
    {
        foreach (var file in new[] { "vmlinuz", "initramfs.cpio.gz", "kmods.img" })
            if (!File.Exists(Path.Combine(dir, file)))
                throw new MicroVmException(MicroVmErrors.KernelMissing, $"{file} missing in {dir}; run scripts/build-vm-kernel.sh");
        return dir;
    }

    private VmLayout Layout(string vmId)
    {
        ValidateVmId(vmId);
        return new VmLayout(_options.DataDirectory, vmId);
    }

    /// <summary>Ids become directory and process names: the Docker runtime's rule (letters, digits, <c>_.-</c>, at most 64).</summary>
    private static void ValidateVmId(string vmId)
    {
        if (string.IsNullOrEmpty(vmId) || vmId.Length > 64 || !char.IsAsciiLetterOrDigit(vmId[0])
            || !vmId.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '-'))
            throw new ArgumentException($"invalid VM id '{vmId}'", nameof(vmId));
    }

    private SemaphoreSlim VmLock(string vmId) => _vmLocks.GetOrAdd(vmId, _ => new SemaphoreSlim(1, 1));

    // ------------------------------------------------------------------ images

    public Task<ImageInfo> PrepareImageAsync(string image, RegistryCredential? auth, CancellationToken ct) =>
        _images.PrepareImageAsync(image, auth, ct);

    // ------------------------------------------------------------------ lifecycle

    public async Task CreateAsync(VmSpec spec, CancellationToken ct)
    {
        var vm = Layout(spec.VmId);
        var gate = VmLock(spec.VmId);
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (VmRecord.TryRead(vm.Record) is { } existing)
            {
                if (QemuProcess.ReadPid(vm) == null) await StartLockedAsync(existing, vm, ct).ConfigureAwait(false);
                return;
            }
            var phases = new CreatePhases();
            var image = await PrepareImageAsync(spec.Image, spec.RegistryAuth, ct).ConfigureAwait(false);
            var inspect = await _docker.Images.InspectImageAsync(spec.Image, ct).ConfigureAwait(false);
            phases.Mark(CreatePhase.Image);
            string basePath = await _disks.EnsureBaseAsync(spec.Image, inspect.ID, ct).ConfigureAwait(false);
            phases.Mark(CreatePhase.Base);

            var command = spec.CommandMode switch
            {
                CommandMode.None => [],
                CommandMode.Custom => spec.CustomCommand?.ToList() ?? [],
                _ => image.Entrypoint.Concat(image.Command).ToList(),
            };
            var initArgs = new List<string>();
            if (!string.IsNullOrEmpty(spec.SetupScript)) initArgs.AddRange(["--setup-script", SetupScriptGuestPath]);
            if (!string.IsNullOrEmpty(image.User)) initArgs.AddRange(["--user", image.User]);
            initArgs.Add("--");
            initArgs.AddRange(command);
            var env = image.Env.Concat(spec.Env.Select(kv => kv.Key + "=" + kv.Value)).ToList();
            var resources = spec.Resources with
            {
                MemoryBytes = spec.Resources.MemoryBytes > 0 ? Math.Max(spec.Resources.MemoryBytes, MemoryFloorBytes) : _options.DefaultMemoryBytes,
                DiskBytes = spec.Resources.DiskBytes > 0 ? spec.Resources.DiskBytes : _options.DefaultDiskBytes,
            };
            var ports = UsesTap ? [] : image.ExposedTcpPorts.Concat(_options.ForwardedPorts).Distinct().Order().ToList();
            await EnsureHostNetworkAsync(ct).ConfigureAwait(false);

            Directory.CreateDirectory(vm.Directory, VmLayout.DirectoryMode);
            try
            {
                var net = await AllocateNetworkAsync(spec.VmId, ct).ConfigureAwait(false);
                phases.Mark(CreatePhase.Network);
                var record = new VmRecord(spec.VmId, spec.Name, spec.Image, inspect.ID, resources, net.Address, ports, initArgs, env,
                    inspect.Config?.WorkingDir, spec.SetupScript, net.Tap, net.GuestNetwork);
                WriteToken(vm);
                // The three disks are independent files: made at once (each is mostly waiting on a tool or the disk).
                await Task.WhenAll(
                    _disks.CreateRootAsync(vm, basePath, resources.DiskBytes, ct),
                    _disks.CreateDataAsync(vm, resources.DiskBytes, ct),
                    WriteSeedAsync(vm, record, ct)).ConfigureAwait(false);
                phases.Mark(CreatePhase.Disks);
                // Last: a directory with vm.json is a whole VM (ListAsync, reconciliation).
                record.Write(vm.Record);
                await StartLockedAsync(record, vm, ct, phases).ConfigureAwait(false);
                LogCreated(spec.VmId, phases.ToString());
            }
            catch
            {
                // The tap is made at the first start, after vm.json: before it there is no host state besides the directory.
                if (!File.Exists(vm.Record)) DeleteDirectory(vm.Directory);
                throw;
            }
        }
        finally
        {
            gate.Release();
        }
    }

    private static void WriteToken(VmLayout vm)
    {
        Span<byte> random = stackalloc byte[TokenRandomBytes];
        RandomNumberGenerator.Fill(random);
        string hex = Convert.ToHexStringLower(random);
        CryptographicOperations.ZeroMemory(random);
        File.Delete(vm.Token);
        using var file = new FileStream(vm.Token, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = VmLayout.FileMode });
        file.Write(System.Text.Encoding.ASCII.GetBytes(hex));
    }

    private byte[] ReadToken(VmLayout vm, string vmId)
    {
        try
        {
            var token = File.ReadAllBytes(vm.Token);
            if (token.Length != AgentProtocol.TokenBytes) throw new MicroVmException(MicroVmErrors.AgentSessionFailed, $"the token of VM {vmId} is damaged");
            return token;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw NotFound(vmId);
        }
    }

    private async Task WriteSeedAsync(VmLayout vm, VmRecord record, CancellationToken ct)
    {
        var token = ReadToken(vm, record.VmId);
        try
        {
            await _disks.WriteSeedAsync(vm, record, _images.AgentPath, token, ct).ConfigureAwait(false);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(token);
        }
    }

    public async Task StartAsync(string vmId, CancellationToken ct)
    {
        var vm = Layout(vmId);
        var gate = VmLock(vmId);
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var record = VmRecord.TryRead(vm.Record) ?? throw NotFound(vmId);
            if (QemuProcess.ReadPid(vm) != null) return;
            await StartLockedAsync(record, vm, ct).ConfigureAwait(false);
        }
        finally
        {
            gate.Release();
        }
    }

    private async Task StartLockedAsync(VmRecord record, VmLayout vm, CancellationToken ct, CreatePhases? phases = null)
    {
        await DropConnectionAsync(record.VmId).ConfigureAwait(false);
        if (_options.ConsoleLog) File.WriteAllText(vm.ConsoleLog, "");
        await EnsureTapAsync(record, ct).ConfigureAwait(false);
        phases?.Mark(CreatePhase.Tap);
        var args = QemuProcess.Arguments(record, vm, _kernelDirectory, _kvm, _options.ConsoleLog, _options.QemuUser, _options.MinMemoryBytes,
            _options.TcgTranslationCacheMiB);
        int pid = await QemuProcess.LaunchAsync(_options.QemuPath, args, vm, record.VmId, _options.QemuUser, ct).ConfigureAwait(false);
        phases?.Mark(CreatePhase.Qemu);
        try
        {
            _cgroup.Apply(record.VmId, pid, record.Resources.Cpus);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // No VM runs outside its CPU limit.
            QemuProcess.Kill(pid, vm);
            await QemuProcess.WaitExitAsync(pid, vm, QuitTimeout, CancellationToken.None).ConfigureAwait(false);
            throw new MicroVmException(MicroVmErrors.VmStartFailed, $"cannot put VM {record.VmId} into its cgroup: {e.Message}", e);
        }
        if (record.Resources.MemoryBytes < QemuProcess.BootMemoryBytes(record, _options.MinMemoryBytes))
            await SetBalloonAsync(vm, record.Resources.MemoryBytes, ct).ConfigureAwait(false);
        await EnableGuestStatsAsync(vm, ct).ConfigureAwait(false);
        phases?.Mark(CreatePhase.Qmp);
        LogStarted(record.VmId, pid, _kvm ? "kvm" : "tcg");
    }

    public async Task StopAsync(string vmId, CancellationToken ct)
    {
        var vm = Layout(vmId);
        var gate = VmLock(vmId);
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (!File.Exists(vm.Record)) throw NotFound(vmId);
            await StopLockedAsync(vm, vmId, ct).ConfigureAwait(false);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Clean shutdown through the agent (sync, poweroff) when it answers, then QMP quit, then SIGKILL.</summary>
    private async Task StopLockedAsync(VmLayout vm, string vmId, CancellationToken ct)
    {
        if (QemuProcess.ReadPid(vm) is not int pid) return;
        bool exited = false;
        if (_connections.TryGetValue(vmId, out var mux) && mux.IsAlive)
        {
            try
            {
                // Bounded: a guest that stopped reading its port would otherwise hold the send (and the stop) forever.
                using var send = CancellationTokenSource.CreateLinkedTokenSource(ct);
                send.CancelAfter(_options.StopTimeout);
                await mux.SendShutdownAsync(send.Token).ConfigureAwait(false);
                exited = await QemuProcess.WaitExitAsync(pid, vm, _options.StopTimeout, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException && !ct.IsCancellationRequested) { }
        }
        if (!exited)
        {
            try
            {
                using var quit = CancellationTokenSource.CreateLinkedTokenSource(ct);
                quit.CancelAfter(QuitTimeout);
                await using var qmp = await QmpClient.ConnectAsync(vm.QmpSocket, quit.Token).ConfigureAwait(false);
                await qmp.ExecuteAsync("quit", null, quit.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or SocketException or QmpException or OperationCanceledException && !ct.IsCancellationRequested)
            {
                // The socket closing under the quit is the expected end; anything else is settled by the kill below.
            }
            exited = await QemuProcess.WaitExitAsync(pid, vm, QuitTimeout, ct).ConfigureAwait(false);
        }
        if (!exited)
        {
            QemuProcess.Kill(pid, vm);
            await QemuProcess.WaitExitAsync(pid, vm, QuitTimeout, ct).ConfigureAwait(false);
        }
        await DropConnectionAsync(vmId).ConfigureAwait(false);
        foreach (var file in new[] { vm.PidFile, vm.AgentSocket, vm.QmpSocket }) File.Delete(file);
        LogStopped(vmId);
    }

    public async Task RestartAsync(string vmId, CancellationToken ct)
    {
        var vm = Layout(vmId);
        var gate = VmLock(vmId);
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var record = VmRecord.TryRead(vm.Record) ?? throw NotFound(vmId);
            await StopLockedAsync(vm, vmId, ct).ConfigureAwait(false);
            await StartLockedAsync(record, vm, ct).ConfigureAwait(false);
        }
        finally
        {
            gate.Release();
        }
    }

    public async Task RemoveAsync(string vmId, CancellationToken ct)
    {
        var vm = Layout(vmId);
        var gate = VmLock(vmId);
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var record = VmRecord.TryRead(vm.Record);
            // vm.json goes first: from here on the directory is no VM, so a daemon killed half-way through finds leftovers
            // (process, tap, cgroup, disks) that PrepareHostAsync removes, never a half-removed VM that looks whole.
            if (Directory.Exists(vm.Directory)) File.Delete(vm.Record);
            await RemoveLeftoversAsync(vmId, vm, record, ct).ConfigureAwait(false);
            _lastCpu.TryRemove(vmId, out _);
        }
        finally
        {
            gate.Release();
        }
    }

    private static void DeleteDirectory(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (DirectoryNotFoundException) { }
    }

    public Task<RuntimeVmInfo?> InspectAsync(string vmId, CancellationToken ct)
    {
        var vm = Layout(vmId);
        return Task.FromResult(VmRecord.TryRead(vm.Record) is { } record ? Info(record, vm) : null);
    }

    /// <summary>
    /// Running while its QEMU lives. Once gone: Stopped when QEMU exited on its own terms (a guest poweroff, a stop:
    /// QEMU removes its pid file at a normal exit, the stop removes it too), Failed when the pid file outlived the
    /// process (killed, crashed), as a container that died is not one that exited.
    /// </summary>
    private static RuntimeVmInfo Info(VmRecord record, VmLayout vm)
    {
        int? pid = QemuProcess.ReadPid(vm);
        var state = pid != null ? RuntimeVmState.Running : File.Exists(vm.PidFile) ? RuntimeVmState.Failed : RuntimeVmState.Stopped;
        return new RuntimeVmInfo(record.VmId, record.Name, state, record.Image, pid is int p ? QemuProcess.StartedAt(p) : null);
    }

    public Task<IReadOnlyList<RuntimeVmInfo>> ListAsync(CancellationToken ct)
    {
        var list = new List<RuntimeVmInfo>();
        foreach (var dir in Directory.EnumerateDirectories(Path.Combine(_options.DataDirectory, "vms")))
        {
            string id = Path.GetFileName(dir);
            if (VmRecord.TryRead(Path.Combine(dir, "vm.json")) is { } record && record.VmId == id)
                list.Add(Info(record, new VmLayout(_options.DataDirectory, id)));
        }
        return Task.FromResult<IReadOnlyList<RuntimeVmInfo>>(list);
    }

    // ------------------------------------------------------------------ sessions

    /// <summary>How the shared agent client reports a broken or refused session: as this runtime's exception (same codes in both runtimes).</summary>
    private static VmRuntimeException SessionFailure(string code, string message, Exception? inner) => new Docker.DockerRuntimeException(code, message, inner);

    /// <summary>Listens inside the VM with the guest agent's <c>listen</c> (shared with every agent runtime: <see cref="AgentListener"/>).</summary>
    public async Task<IVmListener> ListenAsync(string vmId, ListenSpec spec, CancellationToken ct)
        => await AgentListener.StartAsync(this, vmId, spec, ct).ConfigureAwait(false);

    public async Task<IVmProcess> ExecAsync(string vmId, ExecSpec spec, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(spec);
        // SSH session kinds become the guest agent's programs here, on the runtime side of the seam.
        spec = GuestAgent.ToProcess(spec);
        if (spec.Command.Count == 0) throw new ArgumentException("empty command", nameof(spec));
        string term = spec.Tty == null ? "" : string.IsNullOrEmpty(spec.Tty.Term) ? "xterm" : spec.Tty.Term;
        var env = spec.Env?.Select(kv => kv.Key + "=" + kv.Value).ToList() ?? [];
        if (spec.Tty != null && !env.Any(e => e.StartsWith("TERM=", StringComparison.Ordinal))) env.Add("TERM=" + term);
        var request = new AgentExecRequest(spec.User ?? "", spec.WorkingDirectory ?? "", term,
            spec.Tty?.Columns ?? 0, spec.Tty?.Rows ?? 0, spec.Command, env);
        return new AgentVmProcess(await OpenSessionAsync(vmId, request, ct).ConfigureAwait(false));
    }

    public async Task<Stream> ConnectAsync(string vmId, string host, int port, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(host);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        return new AgentConnectionStream(await OpenSessionAsync(vmId, new AgentConnectRequest(host, port), ct).ConfigureAwait(false));
    }

    /// <summary>A channel to the agent with the session protocol's OPEN sent and STARTED received.</summary>
    private async Task<AgentSession> OpenSessionAsync(string vmId, AgentOpenRequest request, CancellationToken ct)
    {
        var vm = Layout(vmId);
        var token = ReadToken(vm, vmId);
        RentedFrame? open;
        try
        {
            open = request.BuildOpenFrame(token);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(token);
        }
        if (open == null)
        {
            throw new ArgumentException("the request exceeds the session protocol's limits");
        }
        Socket socket;
        try
        {
            socket = MuxSocketBridge.Create(await OpenChannelAsync(vm, vmId, ct).ConfigureAwait(false));
        }
        catch
        {
            open.Dispose();
            throw;
        }
        return await AgentSession.OpenAsync(socket, vmId, request, open, SessionFailure, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Opens a multiplexer channel, connecting to the VM first when needed. While the VM boots, the port answers only
    /// once the guest's mux runs, and channels are refused until serve listens: both are waited for, up to
    /// <see cref="MicroVmRuntimeOptions.BootTimeout"/>, and end early when QEMU exits.
    /// </summary>
    private async Task<MuxChannel> OpenChannelAsync(VmLayout vm, string vmId, CancellationToken ct)
    {
        using var boot = CancellationTokenSource.CreateLinkedTokenSource(ct);
        boot.CancelAfter(_options.BootTimeout);
        try
        {
            while (true)
            {
                var mux = await GetConnectionAsync(vm, vmId, boot.Token).ConfigureAwait(false);
                try
                {
                    return await mux.OpenChannelAsync(boot.Token).ConfigureAwait(false);
                }
                catch (MuxOpenFailedException)
                {
                    // serve is not listening yet (or restarting): the agent brings it up within moments.
                    await Task.Delay(AgentRetryInterval, boot.Token).ConfigureAwait(false);
                }
                catch (IOException) when (!mux.IsAlive)
                {
                    // The connection broke (guest restarted its mux, or violated the protocol): start over, if QEMU still runs.
                    if (QemuProcess.ReadPid(vm) == null) throw NotRunning(vmId);
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new MicroVmException(MicroVmErrors.AgentSessionFailed,
                $"the agent of VM {vmId} did not answer within {_options.BootTimeout.TotalSeconds:0} s");
        }
    }

    private async Task<MuxConnection> GetConnectionAsync(VmLayout vm, string vmId, CancellationToken ct)
    {
        if (_connections.TryGetValue(vmId, out var existing) && existing.IsAlive) return existing;
        var gate = _vmLocks.GetOrAdd("mux:" + vmId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_connections.TryGetValue(vmId, out existing) && existing.IsAlive) return existing;
            if (QemuProcess.ReadPid(vm) == null)
                throw File.Exists(vm.Record) ? NotRunning(vmId) : NotFound(vmId);
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(vm.AgentSocket), ct).ConfigureAwait(false);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            var connection = await WhileRunningAsync(vm, vmId,
                token => MuxConnection.ConnectAsync(new NetworkStream(socket, ownsSocket: true), token), ct).ConfigureAwait(false);
            _connections[vmId] = connection;
            return connection;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Runs <paramref name="operation"/>, cancelling it when the VM's QEMU exits meanwhile (a guest that died never answers).</summary>
    private static async Task<T> WhileRunningAsync<T>(VmLayout vm, string vmId, Func<CancellationToken, Task<T>> operation, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var task = operation(cts.Token);
        while (!task.IsCompleted)
        {
            await Task.WhenAny(task, Task.Delay(ExitCheckInterval, ct)).ConfigureAwait(false);
            ct.ThrowIfCancellationRequested();
            if (!task.IsCompleted && QemuProcess.ReadPid(vm) == null)
            {
                cts.Cancel();
                try { await task.ConfigureAwait(false); } catch (Exception) { /* replaced by the reason below */ }
                throw new MicroVmException(MicroVmErrors.VmStartFailed, $"VM {vmId} stopped before its agent answered");
            }
        }
        return await task.ConfigureAwait(false);
    }

    private static readonly TimeSpan ExitCheckInterval = TimeSpan.FromMilliseconds(250);

    private async Task DropConnectionAsync(string vmId)
    {
        if (_connections.TryRemove(vmId, out var connection)) await connection.DisposeAsync().ConfigureAwait(false);
    }

    public Task<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct)
    {
        var vm = Layout(vmId);
        if (VmRecord.TryRead(vm.Record) is not { } record || QemuProcess.ReadPid(vm) == null) return Task.FromResult<IPAddress?>(null);
        return Task.FromResult<IPAddress?>(IPAddress.Parse(record.Address));
    }

    // ------------------------------------------------------------------ changes

    /// <summary>
    /// Copies a VM: its root as a new overlay on the same image base (only what differs from the base), /data in full,
    /// a new token, seed (so its own hostname) and address; then starts the copy. A stopped source is copied with
    /// <c>qemu-img convert</c>; a running one from a consistent point (<see cref="CopyDisksLiveAsync"/>).
    /// </summary>
    public async Task CopyAsync(string sourceVmId, VmSpec target, CancellationToken ct)
    {
        var source = Layout(sourceVmId);
        var vm = Layout(target.VmId);
        var sourceGate = VmLock(sourceVmId);
        await sourceGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var record = VmRecord.TryRead(source.Record) ?? throw NotFound(sourceVmId);
            bool live = QemuProcess.ReadPid(source) != null;
            if (File.Exists(vm.Record)) throw new MicroVmException(MicroVmErrors.NotSupported, $"VM {target.VmId} exists already");
            Directory.CreateDirectory(vm.Directory, VmLayout.DirectoryMode);
            try
            {
                var net = await AllocateNetworkAsync(target.VmId, ct).ConfigureAwait(false);
                var copy = record with { VmId = target.VmId, Name = target.Name, Address = net.Address, Tap = net.Tap, GuestNetwork = net.GuestNetwork };
                WriteToken(vm);
                if (live)
                {
                    await CopyDisksLiveAsync(record, source, vm, ct).ConfigureAwait(false);
                }
                else
                {
                    await _disks.CopyRootAsync(source, vm, _disks.BasePath(record.ImageId), ct).ConfigureAwait(false);
                    await _disks.CopyDataAsync(source, vm, ct).ConfigureAwait(false);
                }
                await WriteSeedAsync(vm, copy, ct).ConfigureAwait(false);
                copy.Write(vm.Record);
                await StartLockedAsync(copy, vm, ct).ConfigureAwait(false);
            }
            catch
            {
                // The tap is made at the first start, after vm.json: before it there is no host state besides the directory.
                if (!File.Exists(vm.Record)) DeleteDirectory(vm.Directory);
                throw;
            }
        }
        finally
        {
            sourceGate.Release();
        }
    }

    public async Task RenameAsync(string vmId, string newName, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(newName);
        var vm = Layout(vmId);
        var gate = VmLock(vmId);
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var record = VmRecord.TryRead(vm.Record) ?? throw NotFound(vmId);
            var renamed = record with { Name = newName };
            // The seed's hostname applies at the next boot; a running VM keeps the seed file it opened.
            await WriteSeedAsync(vm, renamed, ct).ConfigureAwait(false);
            renamed.Write(vm.Record);
        }
        finally
        {
            gate.Release();
        }
        if (QemuProcess.ReadPid(vm) != null)
        {
            // Live: the kernel's hostname, through the agent (the image need not have a hostname tool).
            var (exit, error) = await RunAgentCommandAsync(vmId, [AgentGuestPath, "hostname", newName], ct).ConfigureAwait(false);
            if (exit.ExitCode != 0)
                throw new MicroVmException(MicroVmErrors.AgentSessionFailed, $"VM {vmId} keeps its old hostname until restarted: {error.Trim()}");
        }
    }

    /// <summary>
    /// Disk: grows root and /data (never shrinks): live with QMP block_resize and the agent's online ext4 grow, or, when
    /// stopped, with qemu-img resize and the grow at the next boot. CPU and memory are QEMU's -smp and -m: microvm has
    /// no hotplug, so they apply at the next start.
    /// </summary>
    public async Task<ResizeOutcome> ResizeAsync(string vmId, VmResources resources, CancellationToken ct)
    {
        var vm = Layout(vmId);
        var gate = VmLock(vmId);
        bool growLive = false, memoryLive = false;
        VmRecord updated;
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var record = VmRecord.TryRead(vm.Record) ?? throw NotFound(vmId);
            long disk = record.Resources.DiskBytes;
            if (resources.DiskBytes > 0 && resources.DiskBytes < disk)
                throw new MicroVmException(MicroVmErrors.NotSupported, "shrinking a microVM's disk is not supported");
            if (resources.DiskBytes > disk)
            {
                disk = resources.DiskBytes;
                if (QemuProcess.ReadPid(vm) != null)
                {
                    await using var qmp = await QmpClient.ConnectAsync(vm.QmpSocket, ct).ConfigureAwait(false);
                    foreach (var drive in new[] { "root", "data" })
                        await qmp.ExecuteAsync("block_resize", new() { ["device"] = drive, ["size"] = disk }, ct).ConfigureAwait(false);
                    growLive = true;
                }
                else
                {
                    foreach (var file in new[] { vm.Root, vm.Data })
                        await _disks.GrowAsync(file, disk, ct).ConfigureAwait(false);
                }
            }
            if (resources.Cpus > 0) _cgroup.SetQuota(vmId, resources.Cpus);
            // Memory down to what the VM booted with applies now, through the balloon; more needs a restart (no hotplug).
            if (resources.MemoryBytes > 0 && QemuProcess.ReadPid(vm) is int running
                && QemuProcess.RunningMemoryBytes(running) is long booted && Math.Max(resources.MemoryBytes, MemoryFloorBytes) <= booted)
            {
                await SetBalloonAsync(vm, Math.Max(resources.MemoryBytes, MemoryFloorBytes), ct).ConfigureAwait(false);
                memoryLive = true;
            }
            updated = record with
            {
                Resources = record.Resources with
                {
                    Cpus = resources.Cpus > 0 ? resources.Cpus : record.Resources.Cpus,
                    MemoryBytes = resources.MemoryBytes > 0 ? Math.Max(resources.MemoryBytes, MemoryFloorBytes) : record.Resources.MemoryBytes,
                    DiskBytes = disk,
                },
            };
            updated.Write(vm.Record);
        }
        finally
        {
            gate.Release();
        }
        if (growLive)
        {
            var (exit, error) = await RunAgentCommandAsync(vmId, [AgentGuestPath, "grow-fs"], ct).ConfigureAwait(false);
            if (exit.ExitCode != 0)
                throw new MicroVmException(MicroVmErrors.AgentSessionFailed, $"the disks of VM {vmId} grew but their filesystems did not: {error.Trim()}");
        }
        // The CPU quota (the cgroup's) applies at once; the vCPU count and memory are QEMU's -smp and -m.
        return new ResizeOutcome(resources.Cpus > 0 && _cgroup.Available, memoryLive, true,
            memoryLive ? "the vCPU count applies at the VM's next start (microvm has no hotplug)"
                : "the vCPU count and more memory than the VM booted with apply at its next start (microvm has no hotplug)");
    }

    /// <summary>
    /// The least memory a VM may be given: the guest kernel with its agent and a small userland still run in it (a
    /// limit under <see cref="MicroVmRuntimeOptions.MinMemoryBytes"/> boots with that and is ballooned down).
    /// </summary>
    private const long MemoryFloorBytes = 96L * 1024 * 1024;

    /// <summary>Sets the guest's memory through the virtio balloon (QMP <c>balloon</c>: the target size of the guest's RAM).</summary>
    private static async Task SetBalloonAsync(VmLayout vm, long bytes, CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(vm.QmpSocket, ct).ConfigureAwait(false);
        await qmp.ExecuteAsync("balloon", new System.Text.Json.Nodes.JsonObject { ["value"] = bytes }, ct).ConfigureAwait(false);
    }

    /// <summary>Runs one of the agent's own commands in the VM as root; returns its exit and stderr.</summary>
    private async Task<(ExitResult Exit, string Stderr)> RunAgentCommandAsync(string vmId, IReadOnlyList<string> argv, CancellationToken ct)
    {
        await using var p = await ExecAsync(vmId, new ExecSpec(argv), ct).ConfigureAwait(false);
        await p.CloseStandardInputAsync().ConfigureAwait(false);
        var stderr = p.StandardError is { } e ? new StreamReader(e).ReadToEndAsync(ct) : Task.FromResult("");
        var stdout = p.StandardOutput.CopyToAsync(Stream.Null, ct);
        var exit = await p.Completion.WaitAsync(ct).ConfigureAwait(false);
        await stdout.ConfigureAwait(false);
        return (exit, await stderr.ConfigureAwait(false));
    }

    /// <summary>
    /// CPU: the QEMU process's time (every vCPU is a thread of it). Memory: what the guest itself reports in use (its
    /// balloon driver's statistics: total minus available, Linux Documentation/admin-guide/mm "MemAvailable"), else,
    /// before the guest's first report, QEMU's resident set. Disk: the VM's image files on the host. Network: the tap's
    /// counters, seen from the VM (what the host's tap sends is what the VM receives).
    /// </summary>
    public async Task<VmStatsSample?> SampleStatsAsync(string vmId, CancellationToken ct)
    {
        var vm = Layout(vmId);
        if (VmRecord.TryRead(vm.Record) is not { } record || QemuProcess.ReadPid(vm) is not int pid) return null;
        var now = DateTimeOffset.UtcNow;
        var (cpuSeconds, rssBytes) = ProcessUsage(pid);
        double percent = 0;
        if (_lastCpu.TryGetValue(vmId, out var last) && now > last.At)
            percent = Math.Max(0, (cpuSeconds - last.CpuSeconds) / (now - last.At).TotalSeconds * 100);
        _lastCpu[vmId] = (now, cpuSeconds);
        long disk = FileBytes(vm.Root) + FileBytes(vm.Data);
        long memory = await GuestMemoryUsedAsync(vm, ct).ConfigureAwait(false) ?? rssBytes;
        var (tapRx, tapTx) = record.Tap != null ? VmTap.Counters(record.Tap) : (0, 0);
        return new VmStatsSample(now, percent, memory, record.Resources.MemoryBytes, disk, tapTx, tapRx);
    }

    /// <summary>How often the guest's balloon driver reports its memory statistics (QEMU's guest-stats-polling-interval).</summary>
    private const int GuestStatsIntervalSeconds = 2;

    /// <summary>Asks QEMU to poll the guest's memory statistics (set after each start; QEMU forgets it on exit).</summary>
    private static async Task EnableGuestStatsAsync(VmLayout vm, CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(vm.QmpSocket, ct).ConfigureAwait(false);
        await qmp.ExecuteAsync("qom-set", new System.Text.Json.Nodes.JsonObject
        {
            ["path"] = "/machine/peripheral/balloon0",
            ["property"] = "guest-stats-polling-interval",
            ["value"] = GuestStatsIntervalSeconds,
        }, ct).ConfigureAwait(false);
    }

    /// <summary>The guest's memory in use from its last balloon report, or null (no report yet, or QMP unavailable).</summary>
    private static async Task<long?> GuestMemoryUsedAsync(VmLayout vm, CancellationToken ct)
    {
        try
        {
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
            limit.CancelAfter(TimeSpan.FromSeconds(5));
            await using var qmp = await QmpClient.ConnectAsync(vm.QmpSocket, limit.Token).ConfigureAwait(false);
            var answer = await qmp.ExecuteAsync("qom-get", new System.Text.Json.Nodes.JsonObject
            {
                ["path"] = "/machine/peripheral/balloon0",
                ["property"] = "guest-stats",
            }, limit.Token).ConfigureAwait(false);
            var stats = answer?["stats"];
            // A statistic the guest has not reported is -1.
            long total = stats?["stat-total-memory"]?.GetValue<long>() ?? -1;
            long available = stats?["stat-available-memory"]?.GetValue<long>() ?? -1;
            return total > 0 && available >= 0 && available <= total ? total - available : null;
        }
        catch (Exception e) when ((e is IOException or SocketException or QmpException or InvalidOperationException or FormatException)
                                   || (e is OperationCanceledException && !ct.IsCancellationRequested))
        {
            return null;
        }
    }

    /// <summary>utime+stime (seconds) and RSS (bytes) of a process, from /proc/&lt;pid&gt;/stat (proc(5)).</summary>
    private static (double CpuSeconds, long RssBytes) ProcessUsage(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // Fields after the command name, which is in parentheses and may contain spaces.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            const double ClockTicks = 100; // USER_HZ on Linux
            double cpu = (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / ClockTicks;
            long rss = long.Parse(fields[21], CultureInfo.InvariantCulture) * Environment.SystemPageSize;
            return (cpu, rss);
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException) { return (0, 0); }
    }

    private static long FileBytes(string path)
    {
        try { return new FileInfo(path).Length; }
        catch (IOException) { return 0; }
    }

    private static MicroVmException NotFound(string vmId) => new(MicroVmErrors.VmNotFound, $"no VM {vmId}");
    private static MicroVmException NotRunning(string vmId) => new(MicroVmErrors.VmNotRunning, $"VM {vmId} is not running");

    public async ValueTask DisposeAsync()
    {
        foreach (var id in _connections.Keys.ToList()) await DropConnectionAsync(id).ConfigureAwait(false);
        _images.Dispose();
        _docker.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "microVM {VmId} started (QEMU pid {Pid}, {Accel})")]
    private partial void LogStarted(string vmId, int pid, string accel);

    [LoggerMessage(Level = LogLevel.Information, Message = "microVM {VmId} created, host side: {Phases}")]
    private partial void LogCreated(string vmId, string phases);

    [LoggerMessage(Level = LogLevel.Information, Message = "microVM {VmId} stopped")]
    private partial void LogStopped(string vmId);
}
