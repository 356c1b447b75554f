using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Warren.Edge.Limits;

namespace Warren.Edge.Http.Forwarding;

/// <summary>One keep-alive HTTP/1.1 connection from the front door to a VM's port.</summary>
internal sealed class UpstreamConnection : IDisposable
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
/// Idle keep-alive connections to VMs, per address and port, most recently used first. Bounded per endpoint
/// and in total; idle connections are closed after <see cref="IdleTimeout"/> by a sweep, and on the way out of
/// the pool when they are older than that.
/// </summary>
/// <remarks>
/// With inline socket completions each socket belongs to one engine thread (the runtime assigns them round-robin),
/// and the client's request runs on its socket's thread. An upstream connection on another engine moves the
/// request to that thread and back — two wake-ups more per request, which on the 2-core bench machine cost a quarter
/// of the proxy's rate. So idle connections are kept per engine thread, and a request takes one from its own
/// thread's set; failing that it opens a new one (which lands on some engine and, once learnt, joins that
/// thread's set) rather than borrow another thread's.
/// </remarks>
internal sealed class UpstreamConnectionPool : IDisposable
{
    /// <summary>Shorter than common server keep-alive timeouts would be better, but Node's is 5 s; the forwarder retries a reused connection that turns out closed.</summary>
    public static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(30);

    public const int MaxIdlePerEndpoint = 256;
    public const int MaxIdleTotal = 8192;

    /// <summary>The idle connections of one endpoint; retired when the sweep drops an empty one.</summary>
    private sealed class IdleStack
    {
        public readonly Stack<UpstreamConnection> Items = new();
        public bool Retired;
    }

    private readonly ConcurrentDictionary<(UpstreamEndpoint Endpoint, int EngineThread), IdleStack> _idle = new();
    private readonly TimeSpan _connectTimeout;
    private readonly TimeProvider _time;
    private readonly ITimer _sweeper;
    private int _idleTotal;

    public UpstreamConnectionPool(TimeSpan connectTimeout, TimeProvider? time = null)
    {
        _connectTimeout = connectTimeout;
        _time = time ?? TimeProvider.System;
        _sweeper = _time.CreateTimer(static s => ((UpstreamConnectionPool)s!).Sweep(), this, IdleTimeout / 2, IdleTimeout / 2);
    }

    /// <summary>Milliseconds on the injected clock (monotonic).</summary>
    private long NowMs => _time.Milliseconds();

    /// <summary>Idle connections held now (for tests and metrics).</summary>
    public int IdleCount => Volatile.Read(ref _idleTotal);

    /// <summary>
    /// The most recently used idle connection to <paramref name="endpoint"/> on <paramref name="engineThread"/>'s set,
    /// else one whose engine thread is not known yet (its receives all completed at once), or null.
    /// </summary>
    public UpstreamConnection? TryTake(UpstreamEndpoint endpoint, int engineThread = 0)
    {
        if (TryTakeFrom(endpoint, engineThread) is { } own)
            return own;
        if (engineThread != 0 && TryTakeFrom(endpoint, 0) is { } unknown)
            return unknown;
        // Then another engine thread's: a request does not always run on the thread that polls its VM connections
        // (behind the native HTTPS transport Kestrel's requests start on the thread pool and continue wherever a
        // receive completed). Without this, such requests open new connections while idle ones pile up unasked.
        foreach (int thread in _engineThreads)
        {
            if (thread != engineThread && TryTakeFrom(endpoint, thread) is { } other)
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

    private UpstreamConnection? TryTakeFrom(UpstreamEndpoint endpoint, int engineThread)
    {
        if (!_idle.TryGetValue((endpoint, engineThread), out var stack))
            return null;
        long now = NowMs;
        lock (stack)
        {
            while (stack.Items.TryPop(out var connection))
            {
                Interlocked.Decrement(ref _idleTotal);
                if (!connection.IsDisposed && now - connection.IdleSince < (long)IdleTimeout.TotalMilliseconds)
                    return connection;
                connection.Dispose();
            }
        }
        return null;
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

    /// <summary>Puts a connection that ended a response cleanly back; closes it when the pool is full.</summary>
    public void Return(UpstreamConnection connection)
    {
        if (connection.IsDisposed)
            return;
        if (Interlocked.Increment(ref _idleTotal) > MaxIdleTotal)
        {
            Interlocked.Decrement(ref _idleTotal);
            connection.Dispose();
            return;
        }
        connection.IdleSince = NowMs;
        int engineThread = connection.EngineThread;
        if (engineThread != 0)
            NoteEngineThread(engineThread);
        while (true)
        {
            var stack = _idle.GetOrAdd((connection.Endpoint, engineThread), static _ => new IdleStack());
            lock (stack)
            {
                if (stack.Retired)
                    continue; // the sweep dropped this one between the lookup and the lock
                if (stack.Items.Count < MaxIdlePerEndpoint)
                {
                    stack.Items.Push(connection);
                    return;
                }
                break;
            }
        }
        Interlocked.Decrement(ref _idleTotal);
        connection.Dispose();
    }

    /// <summary>Closes idle connections older than <see cref="IdleTimeout"/> and forgets endpoints left without any.</summary>
    internal void Sweep()
    {
        long now = NowMs;
        foreach (var (key, stack) in _idle)
        {
            lock (stack)
            {
                if (stack.Items.Count > 0)
                {
                    // Newest on top: keep the fresh ones in their order, close the rest.
                    var all = stack.Items.ToArray();
                    stack.Items.Clear();
                    for (int i = all.Length - 1; i >= 0; i--)
                    {
                        var c = all[i];
                        if (!c.IsDisposed && now - c.IdleSince < (long)IdleTimeout.TotalMilliseconds)
                            stack.Items.Push(c);
                        else
                        {
                            c.Dispose();
                            Interlocked.Decrement(ref _idleTotal);
                        }
                    }
                }
                if (stack.Items.Count == 0)
                {
                    stack.Retired = true;
                    _idle.TryRemove(new KeyValuePair<(UpstreamEndpoint, int), IdleStack>(key, stack));
                }
            }
        }
    }

    public void Dispose()
    {
        _sweeper.Dispose();
        foreach (var (_, stack) in _idle)
        {
            lock (stack)
            {
                stack.Retired = true;
                while (stack.Items.TryPop(out var c))
                    c.Dispose();
            }
        }
        _idle.Clear();
        _idleTotal = 0;
    }
}
