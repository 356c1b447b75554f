using System.Text;
using Warren.Runtime.MicroVm.Mux;
using Xunit;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>Per-channel credit windows of the host side, against a scripted guest (no VM).</summary>
public sealed class MuxFlowControlTests
{
    /// <summary>Bound on waits (never asserted on: only keeps a broken build from hanging).</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private static CancellationToken Timeout() => new CancellationTokenSource(Bound).Token;

    [Fact]
    public async Task AStalledChannel_DoesNotBlockAnother()
    {
        var ct = Timeout();
        var (mux, guest) = await FakeGuest.ConnectAsync(ct);
        await using var _ = mux;
        using var __ = guest;
        var stalled = await guest.OpenAsync(mux, 1024, ct);
        var other = await guest.OpenAsync(mux, 1024, ct);

        // Fill the stalled channel's whole window; nobody reads it.
        var chunk = new byte[MuxProtocol.MaxPayload];
        for (int sent = 0; sent < MuxConnection.ReceiveWindow; sent += chunk.Length)
            await guest.SendAsync(MuxFrameType.Data, stalled.Id, chunk, ct);
        await guest.SendAsync(MuxFrameType.Data, other.Id, Encoding.ASCII.GetBytes("still flowing"), ct);

        var read = await other.Input.ReadAsync(ct);
        Assert.Equal("still flowing", Encoding.ASCII.GetString(System.Buffers.BuffersExtensions.ToArray(read.Buffer)));
        other.Input.AdvanceTo(read.Buffer.End);
        Assert.True(mux.IsAlive);

        // The stalled channel holds exactly its window, and gets window back only as its reader takes bytes.
        var stalledRead = await stalled.Input.ReadAsync(ct);
        long held = stalledRead.Buffer.Length;
        Assert.Equal(MuxConnection.ReceiveWindow, held);
        stalled.Input.AdvanceTo(stalledRead.Buffer.End);
        await stalled.GrantAsync((int)held, ct);
        var (type, channel, payload) = await guest.ReadFrameAsync(ct);
        Assert.Equal((MuxFrameType.Window, stalled.Id), (type, channel));
        Assert.Equal((uint)MuxConnection.ReceiveWindow, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(payload));
    }

    [Fact]
    public async Task DataBeyondTheWindow_EndsTheConnection_NotTheProcess()
    {
        var ct = Timeout();
        var (mux, guest) = await FakeGuest.ConnectAsync(ct);
        await using var _ = mux;
        using var __ = guest;
        var channel = await guest.OpenAsync(mux, 1024, ct);
        var chunk = new byte[MuxProtocol.MaxPayload];
        for (int sent = 0; sent < MuxConnection.ReceiveWindow; sent += chunk.Length)
            await guest.SendAsync(MuxFrameType.Data, channel.Id, chunk, ct);
        await guest.SendAsync(MuxFrameType.Data, channel.Id, new byte[1], ct);

        await mux.Ended.WaitAsync(ct);
        Assert.False(mux.IsAlive);
        Assert.Contains("beyond the window", mux.Failure!.Message);
        await Assert.ThrowsAnyAsync<IOException>(async () =>
        {
            while (true)
            {
                var r = await channel.Input.ReadAsync(ct);
                channel.Input.AdvanceTo(r.Buffer.End);
                if (r.IsCompleted) return;
            }
        });
        await Assert.ThrowsAnyAsync<IOException>(() => mux.OpenChannelAsync(ct));
    }

    [Fact]
    public async Task HostWrites_WaitForTheGuestsWindow_PerChannel()
    {
        var ct = Timeout();
        var (mux, guest) = await FakeGuest.ConnectAsync(ct);
        await using var _ = mux;
        using var __ = guest;
        var narrow = await guest.OpenAsync(mux, 10, ct);
        var wide = await guest.OpenAsync(mux, 1024, ct);

        var blocked = narrow.WriteAsync(new byte[100], ct).AsTask();
        var (type, channel, payload) = await guest.ReadFrameAsync(ct);
        Assert.Equal((MuxFrameType.Data, narrow.Id, 10), (type, channel, payload.Length));
        Assert.False(blocked.IsCompleted);

        // The other channel is not held up by the first one's empty window.
        await wide.WriteAsync(Encoding.ASCII.GetBytes("wide"), ct);
        (type, channel, payload) = await guest.ReadFrameAsync(ct);
        Assert.Equal((MuxFrameType.Data, wide.Id, "wide"), (type, channel, Encoding.ASCII.GetString(payload)));
        Assert.False(blocked.IsCompleted);

        await guest.SendUInt32Async(MuxFrameType.Window, narrow.Id, 90, ct);
        (type, channel, payload) = await guest.ReadFrameAsync(ct);
        Assert.Equal((MuxFrameType.Data, narrow.Id, 90), (type, channel, payload.Length));
        await blocked.WaitAsync(ct);
    }

    [Fact]
    public async Task Close_IsAnswered_AndTheIdIsReleased()
    {
        var ct = Timeout();
        var (mux, guest) = await FakeGuest.ConnectAsync(ct);
        await using var _ = mux;
        using var __ = guest;
        var channel = await guest.OpenAsync(mux, 1024, ct);
        await guest.SendAsync(MuxFrameType.Data, channel.Id, Encoding.ASCII.GetBytes("bye"), ct);
        await guest.SendAsync(MuxFrameType.Eof, channel.Id, Array.Empty<byte>(), ct);
        await guest.SendAsync(MuxFrameType.Close, channel.Id, Array.Empty<byte>(), ct);

        var read = await channel.Input.ReadAsync(ct);
        while (!read.IsCompleted)
        {
            channel.Input.AdvanceTo(read.Buffer.Start, read.Buffer.End);
            read = await channel.Input.ReadAsync(ct);
        }
        Assert.Equal("bye", Encoding.ASCII.GetString(System.Buffers.BuffersExtensions.ToArray(read.Buffer)));
        var (type, id, _) = await guest.ReadFrameAsync(ct);
        Assert.Equal((MuxFrameType.Close, channel.Id), (type, id));
        Assert.Equal(0, mux.OpenChannels);
    }

    [Fact]
    public async Task ARefusedOpen_ReportsTheGuestsReason()
    {
        var ct = Timeout();
        var (mux, guest) = await FakeGuest.ConnectAsync(ct);
        await using var _ = mux;
        using var __ = guest;
        var opening = mux.OpenChannelAsync(ct);
        var (_, channel, _) = await guest.ReadFrameAsync(ct);
        await guest.SendAsync(MuxFrameType.OpenFailure, channel, Encoding.UTF8.GetBytes("agent socket: ConnectionRefused"), ct);
        var e = await Assert.ThrowsAsync<MuxOpenFailedException>(() => opening);
        Assert.Equal("agent socket: ConnectionRefused", e.Reason);
        Assert.True(mux.IsAlive);
        Assert.Equal(0, mux.OpenChannels);
    }

    [Fact]
    public async Task StaleBytesBeforeTheHello_AreSkipped()
    {
        var ct = Timeout();
        var (host, guest) = FakeGuest.Create();
        using var _ = guest;
        var connecting = MuxConnection.ConnectAsync(host, ct);
        var (_, _, hello) = await guest.ReadFrameAsync(ct);
        // What a guest wrote for an earlier connection (even a HELLO with another nonce), then the answer.
        await guest.SendRawAsync(Encoding.ASCII.GetBytes("left over from before"), ct);
        var wrong = (byte[])hello.Clone();
        wrong[^1] ^= 0xFF;
        await guest.SendAsync(MuxFrameType.Hello, 0, wrong, ct);
        await guest.SendAsync(MuxFrameType.Hello, 0, hello, ct);
        await using var mux = await connecting;
        var channel = await guest.OpenAsync(mux, 1024, ct);
        Assert.True(mux.IsAlive);
        Assert.Equal(1u, channel.Id);
    }
}
