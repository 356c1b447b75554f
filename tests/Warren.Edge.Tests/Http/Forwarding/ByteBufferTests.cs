using System.Buffers;
using Warren.Edge.Http.Forwarding;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>The head writer's buffer: kept between messages by its owner, its array given back in between.</summary>
public sealed class ByteBufferTests
{
    [Fact]
    public void Release_ThenWrite_RentsAnArrayAgain_AndWritesAsBefore()
    {
        var buffer = new ByteBuffer(16, 1024);
        buffer.Append("first message"u8);
        buffer.Release();
        Assert.Equal(0, buffer.Length);
        Assert.True(buffer.WrittenSpan.IsEmpty);

        // Through both write paths: Append (TryReserve) and IBufferWriter (GetSpan/Advance), past the initial size.
        buffer.Append("GET / HTTP/1.1\r\n"u8);
        var span = buffer.GetSpan(40);
        "Host: example\r\n"u8.CopyTo(span);
        buffer.Advance(15);
        ((IBufferWriter<byte>)buffer).Write(new byte[100]);
        Assert.Equal(16 + 15 + 100, buffer.Length);
        Assert.True(buffer.WrittenSpan[..31].SequenceEqual("GET / HTTP/1.1\r\nHost: example\r\n"u8));
        buffer.Dispose();
    }

    [Fact]
    public void Release_ForgetsAnOverflow_AndTheLimitStillHolds()
    {
        var buffer = new ByteBuffer(16, 32);
        buffer.Append(new byte[40]);
        Assert.True(buffer.Overflowed);
        buffer.Release();
        Assert.False(buffer.Overflowed);
        buffer.Append(new byte[32]);
        Assert.False(buffer.Overflowed);
        buffer.Append(new byte[1]);
        Assert.True(buffer.Overflowed);
        Assert.Equal(32, buffer.Length);
        Assert.Throws<InvalidOperationException>(() => buffer.GetSpan(1));
    }
}
