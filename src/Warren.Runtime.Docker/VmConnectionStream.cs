using System.Text;
using Warren.Platform.Runtime;
using Warren.Runtime.Agent;

namespace Warren.Runtime.Docker;

/// <summary>
/// A TCP connection made inside the VM by <c>/.warren/agent connect --ready HOST PORT</c>, carried over a
/// Docker exec's stdin/stdout. <see cref="ShutdownWriteAsync"/> half-closes (the agent then shuts down its
/// socket's sending side); reading ends when the peer closes.
/// </summary>
internal sealed class VmConnectionStream : UnseekableStream, Warren.Platform.Runtime.IHalfClosableStream
{
    /// <summary>What the agent prints on stderr once connected (before any data flows).</summary>
    internal const string ReadyLine = "warren-agent: connected";
    /// <summary>Upper bound on the stderr read while waiting for readiness.</summary>
    private const int MaxHandshakeBytes = 4096;

    private readonly IVmProcess _process;
    private int _disposed;

    private VmConnectionStream(IVmProcess process) => _process = process;

    internal static async Task<VmConnectionStream> OpenAsync(IVmProcess process, string host, int port, CancellationToken ct)
    {
        var stderr = process.StandardError!;
        var seen = new StringBuilder();
        var buffer = new byte[256];
        try
        {
            while (seen.Length < MaxHandshakeBytes)
            {
                int n = await stderr.ReadAsync(buffer, ct);
                if (n == 0) break;
                seen.Append(Encoding.UTF8.GetString(buffer, 0, n));
                if (seen.ToString().Contains(ReadyLine + "\n", StringComparison.Ordinal))
                {
                    // Nothing else comes on stderr; drain it in the background so the pump never blocks.
                    _ = Task.Run(async () =>
                    {
                        try { while (await stderr.ReadAsync(buffer) > 0) { } } catch (IOException) { }
                    });
                    return new VmConnectionStream(process);
                }
            }
        }
        catch
        {
            await process.DisposeAsync();
            throw;
        }
        await process.DisposeAsync();
        string reason = seen.ToString().Trim();
        throw new DockerRuntimeException(DockerRuntimeErrors.ConnectFailed,
            $"cannot connect to {host}:{port} inside the VM{(reason.Length > 0 ? ": " + reason.Replace("warren-agent: ", "", StringComparison.Ordinal) : "")}");
    }

    /// <summary>Sends EOF to the VM side (TCP half-close there).</summary>
    public Task ShutdownWriteAsync() => _process.CloseStandardInputAsync();

    public override bool CanRead => true;
    public override bool CanWrite => true;

    public override int Read(byte[] buffer, int offset, int count) => _process.StandardOutput.Read(buffer, offset, count);
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => _process.StandardOutput.ReadAsync(buffer, offset, count, ct);
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => _process.StandardOutput.ReadAsync(buffer, ct);
    public override void Write(byte[] buffer, int offset, int count) => _process.StandardInput.Write(buffer, offset, count);
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) => _process.StandardInput.WriteAsync(buffer, offset, count, ct);
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default) => _process.StandardInput.WriteAsync(buffer, ct);

    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0) _process.DisposeAsync().AsTask().GetAwaiter().GetResult();
        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) await _process.DisposeAsync();
        GC.SuppressFinalize(this);
    }
}
