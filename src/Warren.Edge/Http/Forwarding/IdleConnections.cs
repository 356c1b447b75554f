using System.Collections.Concurrent;

namespace Warren.Edge.Http.Forwarding;

/// <summary>A keep-alive connection to a VM that <see cref="IdleConnections{T}"/> can hold between requests.</summary>
internal interface IIdleConnection
{
    UpstreamEndpoint Endpoint { get; }

    /// <summary>When it was last put back (the pool owner's clock, in milliseconds).</summary>
    long IdleSince { get; set; }

    /// <summary>Closed already (by a deadline, a failure, or its owner): never handed out again.</summary>
    bool IsClosed { get; }
}

/// <summary>
/// The one pool of idle keep-alive HTTP/1.1 connections to VMs, for both engines: the full path's sockets
/// (<see cref="UpstreamConnectionPool"/>, one shard per socket engine thread) and each native event loop's
/// descriptors (<c>EventLoop</c>, one pool per loop). Most recently used first per endpoint and shard; bounded per
/// endpoint and shard (<see cref="MaxIdlePerEndpoint"/>) and in total (<see cref="MaxIdleTotal"/>); connections idle
/// longer than <see cref="IdleTimeout"/> are closed by <see cref="Sweep"/> and on the way out.
/// </summary>
/// <remarks>
/// The two engines keep separate instances because a connection belongs to the engine that polls it (an epoll
/// set, or .NET's socket engine): handing one to the other would move every later event to another thread.
/// Closing is the owner's (<c>close</c>): a loop's descriptor is also unregistered from its epoll set.
/// </remarks>
internal sealed class IdleConnections<T>(Action<T> close) where T : class, IIdleConnection
{
    /// <summary>Shorter than common server keep-alive timeouts would be better, but Node's is 5 s; both paths retry a reused connection that turns out closed.</summary>
    public static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(30);

    public const int MaxIdlePerEndpoint = 256;
    public const int MaxIdleTotal = 8192;

    private static readonly long s_idleTimeoutMs = (long)IdleTimeout.TotalMilliseconds;

    /// <summary>The idle connections of one endpoint and shard; retired when the sweep drops an empty one.</summary>
    private sealed class IdleStack
    {
        public readonly Stack<T> Items = new();
        public bool Retired;
    }

    private readonly ConcurrentDictionary<(UpstreamEndpoint Endpoint, int Shard), IdleStack> _idle = new();
    private int _count;

    /// <summary>Idle connections held now.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>The most recently used connection to <paramref name="endpoint"/> in <paramref name="shard"/> not idle too long, or null.</summary>
    public T? TryTake(UpstreamEndpoint endpoint, int shard, long nowMs)
    {
        if (!_idle.TryGetValue((endpoint, shard), out var stack))
            return null;
        lock (stack)
        {
            while (stack.Items.TryPop(out var connection))
            {
                Interlocked.Decrement(ref _count);
                if (!connection.IsClosed && nowMs - connection.IdleSince < s_idleTimeoutMs)
                    return connection;
                close(connection);
            }
        }
        return null;
    }

    /// <summary>Keeps a connection that ended a response cleanly; closes it when the pool is full.</summary>
    public void Return(T connection, int shard, long nowMs)
    {
        if (connection.IsClosed)
            return;
        if (Interlocked.Increment(ref _count) > MaxIdleTotal)
        {
            Interlocked.Decrement(ref _count);
            close(connection);
            return;
        }
        connection.IdleSince = nowMs;
        while (true)
        {
            var stack = _idle.GetOrAdd((connection.Endpoint, shard), static _ => new IdleStack());
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
        Interlocked.Decrement(ref _count);
        close(connection);
    }

    /// <summary>Takes one particular idle connection out and closes it (it spoke or closed while idle: not reusable).</summary>
    public void Drop(T connection, int shard)
    {
        if (!_idle.TryGetValue((connection.Endpoint, shard), out var stack))
            return;
        lock (stack)
        {
            if (!stack.Items.Contains(connection))
                return;
            var rest = stack.Items.ToArray(); // newest first
            stack.Items.Clear();
            for (int i = rest.Length - 1; i >= 0; i--)
            {
                if (!ReferenceEquals(rest[i], connection))
                    stack.Items.Push(rest[i]);
            }
            Interlocked.Decrement(ref _count);
        }
        close(connection);
    }

    /// <summary>Closes connections idle longer than <see cref="IdleTimeout"/> and forgets endpoints left without any.</summary>
    public void Sweep(long nowMs)
    {
        foreach (var (key, stack) in _idle)
        {
            lock (stack)
            {
                if (HasStale(stack.Items, nowMs))
                {
                    // Newest on top: keep the fresh ones in their order, close the rest.
                    var all = stack.Items.ToArray();
                    stack.Items.Clear();
                    for (int i = all.Length - 1; i >= 0; i--)
                    {
                        var c = all[i];
                        if (!c.IsClosed && nowMs - c.IdleSince < s_idleTimeoutMs)
                            stack.Items.Push(c);
                        else
                        {
                            close(c);
                            Interlocked.Decrement(ref _count);
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

    /// <summary>Any connection to close in <paramref name="items"/> (walked without a copy: most sweeps find none).</summary>
    private static bool HasStale(Stack<T> items, long nowMs)
    {
        foreach (var c in items)
        {
            if (c.IsClosed || nowMs - c.IdleSince >= s_idleTimeoutMs)
                return true;
        }
        return false;
    }

    /// <summary>Closes every idle connection (the owner is stopping).</summary>
    public void Clear()
    {
        foreach (var (_, stack) in _idle)
        {
            lock (stack)
            {
                stack.Retired = true;
                while (stack.Items.TryPop(out var c))
                {
                    close(c);
                    Interlocked.Decrement(ref _count);
                }
            }
        }
        _idle.Clear();
    }
}
