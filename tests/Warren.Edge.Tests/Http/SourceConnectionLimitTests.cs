using System.Net;
using System.Text;
using Warren.Edge.Http;
using Warren.Edge.Http.Forwarding;
using Warren.Edge.Tests.Support;
using Warren.Ssh.Server;

namespace Warren.Edge.Tests.Http;

/// <summary>The per-source connection table and its refusal log, without sockets.</summary>
public sealed class SourceConnectionLimitTests
{
    private static SourceNetwork Source(string address) => SourceNetwork.Of(IPAddress.Parse(address));

    [Fact]
    public void Cap_IsPerSource_AnIpv6Slash64IsOneSource_AndLeavingFreesASlot()
    {
        var log = new CapturingLogger();
        var limit = new SourceConnectionLimit(2, log);
        Assert.True(limit.TryEnter(Source("2001:db8:0:1::1")));
        Assert.True(limit.TryEnter(Source("2001:db8:0:1::2")));
        Assert.False(limit.TryEnter(Source("2001:db8:0:1:ffff::3"))); // the same /64
        Assert.True(limit.TryEnter(Source("2001:db8:0:2::1")));       // the next /64
        Assert.True(limit.TryEnter(Source("192.0.2.1")));
        Assert.True(limit.TryEnter(Source("::ffff:192.0.2.1")));       // IPv4-mapped counts as its IPv4 address
        Assert.False(limit.TryEnter(Source("192.0.2.1")));
        limit.Leave(Source("192.0.2.1"));
        Assert.Equal(1, limit.OpenConnections(Source("192.0.2.1")));
        Assert.True(limit.TryEnter(Source("192.0.2.1")));
        limit.Leave(Source("203.0.113.1")); // never entered: ignored
        Assert.Equal(0, limit.OpenConnections(Source("203.0.113.1")));
    }

    [Fact]
    public void Refusals_AreLoggedOncePerSourcePerInterval()
    {
        var log = new CapturingLogger();
        var limit = new SourceConnectionLimit(1, log);
        Assert.True(limit.TryEnter(Source("192.0.2.1")));
        Assert.True(limit.TryEnter(Source("192.0.2.2")));
        for (int i = 0; i < 100; i++)
        {
            Assert.False(limit.TryEnter(Source("192.0.2.1")));
            Assert.False(limit.TryEnter(Source("192.0.2.2")));
        }
        Assert.Equal(2, log.Entries.Count);
        Assert.Contains(log.Entries, e => e.Message.Contains("192.0.2.1", StringComparison.Ordinal));
    }

    [Fact]
    public void ConnectionOptions_OutOfRange_AreConfigurationErrors()
    {
        Assert.Contains(new HttpFrontDoorOptions { MaxConnectionsPerSource = -1 }.Validate(), e => e.Contains("MaxConnectionsPerSource", StringComparison.Ordinal));
        foreach (var bad in new[] { TimeSpan.Zero, TimeSpan.FromMilliseconds(500), TimeSpan.FromMinutes(5) })
            Assert.Contains(new HttpFrontDoorOptions { FirstRequestTimeout = bad }.Validate(), e => e.Contains("FirstRequestTimeoutSeconds", StringComparison.Ordinal));
        Assert.Empty(new HttpFrontDoorOptions { MaxConnectionsPerSource = 0, FirstRequestTimeout = TimeSpan.FromSeconds(130) }.Validate());
    }

    [Fact]
    public void Off_CountsNothing()
    {
        var limit = new SourceConnectionLimit(0, new CapturingLogger());
        for (int i = 0; i < 1000; i++)
            Assert.True(limit.TryEnter(Source("192.0.2.1")));
        Assert.Equal(0, limit.OpenConnections(Source("192.0.2.1")));
    }

    /// <summary>The lane's per-request header work allocates nothing (it runs for every proxied request).</summary>
    [Fact]
    public void LaneHeaderRules_AllocateNothingPerRequest()
    {
        var head = Encoding.ASCII.GetBytes("GET /p HTTP/1.1\r\nHost: pub.box.localhost\r\nX_ExeDev_Email: boss@example.com\r\n"
            + "X-ExeDev-UserID: u\r\nForwarded: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n"
            + "X-A-Rather-Long-Custom-Header-Name-Beyond-Thirty-Two: 1\r\n\r\n");
        var parsed = new Http1RequestHead();
        using var upstream = new ByteBuffer(4096, 64 * 1024);
        void Once()
        {
            Assert.True(Http1LaneRules.Inspect(head, parsed, out var request));
            Assert.True(Http1LaneRules.WriteUpstreamHead(head, parsed, head.AsSpan(request.HostStart, request.HostLength), "127.0.0.1"u8, upstream));
        }
        Once(); // warm: first calls may allocate once (static data, JIT)
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
            Once();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        string sent = Encoding.ASCII.GetString(upstream.WrittenSpan);
        Assert.DoesNotContain("boss", sent);
        Assert.DoesNotContain("Forwarded:", sent);
        Assert.DoesNotContain("X-Real-IP", sent);
        Assert.Contains("X-A-Rather-Long-Custom-Header-Name-Beyond-Thirty-Two: 1", sent);
    }
}
