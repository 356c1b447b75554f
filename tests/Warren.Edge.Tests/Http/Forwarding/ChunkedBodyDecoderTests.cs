using System.Text;
using CsCheck;
using Warren.Edge.Http.Forwarding;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>The incremental, strict <c>Transfer-Encoding: chunked</c> decoder of VM responses.</summary>
public class ChunkedBodyDecoderTests
{
    private static byte[] B(string s) => Encoding.Latin1.GetBytes(s);

    private sealed record Decoded(ChunkStatus Final, byte[] Body, int Consumed, bool IsDone, int DataCalls);

    /// <summary>
    /// Feeds <paramref name="input"/> to one decoder in pieces of the given sizes (cycled; all of it at once when
    /// none), the way the forwarder does: every Data run is collected, Done or Invalid stops.
    /// </summary>
    private static Decoded DecodeAll(byte[] input, int[]? pieces = null)
    {
        var decoder = new ChunkedBodyDecoder();
        var body = new List<byte>();
        int offset = 0, piece = 0, dataCalls = 0;
        // Every step either consumes a byte or returns data or ends: this bounds a broken decoder's loop.
        int budget = 4 * input.Length + 64;
        while (offset < input.Length)
        {
            int size = pieces is { Length: > 0 } ? Math.Max(1, pieces[piece++ % pieces.Length]) : input.Length;
            int end = Math.Min(input.Length, offset + size);
            while (offset < end)
            {
                Assert.True(--budget > 0, "the decoder made no progress");
                var span = input.AsSpan(offset, end - offset);
                var status = decoder.Decode(span, out int consumed, out int dataStart, out int dataLength);
                Assert.InRange(consumed, 0, span.Length);
                if (status == ChunkStatus.Data)
                {
                    Assert.True(dataLength > 0, "an empty data run");
                    Assert.True(dataStart >= 0 && dataStart + dataLength <= consumed, "the data run lies outside what was consumed");
                    body.AddRange(span.Slice(dataStart, dataLength).ToArray());
                    dataCalls++;
                }
                else
                {
                    Assert.Equal(0, dataLength);
                }
                offset += consumed;
                if (status is ChunkStatus.Done or ChunkStatus.Invalid)
                {
                    Assert.Equal(status == ChunkStatus.Done, decoder.IsDone);
                    return new Decoded(status, body.ToArray(), offset, decoder.IsDone, dataCalls);
                }
                Assert.False(decoder.IsDone);
                if (status == ChunkStatus.NeedMore)
                    Assert.Equal(span.Length, consumed);
            }
        }
        return new Decoded(ChunkStatus.NeedMore, body.ToArray(), offset, decoder.IsDone, dataCalls);
    }

    private static void AssertBody(string encoded, string body)
    {
        var input = B(encoded);
        foreach (var pieces in new[] { null, new[] { 1 }, new[] { 2 }, new[] { 3, 1, 7 } })
        {
            var d = DecodeAll(input, pieces);
            Assert.Equal(ChunkStatus.Done, d.Final);
            Assert.True(d.IsDone);
            Assert.Equal(input.Length, d.Consumed);
            Assert.Equal(body, Encoding.Latin1.GetString(d.Body));
        }
    }

    private static void AssertInvalid(string encoded)
    {
        var input = B(encoded);
        foreach (var pieces in new[] { null, new[] { 1 } })
        {
            var d = DecodeAll(input, pieces);
            Assert.Equal(ChunkStatus.Invalid, d.Final);
            Assert.False(d.IsDone);
        }
    }

    // ------------------------------------------------------------------ valid bodies

    [Fact]
    public void SingleChunk() => AssertBody("5\r\nhello\r\n0\r\n\r\n", "hello");

    [Fact]
    public void MultipleChunks() => AssertBody("3\r\nabc\r\n4\r\ndefg\r\n1\r\nh\r\n0\r\n\r\n", "abcdefgh");

    [Fact]
    public void Extensions_AreSkipped() =>
        AssertBody("5;name=value;flag\r\nhello\r\n6 ; q=\"a b\"\r\n world\r\n0;last=1\r\n\r\n", "hello world");

    [Fact]
    public void Trailers_AreReadAndDropped() =>
        AssertBody("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=53\r\n\r\n", "hello");

    [Fact]
    public void HexDigits_AnyCase_AndLeadingZeros()
    {
        AssertBody("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij");
        AssertBody("0000B\r\nhello world\r\n000\r\n\r\n", "hello world");
        string big = new string('x', 0x1F);
        AssertBody("1f\r\n" + big + "\r\n0\r\n\r\n", big);
        AssertBody("1F\r\n" + big + "\r\n0\r\n\r\n", big);
        // Fifteen digits is the most accepted.
        AssertBody("000000000000005\r\nhello\r\n0\r\n\r\n", "hello");
    }

    [Fact]
    public void ZeroLengthBody() => AssertBody("0\r\n\r\n", "");

    [Fact]
    public void BinaryData_WithCrLfInside_IsData()
    {
        var data = new byte[] { 13, 10, 48, 13, 10, 13, 10, 0, 255 };
        var input = B($"{data.Length:x}\r\n").Concat(data).Concat(B("\r\n0\r\n\r\n")).ToArray();
        var d = DecodeAll(input, new[] { 1 });
        Assert.Equal(ChunkStatus.Done, d.Final);
        Assert.Equal(data, d.Body);
    }

    [Fact]
    public void BytesAfterTheEnd_AreNotConsumed_AndTheDecoderStaysDone()
    {
        const string message = "5\r\nhello\r\n0\r\n\r\n";
        var input = B(message + "HTTP/1.1 200 OK\r\n\r\n");
        var d = DecodeAll(input);
        Assert.Equal(ChunkStatus.Done, d.Final);
        Assert.Equal(message.Length, d.Consumed);
        Assert.Equal("hello", Encoding.Latin1.GetString(d.Body));

        // One call with everything: the data run first, then Done exactly at the end of the message.
        var decoder = new ChunkedBodyDecoder();
        Assert.Equal(ChunkStatus.Data, decoder.Decode(input, out int consumed, out int start, out int length));
        Assert.Equal((3, 5, 8), (start, length, consumed));
        Assert.Equal(ChunkStatus.Done, decoder.Decode(input.AsSpan(consumed), out int rest, out _, out _));
        Assert.Equal(message.Length, consumed + rest);
        Assert.True(decoder.IsDone);
        // Once done, nothing more is taken.
        Assert.Equal(ChunkStatus.Done, decoder.Decode(input.AsSpan(message.Length), out int after, out _, out int afterLength));
        Assert.Equal(0, after);
        Assert.Equal(0, afterLength);
        Assert.Equal(ChunkStatus.Done, decoder.Decode(ReadOnlySpan<byte>.Empty, out after, out _, out _));
        Assert.Equal(0, after);
    }

    [Fact]
    public void IncompleteMessage_NeedsMore()
    {
        const string message = "5\r\nhello\r\n0\r\nX: y\r\n\r\n";
        for (int k = 0; k < message.Length; k++)
        {
            var d = DecodeAll(B(message[..k]), new[] { 1 });
            Assert.Equal(ChunkStatus.NeedMore, d.Final);
            Assert.Equal(k, d.Consumed);
            Assert.False(d.IsDone);
        }
    }

    [Fact]
    public void LargeChunk_ComesOutInRuns_WithoutCopyingFraming()
    {
        var data = new byte[100_000];
        new Random(7).NextBytes(data);
        var input = B($"{data.Length:X}\r\n").Concat(data).Concat(B("\r\n0\r\n\r\n")).ToArray();
        var d = DecodeAll(input, new[] { 16 * 1024 });
        Assert.Equal(ChunkStatus.Done, d.Final);
        Assert.Equal(data, d.Body);
        Assert.Equal(input.Length, d.Consumed);
    }

    [Fact]
    public void MaxExtension_IsAccepted_OneMoreIsInvalid()
    {
        string ext = new('e', ChunkedBodyDecoder.MaxExtensionBytes - 1);
        AssertBody($"5;{ext}\r\nhello\r\n0\r\n\r\n", "hello");
        AssertInvalid($"5;{new string('e', ChunkedBodyDecoder.MaxExtensionBytes + 1)}\r\nhello\r\n0\r\n\r\n");
        AssertInvalid($"0;{new string('e', ChunkedBodyDecoder.MaxExtensionBytes + 1)}\r\n\r\n");
    }

    [Fact]
    public void TrailersUpToTheirLimit_AreAccepted_MoreAreInvalid()
    {
        string line = "X-T: " + new string('t', 1000) + "\r\n";
        int fit = ChunkedBodyDecoder.MaxTrailerBytes / line.Length;
        AssertBody("0\r\n" + string.Concat(Enumerable.Repeat(line, fit)) + "\r\n", "");
        AssertInvalid("0\r\n" + string.Concat(Enumerable.Repeat(line, fit + 2)) + "\r\n");
    }

    // ------------------------------------------------------------------ rejections

    [Theory]
    [InlineData("5\nhello\r\n0\r\n\r\n")]            // bare LF after the size
    [InlineData("5;ext\nhello\r\n0\r\n\r\n")]        // bare LF after an extension
    [InlineData("5\r\nhello\n0\r\n\r\n")]            // bare LF after the data
    [InlineData("5\r\nhello\r\n0\n\r\n")]            // bare LF after the last size
    [InlineData("5\r\nhello\r\n0\r\n\n")]            // bare LF as the final line
    [InlineData("0\r\nX: y\n\r\n")]                  // bare LF after a trailer
    [InlineData("5\r\r\nhello\r\n0\r\n\r\n")]        // CR CR LF
    public void BareLf_IsInvalid(string encoded) => AssertInvalid(encoded);

    [Theory]
    [InlineData("5\r\nhelloX\r\n0\r\n\r\n")]
    [InlineData("5\r\nhello0\r\n\r\n")]
    [InlineData("5\r\nhello\rX0\r\n\r\n")]
    [InlineData("3\r\nhello\r\n0\r\n\r\n")]
    public void MissingCrLfAfterData_IsInvalid(string encoded) => AssertInvalid(encoded);

    [Theory]
    [InlineData("0000000000000001\r\nx\r\n0\r\n\r\n")]
    [InlineData("FFFFFFFFFFFFFFFF\r\n")]
    [InlineData("10000000000000000\r\n")]
    public void SixteenHexDigits_AreInvalid(string encoded) => AssertInvalid(encoded);

    [Theory]
    [InlineData("g\r\n")]
    [InlineData("\r\n")]
    [InlineData(";ext\r\n")]
    [InlineData("-1\r\n")]
    [InlineData("+1\r\nx\r\n0\r\n\r\n")]
    [InlineData("0x5\r\nhello\r\n0\r\n\r\n")]
    [InlineData("5g\r\nhello\r\n0\r\n\r\n")]
    [InlineData(" 5\r\nhello\r\n0\r\n\r\n")]
    [InlineData("5\r\nhello\r\n\r\n")]
    public void NonHexSizes_AreInvalid(string encoded) => AssertInvalid(encoded);

    [Theory]
    [InlineData("5;a\u0001b\r\nhello\r\n0\r\n\r\n")]
    [InlineData("5;a\0\r\nhello\r\n0\r\n\r\n")]
    [InlineData("5;a\u007f\r\nhello\r\n0\r\n\r\n")]
    [InlineData("0\r\nX: a\u0001b\r\n\r\n")]
    [InlineData("0\r\nX: a\0\r\n\r\n")]
    public void ControlBytes_InExtensionsOrTrailers_AreInvalid(string encoded) => AssertInvalid(encoded);

    [Fact]
    public void Invalid_ReportsWhereItStopped()
    {
        var decoder = new ChunkedBodyDecoder();
        Assert.Equal(ChunkStatus.Invalid, decoder.Decode(B("5x"), out int consumed, out _, out int length));
        Assert.Equal(1, consumed);
        Assert.Equal(0, length);
    }

    // ------------------------------------------------------------------ properties

    private const string ExtensionAlphabet = "abcxyz019=;\"\t !#$%&'*+-.^_`|~";

    private sealed record EncodedBody(byte[] Body, byte[] Encoded);

    /// <summary>A random body cut into random chunks, with random size spellings, extensions and trailers.</summary>
    private static readonly Gen<EncodedBody> GenEncoded =
        Gen.Select(
                Gen.Byte.Array[0, 3000],
                Gen.Select(Gen.Int[1, 400], Gen.Int[0, 3], Gen.Bool, Gen.Int[0, 4], Gen.Int[0, ExtensionAlphabet.Length - 1].Array[0, 12]).Array[1, 40],
                Gen.Select(Gen.Int[0, 3], Gen.Int[0, 3], Gen.Int[0, ExtensionAlphabet.Length - 1].Array[0, 12]),
                Gen.Select(Gen.String[Gen.Char['a', 'z'], 1, 10], Gen.String[Gen.Char[' ', '~'], 0, 30]).Array[0, 4])
            .Select((body, chunks, last, trailers) =>
            {
                var encoded = new List<byte>();
                void SizeLine(int size, int zeros, bool upper, int extKind, int[] ext)
                {
                    string hex = new string('0', zeros) + size.ToString(upper ? "X" : "x", System.Globalization.CultureInfo.InvariantCulture);
                    encoded.AddRange(Encoding.ASCII.GetBytes(hex));
                    string extension = new(ext.Select(i => ExtensionAlphabet[i]).ToArray());
                    switch (extKind)
                    {
                        case 1: encoded.AddRange(Encoding.ASCII.GetBytes(";" + extension)); break;
                        case 2: encoded.AddRange(Encoding.ASCII.GetBytes(" ;" + extension)); break;
                        case 3: encoded.AddRange(Encoding.ASCII.GetBytes("\t; a=" + extension)); break;
                    }
                    encoded.AddRange("\r\n"u8.ToArray());
                }
                int offset = 0;
                int c = 0;
                while (offset < body.Length)
                {
                    var (size, zeros, upper, extKind, ext) = chunks[c++ % chunks.Length];
                    size = Math.Min(size, body.Length - offset);
                    SizeLine(size, zeros, upper, extKind, ext);
                    encoded.AddRange(body.AsSpan(offset, size).ToArray());
                    encoded.AddRange("\r\n"u8.ToArray());
                    offset += size;
                }
                SizeLine(0, last.Item1, false, last.Item2, last.Item3);
                foreach (var (name, value) in trailers)
                    encoded.AddRange(Encoding.ASCII.GetBytes($"{name}: {value}\r\n"));
                encoded.AddRange("\r\n"u8.ToArray());
                return new EncodedBody(body, encoded.ToArray());
            });

    [Fact]
    public void Property_RandomChunking_InRandomPieces_YieldsExactlyTheBody_AndDoneExactlyAtTheEnd()
    {
        Gen.Select(GenEncoded, Gen.Int[1, 70].Array[1, 8], Gen.Byte.Array[0, 30]).Sample((e, pieces, extra) =>
        {
            var input = e.Encoded.Concat(extra).ToArray();
            var d = DecodeAll(input, pieces);
            Assert.Equal(ChunkStatus.Done, d.Final);
            Assert.True(d.IsDone);
            Assert.Equal(e.Encoded.Length, d.Consumed);
            Assert.Equal(e.Body, d.Body);

            // One byte short of the end is never Done.
            var shortOne = DecodeAll(e.Encoded[..^1], pieces);
            Assert.Equal(ChunkStatus.NeedMore, shortOne.Final);
            Assert.Equal(e.Encoded.Length - 1, shortOne.Consumed);
        }, iter: 3000);
    }

    private static readonly byte[] Interesting = { (byte)'\r', (byte)'\n', (byte)'0', (byte)'f', (byte)'F', (byte)';', (byte)' ', 0, 0x7F, (byte)'g' };

    [Fact]
    public void Property_MutatedEncodings_NeverThrow_NorYieldMoreDataThanInput()
    {
        var value = Gen.Bool.SelectMany(pick => pick ? Gen.Int[0, Interesting.Length - 1].Select(i => Interesting[i]) : Gen.Byte);
        var mutation = Gen.Select(Gen.Int[0, int.MaxValue], Gen.Int[0, 2], value);
        Gen.Select(GenEncoded, mutation.Array[1, 6], Gen.Int[1, 70].Array[1, 8]).Sample((e, mutations, pieces) =>
        {
            var bytes = e.Encoded.ToList();
            foreach (var (position, kind, b) in mutations)
            {
                int at = position % (bytes.Count + 1);
                switch (kind)
                {
                    case 0 when at < bytes.Count: bytes[at] = b; break;
                    case 1: bytes.Insert(at, b); break;
                    case 2 when at < bytes.Count: bytes.RemoveAt(at); break;
                }
            }
            var input = bytes.ToArray();
            var d = DecodeAll(input, pieces);
            Assert.True(d.Final is ChunkStatus.Done or ChunkStatus.Invalid or ChunkStatus.NeedMore);
            Assert.InRange(d.Consumed, 0, input.Length);
            Assert.True(d.Body.Length <= input.Length);
            Assert.True(d.Body.Length <= d.Consumed);
        }, iter: 20_000);
    }

    [Fact]
    public void Property_RandomBytes_NeverThrow()
    {
        var alphabet = Gen.Int[0, 9].SelectMany(p => p < 6 ? Gen.Int[0, Interesting.Length - 1].Select(i => Interesting[i]) : Gen.Byte);
        Gen.Select(alphabet.Array[0, 200], Gen.Int[1, 16].Array[1, 4]).Sample((input, pieces) =>
        {
            var d = DecodeAll(input, pieces);
            Assert.True(d.Body.Length <= input.Length);
        }, iter: 20_000);
    }
}
