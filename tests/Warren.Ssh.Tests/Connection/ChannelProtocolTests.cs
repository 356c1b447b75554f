using System.Text;
using Warren.Ssh.Client;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Tests.Server;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Ssh.Tests.Connection;

/// <summary>The connection protocol (RFC 4254) driven by a hand-written client over the in-memory pair.</summary>
public sealed class ChannelProtocolTests
{
    private static SshServerOptions Limits(SshServerOptions o, uint window = SshConnectionLimits.DefaultInitialWindowSize, uint maxPacket = SshConnectionLimits.DefaultMaxPacketSize, int maxChannels = SshConnectionLimits.DefaultMaxChannels)
        => new() { HostKeys = o.HostKeys, ConnectionLimits = new SshConnectionLimits { InitialWindowSize = window, MaxPacketSize = maxPacket, MaxChannels = maxChannels } };

    /// <summary>An app that accepts every session and hands its channel out.</summary>
    private static (TestServerApplication App, System.Threading.Channels.Channel<SshChannel> Channels) AcceptingApp()
    {
        var channels = System.Threading.Channels.Channel.CreateUnbounded<SshChannel>();
        var app = new TestServerApplication
        {
            Run = async conn =>
            {
                await foreach (var open in conn.AcceptChannelsAsync())
                    channels.Writer.TryWrite(await open.AcceptAsync());
            },
        };
        return (app, channels);
    }

    private static async Task AssertDisconnectedAsync(ServerHarness h, SshDisconnectReason reason)
    {
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(reason, h.Client.ReceivedDisconnect?.Reason);
    }

    [Fact]
    public async Task Data_LargerThanMaxPacket_IsProtocolError()
    {
        var (app, _) = AcceptingApp();
        await using var h = new ServerHarness(app, o => Limits(o, maxPacket: 512));
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString(new byte[512 + 1]));
        await AssertDisconnectedAsync(h, SshDisconnectReason.ProtocolError);
    }

    [Fact]
    public async Task Data_AtMaxPacket_IsAccepted()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app, o => Limits(o, maxPacket: 512));
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString(new byte[512]));
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        var buf = new byte[1024];
        int total = 0;
        while (total < 512) total += await ch.ReadAsync(buf).AsTask().WaitAsync(Msg.Timeout);
        Assert.Equal(512, total);
    }

    [Fact]
    public async Task ZeroByteRead_WaitsForData_TakesNone_ThenOneReadTakesEveryPacket_AndAtEofReturnsZero()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app, o => Limits(o, maxPacket: 512));
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);

        // Nothing sent yet: the zero-byte read is still waiting.
        var wait = ch.ReadAsync(Memory<byte>.Empty).AsTask();
        await Task.Delay(100);
        Assert.False(wait.IsCompleted);
        for (byte i = 1; i <= 3; i++)
        {
            byte fill = i;
            await h.SendAsync(94, w => w.WriteUInt32(id).WriteString(Enumerable.Repeat(fill, 500).ToArray()));
        }
        Assert.Equal(0, await wait.WaitAsync(Msg.Timeout));

        // It took nothing: the bytes of all three packets come out of reads in order, without loss.
        var got = new List<byte>();
        var buf = new byte[4096];
        while (got.Count < 1500) got.AddRange(buf.AsSpan(0, await ch.ReadAsync(buf).AsTask().WaitAsync(Msg.Timeout)).ToArray());
        Assert.Equal(Enumerable.Repeat((byte)1, 500).Concat(Enumerable.Repeat((byte)2, 500)).Concat(Enumerable.Repeat((byte)3, 500)), got);

        // At EOF both the zero-byte read and a read return 0 at once.
        await h.SendAsync(96, w => w.WriteUInt32(id));
        Assert.Equal(0, await ch.ReadAsync(Memory<byte>.Empty).AsTask().WaitAsync(Msg.Timeout));
        Assert.Equal(0, await ch.ReadAsync(buf).AsTask().WaitAsync(Msg.Timeout));
    }

    [Fact]
    public async Task Data_BeyondWindow_IsProtocolError()
    {
        var (app, _) = AcceptingApp();
        await using var h = new ServerHarness(app, o => Limits(o, window: 1000, maxPacket: 600));
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        // Nobody reads, so no credit comes back: 600 + 401 exceeds the 1000-byte window.
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString(new byte[600]));
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString(new byte[401]));
        await AssertDisconnectedAsync(h, SshDisconnectReason.ProtocolError);
    }

    [Fact]
    public async Task WindowAdjust_IsSentOnceHalfTheWindowIsConsumed()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app, o => Limits(o, window: 1000, maxPacket: 600));
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString(new byte[500]));
        var buf = new byte[1000];
        int total = 0;
        while (total < 500) total += await ch.ReadAsync(buf).AsTask().WaitAsync(Msg.Timeout);
        var adjust = await Msg.ExpectAsync(h.Client, 93);
        var r = new SshReader(adjust.AsSpan(1));
        Assert.True(r.TryReadUInt32(out _));
        Assert.True(r.TryReadUInt32(out var added));
        Assert.Equal(500u, added);
        // The credit is real: another full window is now allowed.
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString(new byte[500]));
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString(new byte[500]));
        total = 0;
        while (total < 1000) total += await ch.ReadAsync(buf).AsTask().WaitAsync(Msg.Timeout);
    }

    [Fact]
    public async Task WindowAdjust_Overflow_IsProtocolError()
    {
        var (app, _) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync(window: uint.MaxValue - 10);
        await h.SendAsync(93, w => w.WriteUInt32(id).WriteUInt32(11));
        await AssertDisconnectedAsync(h, SshDisconnectReason.ProtocolError);
    }

    [Fact]
    public async Task WindowAdjust_ToExactlyMax_IsAllowed()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync(window: uint.MaxValue - 10);
        await h.SendAsync(93, w => w.WriteUInt32(id).WriteUInt32(10));
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        await ch.WriteAsync(new byte[3]).AsTask().WaitAsync(Msg.Timeout);
        Assert.Equal(94, (await Msg.ExpectAsync(h.Client, 94))[0]);
    }

    [Fact]
    public async Task Writes_WaitForPeerWindow_AndSplitAtPeerMaxPacket()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync(window: 100, maxPacket: 40);
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        var payload = Enumerable.Range(0, 250).Select(i => (byte)i).ToArray();
        var write = ch.WriteAsync(payload).AsTask();
        var received = new List<byte>();
        while (received.Count < 100)
        {
            var m = await Msg.ExpectAsync(h.Client, 94);
            var r = new SshReader(m.AsSpan(1));
            Assert.True(r.TryReadUInt32(out _));
            Assert.True(r.TryReadString(out var data));
            Assert.True(data.Length <= 40);
            received.AddRange(data.ToArray());
        }
        Assert.Equal(100, received.Count);
        Assert.False(write.IsCompleted);
        await h.SendAsync(93, w => w.WriteUInt32(id).WriteUInt32(150));
        while (received.Count < 250)
        {
            var m = await Msg.ExpectAsync(h.Client, 94);
            var r = new SshReader(m.AsSpan(1));
            Assert.True(r.TryReadUInt32(out _));
            Assert.True(r.TryReadString(out var data));
            Assert.True(data.Length <= 40);
            received.AddRange(data.ToArray());
        }
        await write.WaitAsync(Msg.Timeout);
        Assert.Equal(payload, received);
    }

    [Fact]
    public async Task ChannelLimit_ExtraOpen_GetsResourceShortage_AndFreedSlotsAreReused()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app, o => Limits(o, maxChannels: 2));
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var a = await h.OpenSessionRawAsync(senderId: 1);
        await h.OpenSessionRawAsync(senderId: 2);
        await h.SendAsync(90, w => w.WriteString("session").WriteUInt32(3).WriteUInt32(1000).WriteUInt32(1000));
        var failure = await Msg.ExpectAsync(h.Client, 92);
        var r = new SshReader(failure.AsSpan(1));
        Assert.True(r.TryReadUInt32(out var recipient));
        Assert.Equal(3u, recipient);
        Assert.True(r.TryReadUInt32(out var reason));
        Assert.Equal((uint)SshChannelOpenFailureReason.ResourceShortage, reason);
        // Close channel a both ways; its slot must become free again.
        await h.SendAsync(97, w => w.WriteUInt32(a));
        await Msg.ExpectAsync(h.Client, 97);
        await h.OpenSessionRawAsync(senderId: 4);
    }

    [Fact]
    public async Task UnknownChannelType_IsRefused()
    {
        var (app, _) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        await h.SendAsync(90, w => w.WriteString("x11").WriteUInt32(7).WriteUInt32(1000).WriteUInt32(1000));
        var failure = await Msg.ExpectAsync(h.Client, 92);
        var r = new SshReader(failure.AsSpan(1));
        Assert.True(r.TryReadUInt32(out _));
        Assert.True(r.TryReadUInt32(out var reason));
        Assert.Equal((uint)SshChannelOpenFailureReason.UnknownChannelType, reason);
    }

    [Fact]
    public async Task ExitStatus_PrecedesEof_PrecedesClose()
    {
        // RFC 4254 §6.10; tailscale issue #18256 shows clients lose the status otherwise.
        var app = new TestServerApplication
        {
            Run = TestServerApplication.ServeSessions(async (ch, exec) =>
            {
                await ch.WriteAsync(Encoding.UTF8.GetBytes("out"));
                await ch.ExitAsync(3);
            }),
        };
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        await h.SendAsync(98, w => w.WriteUInt32(id).WriteString("exec").WriteBoolean(true).WriteString("run"));
        var order = new List<string>();
        for (int i = 0; i < 10 && !order.Contains("close"); i++)
        {
            var m = await h.Client.TryReceiveRawAsync(Msg.Timeout);
            Assert.NotNull(m);
            switch (m![0])
            {
                case 99: order.Add("success"); break;
                case 94: order.Add("data"); break;
                case 96: order.Add("eof"); break;
                case 97: order.Add("close"); break;
                case 98:
                    var r = new SshReader(m.AsSpan(1));
                    r.TryReadUInt32(out _);
                    r.TryReadUtf8(out var type);
                    r.TryReadBoolean(out _);
                    r.TryReadUInt32(out var status);
                    Assert.Equal("exit-status", type);
                    Assert.Equal(3u, status);
                    order.Add("exit-status");
                    break;
            }
        }
        Assert.Equal(["success", "data", "exit-status", "eof", "close"], order);
    }

    [Fact]
    public async Task UnknownRequest_WithWantReply_GetsFailure_X11Refused()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        await h.SendAsync(98, w => w.WriteUInt32(id).WriteString("frobnicate@example.com").WriteBoolean(true));
        await Msg.ExpectAsync(h.Client, 100);
        await h.SendAsync(98, w => w.WriteUInt32(id).WriteString("x11-req").WriteBoolean(true).WriteBoolean(false).WriteString("MIT-MAGIC-COOKIE-1").WriteString("00").WriteUInt32(0));
        await Msg.ExpectAsync(h.Client, 100);
        // Unknown without want-reply: nothing comes back; the next answered request proves it.
        await h.SendAsync(98, w => w.WriteUInt32(id).WriteString("frobnicate@example.com").WriteBoolean(false));
        await h.SendAsync(98, w => w.WriteUInt32(id).WriteString("xon-xoff").WriteBoolean(true).WriteBoolean(true));
        await Msg.ExpectAsync(h.Client, 100);
    }

    [Fact]
    public async Task GlobalRequests_UnknownAndKeepalive_GetRequestFailure()
    {
        var (app, _) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        await h.SendAsync(80, w => w.WriteString("keepalive@openssh.com").WriteBoolean(true));
        await Msg.ExpectAsync(h.Client, 82);
        await h.SendAsync(80, w => w.WriteString("no-such-request").WriteBoolean(true));
        await Msg.ExpectAsync(h.Client, 82);
        await h.SendAsync(80, w => w.WriteString("tcpip-forward").WriteBoolean(true).WriteString("0.0.0.0").WriteUInt32(0));
        await Msg.ExpectAsync(h.Client, 82);
    }

    [Fact]
    public async Task TcpipForward_Allowed_RepliesWithChosenPort()
    {
        var (app, _) = AcceptingApp();
        app.Forward = (_, addr, port) => port == 0 ? 4242u : port;
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        await h.SendAsync(80, w => w.WriteString("tcpip-forward").WriteBoolean(true).WriteString("localhost").WriteUInt32(0));
        var ok = await Msg.ExpectAsync(h.Client, 81);
        var r = new SshReader(ok.AsSpan(1));
        Assert.True(r.TryReadUInt32(out var port));
        Assert.Equal(4242u, port);
    }

    [Fact]
    public async Task DataAfterEof_IsProtocolError()
    {
        var (app, _) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        await h.SendAsync(96, w => w.WriteUInt32(id));
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString("late"u8));
        await AssertDisconnectedAsync(h, SshDisconnectReason.ProtocolError);
    }

    [Fact]
    public async Task MessageForUnknownChannel_IsProtocolError()
    {
        var (app, _) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        await h.SendAsync(94, w => w.WriteUInt32(12345).WriteString("x"u8));
        await AssertDisconnectedAsync(h, SshDisconnectReason.ProtocolError);
    }

    [Fact]
    public async Task TruncatedChannelData_IsProtocolError()
    {
        var (app, _) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteUInt32(uint.MaxValue));
        await AssertDisconnectedAsync(h, SshDisconnectReason.ProtocolError);
    }

    [Fact]
    public async Task UnsolicitedChannelSuccess_IsDropped()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        await h.SendAsync(99, w => w.WriteUInt32(id));
        await h.SendAsync(81);
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        // The connection still works: data flows.
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString("hi"u8));
        var buf = new byte[2];
        Assert.Equal(2, await ch.ReadAsync(buf).AsTask().WaitAsync(Msg.Timeout));
        Assert.Null(h.Client.ReceivedDisconnect);
    }

    [Fact]
    public async Task RequestReplies_GoOutInRequestOrder()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        await h.SendAsync(98, w => w.WriteUInt32(id).WriteString("env").WriteBoolean(true).WriteString("A").WriteString("1"));
        await h.SendAsync(98, w => w.WriteUInt32(id).WriteString("env").WriteBoolean(true).WriteString("B").WriteString("2"));
        var first = await ch.ReadRequestAsync().AsTask().WaitAsync(Msg.Timeout);
        var second = await ch.ReadRequestAsync().AsTask().WaitAsync(Msg.Timeout);
        await second!.AcceptAsync();  // answered first, but must be sent second
        await first!.RejectAsync();
        Assert.Equal(100, (await h.Client.TryReceiveRawAsync(Msg.Timeout))![0]);
        Assert.Equal(99, (await h.Client.TryReceiveRawAsync(Msg.Timeout))![0]);
    }

    [Fact]
    public async Task PtyRequest_ParsesTerminalModes()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        var modes = SshTerminalModes.Encode([new(SshTerminalModeOpcode.ECHO, 1), new(SshTerminalModeOpcode.TtyOpOspeed, 38400)]);
        await h.SendAsync(98, w => w.WriteUInt32(id).WriteString("pty-req").WriteBoolean(true).WriteString("xterm-256color")
            .WriteUInt32(120).WriteUInt32(40).WriteUInt32(0).WriteUInt32(0).WriteString(modes));
        var req = Assert.IsType<SshPtyRequest>(await ch.ReadRequestAsync().AsTask().WaitAsync(Msg.Timeout));
        Assert.Equal("xterm-256color", req.Term);
        Assert.Equal(120u, req.WidthChars);
        Assert.Equal(40u, req.HeightRows);
        Assert.Equal([new SshTerminalMode(SshTerminalModeOpcode.ECHO, 1), new SshTerminalMode(SshTerminalModeOpcode.TtyOpOspeed, 38400)], req.Modes);
    }

    [Fact]
    public void TerminalModes_StopAtUndefinedOpcode_AndRejectTruncatedArgument()
    {
        Assert.True(SshTerminalModes.TryParse([53, 0, 0, 0, 1, 200, 1, 2, 3], out var modes));
        Assert.Equal([new SshTerminalMode(SshTerminalModeOpcode.ECHO, 1)], modes);
        Assert.False(SshTerminalModes.TryParse([53, 0, 0, 0], out _));
        Assert.True(SshTerminalModes.TryParse([], out var none));
        Assert.Empty(none);
    }

    [Fact]
    public async Task CloseHandshake_ServerCloseFirst_FreesAfterPeerClose()
    {
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync(senderId: 9);
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        await ch.CloseAsync();
        await Msg.ExpectAsync(h.Client, 97);
        Assert.False(ch.Completion.IsCompleted);
        // Data in flight after our CLOSE is tolerated, then the peer's CLOSE frees the channel.
        await h.SendAsync(94, w => w.WriteUInt32(id).WriteString("in flight"u8));
        await h.SendAsync(97, w => w.WriteUInt32(id));
        await ch.Completion.WaitAsync(Msg.Timeout);
        await Assert.ThrowsAsync<SshChannelClosedException>(() => ch.WriteAsync(new byte[1]).AsTask());
        Assert.Null(h.Client.ReceivedDisconnect);
    }

    [Fact]
    public async Task ManyGlobalRequestsWithoutReading_IsBounded()
    {
        var app = new TestServerApplication
        {
            Forward = (_, _, _) => { Thread.Sleep(1); return null; },
            Run = conn => conn.Completion,
        };
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        try
        {
            for (int i = 0; i < 10_000 && h.Client.ReceivedDisconnect is null; i++)
                await h.SendAsync(80, w => w.WriteString("tcpip-forward").WriteBoolean(true).WriteString("x").WriteUInt32(1));
        }
        catch (SshConnectionClosedException) { /* the server hung up mid-flood: expected */ }
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.ProtocolError, h.Client.ReceivedDisconnect?.Reason);
    }

    [Fact]
    public async Task ExitStatus_WaitsForWriteInProgress()
    {
        // The write is stuck on the peer's window when ExitAsync is called; the
        // exit-status must still come after all of the data (RFC 4254 §6.10).
        var (app, channels) = AcceptingApp();
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync(window: 10, maxPacket: 10);
        var ch = await channels.Reader.ReadAsync().AsTask().WaitAsync(Msg.Timeout);
        var write = ch.WriteAsync(new byte[30]).AsTask();
        var exit = ch.ExitAsync(5).AsTask();
        await Msg.ExpectAsync(h.Client, 94);
        Assert.False(exit.IsCompleted);
        await h.SendAsync(93, w => w.WriteUInt32(id).WriteUInt32(20));
        await Msg.ExpectAsync(h.Client, 94);
        await Msg.ExpectAsync(h.Client, 94);
        await write.WaitAsync(Msg.Timeout);
        await exit.WaitAsync(Msg.Timeout);
        await Msg.ExpectAsync(h.Client, 98);
        await Msg.ExpectAsync(h.Client, 96);
        await Msg.ExpectAsync(h.Client, 97);
    }
}
