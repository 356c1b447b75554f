using System.Net.Sockets;
using Warren.Platform.Runtime;
using Warren.Ssh.Connection;

namespace Warren.Edge.Ssh;

/// <summary>
/// Port forwarding's byte relay between an SSH channel and the VM side (-L direct-tcpip, -R forwarded-tcpip,
/// -A auth-agent). Each direction runs on its own and passes its EOF on as a half-close: CHANNEL_EOF
/// (RFC 4254 §5.3) towards the client, <see cref="IHalfClosableStream.ShutdownWriteAsync"/> (a TCP
/// shutdown(SHUT_WR) inside the VM) towards the VM; the other direction keeps flowing.
/// </summary>
public static class StreamRelay
{
    /// <summary>Per-direction copy buffer; matches OpenSSH's 32 KiB channel packets.</summary>
    private const int CopyBufferBytes = 32 * 1024;

    /// <summary>
    /// Relays until both directions reached EOF, or until the channel is closed and what the client sent
    /// before its CLOSE was delivered. Closing the channel and disposing <paramref name="upstream"/> is the caller's.
    /// </summary>
    public static async Task RelayAsync(SshChannel channel, Stream upstream, CancellationToken ct)
    {
        var client = channel.AsStream();
        using var closed = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // Client → VM drains whatever arrived before a CLOSE (OpenSSH sends EOF and CLOSE back to back),
        // then ends at the EOF the closed channel reads as.
        var toVm = CopyThenHalfCloseAsync(client, upstream, ct);
        // VM → client: RFC 4254 §5.3, after CLOSE nothing more may be sent on the channel, so the VM side's
        // remaining output has nowhere to go; stop waiting for it then (it may never end on its own).
        var toClient = CopyThenHalfCloseAsync(upstream, client, closed.Token);
        if (await Task.WhenAny(toClient, channel.Completion).ConfigureAwait(false) != toClient) closed.Cancel();
        await Task.WhenAll(toVm, toClient).ConfigureAwait(false);
    }

    private static async Task CopyThenHalfCloseAsync(Stream from, Stream to, CancellationToken ct)
    {
        try { await from.CopyToAsync(to, CopyBufferBytes, ct).ConfigureAwait(false); await to.FlushAsync(ct).ConfigureAwait(false); }
        catch (IOException) { }
        catch (ObjectDisposedException) { }
        catch (OperationCanceledException) { }
        // Half-close: the other side sees EOF and can still answer.
        try
        {
            switch (to)
            {
                case NetworkStream ns: ns.Socket.Shutdown(SocketShutdown.Send); break;
                case IHalfClosableStream h: await h.ShutdownWriteAsync().ConfigureAwait(false); break;
                // An SSH channel stream sends CHANNEL_EOF when disposed and goes on reading.
                default: await to.DisposeAsync().ConfigureAwait(false); break;
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException) { }
    }
}
