using CsCheck;
using Warren.Ssh.Connection;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;
using Warren.Ssh.Tests.Server;
using Xunit;

namespace Warren.Ssh.Tests.Connection;

/// <summary>
/// Random connection-layer message sequences: the only way the connection may end
/// is a protocol error (DISCONNECT) or the peer closing; never a stray exception,
/// and never a hang.
/// </summary>
public sealed class ChannelMuxPropertyTests
{
    private static readonly string[] s_requestTypes =
        ["pty-req", "env", "shell", "exec", "subsystem", "window-change", "signal", "break", "x11-req", "auth-agent-req@openssh.com", "exit-status", "bogus"];
    private static readonly string[] s_channelTypes = ["session", "direct-tcpip", "forwarded-tcpip", "x11", "nonsense"];

    private static readonly Gen<byte[]> s_bytes = Gen.Byte.Array[0, 40];
    private static readonly Gen<uint> s_channelId = Gen.OneOf(Gen.UInt[0, 3], Gen.UInt);
    private static readonly Gen<uint> s_smallOrAny = Gen.OneOf(Gen.UInt[0, 70_000], Gen.Const(uint.MaxValue), Gen.UInt);

    private static readonly Gen<byte[]> s_message = Gen.OneOf(
        // Channel open, well-formed or with random tail.
        Gen.Select(Gen.Int[0, 4].Select(i => s_channelTypes[i]), Gen.UInt[0, 5], s_smallOrAny, s_smallOrAny, s_bytes, (t, id, win, max, tail) =>
            Msg.Build(90, w => w.WriteString(t).WriteUInt32(id).WriteUInt32(win).WriteUInt32(max).WriteRaw(tail))),
        Gen.Select(Gen.UInt[0, 5], Gen.UInt[0, 5], s_bytes, (t, id, tail) =>
            Msg.Build(90, w => w.WriteString("direct-tcpip").WriteUInt32(id).WriteUInt32(1 << 20).WriteUInt32(32768)
                .WriteString("localhost").WriteUInt32(t).WriteString("127.0.0.1").WriteUInt32(1).WriteRaw(tail))),
        Gen.Select(s_channelId, s_bytes, (id, data) => Msg.Build(94, w => w.WriteUInt32(id).WriteString(data))),
        Gen.Select(s_channelId, Gen.UInt[0, 3], s_bytes, (id, code, data) => Msg.Build(95, w => w.WriteUInt32(id).WriteUInt32(code).WriteString(data))),
        Gen.Select(s_channelId, s_smallOrAny, (id, add) => Msg.Build(93, w => w.WriteUInt32(id).WriteUInt32(add))),
        Gen.Select(s_channelId, id => Msg.Build(96, w => w.WriteUInt32(id))),
        Gen.Select(s_channelId, id => Msg.Build(97, w => w.WriteUInt32(id))),
        Gen.Select(s_channelId, Gen.Int[0, 11].Select(i => s_requestTypes[i]), Gen.Bool, s_bytes, (id, t, want, tail) =>
            Msg.Build(98, w => w.WriteUInt32(id).WriteString(t).WriteBoolean(want).WriteRaw(tail))),
        Gen.Select(s_channelId, id => Msg.Build(99, w => w.WriteUInt32(id))),
        Gen.Select(s_channelId, id => Msg.Build(100, w => w.WriteUInt32(id))),
        Gen.Select(s_channelId, s_channelId, s_smallOrAny, s_smallOrAny, (r, s, win, max) => Msg.Build(91, w => w.WriteUInt32(r).WriteUInt32(s).WriteUInt32(win).WriteUInt32(max))),
        Gen.Select(s_channelId, Gen.UInt[0, 5], (r, reason) => Msg.Build(92, w => w.WriteUInt32(r).WriteUInt32(reason).WriteString("no").WriteString(""))),
        Gen.Select(Gen.Int[0, 2].Select(i => new[] { "keepalive@openssh.com", "tcpip-forward", "x" }[i]), Gen.Bool, s_bytes, (n, want, tail) =>
            Msg.Build(80, w => w.WriteString(n).WriteBoolean(want).WriteRaw(tail))),
        Gen.Select(Gen.Byte[80, 127], Gen.Byte.Array[0, 12], (n, tail) => Msg.Build(n, w => w.WriteRaw(tail))),
        Gen.Byte[50, 255].Select(n => new[] { n }));

    [Fact]
    public void RandomMessageSequences_EndOnlyInProtocolErrorOrClose()
    {
        s_message.Array[1, 30].Sample(messages => RunAsync(messages).GetAwaiter().GetResult(), iter: 300, threads: 1);
    }

    private static async Task RunAsync(byte[][] messages)
    {
        var (client, server) = InMemoryPacketChannel.CreatePair();
        var mux = new ChannelMux(server, isServer: true, new SshConnectionLimits { InitialWindowSize = 1000, MaxPacketSize = 100, MaxChannels = 3 });
        mux.Start();
        var app = Task.Run(async () =>
        {
            var work = new List<Task>();
            try
            {
                await foreach (var open in mux.AcceptChannelsAsync(CancellationToken.None))
                {
                    if (open.Port % 2 == 1) { await open.RejectAsync(SshChannelOpenFailureReason.ConnectFailed); continue; }
                    var ch = await open.AcceptAsync();
                    work.Add(Task.Run(async () =>
                    {
                        var buf = new byte[64];
                        try { while (await ch.ReadAsync(buf) > 0) { } } catch (SshChannelClosedException) { }
                    }));
                    work.Add(Task.Run(async () =>
                    {
                        int i = 0;
                        while (await ch.ReadRequestAsync() is { } r)
                            if (i++ % 2 == 0) await r.AcceptAsync(); else await r.RejectAsync();
                    }));
                    work.Add(Task.Run(async () =>
                    {
                        try { await ch.WriteAsync(new byte[300]); await ch.ExitAsync(0); }
                        catch (SshChannelClosedException) { }
                        catch (InvalidOperationException) { }
                    }));
                }
            }
            catch (SshConnectionClosedException) { }
            await Task.WhenAll(work);
        });

        foreach (var m in messages)
        {
            try { await client.SendAsync(m); }
            catch (SshConnectionClosedException) { break; }
        }
        // Drain whatever the server says, then hang up.
        for (int i = 0; i < 1000; i++)
        {
            var reply = await client.TryReceiveRawAsync(TimeSpan.FromMilliseconds(20)).ContinueWith(t => t.IsCompletedSuccessfully ? t.Result : null);
            if (reply is null) break;
        }
        // A protocol error ends the connection by itself (DISCONNECT, then close); let it finish.
        if (mux.TerminalError is SshProtocolException) await mux.Completion.WaitAsync(TimeSpan.FromSeconds(20));
        client.Close();
        await mux.Completion.WaitAsync(TimeSpan.FromSeconds(20));
        await app.WaitAsync(TimeSpan.FromSeconds(20));

        var error = mux.TerminalError;
        // If we hung up while the DISCONNECT was still queued it is never sent; otherwise it says ProtocolError.
        if (error is SshProtocolException) Assert.True(client.ReceivedDisconnect is null || client.ReceivedDisconnect.Value.Reason == SshDisconnectReason.ProtocolError);
        else if (error is not null)
        {
            Assert.IsType<SshConnectionClosedException>(error);
            Assert.True(error.InnerException is null or SshConnectionClosedException or SshProtocolException, error.ToString());
        }
    }
}
