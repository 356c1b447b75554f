using System.Globalization;
using System.Text;
using Warren.Platform.Runtime;

namespace Warren.Runtime.Agent;

/// <summary>
/// A listening socket inside a VM (<see cref="IVmRuntime.ListenAsync"/>), run by the guest agent's <c>listen</c>
/// subcommand through <see cref="IVmRuntime.ExecAsync"/> (see src/Warren.Agent/ListenCommand.cs for the protocol).
/// Each accepted connection is announced with a token; <see cref="ClaimAsync"/> fetches its bytes
/// over a separate <see cref="IVmRuntime.ConnectAsync"/> stream, so connections never share a pipe
/// and one stalled peer cannot hold up another. Disposing closes the agent's stdin: it stops
/// listening, drops its connections and exits.
/// </summary>
public sealed class AgentListener : IVmListener
{
    /// <summary>Longest control line read from the agent (a "conn" line with an IPv6 originator is under 100 bytes).</summary>
    private const int MaxLineBytes = 512;

    /// <summary>Longest agent error text kept for the refusal log.</summary>
    private const int MaxErrorBytes = 4096;

    /// <summary>A connection accepted inside the VM, announced by its token, waiting to be claimed or dropped.</summary>
    private sealed class Incoming(AgentListener listener, string token, string originatorAddress, uint originatorPort) : IVmIncomingConnection
    {
        public string Token { get; } = token;
        public string OriginatorAddress { get; } = originatorAddress;
        public uint OriginatorPort { get; } = originatorPort;
        public Task<Stream> AcceptAsync(CancellationToken ct) => listener.ClaimAsync(this, ct);
        public Task RejectAsync(CancellationToken ct) => listener.DropAsync(this, ct);
    }

    private readonly IVmRuntime _runtime;
    private readonly string _vmId;
    private readonly IVmProcess _process;
    private readonly SemaphoreSlim _stdinLock = new(1, 1);
    private int _disposed;

    private AgentListener(IVmRuntime runtime, string vmId, IVmProcess process, uint boundPort, int rendezvousPort, string? socketPath)
    {
        _runtime = runtime;
        _vmId = vmId;
        _process = process;
        BoundPort = boundPort;
        RendezvousPort = rendezvousPort;
        SocketPath = socketPath;
    }

    /// <summary>The TCP port listened on inside the VM (the chosen one when 0 was asked); 0 for a unix socket.</summary>
    public uint BoundPort { get; }
    /// <summary>The unix socket's path inside the VM, for <c>listen --unix</c>.</summary>
    public string? SocketPath { get; }
    /// <summary>The agent's loopback port where connections are claimed by token.</summary>
    private int RendezvousPort { get; }

    /// <summary>
    /// Runs the agent's <c>listen</c> in the VM through <paramref name="runtime"/>'s exec and waits for its "ready"
    /// line: TCP on the spec's host and port, or a unix socket in a fresh private directory under /tmp owned by the
    /// user. Connections are claimed through <paramref name="runtime"/>'s <see cref="IVmRuntime.ConnectAsync"/>.
    /// </summary>
    public static async Task<AgentListener> StartAsync(IVmRuntime runtime, string vmId, ListenSpec spec, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var process = await runtime.ExecAsync(vmId, new ExecSpec(GuestAgent.ListenArgv(spec), spec.User), ct).ConfigureAwait(false);
        try
        {
            var errors = process.StandardError is { } se ? ReadCappedAsync(se) : Task.FromResult("");
            var ready = await ReadLineAsync(process.StandardOutput, ct).ConfigureAwait(false);
            var f = ready?.Split(' ');
            if (f is not { Length: 3 or 4 } || f[0] != "ready"
                || !uint.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out var bound)
                || !int.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out var rendezvous))
            {
                await process.CloseStandardInputAsync().ConfigureAwait(false);
                var error = await errors.WaitAsync(TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
                throw new IOException(string.IsNullOrWhiteSpace(error) ? "the agent did not start listening" : error.Replace("warren-agent: ", "", StringComparison.Ordinal).Trim());
            }
            return new AgentListener(runtime, vmId, process, bound, rendezvous, f.Length == 4 ? f[3] : null);
        }
        catch
        {
            await process.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Accepted connections, until the listener ends; the consumer must claim or drop each.</summary>
    public async IAsyncEnumerable<IVmIncomingConnection> AcceptAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        while (await ReadLineAsync(_process.StandardOutput, ct).ConfigureAwait(false) is { } line)
        {
            var f = line.Split(' ');
            if (f is [ "conn", var token, var address, var port ] && uint.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var p))
                yield return new Incoming(this, token, address, p);
        }
    }

    /// <summary>The accepted connection's byte stream (write to it = send to the VM-side peer).</summary>
    private async Task<Stream> ClaimAsync(Incoming incoming, CancellationToken ct)
    {
        var stream = await _runtime.ConnectAsync(_vmId, "127.0.0.1", RendezvousPort, ct).ConfigureAwait(false);
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(incoming.Token + "\n"), ct).ConfigureAwait(false);
            await stream.FlushAsync(ct).ConfigureAwait(false);
            return stream;
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Closes an accepted connection that will not be claimed (the client refused the channel).</summary>
    private async Task DropAsync(Incoming incoming, CancellationToken ct)
    {
        await _stdinLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await _process.StandardInput.WriteAsync(Encoding.ASCII.GetBytes($"drop {incoming.Token}\n"), ct).ConfigureAwait(false);
            await _process.StandardInput.FlushAsync(ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException) { }
        finally { _stdinLock.Release(); }
    }

    /// <summary>Reads one '\n'-terminated line byte by byte (the stream carries nothing else to over-read); null at EOF.</summary>
    private static async Task<string?> ReadLineAsync(Stream s, CancellationToken ct)
    {
        var line = new StringBuilder();
        var one = new byte[1];
        while (line.Length < MaxLineBytes)
        {
            if (await s.ReadAsync(one, ct).ConfigureAwait(false) == 0) return line.Length > 0 ? line.ToString() : null;
            if (one[0] == (byte)'\n') return line.ToString();
            line.Append((char)one[0]);
        }
        throw new IOException("agent control line too long");
    }

    private static async Task<string> ReadCappedAsync(Stream s)
    {
        var text = new StringBuilder();
        var buffer = new byte[256];
        try
        {
            int n;
            while ((n = await s.ReadAsync(buffer).ConfigureAwait(false)) > 0)
                if (text.Length < MaxErrorBytes) text.Append(Encoding.UTF8.GetString(buffer, 0, n));
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException) { }
        return text.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try { await _process.CloseStandardInputAsync().ConfigureAwait(false); } catch (Exception e) when (e is IOException or ObjectDisposedException) { }
        await _process.DisposeAsync().ConfigureAwait(false);
        _stdinLock.Dispose();
    }
}
