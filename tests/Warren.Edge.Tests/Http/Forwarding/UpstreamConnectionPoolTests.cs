using System.Net;
using System.Net.Sockets;
using Warren.Edge.Http.Forwarding;
using Xunit;

namespace Warren.Edge.Tests.Http.Forwarding;

public class UpstreamConnectionPoolTests
{
    private static readonly UpstreamEndpoint Vm = new(IPAddress.Parse("172.17.0.2"), 80);

    private static UpstreamConnection NewConnection(UpstreamEndpoint endpoint, int engineThread) =>
        new(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp), endpoint) { EngineThread = engineThread };

    [Fact]
    public void ARequestTakesItsOwnEngineThreadsConnectionFirst_AnotherThreadsOnlyWhenItHasNone()
    {
        using var pool = new UpstreamConnectionPool(TimeSpan.FromSeconds(5));
        var onFive = NewConnection(Vm, 5);
        var onSeven = NewConnection(Vm, 7);
        pool.Return(onFive);
        pool.Return(onSeven);

        Assert.Same(onFive, pool.TryTake(Vm, 5));
        // Thread 5 has none left: thread 7's is better than a new connection (behind the native HTTPS transport a
        // request does not always run on the thread that polls its VM connections).
        Assert.Same(onSeven, pool.TryTake(Vm, 5));
        Assert.Null(pool.TryTake(Vm, 5));
        Assert.Equal(0, pool.IdleCount);
    }

    [Fact]
    public void ARequestOnTheThreadPool_TakesAnEngineThreadsConnection()
    {
        using var pool = new UpstreamConnectionPool(TimeSpan.FromSeconds(5));
        var onFive = NewConnection(Vm, 5);
        pool.Return(onFive);

        Assert.Same(onFive, pool.TryTake(Vm, 0));
        Assert.Null(pool.TryTake(Vm, 0));
    }

    [Fact]
    public void AConnectionWhoseThreadIsUnknown_ServesAnyThread()
    {
        using var pool = new UpstreamConnectionPool(TimeSpan.FromSeconds(5));
        var unknown = NewConnection(Vm, 0);
        pool.Return(unknown);

        Assert.Same(unknown, pool.TryTake(Vm, 7));
        Assert.Null(pool.TryTake(Vm, 0));
    }

    [Fact]
    public void MostRecentlyReturnedFirst_AndOtherEndpointsApart()
    {
        using var pool = new UpstreamConnectionPool(TimeSpan.FromSeconds(5));
        var other = new UpstreamEndpoint(IPAddress.Parse("172.17.0.3"), 80);
        var first = NewConnection(Vm, 0);
        var second = NewConnection(Vm, 0);
        pool.Return(first);
        pool.Return(second);
        pool.Return(NewConnection(other, 0));

        Assert.Same(second, pool.TryTake(Vm));
        Assert.Same(first, pool.TryTake(Vm));
        Assert.Null(pool.TryTake(Vm));
        Assert.Equal(1, pool.IdleCount);
    }

    [Fact]
    public void ClosedConnectionsAreNeitherPooledNorHandedOut()
    {
        using var pool = new UpstreamConnectionPool(TimeSpan.FromSeconds(5));
        var closed = NewConnection(Vm, 0);
        closed.Dispose();
        pool.Return(closed);
        Assert.Equal(0, pool.IdleCount);

        var closedWhileIdle = NewConnection(Vm, 0);
        pool.Return(closedWhileIdle);
        closedWhileIdle.Dispose();
        Assert.Null(pool.TryTake(Vm));
        Assert.Equal(0, pool.IdleCount);
    }

    [Fact]
    public void TheSweepClosesStaleConnectionsAndKeepsFreshOnes()
    {
        using var pool = new UpstreamConnectionPool(TimeSpan.FromSeconds(5));
        var stale = NewConnection(Vm, 0);
        var fresh = NewConnection(Vm, 0);
        pool.Return(stale);
        pool.Return(fresh);
        stale.IdleSince -= (long)UpstreamConnectionPool.IdleTimeout.TotalMilliseconds + 1;

        pool.Sweep();

        Assert.True(stale.IsDisposed);
        Assert.False(fresh.IsDisposed);
        Assert.Equal(1, pool.IdleCount);
        Assert.Same(fresh, pool.TryTake(Vm));
    }
}
