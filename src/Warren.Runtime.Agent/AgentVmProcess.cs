using System.Runtime.CompilerServices;
using Warren.Platform.Runtime;

namespace Warren.Runtime.Agent;

/// <summary>
/// A process started through the agent session socket (an exec OPEN). Behaves as <see cref="DockerVmProcess"/> does
/// to its callers: stdin EOF is an EOF frame, resize a RESIZE frame, a signal a SIGNAL frame (no pid file, no second
/// exec), and the exit comes from the agent's EXIT, so a death by signal is reported as exit-signal exactly.
/// </summary>
internal sealed class AgentVmProcess : IVmProcess
{
    private readonly AgentSession _session;
    private int _stdinClosed;

    public AgentVmProcess(AgentSession session)
    {
        _session = session;
        StandardInput = new ProcessStdinStream(WriteStdinAsync, CloseStandardInputAsync);
        StandardOutput = session.OpenStdout();
        StandardError = session.OpenStderr();
    }

    public Stream StandardInput { get; }
    public Stream StandardOutput { get; }
    public Stream? StandardError { get; }
    public Task<ExitResult> Completion => _session.Exit;

    /// <summary>The process id inside the VM.</summary>
    internal int ProcessId => _session.ProcessId;

    public async Task CloseStandardInputAsync()
    {
        if (Interlocked.Exchange(ref _stdinClosed, 1) != 0) return;
        try
        {
            await _session.SendEofAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The session is over: there is no stdin left to close.
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask WriteStdinAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        if (Volatile.Read(ref _stdinClosed) != 0) throw new IOException("stdin is closed");
        if (data.IsEmpty) return;
        await _session.SendDataAsync(data, ct).ConfigureAwait(false);
    }

    public async Task ResizeAsync(int columns, int rows, CancellationToken ct)
    {
        if (columns <= 0 || rows <= 0 || Completion.IsCompleted) return;
        try
        {
            await _session.SendResizeAsync(columns, rows, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The process already ended: nothing to resize (as with Docker exec).
        }
    }

    public async Task SignalAsync(string signal, CancellationToken ct)
    {
        var (_, number) = AgentSignals.Parse(signal);
        if (Completion.IsCompleted) return;
        try
        {
            await _session.SendSignalAsync(number, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException && Completion.IsCompleted)
        {
            // Ended meanwhile: the agent ignores signals after exit too.
        }
    }

    /// <summary>Closes the session; the agent sends SIGHUP to the process if it still runs (as sshd does when a channel closes).</summary>
    public ValueTask DisposeAsync() => _session.DisposeAsync();
}
