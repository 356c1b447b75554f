using CsCheck;
using GuestMux = Warren.Agent.Vm.Mux;
using Warren.Agent.Vm;
using Warren.Runtime.MicroVm.Mux;
using Xunit;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// Property tests of the multiplexer's parsers on both sides: whatever bytes arrive, the host's header check either
/// accepts a frame within the limits or throws its protocol exception, a whole host connection fed garbage ends
/// cleanly (its channels fail, nothing else), and the guest's splitter never reads past its buffer.
/// </summary>
public sealed class MuxFuzzTests
{
    private static readonly Gen<byte[]> s_bytes = Gen.Byte.Array[0, 64];

    /// <summary>Frames that look almost right: every type (known or not), small channel ids, lengths near the limits.</summary>
    private static readonly Gen<byte[]> s_frames =
        Gen.Select(Gen.Byte[0, 12], Gen.UInt[0, 3], Gen.OneOf(Gen.Int[0, 40], Gen.Const(MuxProtocol.MaxPayload), Gen.Const(MuxProtocol.MaxPayload + 1)),
                Gen.Byte.Array[0, 40])
            .Select((type, channel, length, payload) =>
            {
                var frame = new byte[MuxProtocol.HeaderBytes + payload.Length];
                MuxFrames.WriteHeader(frame, (MuxFrameType)type, channel, length);
                payload.CopyTo(frame, MuxProtocol.HeaderBytes);
                return frame;
            })
            .Array[0, 8]
            .Select(frames => frames.SelectMany(f => f).ToArray());

    [Fact]
    public void HostHeaderCheck_AcceptsOnlyFramesWithinTheLimits() =>
        s_bytes.Sample(bytes =>
        {
            try
            {
                if (MuxFrames.TryReadGuestHeader(bytes, out var header))
                {
                    Assert.InRange(header.Length, 0, MuxProtocol.MaxPayload);
                    Assert.True(header.Type != MuxFrameType.Open && header.Type != MuxFrameType.Shutdown);
                }
                else Assert.True(bytes.Length < MuxProtocol.HeaderBytes);
            }
            catch (MuxProtocolException) { }
        });

    [Fact]
    public void GuestSplitter_NeverReadsPastItsBuffer() =>
        Gen.OneOf(s_bytes, s_frames).Sample(bytes =>
        {
            var rest = bytes.AsSpan();
            while (true)
            {
                var split = GuestMux.TrySplit(rest, out _, out _, out int length);
                if (split != MuxSplit.Frame) break;
                Assert.InRange(length, 0, GuestMux.MaxPayload);
                Assert.True(GuestMux.HeaderBytes + length <= rest.Length);
                rest = rest[(GuestMux.HeaderBytes + length)..];
            }
        });

    [Fact]
    public void HostConnection_FedAnything_EndsCleanly() =>
        Gen.OneOf(Gen.Byte.Array[0, 512], s_frames).Sample(bytes =>
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var ct = cts.Token;
            var (mux, guest) = FakeGuest.ConnectAsync(ct).GetAwaiter().GetResult();
            using (guest)
            {
                var channel = guest.OpenAsync(mux, 64, ct).GetAwaiter().GetResult();
                guest.SendRawAsync(bytes, ct).GetAwaiter().GetResult();
                guest.Dispose();
                mux.Ended.WaitAsync(ct).GetAwaiter().GetResult();
                Assert.False(mux.IsAlive);
                // The channel's reader sees its end (clean or failed); the test process is untouched.
                try
                {
                    while (true)
                    {
                        var r = channel.Input.ReadAsync(ct).AsTask().GetAwaiter().GetResult();
                        channel.Input.AdvanceTo(r.Buffer.End);
                        if (r.IsCompleted) break;
                    }
                }
                catch (IOException) { }
                mux.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }, iter: 200);
}
