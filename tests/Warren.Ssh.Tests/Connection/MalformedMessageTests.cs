using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Tests.Server;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Ssh.Tests.Connection;

/// <summary>
/// Every connection message, truncated by one byte or with a string length of
/// 2^32-1, is a protocol error (DISCONNECT PROTOCOL_ERROR), never a crash.
/// </summary>
public sealed class MalformedMessageTests
{
    /// <summary>Well-formed messages for an open channel whose server id is {0} ("ID" placeholder patched in).</summary>
    private static byte[] WellFormed(string kind, uint id) => kind switch
    {
        "window-adjust" => Msg.Build(93, w => w.WriteUInt32(id).WriteUInt32(10)),
        "data" => Msg.Build(94, w => w.WriteUInt32(id).WriteString("abc"u8)),
        "extended-data" => Msg.Build(95, w => w.WriteUInt32(id).WriteUInt32(1).WriteString("abc"u8)),
        "eof" => Msg.Build(96, w => w.WriteUInt32(id)),
        "close" => Msg.Build(97, w => w.WriteUInt32(id)),
        "request-exec" => Msg.Build(98, w => w.WriteUInt32(id).WriteString("exec").WriteBoolean(true).WriteString("ls")),
        "request-pty" => Msg.Build(98, w => w.WriteUInt32(id).WriteString("pty-req").WriteBoolean(true).WriteString("xterm")
            .WriteUInt32(80).WriteUInt32(24).WriteUInt32(0).WriteUInt32(0).WriteString([53, 0, 0, 0, 1, 0])),
        "request-window-change" => Msg.Build(98, w => w.WriteUInt32(id).WriteString("window-change").WriteBoolean(false)
            .WriteUInt32(80).WriteUInt32(24).WriteUInt32(0).WriteUInt32(0)),
        "success" => Msg.Build(99, w => w.WriteUInt32(id)),
        "failure" => Msg.Build(100, w => w.WriteUInt32(id)),
        "open" => Msg.Build(90, w => w.WriteString("session").WriteUInt32(50).WriteUInt32(1000).WriteUInt32(1000)),
        "open-direct-tcpip" => Msg.Build(90, w => w.WriteString("direct-tcpip").WriteUInt32(51).WriteUInt32(1000).WriteUInt32(1000)
            .WriteString("localhost").WriteUInt32(80).WriteString("127.0.0.1").WriteUInt32(5000)),
        "global-request" => Msg.Build(80, w => w.WriteString("keepalive@openssh.com").WriteBoolean(true)),
        _ => throw new ArgumentException(kind),
    };

    public static TheoryData<string> Kinds() =>
    [
        "window-adjust", "data", "extended-data", "eof", "close", "request-exec", "request-pty",
        "request-window-change", "success", "failure", "open", "open-direct-tcpip", "global-request",
    ];

    private static async Task<ServerHarness> OpenAsync()
    {
        var app = new TestServerApplication
        {
            Run = async conn =>
            {
                await foreach (var open in conn.AcceptChannelsAsync())
                {
                    var ch = await open.AcceptAsync();
                    _ = Task.Run(async () => { while (await ch.ReadRequestAsync() is { } r) await r.AcceptAsync(); });
                }
            },
        };
        var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        return h;
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task WellFormed_IsAccepted(string kind)
    {
        await using var h = await OpenAsync();
        var id = await h.OpenSessionRawAsync();
        await h.Client.SendAsync(WellFormed(kind, id));
        // A follow-up global request proves the connection is still alive.
        await h.SendAsync(80, w => w.WriteString("probe").WriteBoolean(true));
        for (int i = 0; i < 20; i++)
        {
            var m = await h.Client.TryReceiveRawAsync(Msg.Timeout);
            Assert.NotNull(m);
            if (m![0] == 82) return;
        }
        Assert.Fail("no reply to the probe");
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task TruncatedByOne_IsProtocolError(string kind)
    {
        await using var h = await OpenAsync();
        var id = await h.OpenSessionRawAsync();
        var m = WellFormed(kind, id);
        await h.Client.SendAsync(m.AsMemory(0, m.Length - 1));
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.ProtocolError, h.Client.ReceivedDisconnect?.Reason);
    }

    [Theory]
    [InlineData(94)]
    [InlineData(98)]
    [InlineData(90)]
    [InlineData(80)]
    public async Task StringLengthUInt32Max_IsProtocolError(byte number)
    {
        await using var h = await OpenAsync();
        var id = await h.OpenSessionRawAsync();
        var m = number switch
        {
            94 => Msg.Build(94, w => w.WriteUInt32(id).WriteUInt32(uint.MaxValue).WriteRaw("abc"u8)),
            98 => Msg.Build(98, w => w.WriteUInt32(id).WriteUInt32(uint.MaxValue).WriteRaw("exec"u8)),
            90 => Msg.Build(90, w => w.WriteUInt32(uint.MaxValue).WriteRaw("session"u8)),
            _ => Msg.Build(80, w => w.WriteUInt32(uint.MaxValue).WriteRaw("x"u8)),
        };
        await h.Client.SendAsync(m);
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.ProtocolError, h.Client.ReceivedDisconnect?.Reason);
    }
}
