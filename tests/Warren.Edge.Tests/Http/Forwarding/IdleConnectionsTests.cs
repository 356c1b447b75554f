using System.Net;
using Warren.Edge.Http.Forwarding;
using Xunit;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>The one idle-connection pool both engines use (the event loops and the full path), as a unit.</summary>
public class IdleConnectionsTests
{
    private static readonly UpstreamEndpoint Vm = new(IPAddress.Parse("172.17.0.2"), 80);
    private static readonly UpstreamEndpoint OtherVm = new(IPAddress.Parse("172.17.0.3"), 80);

    private sealed class Connection(UpstreamEndpoint endpoint) : IIdleConnection
    {
        public UpstreamEndpoint Endpoint { get; } = endpoint;
        public long IdleSince { get; set; }
        public bool IsClosed { get; set; }
    }

    private static IdleConnections<Connection> NewPool() => new(static c => c.IsClosed = true);

    [Fact]
    public void TheMostRecentlyReturnedComesBackFirst_PerEndpointAndShard()
    {
        var pool = NewPool();
        var older = new Connection(Vm);
        var newer = new Connection(Vm);
        var other = new Connection(OtherVm);
        pool.Return(older, 0, 1);
        pool.Return(newer, 0, 2);
        pool.Return(other, 0, 3);

        Assert.Null(pool.TryTake(Vm, shard: 1, nowMs: 4));
        Assert.Same(newer, pool.TryTake(Vm, 0, 4));
        Assert.Same(older, pool.TryTake(Vm, 0, 4));
        Assert.Null(pool.TryTake(Vm, 0, 4));
        Assert.Equal(1, pool.Count);
    }

    [Fact]
    public void AConnectionIdleTooLongIsClosedOnTheWayOut()
    {
        var pool = NewPool();
        var stale = new Connection(Vm);
        pool.Return(stale, 0, 0);

        Assert.Null(pool.TryTake(Vm, 0, (long)IdleConnections<Connection>.IdleTimeout.TotalMilliseconds));
        Assert.True(stale.IsClosed);
        Assert.Equal(0, pool.Count);
    }

    [Fact]
    public void DropTakesOutOnlyThatConnection_KeepingTheOthersInOrder()
    {
        var pool = NewPool();
        var a = new Connection(Vm);
        var b = new Connection(Vm);
        var c = new Connection(Vm);
        pool.Return(a, 0, 1);
        pool.Return(b, 0, 2);
        pool.Return(c, 0, 3);

        pool.Drop(b, 0);
        pool.Drop(b, 0); // not there any more: nothing happens

        Assert.True(b.IsClosed);
        Assert.Equal(2, pool.Count);
        Assert.Same(c, pool.TryTake(Vm, 0, 4));
        Assert.Same(a, pool.TryTake(Vm, 0, 4));
    }

    [Fact]
    public void AFullEndpointClosesWhatIsReturned()
    {
        var pool = NewPool();
        var kept = Enumerable.Range(0, IdleConnections<Connection>.MaxIdlePerEndpoint).Select(_ => new Connection(Vm)).ToList();
        foreach (var connection in kept)
            pool.Return(connection, 0, 1);
        var extra = new Connection(Vm);

        pool.Return(extra, 0, 1);

        Assert.True(extra.IsClosed);
        Assert.Equal(IdleConnections<Connection>.MaxIdlePerEndpoint, pool.Count);
        Assert.DoesNotContain(kept, c => c.IsClosed);
    }

    [Fact]
    public void SweepAndClearCloseAndForget()
    {
        var pool = NewPool();
        var stale = new Connection(Vm);
        var fresh = new Connection(OtherVm);
        pool.Return(stale, 0, 0);
        pool.Return(fresh, 3, 100_000);

        pool.Sweep((long)IdleConnections<Connection>.IdleTimeout.TotalMilliseconds + 1);
        Assert.True(stale.IsClosed);
        Assert.False(fresh.IsClosed);
        Assert.Equal(1, pool.Count);

        pool.Clear();
        Assert.True(fresh.IsClosed);
        Assert.Equal(0, pool.Count);
    }
}
