using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Warren.Agent.Native;
using Warren.Agent.Serve;

namespace Warren.Agent;

/// <summary>
/// <c>serve DIR</c>: the agent session socket (docs/AGENT-PROTOCOL.md). Reads the token from /.warren/token (the
/// runtime's read-only bind mount) or, when that does not exist (VMs created before it), DIR/token; binds DIR/agent.sock
/// (mode 0600) and serves exec and connect sessions for the host, one thread per connection plus one per
/// output stream: blocking I/O on dedicated threads is the cheapest path in a static NativeAOT binary. Started
/// (and restarted) by <c>init</c> when /.warren/run exists. A bad connection only ever closes itself.
/// </summary>
internal static class ServeCommand
{
    public const string TokenFile = "token";
    public const string SocketFile = "agent.sock";
    /// <summary>Where the runtime bind-mounts the token file read-only; DIR/token is used when it is absent.</summary>
    public const string MountedTokenPath = "/.warren/token";

    /// <summary>Concurrent connections served; beyond it a connection gets ERROR "busy" (a bound on threads and descriptors).</summary>
    public const int MaxConnections = 1024;

    /// <summary>OPEN must arrive within this long of connecting, so a silent connection cannot hold a slot.</summary>
    private static readonly TimeSpan OpenTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Pending connections the kernel queues before accept().</summary>
    private const int ListenBacklog = 128;

    /// <summary>Token length: 32 random bytes as lowercase hex.</summary>
    private const int TokenHexChars = 64;

    /// <summary>Stack per session thread: they run shallow loops over native buffers; the default (1.5 MiB) times thousands adds up.</summary>
    private const int SessionThreadStackBytes = 256 * 1024;

    /// <summary>After accept() fails (EMFILE, ENOMEM), pause before retrying instead of spinning.</summary>
    private static readonly TimeSpan AcceptRetryDelay = TimeSpan.FromMilliseconds(100);

    private static readonly bool s_debug = Environment.GetEnvironmentVariable("WARREN_AGENT_DEBUG") == "1";
    private static byte[] s_token = [];
    private static int s_connections;

    public static int Run(string[] args)
    {
        if (args.Length != 1) throw new AgentUsageException("serve: DIR");
        string dir = args[0];

        // Initialise the runtime's signal handling now (it installs a SIGCHLD handler), then put SIGCHLD back to
        // SIG_DFL as init does, so each session's waiter alone reaps its command. SIGPIPE is ignored explicitly:
        // a write to a closed pipe or peer must be an EPIPE, never the end of serve. session-child restores both.
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ => { });
        Libc.Signal(Libc.SIGCHLD, Libc.SIG_DFL);
        Libc.Signal(Libc.SIGPIPE, Libc.SIG_IGN);
        EnsureStdioOpen();
        RaiseDescriptorLimit();

        // The mounted file when there is one: the run directory is a tmpfs volume, empty at each start.
        string tokenPath = File.Exists(MountedTokenPath) ? MountedTokenPath : Path.Combine(dir, TokenFile);
        try { s_token = ReadToken(tokenPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            Log($"cannot read the token: {e.Message}");
            return 1;
        }

        string socketPath = Path.Combine(dir, SocketFile);
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            // A socket left by an earlier serve (or VM run) would make bind() fail.
            if (Libc.Unlink(socketPath) != 0 && Libc.Errno != Libc.ENOENT) throw new IOException($"unlink: errno {Libc.Errno}");
            // Created 0600 (umask) rather than chmod'ed after: no window in which it is open to others.
            uint oldMask = Libc.Umask(0x7F /* 0177 */);
            try { listener.Bind(new UnixDomainSocketEndPoint(socketPath)); }
            finally { Libc.Umask(oldMask); }
            Libc.Chmod(socketPath, 0x180 /* 0600 */);
            listener.Listen(ListenBacklog);
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            Log($"cannot listen on {socketPath}: {e.Message}");
            return 1;
        }
        Log($"listening on {socketPath}");

        while (true)
        {
            Socket connection;
            try { connection = listener.Accept(); }
            catch (SocketException e)
            {
                Debug($"accept: {e.SocketErrorCode}");
                Thread.Sleep(AcceptRetryDelay);
                continue;
            }
            Admit(connection);
        }
    }

    /// <summary>
    /// The token file: 64 hex characters (a trailing newline is tolerated). Anything else is refused, so a
    /// truncated or empty file can never make a short token acceptable.
    /// </summary>
    private static byte[] ReadToken(string path)
    {
        var text = File.ReadAllText(path).TrimEnd('\n', '\r', ' ', '\t');
        if (text.Length != TokenHexChars || !text.All(char.IsAsciiHexDigit))
            throw new InvalidDataException($"{path} does not hold {TokenHexChars} hex characters");
        return Encoding.ASCII.GetBytes(text);
    }

    /// <summary>
    /// posix_spawn's dup2 file actions assume the session's descriptors are above 2; if serve were started
    /// with a standard descriptor closed, a pipe could land there. /dev/null fills any gap.
    /// </summary>
    private static void EnsureStdioOpen()
    {
        for (int fd = 0; fd <= 2; fd++)
            if (Libc.Fcntl(fd, Libc.F_GETFD, 0) < 0) Libc.Open("/dev/null", Libc.O_RDWR, 0);
    }

    /// <summary>The soft descriptor limit serve started with, when it raised it; sessions get it back (session-child --nofile).</summary>
    public static ulong? InheritedDescriptorLimit { get; private set; }

    /// <summary>
    /// A session holds about five descriptors (socket, three pipe ends or a pty, an eventfd or two), so
    /// <see cref="MaxConnections"/> sessions need more than the usual soft limit of 1024: raise it to the hard limit.
    /// </summary>
    private static unsafe void RaiseDescriptorLimit()
    {
        RLimit limit;
        if (Libc.GetRLimit(Libc.RLIMIT_NOFILE, &limit) != 0 || limit.Current >= limit.Maximum) return;
        ulong original = limit.Current;
        limit.Current = limit.Maximum;
        if (Libc.SetRLimit(Libc.RLIMIT_NOFILE, &limit) == 0) InheritedDescriptorLimit = original;
    }

    private static void Admit(Socket connection)
    {
        if (Interlocked.Increment(ref s_connections) > MaxConnections)
        {
            Interlocked.Decrement(ref s_connections);
            // A few bytes into a fresh socket's empty buffer: this send cannot block the accept loop.
            new FrameWriter(connection).SendError("busy");
            connection.Dispose();
            return;
        }
        try
        {
            StartThread("connection", () =>
            {
                try { Serve(connection); }
                finally { Interlocked.Decrement(ref s_connections); }
            });
        }
        catch (OutOfMemoryException)
        {
            Interlocked.Decrement(ref s_connections);
            connection.Dispose();
        }
    }

    private static void Serve(Socket connection)
    {
        using (connection)
        using (var reader = new FrameReader(connection))
        {
            var writer = new FrameWriter(connection);
            try
            {
                reader.SetDeadline(OpenTimeout);
                var request = ReadOpen(reader);
                reader.SetDeadline(null);
                switch (request)
                {
                    case ExecRequest exec: ExecSession.Run(reader, writer, exec); break;
                    case ConnectRequest connect: ConnectSession.Run(reader, writer, connect); break;
                }
            }
            catch (RequestRefused e)
            {
                Debug($"refused: {e.Message}");
                writer.SendError(e.Message);
            }
            catch (ProtocolViolation e)
            {
                Debug($"closed: {e.Message}");
            }
            catch (Exception e) when (e is HostClosed or TimeoutException) { }
            finally
            {
                writer.Close();
            }
        }
    }

    /// <summary>The first frame: OPEN, checked token first. Anything else closes the connection.</summary>
    private static SessionRequest ReadOpen(FrameReader reader)
    {
        if (!reader.TryReadHeader(out byte type, out int length)) throw new HostClosed();
        if (type != Frame.Open) throw new ProtocolViolation($"first frame is type 0x{type:x2}, not OPEN");
        if (length > Frame.MaxOpenPayload) throw new RequestRefused($"bad request: OPEN over {Frame.MaxOpenPayload} bytes");
        var payload = new byte[length];
        reader.ReadExactly(payload);
        var open = new OpenReader(payload);
        ReadOnlySpan<byte> token;
        try { token = open.ReadTokenBytes(); }
        catch (RequestRefused) { throw new RequestRefused("bad token"); }
        if (!CryptographicOperations.FixedTimeEquals(token, s_token)) throw new RequestRefused("bad token");
        return open.ReadRequest();
    }

    /// <summary>Starts a background thread whose failure is logged, never fatal: an unhandled exception would end serve.</summary>
    public static Thread StartThread(string name, Action body)
    {
        var thread = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { Log($"{name} thread failed: {e}"); }
        }, SessionThreadStackBytes) { IsBackground = true, Name = name };
        thread.Start();
        return thread;
    }

    public static void Log(string message) => Console.Error.Write($"warren-agent serve: {message}\n");

    /// <summary>Per-connection detail (refusals, protocol violations), only with WARREN_AGENT_DEBUG=1: a noisy client must not flood the VM's log.</summary>
    public static void Debug(string message)
    {
        if (s_debug) Log(message);
    }
}
