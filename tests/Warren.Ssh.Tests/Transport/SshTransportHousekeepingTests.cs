using Warren.Ssh.Crypto;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Ssh.Tests.Transport;

/// <summary>A TimeProvider whose clock moves only when the test says so; due timers fire from <see cref="Advance"/>.</summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private readonly object _gate = new();
    private readonly List<ManualTimer> _timers = [];
    private long _ticks;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    public override long GetTimestamp() => Interlocked.Read(ref _ticks);
    public override DateTimeOffset GetUtcNow() => new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero).AddTicks(GetTimestamp());

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var t = new ManualTimer(this, callback, state);
        t.Change(dueTime, period);
        lock (_gate) _timers.Add(t);
        return t;
    }

    public void Advance(TimeSpan by)
    {
        Interlocked.Add(ref _ticks, by.Ticks);
        List<ManualTimer> due;
        lock (_gate) due = [.. _timers];
        foreach (var t in due) t.FireIfDue(GetTimestamp());
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        private long _dueTicks = long.MaxValue;
        private long _periodTicks;

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            _dueTicks = dueTime == Timeout.InfiniteTimeSpan ? long.MaxValue : owner.GetTimestamp() + dueTime.Ticks;
            _periodTicks = period == Timeout.InfiniteTimeSpan ? 0 : period.Ticks;
            return true;
        }

        public void FireIfDue(long now)
        {
            // Bounded: a timer fires at most 1000 times per Advance.
            for (int i = 0; i < 1000 && _dueTicks <= now; i++)
            {
                _dueTicks = _periodTicks > 0 ? _dueTicks + _periodTicks : long.MaxValue;
                callback(state);
            }
        }

        public void Dispose() { _dueTicks = long.MaxValue; lock (owner._gate) owner._timers.Remove(this); }
        public ValueTask DisposeAsync() { Dispose(); return ValueTask.CompletedTask; }
    }
}

public class SshTransportHousekeepingTests
{
    private static async Task WaitUntil(Func<bool> condition, string what)
    {
        for (int i = 0; i < 6000 && !condition(); i++) await Task.Delay(10);
        Assert.True(condition(), what);
    }

    /// <summary>RFC 4253 §9: rekey after an hour (here: the configured interval) on the injected clock.</summary>
    [Fact]
    public async Task Rekey_AfterInterval_OnInjectedClock()
    {
        var clock = new ManualTimeProvider();
        var (server, client) = await TransportPair.CreateAsync(TransportPair.Server(),
            TransportPair.Client(o => { o.TimeProvider = clock; o.RekeyInterval = TimeSpan.FromMinutes(10); }));
        await using var _s = server;
        await using var _c = client;
        clock.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(1, client.KeyExchangeCount);
        clock.Advance(TimeSpan.FromMinutes(6));
        await SshTransportPairTests.WaitForKexCountAsync(client, 2);
        await SshTransportPairTests.WaitForKexCountAsync(server, 2);
    }

    /// <summary>OpenSSH PROTOCOL §1.9: PING is answered with PONG by the transport, not passed up.</summary>
    [Fact]
    public async Task Ping_IsAnsweredWithPong()
    {
        var (server, client) = await TransportPair.CreateAsync(TransportPair.Server(), TransportPair.Client());
        await using var _s = server;
        await using var _c = client;
        await client.SendAsync(new SshWriter().WriteByte(192).WriteString("hello").ToArray());
        await WaitUntil(() => client.PongsReceived == 1, "PONG received");
        await client.SendAsync(new byte[] { 94, 7 });
        using var p = await server.ReceiveAsync().AsTask().WaitAsync(TransportPair.Timeout);
        Assert.Equal(new byte[] { 94, 7 }, p.Payload.ToArray());
    }

    /// <summary>RFC 4253 §11.4: an unknown transport message number gets SSH_MSG_UNIMPLEMENTED and is not passed up.</summary>
    [Fact]
    public async Task UnknownTransportMessage_GetsUnimplemented()
    {
        var (server, client) = await TransportPair.CreateAsync(TransportPair.Server(), TransportPair.Client());
        await using var _s = server;
        await using var _c = client;
        await client.SendAsync(new byte[] { 15, 1, 2 });
        await client.SendAsync(new byte[] { 94, 8 });
        using var p = await server.ReceiveAsync().AsTask().WaitAsync(TransportPair.Timeout);
        Assert.Equal(new byte[] { 94, 8 }, p.Payload.ToArray());
        await WaitUntil(() => client.UnimplementedReceived == 1, "UNIMPLEMENTED received");
    }

    /// <summary>With keepalive on and the peer advertising ping@openssh.com, idle ticks send PINGs that the peer answers.</summary>
    [Fact]
    public async Task KeepAlive_SendsPing_WhenIdle()
    {
        var clock = new ManualTimeProvider();
        var (server, client) = await TransportPair.CreateAsync(TransportPair.Server(),
            TransportPair.Client(o => { o.TimeProvider = clock; o.KeepAliveInterval = TimeSpan.FromSeconds(30); }));
        await using var _s = server;
        await using var _c = client;
        // EXT_INFO (with ping@openssh.com) arrives right after NEWKEYS; a round trip makes sure it was processed.
        await server.SendAsync(new byte[] { 94 });
        using (await client.ReceiveAsync().AsTask().WaitAsync(TransportPair.Timeout)) { }
        clock.Advance(TimeSpan.FromSeconds(31)); // resets the idle counter (a packet arrived)
        clock.Advance(TimeSpan.FromSeconds(30)); // idle: PING
        await WaitUntil(() => client.PongsReceived >= 1, "keepalive PONG");
        Assert.Null(client.CloseReason);
    }
}
