using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Warren.Agent;

/// <summary>
/// <c>listen HOST PORT</c> or <c>listen --unix</c>: a listener inside the VM whose connections are
/// carried to the SSH front door one Docker exec each (used for <c>ssh -R</c> and <c>ssh -A</c>).
/// </summary>
/// <remarks>
/// Control protocol, one line each, ASCII:
/// <list type="bullet">
/// <item>stdout, once: <c>ready BOUND_PORT RENDEZVOUS_PORT [SOCKET_PATH]</c> (BOUND_PORT is 0 for --unix).</item>
/// <item>stdout, per accepted connection: <c>conn TOKEN ORIGINATOR_ADDRESS ORIGINATOR_PORT</c>.</item>
/// <item>stdin: <c>drop TOKEN</c> closes an accepted connection nobody will claim; EOF stops the listener and exits.</item>
/// </list>
/// The front door claims a connection by connecting (with <c>connect 127.0.0.1 RENDEZVOUS_PORT</c>) to the
/// rendezvous listener and sending <c>TOKEN\n</c>; the agent then relays bytes between the two sockets,
/// passing each side's EOF on as a half-close.
/// Tokens are 128-bit random, so another process in the VM that reaches the rendezvous port can claim
/// nothing. Each connection has its own socket pair and exec stream, so one slow connection never
/// stalls another, and the kernel's socket buffers give flow control for free.
/// With --unix the socket is made in a fresh 0700 directory under /tmp owned by the calling user
/// (the agent runs as the SSH login user) and removed at exit.
/// </remarks>
internal static class ListenCommand
{
    /// <summary>Token bytes (hex-encoded on the wire): 128 bits, unguessable.</summary>
    private const int TokenBytes = 16;

    /// <summary>Random bytes in the socket directory's name (mkdtemp-like; the 0700 mode is what protects it).</summary>
    private const int SocketDirRandomBytes = 8;

    /// <summary>Longest claim line accepted on the rendezvous port (token plus newline, with slack).</summary>
    private const int MaxClaimLineBytes = 64;

    /// <summary>An accepted connection nobody claims in this time is closed (the front door claims within an exec's start-up).</summary>
    private static readonly TimeSpan ClaimTimeout = TimeSpan.FromSeconds(30);

    /// <summary>How often unclaimed connections are checked against <see cref="ClaimTimeout"/>.</summary>
    private static readonly TimeSpan ReapInterval = TimeSpan.FromSeconds(5);

    /// <summary>Pending connections allowed at once (sshd's listen backlog order of magnitude); beyond it new ones are closed.</summary>
    private const int MaxPending = 128;

    /// <summary>Copy buffer per direction.</summary>
    private const int CopyBufferBytes = 64 * 1024;

    private static readonly SemaphoreSlim s_stdoutLock = new(1, 1);
    private static Stream s_stdout = Stream.Null;

    public static async Task<int> RunAsync(string[] args)
    {
        Socket listener;
        string? socketPath = null, socketDir = null;
        if (args.Length == 1 && args[0] == "--unix" && OperatingSystem.IsLinux())
        {
            socketDir = Path.Combine(Path.GetTempPath(), "warren-agent." + RandomHex(SocketDirRandomBytes));
            Directory.CreateDirectory(socketDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            socketPath = Path.Combine(socketDir, "agent.sock");
            listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try { listener.Bind(new UnixDomainSocketEndPoint(socketPath)); }
            catch (SocketException e)
            {
                listener.Dispose();
                TryDelete(socketPath, socketDir);
                Console.Error.Write($"warren-agent: listen {socketPath}: {e.SocketErrorCode}\n");
                return 1;
            }
        }
        else if (args.Length == 2 && int.TryParse(args[1], out int port) && port is >= 0 and <= 65535)
        {
            var bound = Bind(args[0], port, out var error);
            if (bound is null)
            {
                Console.Error.Write($"warren-agent: listen {args[0]}:{port}: {error}\n");
                return 1;
            }
            listener = bound;
        }
        else throw new AgentUsageException("listen: HOST PORT | --unix");

        using var rendezvous = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        rendezvous.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(MaxPending);
        rendezvous.Listen(MaxPending);

        s_stdout = Console.OpenStandardOutput();
        int boundPort = listener.LocalEndPoint is IPEndPoint ip ? ip.Port : 0;
        int rendezvousPort = ((IPEndPoint)rendezvous.LocalEndPoint!).Port;
        await WriteLineAsync($"ready {boundPort} {rendezvousPort}{(socketPath is null ? "" : " " + socketPath)}");

        var pending = new ConcurrentDictionary<string, (Socket Socket, DateTime At)>(StringComparer.Ordinal);
        using var stop = new CancellationTokenSource();
        var accept = AcceptLoopAsync(listener, pending, stop.Token);
        var claims = RendezvousLoopAsync(rendezvous, pending, stop.Token);
        var reaper = ReapLoopAsync(pending, stop.Token);
        try
        {
            await ReadCommandsAsync(pending);
        }
        finally
        {
            stop.Cancel();
            listener.Dispose();
            foreach (var (_, p) in pending) p.Socket.Dispose();
            if (socketPath is not null) TryDelete(socketPath, socketDir!);
        }
        return 0;
    }

    private static Socket? Bind(string host, int port, out string error)
    {
        var addresses = host is "" or "*" ? [IPAddress.Any] : ConnectCommand.Resolve(host);
        error = "cannot resolve host";
        foreach (var address in addresses)
        {
            var s = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                s.Bind(new IPEndPoint(address, port));
                return s;
            }
            catch (SocketException e)
            {
                error = e.SocketErrorCode.ToString();
                s.Dispose();
            }
        }
        return null;
    }

    private static async Task WriteLineAsync(string line)
    {
        var bytes = Encoding.ASCII.GetBytes(line + "\n");
        await s_stdoutLock.WaitAsync();
        try
        {
            await s_stdout.WriteAsync(bytes);
            await s_stdout.FlushAsync();
        }
        finally { s_stdoutLock.Release(); }
    }

    /// <summary>Reads "drop TOKEN" lines until stdin ends (the front door closed the forwarding).</summary>
    private static async Task ReadCommandsAsync(ConcurrentDictionary<string, (Socket Socket, DateTime At)> pending)
    {
        using var stdin = new StreamReader(Console.OpenStandardInput(), Encoding.ASCII);
        while (await stdin.ReadLineAsync() is { } line)
        {
            if (line.StartsWith("drop ", StringComparison.Ordinal) && pending.TryRemove(line[5..], out var p)) p.Socket.Dispose();
        }
    }

    private static async Task AcceptLoopAsync(Socket listener, ConcurrentDictionary<string, (Socket Socket, DateTime At)> pending, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Socket client;
            try { client = await listener.AcceptAsync(ct); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException) { return; }
            catch (SocketException) { continue; }
            if (pending.Count >= MaxPending) { client.Dispose(); continue; }
            var token = RandomHex(TokenBytes);
            pending[token] = (client, DateTime.UtcNow);
            var (address, port) = client.RemoteEndPoint is IPEndPoint r ? (r.Address.ToString(), r.Port) : ("127.0.0.1", 0);
            try { await WriteLineAsync($"conn {token} {address} {port}"); }
            catch (IOException) { return; } // the front door is gone
        }
    }

    private static async Task RendezvousLoopAsync(Socket rendezvous, ConcurrentDictionary<string, (Socket Socket, DateTime At)> pending, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Socket claim;
            try { claim = await rendezvous.AcceptAsync(ct); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException) { return; }
            catch (SocketException) { continue; }
            _ = Task.Run(() => ClaimAsync(claim, pending, ct));
        }
    }

    private static async Task ClaimAsync(Socket claim, ConcurrentDictionary<string, (Socket Socket, DateTime At)> pending, CancellationToken ct)
    {
        using (claim)
        {
            // Byte by byte: whatever follows the newline is connection data and must not be consumed.
            var line = new StringBuilder();
            var one = new byte[1];
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(ClaimTimeout);
            try
            {
                while (line.Length < MaxClaimLineBytes)
                {
                    if (await claim.ReceiveAsync(one, SocketFlags.None, timeout.Token) == 0) return;
                    if (one[0] == (byte)'\n') break;
                    line.Append((char)one[0]);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException) { return; }
            if (!pending.TryRemove(line.ToString(), out var accepted)) return;
            using (accepted.Socket)
            {
                await RelayAsync(claim, accepted.Socket);
            }
        }
    }

    private static async Task ReapLoopAsync(ConcurrentDictionary<string, (Socket Socket, DateTime At)> pending, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try { await Task.Delay(ReapInterval, ct); } catch (OperationCanceledException) { return; }
            foreach (var (token, p) in pending)
                if (DateTime.UtcNow - p.At > ClaimTimeout && pending.TryRemove(token, out _)) p.Socket.Dispose();
        }
    }

    /// <summary>
    /// Copies both ways, each direction on its own: one side's EOF becomes shutdown(SHUT_WR) on the other
    /// socket (a TCP half-close, RFC 9293 §3.6; the front door turns it into CHANNEL_EOF, RFC 4254 §5.3), and
    /// the other direction keeps flowing until its own EOF. A request/response client that half-closes after
    /// its request still gets the answer, and a peer that waits for EOF before answering gets it. Ends when
    /// both directions ended, or at once when either fails (a reset: nothing more can flow either way).
    /// </summary>
    /// <remarks>
    /// The claim socket's far end is the front door's <c>IVmRuntime.ConnectAsync</c> stream, whose contract
    /// is half-close in both directions (IHalfClosableStream; the agent session socket's EOF/STDOUT_EOF frames).
    /// The agent socket (--unix) is relayed the same way: ssh-add closes when done, the EOF reaches the client's
    /// ssh, which shuts its agent connection down, and the agent's EOF comes back.
    /// </remarks>
    private static async Task RelayAsync(Socket claim, Socket client)
    {
        var toClient = CopyAsync(claim, client);
        var fromClient = CopyAsync(client, claim);
        var first = await Task.WhenAny(toClient, fromClient);
        if (!await first)
        {
            claim.Dispose();
            client.Dispose();
        }
        await Task.WhenAll(toClient, fromClient);
    }

    /// <summary>Copies until EOF, then half-closes <paramref name="to"/>; false when either socket failed first.</summary>
    private static async Task<bool> CopyAsync(Socket from, Socket to)
    {
        var buffer = new byte[CopyBufferBytes];
        try
        {
            int n;
            while ((n = await from.ReceiveAsync(buffer, SocketFlags.None)) > 0)
            {
                int sent = 0;
                while (sent < n) sent += await to.SendAsync(buffer.AsMemory(sent, n - sent), SocketFlags.None);
            }
            to.Shutdown(SocketShutdown.Send);
            return true;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { return false; }
    }

    /// <summary>
    /// Random hex from /dev/urandom. Not RandomNumberGenerator: on Linux it loads libssl, which images
    /// without libc (FROM scratch + busybox) do not have, and the static agent must run there.
    /// </summary>
    private static string RandomHex(int bytes)
    {
        var buffer = new byte[bytes];
        using (var urandom = File.OpenRead("/dev/urandom")) urandom.ReadExactly(buffer);
        return Convert.ToHexStringLower(buffer);
    }

    private static void TryDelete(string socketPath, string socketDir)
    {
        try { File.Delete(socketPath); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        try { Directory.Delete(socketDir); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
