using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Warren.Runtime.MicroVm.Mux;

/// <summary>
/// Presents a <see cref="MuxChannel"/> as a connected unix socket (one end of a socketpair), so the agent session client
/// that Warren.Runtime.Docker uses on the agent's socket runs over a channel unchanged. Two pumps copy between the
/// channel and the other end: guest → socket grants window only after the socket took the bytes (a consumer that stops
/// reading stops its channel alone), socket → guest waits for the guest's window. Closing the returned socket closes
/// the channel; the guest's CLOSE ends the socket's input after every byte before it.
/// </summary>
internal static partial class MuxSocketBridge
{
    private const int CopyBufferBytes = MuxProtocol.MaxPayload;

    public static Socket Create(MuxChannel channel)
    {
        var (ours, theirs) = SocketPair();
        var toSocket = PumpToSocketAsync(channel, ours);
        var toGuest = PumpToGuestAsync(channel, ours);
        _ = Task.WhenAll(toSocket, toGuest).ContinueWith(_ =>
        {
            ours.Dispose();
            return channel.CloseAsync();
        }, TaskScheduler.Default).Unwrap();
        return theirs;
    }

    private static async Task PumpToSocketAsync(MuxChannel channel, Socket socket)
    {
        var input = channel.Input;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync().ConfigureAwait(false);
                var buffer = result.Buffer;
                long taken = buffer.Length;
                foreach (var segment in buffer)
                    for (int sent = 0; sent < segment.Length;)
                        sent += await socket.SendAsync(segment[sent..], SocketFlags.None).ConfigureAwait(false);
                input.AdvanceTo(buffer.End);
                if (taken > 0) await channel.GrantAsync((int)taken, CancellationToken.None).ConfigureAwait(false);
                if (result.IsCompleted) break;
            }
            await input.CompleteAsync().ConfigureAwait(false);
            // The guest's EOF or CLOSE: the session client sees end-of-stream after the last byte.
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or InvalidOperationException)
        {
            // Connection failed, or the session client closed its end: cut the socket so the client sees an error, not a clean end.
            await input.CompleteAsync(e).ConfigureAwait(false);
            try { socket.Shutdown(SocketShutdown.Both); } catch (Exception s) when (s is SocketException or ObjectDisposedException) { }
            socket.Close(0);
        }
    }

    private static async Task PumpToGuestAsync(MuxChannel channel, Socket socket)
    {
        var buffer = new byte[CopyBufferBytes];
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false);
                // The session protocol never half-closes (EOF is a frame), so end-of-stream means the client closed.
                if (n == 0) break;
                await channel.WriteAsync(buffer.AsMemory(0, n), CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            // Either side is gone; the continuation in Create closes the channel.
        }
        await channel.CloseAsync().ConfigureAwait(false);
    }

    private static (Socket Ours, Socket Theirs) SocketPair()
    {
        Span<int> fds = stackalloc int[2];
        if (NativeSocketPair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
            throw new IOException($"socketpair failed: errno {Marshal.GetLastPInvokeError()}");
        return (new Socket(new SafeSocketHandle(fds[0], ownsHandle: true)), new Socket(new SafeSocketHandle(fds[1], ownsHandle: true)));
    }

    // <sys/socket.h> on Linux.
    private const int AF_UNIX = 1, SOCK_STREAM = 1, SOCK_CLOEXEC = 0x80000;

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    private static partial int NativeSocketPair(int domain, int type, int protocol, Span<int> fds);
}
