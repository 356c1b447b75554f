using System.Net;
using System.Net.Sockets;
using Warren.Ssh.Transport;

namespace Warren.Ssh.Server;

public sealed partial class SshServer
{
    /// <summary>Listen backlog; Linux caps it at net.core.somaxconn (4096 by default since 5.4).</summary>
    public const int ListenBacklog = 512;

    /// <summary>Binds <paramref name="endPoint"/> and serves until cancelled.</summary>
    public async Task ServeAsync(IPEndPoint endPoint, CancellationToken cancellationToken)
    {
        using var listener = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(endPoint);
        listener.Listen(ListenBacklog);
        await ServeAsync(listener, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Accepts connections on a bound, listening socket until cancelled, then
    /// waits for the connections in progress (they are told to disconnect).
    /// </summary>
    public async Task ServeAsync(Socket listener, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(listener);
        var active = new HashSet<Task>();
        var gate = new object();
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                Socket socket;
                try { socket = await listener.AcceptAsync(cancellationToken).ConfigureAwait(false); }
                catch (OperationCanceledException) { break; }
                catch (SocketException) { continue; }
                catch (ObjectDisposedException) { break; }
                socket.NoDelay = true;
                var local = socket.LocalEndPoint ?? new IPEndPoint(IPAddress.None, 0);
                var remote = socket.RemoteEndPoint ?? new IPEndPoint(IPAddress.None, 0);
                var task = Task.Run(async () =>
                {
                    try
                    {
                        await HandleConnectionAsync(new NetworkStream(socket, ownsSocket: true), local, remote, cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception ex)
                    {
                        // Peer errors never get here; this is a connection handler failing.
                        try { _options.ConnectionFailed?.Invoke(remote, ex); } catch (Exception) { }
                    }
                }, CancellationToken.None);
                lock (gate) active.Add(task);
                _ = task.ContinueWith(t => { lock (gate) active.Remove(t); }, TaskScheduler.Default);
            }
        }
        finally
        {
            Task[] left;
            lock (gate) left = [.. active];
            await Task.WhenAll(left).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Serves one connection over a byte stream (for front doors that accept the
    /// socket and parse a PROXY header themselves). <paramref name="localEndPoint"/>
    /// is the address the connection arrived on. Owns and disposes the stream.
    /// Completes when the connection is over; does not throw for peer errors.
    /// </summary>
    public async Task HandleConnectionAsync(Stream stream, EndPoint localEndPoint, EndPoint remoteEndPoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var source = SourceNetwork.Of(remoteEndPoint);
        if (!TryEnterUnauthenticated(source))
        {
            // Past the limits no key exchange is spent on it (OpenSSH drops at MaxStartups); the client still learns
            // why: our version line and a DISCONNECT in the clear, as RFC 4253 §11.1 allows before NEWKEYS.
            await SshEarlyRefusal.RefuseAsync(stream, _transportOptions.Version, SshDisconnectReason.TooManyConnections,
                TooManyConnectionsMessage).ConfigureAwait(false);
            return;
        }
        bool slotHeld = true;
        try
        {
            using var grace = new CancellationTokenSource(_options.LoginGraceTime, _options.TimeProvider);
            SshTransport transport;
            using (var linked = CancellationTokenSource.CreateLinkedTokenSource(grace.Token, cancellationToken))
            {
                try
                {
                    transport = await SshTransport.AcceptAsync(stream, _transportOptions, linked.Token).ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // Version exchange or key exchange failed; the transport already
                    // sent any DISCONNECT it could. Nothing to tell the application.
                    await stream.DisposeAsync().ConfigureAwait(false);
                    return;
                }
            }
            await ServeAuthenticatedAsync(transport, localEndPoint, remoteEndPoint, grace, () =>
            {
                if (slotHeld) { slotHeld = false; LeaveUnauthenticated(source); }
            }, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (slotHeld) LeaveUnauthenticated(source);
        }
    }
}
