using System.Buffers;
using System.Text;
using CsCheck;
using Warren.Edge.Http.Forwarding;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>The one response framing of both HTTP/1.1 paths (the lane and the full path), as a unit.</summary>
public class ResponseFramingTests
{
    private static Http1ResponseHead Head(string text)
    {
        var head = new Http1ResponseHead();
        Assert.Equal(HeadParseStatus.Complete, head.TryParse(Encoding.Latin1.GetBytes(text), out _, out string? error));
        Assert.Null(error);
        return head;
    }

    private static readonly Http1ResponseHead ChunkedHead = Head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");

    /// <summary><paramref name="body"/> in chunks of the given sizes (cycled), ended by the last chunk.</summary>
    private static byte[] Chunk(byte[] body, int[] sizes)
    {
        var output = new ArrayBufferWriter<byte>();
        int offset = 0;
        for (int i = 0; offset < body.Length; i++)
        {
            int size = Math.Min(Math.Max(1, sizes[i % sizes.Length]), body.Length - offset);
            output.Write(Encoding.ASCII.GetBytes($"{size:x}\r\n"));
            output.Write(body.AsSpan(offset, size));
            output.Write("\r\n"u8);
            offset += size;
        }
        output.Write("0\r\n\r\n"u8);
        return output.WrittenSpan.ToArray();
    }

    /// <summary>
    /// Any chunked body, received in any pieces, comes out whole: as data (the full path, Kestrel frames it) and
    /// re-chunked (the lane) decoding back to the same bytes; it ends reusable exactly when nothing follows it.
    /// </summary>
    [Fact]
    public void Property_AChunkedBodyInAnyPieces_IsRelayedWhole_OnBothPaths()
    {
        Gen.Select(Gen.Byte.Array[0, 300], Gen.Int[1, 64].Array[1, 5], Gen.Int[1, 40].Array[1, 8], Gen.Bool).Sample((body, sizes, cuts, trailing) =>
        {
            var wire = Chunk(body, sizes);
            if (trailing)
                wire = [.. wire, (byte)'X'];
            foreach (bool chunkToClient in new[] { false, true })
            {
                var framing = ResponseFraming.Start(ChunkedHead, bodyless: false, leftover: 0);
                var output = new ArrayBufferWriter<byte>();
                int offset = 0;
                for (int i = 0; offset < wire.Length && !framing.Done; i++)
                {
                    int n = Math.Min(cuts[i % cuts.Length], wire.Length - offset);
                    Assert.True(framing.Take(wire.AsSpan(offset, n), output, chunkToClient), framing.Error);
                    offset += n;
                }
                Assert.True(framing.Done);
                // A byte after the last chunk, when it arrived with it, makes the connection unusable.
                bool sawTrailing = trailing && offset == wire.Length;
                Assert.Equal(!sawTrailing, framing.Reusable);
                var relayed = chunkToClient ? Dechunk(output.WrittenSpan.ToArray()) : output.WrittenSpan.ToArray();
                Assert.Equal(body, relayed);
            }
        }, iter: 500);
    }

    private static byte[] Dechunk(byte[] wire)
    {
        var decoder = new ChunkedBodyDecoder();
        var data = new List<byte>();
        var input = wire.AsSpan();
        while (!input.IsEmpty)
        {
            var status = decoder.Decode(input, out int consumed, out int start, out int length);
            Assert.NotEqual(ChunkStatus.Invalid, status);
            if (status == ChunkStatus.Data)
                data.AddRange(input.Slice(start, length).ToArray());
            input = input[consumed..];
            if (status == ChunkStatus.Done)
                Assert.True(input.IsEmpty);
        }
        return data.ToArray();
    }

    [Fact]
    public void ALengthBody_EndsAtItsLength_AndRefusesMore()
    {
        var head = Head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        var framing = ResponseFraming.Start(head, bodyless: false, leftover: 3);
        var output = new ArrayBufferWriter<byte>();
        Assert.Equal(ResponseBodyMode.Length, framing.Mode);
        Assert.True(framing.Take("abc"u8, output, chunkToClient: true));
        Assert.False(framing.Done);
        Assert.False(framing.Take("def"u8, output, chunkToClient: true));
        Assert.Equal("more bytes than the response's Content-Length", framing.Error);
        Assert.False(framing.Reusable);

        framing = ResponseFraming.Start(head, bodyless: false, leftover: 0);
        Assert.True(framing.Take("abc"u8, output, chunkToClient: false));
        framing.Counted(2);
        Assert.True(framing.Done);
        Assert.True(framing.Reusable);
        Assert.Equal(5, ResponseFraming.AnnouncedLength(head));
    }

    [Fact]
    public void AZeroLengthBody_IsDone_AndBytesAfterItAreRefused()
    {
        var head = Head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        var framing = ResponseFraming.Start(head, bodyless: false, leftover: 1);
        Assert.True(framing.Done);
        Assert.False(framing.Take("x"u8, new ArrayBufferWriter<byte>(), chunkToClient: false));
        Assert.False(framing.Reusable);
    }

    [Fact]
    public void ABodyUntilClose_EndsWithTheConnection_AndIsNeverReused()
    {
        var head = Head("HTTP/1.1 200 OK\r\n\r\n");
        var framing = ResponseFraming.Start(head, bodyless: false, leftover: 0);
        var output = new ArrayBufferWriter<byte>();
        Assert.Equal(ResponseBodyMode.UntilClose, framing.Mode);
        Assert.True(framing.Take("hello"u8, output, chunkToClient: true));
        Assert.True(framing.TakeEnd(output, chunkToClient: true));
        Assert.True(framing.Done);
        Assert.False(framing.Reusable);
        Assert.Equal("5\r\nhello\r\n0\r\n\r\n", Encoding.ASCII.GetString(output.WrittenSpan));
        Assert.Equal(-1, ResponseFraming.AnnouncedLength(head));
    }

    [Fact]
    public void AnEndInsideALengthOrChunkedBody_IsRefused()
    {
        var output = new ArrayBufferWriter<byte>();
        var length = ResponseFraming.Start(Head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), bodyless: false, leftover: 0);
        Assert.False(length.TakeEnd(output, chunkToClient: false));
        Assert.Equal("the VM closed the connection inside a response body", length.Error);
        var chunked = ResponseFraming.Start(ChunkedHead, bodyless: false, leftover: 0);
        Assert.False(chunked.TakeEnd(output, chunkToClient: false));
        Assert.Equal("the VM closed the connection inside a chunked body", chunked.Error);
    }

    [Theory]
    [InlineData("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", false, 0, true)]
    [InlineData("HTTP/1.1 304 Not Modified\r\n\r\n", false, 0, true)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, 0, true)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, 2, false)]
    [InlineData("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\n", true, 0, false)]
    public void ABodylessAnswer_IsReusableOnlyWhenNothingFollowsItsHead(string text, bool headRequest, int leftover, bool reusable)
    {
        var framing = ResponseFraming.Start(Head(text), headRequest, leftover);
        Assert.Equal(ResponseBodyMode.None, framing.Mode);
        Assert.True(framing.Done);
        Assert.Equal(reusable, framing.Reusable);
    }
}
