using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http.Forwarding;
using Warren.Ssh.Server;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// One thread of the native HTTPS front door: an epoll instance, its own listening sockets (SO_REUSEPORT, one per
/// HTTPS endpoint), the connections accepted on them, and idle keep-alive connections to VMs. Everything a
/// connection does happens on this thread, so nothing here takes a lock — nginx's worker, in C#.
/// </summary>
/// <remarks>
/// Epoll is edge-triggered: every descriptor is registered once for input and output, and a handler always tries
/// its operation until the kernel says EAGAIN before it waits (an event only says something changed). Deadlines are
/// checked once a second by a sweep over the loop's connections, as Kestrel's heartbeat does.
/// </remarks>
internal sealed unsafe class EventLoop : IDisposable
{
    private const int MaxEvents = 256;
    private const int SweepIntervalMs = 1000;

    private readonly NativeHttpsFrontDoor _owner;
    private readonly SafeDescriptor _epoll;
    private readonly SafeDescriptor _wake;
    private readonly List<(SafeDescriptor Fd, IPEndPoint Local)> _listeners = new();
    private object?[] _byFd = new object?[1024];
    private readonly List<LaneConnection> _connections = new();
    private readonly IdleConnections<UpstreamSocket> _idle;
    private readonly System.Collections.Concurrent.ConcurrentQueue<(LaneConnection Connection, UpstreamEndpoint? Route)> _routed = new();
    private readonly Thread _thread;
    private volatile bool _stopping;
    private long _stopDeadline = long.MaxValue;

    /// <summary>Events after which a read must be tried: data, the peer's FIN, a hang-up or an error.</summary>
    private const uint ReadinessFlags = LinuxSockets.EPOLLIN | LinuxSockets.EPOLLRDHUP | LinuxSockets.EPOLLHUP | LinuxSockets.EPOLLERR;

    /// <summary>
    /// Events that say the peer closed or failed. They are reported once, possibly together with the data before
    /// them, so they are remembered: a short read then no longer means "wait for the next event".
    /// </summary>
    private const uint HangUpFlags = LinuxSockets.EPOLLRDHUP | LinuxSockets.EPOLLHUP | LinuxSockets.EPOLLERR;

    private static readonly object s_listenerMark = new();
    private static readonly object s_wakeMark = new();

    public EventLoop(NativeHttpsFrontDoor owner, int index)
    {
        _owner = owner;
        _idle = new IdleConnections<UpstreamSocket>(CloseUpstream);
        _epoll = LinuxSockets.CreateEpoll();
        _wake = LinuxSockets.CreateEventFd();
        Register(_wake, s_wakeMark, LinuxSockets.EPOLLIN);
        _thread = new Thread(Run) { IsBackground = true, Name = $"Warren HTTPS {index}" };
    }

    public NativeHttpsFrontDoor Owner => _owner;

    /// <summary>
    /// Bytes this loop's thread has allocated since it started, as of its last pass over its events: the lane is
    /// meant to allocate nothing per request, and this is how that is measured (read from any thread).
    /// </summary>
    public long AllocatedBytes => Volatile.Read(ref _allocatedBytes);
    private long _allocatedBytes;

    /// <summary>Connections open on this loop (served here; handed-off ones are Kestrel's).</summary>
    public int ConnectionCount => Volatile.Read(ref _connectionCount);
    private int _connectionCount;

    /// <summary>Listens on <paramref name="endpoint"/> (port 0 picks one); returns the bound address.</summary>
    public IPEndPoint Listen(IPEndPoint endpoint, int backlog)
    {
        var fd = LinuxSockets.Listen(endpoint, backlog, reusePort: true);
        var local = LinuxSockets.LocalEndPoint(fd) ?? endpoint;
        _listeners.Add((fd, local));
        Register(fd, s_listenerMark, LinuxSockets.EPOLLIN);
        return local;
    }

    public void Start() => _thread.Start();

    /// <summary>Stops accepting; open connections finish their current request until <paramref name="grace"/> ends.</summary>
    public void Stop(TimeSpan grace)
    {
        _stopDeadline = _owner.NowMs + (long)grace.TotalMilliseconds;
        _stopping = true;
        LinuxSockets.Signal(_wake);
    }

    public bool Join(TimeSpan timeout) => !_thread.IsAlive || _thread.Join(timeout);

    private void Register(SafeDescriptor fd, object owner, uint events)
    {
        Track(fd.Number, owner);
        LinuxSockets.EpollAdd(_epoll, fd, events);
    }

    private void Track(int fd, object? owner)
    {
        if (fd >= _byFd.Length)
            Array.Resize(ref _byFd, Math.Max(fd + 1, _byFd.Length * 2));
        _byFd[fd] = owner;
    }

    /// <summary>A client or VM socket: edge-triggered input, output and peer-closed events.</summary>
    internal void Watch(SafeDescriptor fd, object owner) =>
        Register(fd, owner, LinuxSockets.EPOLLIN | LinuxSockets.EPOLLOUT | LinuxSockets.EPOLLRDHUP | LinuxSockets.EPOLLET);

    /// <summary>Forgets a descriptor before it is closed or handed to someone else.</summary>
    internal void Unwatch(SafeDescriptor fd, bool removeFromEpoll)
    {
        if (removeFromEpoll)
            LinuxSockets.EpollRemove(_epoll, fd);
        if (fd.Number < _byFd.Length)
            _byFd[fd.Number] = null;
    }

    private void Run()
    {
        byte* events = stackalloc byte[MaxEvents * LinuxSockets.EpollEventSize];
        long nextSweep = _owner.NowMs + SweepIntervalMs;
        bool listenersClosed = false;
        while (true)
        {
            int n = LinuxSockets.EpollWait(_epoll, events, MaxEvents, SweepIntervalMs);
            for (int i = 0; i < n; i++)
            {
                int fd = (int)LinuxSockets.EventData(events, i);
                uint flags = LinuxSockets.EventFlags(events, i);
                bool readable = (flags & ReadinessFlags) != 0;
                bool hangUp = (flags & HangUpFlags) != 0;
                object? target = fd < _byFd.Length ? _byFd[fd] : null;
                try
                {
                    switch (target)
                    {
                        case LaneConnection connection:
                            connection.OnClientEvent(readable, hangUp);
                            break;
                        case UpstreamSocket upstream:
                            if (upstream.Owner is { } owner)
                            {
                                upstream.Readable |= readable;
                                upstream.HungUp |= hangUp;
                                owner.Advance();
                            }
                            else if (LinuxSockets.Peek(upstream.Fd) != -1)
                                DropIdle(upstream); // an idle VM connection that spoke or closed is not reusable
                            break;
                        case not null when ReferenceEquals(target, s_listenerMark):
                            AcceptAll(ListenerOf(fd));
                            break;
                        case not null when ReferenceEquals(target, s_wakeMark):
                            LinuxSockets.Drain(_wake);
                            DeliverRouted();
                            break;
                    }
                }
                catch (Exception ex)
                {
                    // A bug in one connection's handling must not take the loop's other connections with it.
                    _owner.LogConnectionFailed(ex);
                    if (target is LaneConnection broken)
                        broken.Close();
                    else if (target is UpstreamSocket { Owner: { } owner })
                        owner.Close();
                }
            }
            // A thread-local counter read (no system call): cheap enough for every pass.
            Volatile.Write(ref _allocatedBytes, GC.GetAllocatedBytesForCurrentThread());
            long now = _owner.NowMs;
            if (_stopping)
            {
                if (!listenersClosed)
                {
                    CloseListeners();
                    listenersClosed = true;
                }
                for (int i = _connections.Count - 1; i >= 0; i--)
                {
                    var connection = _connections[i];
                    if (connection.IsIdle || now >= _stopDeadline)
                        connection.Close();
                }
                if (_connections.Count == 0)
                    break;
            }
            if (now >= nextSweep)
            {
                nextSweep = now + SweepIntervalMs;
                Sweep(now);
            }
        }
        _idle.Clear();
    }

    private SafeDescriptor? ListenerOf(int number)
    {
        foreach (var (fd, _) in _listeners)
        {
            if (fd.Number == number)
                return fd;
        }
        return null;
    }

    private void AcceptAll(SafeDescriptor? listener)
    {
        while (!_stopping && listener is not null)
        {
            var result = LinuxSockets.Accept(listener, out var fd, out var remote);
            if (result == AcceptResult.NoneWaiting)
                return;
            if (result == AcceptResult.Exhausted)
            {
                // Out of descriptors: the connection stays queued; the sweep tries again within a second.
                _owner.LogAcceptExhausted();
                return;
            }
            if (fd is null)
                continue; // that connection failed before we saw it
            var local = LinuxSockets.LocalEndPoint(fd);
            if (remote is null || local is null)
            {
                fd.Dispose();
                continue;
            }
            // Over its source's connection limit: closed at once, before any TLS work.
            var source = SourceNetwork.Of(remote.Address);
            if (!_owner.ConnectionLimit.TryEnter(source))
            {
                fd.Dispose();
                continue;
            }
            LaneConnection connection;
            try
            {
                connection = new LaneConnection(this, fd, local, remote, source);
            }
            catch (Exception ex)
            {
                _owner.LogConnectionFailed(ex);
                _owner.ConnectionLimit.Leave(source);
                fd.Dispose();
                continue;
            }
            connection.Index = _connections.Count;
            _connections.Add(connection);
            Interlocked.Increment(ref _connectionCount);
            Watch(fd, connection);
            connection.Advance();
        }
    }

    private void DeliverRouted()
    {
        while (_routed.TryDequeue(out var routed))
        {
            try
            {
                routed.Connection.Routed(routed.Route);
            }
            catch (Exception ex)
            {
                _owner.LogConnectionFailed(ex);
                routed.Connection.Close();
            }
        }
    }

    /// <summary>Brings a routing answer that completed elsewhere back to this loop's thread (any thread may call).</summary>
    internal void Post(LaneConnection connection, UpstreamEndpoint? route)
    {
        _routed.Enqueue((connection, route));
        LinuxSockets.Signal(_wake);
    }

    /// <summary>Takes a connection off this loop's list (it was closed or handed to Kestrel).</summary>
    internal void Forget(LaneConnection connection)
    {
        int index = connection.Index;
        if (index < 0 || index >= _connections.Count || !ReferenceEquals(_connections[index], connection))
            return;
        var last = _connections[^1];
        _connections[index] = last;
        last.Index = index;
        _connections.RemoveAt(_connections.Count - 1);
        connection.Index = -1;
        Interlocked.Decrement(ref _connectionCount);
    }

    private void Sweep(long now)
    {
        // Edge-triggered: connections left queued (accept ran out of descriptors) raise no new event by themselves.
        if (!_stopping)
        {
            foreach (var (fd, _) in _listeners)
                AcceptAll(fd);
        }
        for (int i = _connections.Count - 1; i >= 0; i--)
        {
            if (i < _connections.Count)
                _connections[i].CheckDeadline(now);
        }
        _idle.Sweep(now);
    }

    // ---- VM connections: idle ones are kept per loop in the pool both engines use (one shard: this loop).

    internal UpstreamSocket? TakeIdle(UpstreamEndpoint endpoint) => _idle.TryTake(endpoint, 0, _owner.NowMs);

    internal void ReturnIdle(UpstreamSocket upstream)
    {
        if (_stopping || upstream.HungUp)
        {
            CloseUpstream(upstream);
            return;
        }
        upstream.Owner = null;
        upstream.Readable = false; // its response was read to the end; a later event is checked by Peek
        _idle.Return(upstream, 0, _owner.NowMs);
    }

    private void DropIdle(UpstreamSocket upstream) => _idle.Drop(upstream, 0);

    /// <summary>A new VM connection, connecting; registered with this loop.</summary>
    internal UpstreamSocket Connect(UpstreamEndpoint endpoint)
    {
        var fd = LinuxSockets.StartConnect(endpoint.ToEndPoint(), out bool pending);
        var upstream = new UpstreamSocket(fd, endpoint) { Connecting = pending };
        Watch(fd, upstream);
        return upstream;
    }

    internal void CloseUpstream(UpstreamSocket upstream)
    {
        if (upstream.Fd.IsClosed)
            return;
        Unwatch(upstream.Fd, removeFromEpoll: false);
        upstream.Fd.Dispose();
        upstream.Owner = null;
    }

    /// <summary>
    /// Closes the listening sockets once, whoever asks first (the loop as it stops, or Dispose). A descriptor closed
    /// twice is a bug with someone else's name: by the second close the number may be another socket's or pipe's.
    /// </summary>
    private void CloseListeners()
    {
        lock (_listeners)
        {
            foreach (var (fd, _) in _listeners)
            {
                Unwatch(fd, removeFromEpoll: true);
                fd.Dispose();
            }
            _listeners.Clear();
        }
    }

    /// <summary>
    /// Frees the loop's descriptors once its thread has ended (or never started). A thread still running — its
    /// Stop grace and join expired — keeps them: closing an epoll or eventfd it still waits on could hand the
    /// numbers to someone else under its feet.
    /// </summary>
    public void Dispose()
    {
        if (_thread.IsAlive || Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        CloseListeners();
        _wake.Dispose();
        _epoll.Dispose();
    }

    private int _disposed;
}

/// <summary>A keep-alive connection to a VM, owned by one loop; <see cref="Owner"/> is the client connection using it, or null when idle.</summary>
internal sealed class UpstreamSocket(SafeDescriptor fd, UpstreamEndpoint endpoint) : IIdleConnection
{
    /// <summary>The socket; closed (once) by <see cref="EventLoop.CloseUpstream"/>.</summary>
    public SafeDescriptor Fd { get; } = fd;
    public UpstreamEndpoint Endpoint { get; } = endpoint;
    public LaneConnection? Owner { get; set; }
    public bool Connecting { get; set; }

    /// <summary>
    /// A readiness event came since the last receive said EAGAIN: with edge-triggered epoll a receive is only
    /// worth a system call then (nginx's <c>ready</c> flag).
    /// </summary>
    public bool Readable { get; set; }

    /// <summary>The VM closed or the connection failed (sticky): every read is tried until it reports so.</summary>
    public bool HungUp { get; set; }
    public long IdleSince { get; set; }
    public int Uses { get; set; }
    public bool IsClosed => Fd.IsClosed;
}
