using System.Net;
using System.Net.Sockets;
using Warren.Edge.Limits;

namespace Warren.Edge.Http.Forwarding;

/// <summary>One keep-alive HTTP/1.1 connection from the front door to a VM's port.</summary>
internal sealed class UpstreamConnection : IDisposable, IIdleConnection
{
    private readonly CancellationTokenSource _deadline = new();
    private int _disposed;

    public UpstreamConnection(Socket socket, UpstreamEndpoint endpoint)
    {
        Socket = socket;
        Endpoint = endpoint;
        // The deadline closes the socket, which fails whatever operation is pending with OperationAborted: one
        // registration for the connection's life instead of a cancellation token on every send and receive.
        _deadline.Token.UnsafeRegister(static state => ((UpstreamConnection)state!).Dispose(), this);
    }

    public Socket Socket { get; }

    public UpstreamEndpoint Endpoint { get; }

    /// <summary>Parsed response heads on this connection reuse one instance.</summary>
    public Http1ResponseHead ResponseHead { get; } = new();

    /// <summary>Header values repeated from one response to the next on this connection (Server, Content-Type…) reuse their strings.</summary>
    public ResponseValueCache ResponseValues { get; } = new();

    /// <summary>Requests this connection has carried (more than 0: it came from the pool).</summary>
    public int Uses { get; set; }

    /// <summary>
    /// The socket engine thread its receives complete on (0 while unknown or without inline completions) —
    /// learnt from the first receive that completed asynchronously there.
    /// </summary>
    public int EngineThread { get; set; }

    /// <summary>
    /// Called after a receive that completed later (by an epoll event): the engine thread running now is the one
    /// that polls this socket, and the pool keeps the connection for requests on that thread.
    /// </summary>
    public void NoteEngineThread()
    {
        if (Http1Forwarder.CurrentEngineThread() is int engineThread and not 0)
            EngineThread = engineThread;
    }

    /// <summary>When it was last put back into the pool (the pool's clock, in milliseconds).</summary>
    public long IdleSince { get; set; }

    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    bool IIdleConnection.IsClosed => IsDisposed;

    /// <summary>The deadline fired: the socket was closed because the VM went silent.</summary>
    public bool TimedOut => _deadline.IsCancellationRequested;

    /// <summary>(Re)starts the inactivity deadline.</summary>
    public void Arm(TimeSpan timeout)
    {
        if (!IsDisposed)
            _deadline.CancelAfter(timeout);
    }

    /// <summary>Stops the deadline; false when it already fired (the connection is then closed).</summary>
    public bool Disarm() => !IsDisposed && _deadline.TryReset();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        Socket.Dispose();
        // Not disposing the source here: this may run inside its own callback. It owns no unmanaged resource
        // once its timer has fired or been reset, and is collected with the connection.
    }
}

/// <summary>A VM address and port: the key of <see cref="UpstreamConnectionPool"/>.</summary>
internal readonly record struct UpstreamEndpoint(IPAddress Address, int Port)
{
    public IPEndPoint ToEndPoint() => new(Address, Port);
}

/// <summary>
/// The full path's connections to VMs: <see cref="IdleConnections{T}"/> (the pool both engines use) with one shard
/// per socket engine thread, and the connect that opens new ones.
/// </summary>
/// <remarks>
/// With inline socket completions each socket belongs to one engine thread (the runtime assigns them round-robin),
/// and the client's request runs on its socket's thread. An upstream connection on another engine moves the
/// request to that thread and back — two wake-ups more per request, which on the 2-core bench machine cost a quarter
/// of the proxy's rate. So idle connections are kept per engine thread, and a request takes one from its own
/// thread's set first.
/// </remarks>
internal sealed class UpstreamConnectionPool : IDisposable
{
    /// <inheritdoc cref="IdleConnections{T}.IdleTimeout"/>
    public static TimeSpan IdleTimeout => IdleConnections<UpstreamConnection>.IdleTimeout;

    private readonly IdleConnections<UpstreamConnection> _idle = new(static c => c.Dispose());
    private readonly TimeSpan _connectTimeout;
    private readonly TimeProvider _time;
    private readonly ITimer _sweeper;

    public UpstreamConnectionPool(TimeSpan connectTimeout, TimeProvider? time = null)
    {
        _connectTimeout = connectTimeout;
        _time = time ?? TimeProvider.System;
        _sweeper = _time.CreateTimer(static s => ((UpstreamConnectionPool)s!).Sweep(), this, IdleTimeout / 2, IdleTimeout / 2);
    }

    /// <summary>Milliseconds on the injected clock (monotonic).</summary>
    private long NowMs => _time.Milliseconds();

    /// <summary>Idle connections held now (for tests and metrics).</summary>
    public int IdleCount => _idle.Count;

    /// <summary>
    /// The most recently used idle connection to <paramref name="endpoint"/> on <paramref name="engineThread"/>'s set,
    /// else one whose engine thread is not known yet (its receives all completed at once), else another thread's, or null.
    /// </summary>
    public UpstreamConnection? TryTake(UpstreamEndpoint endpoint, int engineThread = 0)
    {
        long now = NowMs;
        if (_idle.TryTake(endpoint, engineThread, now) is { } own)
            return own;
        if (engineThread != 0 && _idle.TryTake(endpoint, 0, now) is { } unknown)
            return unknown;
        // Then another engine thread's: a request does not always run on the thread that polls its VM connections
        // (behind the native HTTPS transport Kestrel's requests start on the thread pool and continue wherever a
        // receive completed). Without this, such requests open new connections while idle ones pile up unasked.
        foreach (int thread in _engineThreads)
        {
            if (thread != engineThread && _idle.TryTake(endpoint, thread, now) is { } other)
                return other;
        }
        return null;
    }

    /// <summary>The engine threads connections have been filed under (a handful: one per socket engine).</summary>
    private volatile int[] _engineThreads = [];
    private readonly Lock _engineThreadsGate = new();

    private void NoteEngineThread(int engineThread)
    {
        if (Array.IndexOf(_engineThreads, engineThread) >= 0)
            return;
        lock (_engineThreadsGate)
        {
            if (Array.IndexOf(_engineThreads, engineThread) < 0 && _engineThreads.Length < 256)
                _engineThreads = [.. _engineThreads, engineThread];
        }
    }

    /// <summary>Opens a new connection (Nagle off: heads and small bodies go out at once).</summary>
    public async ValueTask<UpstreamConnection> ConnectAsync(UpstreamEndpoint endpoint, CancellationToken ct)
    {
        var socket = new Socket(endpoint.Address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(_connectTimeout);
            await socket.ConnectAsync(endpoint.ToEndPoint(), timeout.Token).ConfigureAwait(false);
            return new UpstreamConnection(socket, endpoint);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Puts a connection that ended a response cleanly back, under its engine thread; closes it when the pool is full.</summary>
    public void Return(UpstreamConnection connection)
    {
        int engineThread = connection.EngineThread;
        if (engineThread != 0)
            NoteEngineThread(engineThread);
        _idle.Return(connection, engineThread, NowMs);
    }

    /// <summary>Closes idle connections older than <see cref="IdleTimeout"/> and forgets endpoints left without any.</summary>
    internal void Sweep() => _idle.Sweep(NowMs);

    public void Dispose()
    {
        _sweeper.Dispose();
        _idle.Clear();
    }
}
