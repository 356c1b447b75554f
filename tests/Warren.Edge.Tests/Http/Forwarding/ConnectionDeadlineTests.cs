using System.Net;
using System.Text;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Warren.Edge.Http;
using Warren.Edge.Http.FrontDoor;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>The front door with Kestrel's keep-alive and request-headers timeouts cut to two seconds.</summary>
public sealed class ShortTimeoutsFrontDoorFixture : FrontDoorFixture
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(2);

    protected override void ConfigureKestrel(KestrelServerOptions options)
    {
        options.Limits.KeepAliveTimeout = Timeout;
        options.Limits.RequestHeadersTimeout = Timeout;
    }
}

public sealed class ConnectionDeadlineTests(ShortTimeoutsFrontDoorFixture fixture)
    : ConnectionDeadlineTestsBase(fixture), IClassFixture<ShortTimeoutsFrontDoorFixture>;

/// <summary>
/// Below Kestrel's HTTP layer the connection-level forwarder enforces Kestrel's own keep-alive and request-headers
/// timeouts (on Kestrel's per-connection heartbeat): an idle connection and a head that trickles in a byte at a
/// time (slowloris) are both closed, the latter although every byte arrives well within the timeout.
/// </summary>
public abstract class ConnectionDeadlineTestsBase(FrontDoorFixture fixture) : IAsyncLifetime
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly List<RawUpstream> _upstreams = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var upstream in _upstreams)
            await upstream.DisposeAsync();
    }

    private string PublicSite()
    {
        var upstream = new RawUpstream(async c =>
        {
            while (await c.ReadRequestAsync() is { } request)
                await c.WriteAsync($"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }, Bound);
        _upstreams.Add(upstream);
        string name = "deadline" + _upstreams.Count;
        fixture.Sites.Sites[name] = new WebSite("vm-" + name, name, People.Owner.UserId, upstream.Port, IsPublic: true);
        fixture.Locator.Addresses["vm-" + name] = IPAddress.Loopback;
        return name;
    }

    private long LaneCount => ((HttpFrontDoor)fixture.Services.GetService(typeof(HttpFrontDoor))!).ConnectionLevelRequests;

    [Fact]
    public async Task IdleConnection_AfterALaneRequest_IsClosedAfterTheKeepAliveTimeout()
    {
        string site = PublicSite();
        long before = LaneCount;
        await using var client = await LaneClient.ConnectAsync(fixture.HttpsPort, $"{site}.{FrontDoorFixture.Domain}", Bound);
        await client.WriteAsync($"GET / HTTP/1.1\r\nHost: {site}.{FrontDoorFixture.Domain}:{fixture.HttpsPort}\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(before + 1, LaneCount);
        // Closed by the server: well inside the bound, which is many times the two-second timeout.
        Assert.True(await client.ClosedWithinAsync(Bound), "an idle keep-alive connection stayed open");
    }

    [Fact]
    public async Task HeadTricklingInByteByByte_IsClosedAfterTheRequestHeadersTimeout()
    {
        string site = PublicSite();
        await using var client = await LaneClient.ConnectAsync(fixture.HttpsPort, $"{site}.{FrontDoorFixture.Domain}", Bound);
        await client.WriteAsync("GET / HTTP/1.1\r\nX-Slow: ");
        // A byte every 300 ms: each arrives long before the two-second timeout, the head never ends. Bounded: 100
        // bytes (30 s) at most; the server must have closed long before.
        bool closed = false;
        for (int i = 0; i < 100 && !closed; i++)
        {
            await Task.Delay(300);
            try
            {
                await client.WriteAsync(Encoding.ASCII.GetBytes("a"));
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException)
            {
                closed = true;
            }
        }
        Assert.True(closed || await client.ClosedWithinAsync(TimeSpan.FromSeconds(1)), "a head trickling in a byte at a time kept the connection open");
    }
}
