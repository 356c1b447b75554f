namespace Warren.Edge.Ssh;

/// <summary>Copies two streams into each other until both directions ended (port forwarding).</summary>
public static class StreamRelay
{
    /// <summary>Per-direction copy buffer; matches OpenSSH's 32 KiB channel packets.</summary>
    private const int CopyBufferBytes = 32 * 1024;

    public static async Task RelayAsync(Stream a, Stream b, CancellationToken ct)
    {
        var ab = CopyThenCloseAsync(a, b, ct);
        var ba = CopyThenCloseAsync(b, a, ct);
        await Task.WhenAll(ab, ba).ConfigureAwait(false);
    }

    private static async Task CopyThenCloseAsync(Stream from, Stream to, CancellationToken ct)
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
                case System.Net.Sockets.NetworkStream ns: ns.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Send); break;
                case Warren.Platform.Runtime.IHalfClosableStream h: await h.ShutdownWriteAsync().ConfigureAwait(false); break;
                // An SSH channel stream sends EOF when disposed; it closes once both sides are done.
                default: await to.DisposeAsync().ConfigureAwait(false); break;
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException) { }
    }
}
