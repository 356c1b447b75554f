using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;

namespace Warren.Edge.Dns;

/// <summary>
/// DNS over TCP for a listener (RFC 1035 §4.2.2, RFC 7766): accepts up to <see cref="MaxConnections"/> connections at
/// once (more are closed at accept), and on each serves two-byte length-prefixed messages until EOF, error, or a
/// message that does not arrive and get answered within <see cref="MessageTimeout"/>. What a message means is the
/// caller's: the authoritative server and the VM resolver share this framing and these limits.
/// </summary>
internal sealed class DnsTcpService(int maxConnections, TimeSpan messageTimeout)
{
    /// <summary>Answers one message into the buffer (at least <see cref="DnsWire.MaxTcpMessageSize"/> bytes); 0: send nothing.</summary>
    public delegate ValueTask<int> Handler(ReadOnlyMemory<byte> message, Memory<byte> response, CancellationToken ct);

    private int _connections;

    public int MaxConnections { get; } = maxConnections;
    public TimeSpan MessageTimeout { get; } = messageTimeout;

    /// <summary>Runs until <paramref name="ct"/> is cancelled or the listener is disposed, then waits for its connections.</summary>
    public async Task AcceptLoopAsync(Socket listener, Handler handle, Action<SocketError>? acceptFailed, CancellationToken ct)
    {
        var connections = new List<Task>();
        while (!ct.IsCancellationRequested)
        {
            Socket client;
            try { client = await listener.AcceptAsync(ct).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException || ct.IsCancellationRequested) { break; }
            catch (SocketException e)
            {
                acceptFailed?.Invoke(e.SocketErrorCode);
                continue;
            }
            if (Interlocked.Increment(ref _connections) > MaxConnections)
            {
                Interlocked.Decrement(ref _connections);
                client.Dispose();
                continue;
            }
            connections.RemoveAll(t => t.IsCompleted);
            connections.Add(Task.Run(() => ServeAsync(client, handle, ct)));
        }
        await Task.WhenAll(connections).ConfigureAwait(false);
    }

    private async Task ServeAsync(Socket client, Handler handle, CancellationToken ct)
    {
        // Both buffers are owned by this connection and returned once in finally.
        byte[] request = ArrayPool<byte>.Shared.Rent(DnsWire.MaxTcpMessageSize);
        byte[] response = ArrayPool<byte>.Shared.Rent(sizeof(ushort) + DnsWire.MaxTcpMessageSize);
        try
        {
            await using var stream = new NetworkStream(client, ownsSocket: true);
            while (!ct.IsCancellationRequested)
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(MessageTimeout);
                if (await stream.ReadAtLeastAsync(request.AsMemory(0, sizeof(ushort)), sizeof(ushort), throwOnEndOfStream: false, timeout.Token).ConfigureAwait(false) < sizeof(ushort))
                    return;
                int length = BinaryPrimitives.ReadUInt16BigEndian(request);
                if (length < DnsWire.HeaderSize)
                    return;
                await stream.ReadExactlyAsync(request.AsMemory(0, length), timeout.Token).ConfigureAwait(false);
                int answer = await handle(request.AsMemory(0, length), response.AsMemory(sizeof(ushort), DnsWire.MaxTcpMessageSize), timeout.Token).ConfigureAwait(false);
                if (answer <= 0)
                    continue;
                BinaryPrimitives.WriteUInt16BigEndian(response, (ushort)answer);
                await stream.WriteAsync(response.AsMemory(0, sizeof(ushort) + answer), timeout.Token).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException or EndOfStreamException) { }
        finally
        {
            ArrayPool<byte>.Shared.Return(request);
            ArrayPool<byte>.Shared.Return(response);
            Interlocked.Decrement(ref _connections);
        }
    }
}
