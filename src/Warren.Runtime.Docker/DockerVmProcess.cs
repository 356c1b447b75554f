using System.Net;
using System.Threading.Channels;
using Docker.DotNet;
using Docker.DotNet.Models;
using Warren.Platform.Runtime;
using Warren.Runtime.Agent;

namespace Warren.Runtime.Docker;

/// <summary>
/// A process started with Docker exec. The hijacked connection is pumped into separate stdout/stderr
/// streams (one for a TTY); stdin EOF is a half-close of the hijacked connection (CloseWrite); the exit
/// code comes from ExecInspect once output ends. Signals go through the agent (see <see cref="SignalAsync"/>).
/// </summary>
internal sealed class DockerVmProcess : IVmProcess
{
    /// <summary>Read size from the hijacked stream (Docker frames are at most this big in practice: 32 KiB).</summary>
    private const int PumpBufferBytes = 32 * 1024;
    /// <summary>Chunks buffered per output stream before the pump waits for the reader (bounds memory at ~2 MiB/stream).</summary>
    private const int BufferedChunks = 64;
    /// <summary>ExecInspect polls after output EOF until the engine reports the exit (bounded).</summary>
    private const int ExitPollAttempts = 200;
    private static readonly TimeSpan ExitPollInterval = TimeSpan.FromMilliseconds(25);

    private readonly DockerVmRuntime _runtime;
    private readonly string _vmId;
    private readonly string _execId;
    private readonly MultiplexedStream _stream;
    private readonly string? _pidFile;
    private readonly ChunkStream _stdout;
    private readonly ChunkStream? _stderr;
    private readonly CancellationTokenSource _cts = new();
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private int _stdinClosed;
    private volatile bool _signalSent;

    private DockerVmProcess(DockerVmRuntime runtime, string vmId, string execId, MultiplexedStream stream, string? pidFile, bool tty)
    {
        _runtime = runtime;
        _vmId = vmId;
        _execId = execId;
        _stream = stream;
        _pidFile = pidFile;
        _stdout = new ChunkStream(BufferedChunks);
        _stderr = tty ? null : new ChunkStream(BufferedChunks);
        StandardInput = new ProcessStdinStream((data, ct) => new ValueTask(WriteStdinAsync(data, ct)), CloseStandardInputAsync);
        Completion = RunAsync();
    }

    public Stream StandardInput { get; }
    public Stream StandardOutput => _stdout;
    public Stream? StandardError => _stderr;
    public Task<ExitResult> Completion { get; }

    internal static async Task<DockerVmProcess> StartAsync(DockerVmRuntime runtime, string vmId, IReadOnlyList<string> argv,
        IList<string> env, string? user, string? workingDirectory, TtySpec? tty, string? pidFile, CancellationToken ct)
    {
        var client = runtime.Client;
        var container = DockerVmRuntime.ContainerName(vmId);
        ContainerExecCreateResponse created;
        try
        {
            created = await client.Exec.ExecCreateContainerAsync(container, new ContainerExecCreateParameters
            {
                AttachStdin = true,
                AttachStdout = true,
                AttachStderr = true,
                Tty = tty != null,
                Cmd = argv.ToList(),
                Env = env.Count > 0 ? env.ToList() : null,
                User = string.IsNullOrEmpty(user) ? null : user,
                WorkingDir = string.IsNullOrEmpty(workingDirectory) ? null : workingDirectory,
            }, ct);
        }
        catch (DockerContainerNotFoundException e)
        {
            throw DockerVmRuntime.NotFound(vmId, e);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound)
        {
            throw DockerVmRuntime.NotFound(vmId, e);
        }
        catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.Conflict)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.VmNotRunning, $"VM {vmId} is not running", e);
        }
        var stream = await DockerVmRuntime.Engine(() => client.Exec.StartAndAttachContainerExecAsync(created.ID, tty != null, ct));
        var process = new DockerVmProcess(runtime, vmId, created.ID, stream, pidFile, tty != null);
        if (tty != null) await process.ResizeAsync(tty.Columns, tty.Rows, ct);
        return process;
    }

    private async Task<ExitResult> RunAsync()
    {
        // Pump: one reader of the hijacked connection, demultiplexed into the two output streams.
        var buffer = new byte[PumpBufferBytes];
        try
        {
            while (true)
            {
                var read = await _stream.ReadOutputAsync(buffer, 0, buffer.Length, _cts.Token);
                if (read.EOF || read.Count == 0) break;
                var chunk = buffer.AsSpan(0, read.Count).ToArray();
                var target = read.Target == MultiplexedStream.TargetStream.StandardError && _stderr != null ? _stderr : _stdout;
                await target.WriteChunkAsync(chunk, _cts.Token);
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // Connection dropped or we were disposed: the exit code below tells what happened.
        }
        finally
        {
            _stdout.Complete();
            _stderr?.Complete();
        }

        for (int attempt = 0; attempt < ExitPollAttempts; attempt++)
        {
            ContainerExecInspectResponse inspect;
            try
            {
                inspect = await _runtime.Client.Exec.InspectContainerExecAsync(_execId, CancellationToken.None);
            }
            catch (DockerApiException)
            {
                return new ExitResult(null, null);
            }
            if (!inspect.Running) return ToExitResult(inspect.ExitCode);
            await Task.Delay(ExitPollInterval);
        }
        return new ExitResult(null, null);
    }

    /// <summary>
    /// The engine reports a signal death as 128+N. That is ambiguous with a plain exit(128+N), so it is
    /// read as a signal only after <see cref="SignalAsync"/> was used on this process.
    /// </summary>
    private ExitResult ToExitResult(long exitCode)
    {
        const int SignalExitBase = 128;
        if (_signalSent && exitCode > SignalExitBase && exitCode < SignalExitBase + 65)
        {
            if (AgentSignals.Name((int)exitCode - SignalExitBase) is { } name) return new ExitResult(null, name);
        }
        return new ExitResult((int)exitCode, null);
    }

    public async Task CloseStandardInputAsync()
    {
        if (Interlocked.Exchange(ref _stdinClosed, 1) != 0) return;
        await _writeLock.WaitAsync();
        try
        {
            _stream.CloseWrite();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException) { }
        finally
        {
            _writeLock.Release();
        }
    }

    internal async Task WriteStdinAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        if (Volatile.Read(ref _stdinClosed) != 0) throw new IOException("stdin is closed");
        var array = data.ToArray();
        await _writeLock.WaitAsync(ct);
        try
        {
            await _stream.WriteAsync(array, 0, array.Length, ct);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public async Task ResizeAsync(int columns, int rows, CancellationToken ct)
    {
        if (columns <= 0 || rows <= 0) return;
        try
        {
            await _runtime.Client.Exec.ResizeContainerExecTtyAsync(_execId,
                new ContainerResizeParameters { Width = (long)columns, Height = (long)rows }, ct);
        }
        catch (DockerApiException)
        {
            // Not a TTY, or the process already ended: nothing to resize.
        }
    }

    /// <summary>
    /// Docker exec has no signal API: a second exec runs <c>/.warren/agent signal SIG PIDFILE</c> as root,
    /// which kill()s the pid this process recorded before exec'ing its command.
    /// </summary>
    public async Task SignalAsync(string signal, CancellationToken ct)
    {
        var (name, _) = AgentSignals.Parse(signal);
        if (_pidFile == null) throw new NotSupportedException("this process cannot be signalled");
        if (Completion.IsCompleted) return;
        _signalSent = true;
        var argv = new[] { DockerVmRuntime.AgentMountPath, "signal", name, _pidFile };
        await using var helper = await StartAsync(_runtime, _vmId, argv, [], "0", null, null, null, ct);
        await helper.CloseStandardInputAsync();
        await helper.Completion.WaitAsync(ct);
    }

    public async ValueTask DisposeAsync()
    {
        await CloseStandardInputAsync();
        _cts.Cancel();
        _stream.Dispose();
        try { await Completion; } catch (Exception e) when (e is OperationCanceledException or IOException) { }
        _cts.Dispose();
    }
}

/// <summary>A read-only stream fed by chunks (bounded channel); ends when completed.</summary>
internal sealed class ChunkStream(int capacity) : ReadOnlyUnseekableStream
{
    private readonly Channel<byte[]> _chunks = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(capacity)
    {
        SingleReader = true,
        SingleWriter = true,
        FullMode = BoundedChannelFullMode.Wait,
    });
    private byte[]? _current;
    private int _offset;

    internal ValueTask WriteChunkAsync(byte[] chunk, CancellationToken ct) => _chunks.Writer.WriteAsync(chunk, ct);
    internal void Complete() => _chunks.Writer.TryComplete();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        if (buffer.Length == 0) return 0;
        while (_current == null || _offset >= _current.Length)
        {
            if (!await _chunks.Reader.WaitToReadAsync(ct)) return 0;
            if (_chunks.Reader.TryRead(out var next)) { _current = next; _offset = 0; }
        }
        int n = Math.Min(buffer.Length, _current.Length - _offset);
        _current.AsSpan(_offset, n).CopyTo(buffer.Span);
        _offset += n;
        return n;
    }
}
