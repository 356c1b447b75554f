using System.Text;
using CsCheck;
using Warren.Edge.Http.Forwarding;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>The strict parser of a VM's (untrusted) HTTP/1.x response head.</summary>
public class Http1ResponseHeadTests
{
    private static byte[] B(string s) => Encoding.Latin1.GetBytes(s);

    private static (HeadParseStatus Status, int Consumed, Http1ResponseHead Head, string? Error) Parse(byte[] data)
    {
        var head = new Http1ResponseHead();
        var status = head.TryParse(data, out int consumed, out string? error);
        return (status, consumed, head, error);
    }

    private static (HeadParseStatus Status, int Consumed, Http1ResponseHead Head, string? Error) Parse(string data) => Parse(B(data));

    private static List<(string Name, string Value)> Fields(Http1ResponseHead head, byte[] data)
    {
        var list = new List<(string, string)>();
        foreach (var f in head.Headers)
            list.Add((Encoding.Latin1.GetString(data, f.NameStart, f.NameLength), Encoding.Latin1.GetString(data, f.ValueStart, f.ValueLength)));
        return list;
    }

    private static void AssertComplete(string text, int expectedConsumed, out Http1ResponseHead head, out List<(string Name, string Value)> fields)
    {
        var data = B(text);
        var (status, consumed, h, error) = Parse(data);
        Assert.True(status == HeadParseStatus.Complete, $"expected Complete, got {status} ({error})");
        Assert.Null(error);
        Assert.Equal(expectedConsumed, consumed);
        head = h;
        fields = Fields(h, data);
    }

    private static void AssertInvalid(string text)
    {
        var (status, _, _, error) = Parse(text);
        Assert.Equal(HeadParseStatus.Invalid, status);
        Assert.False(string.IsNullOrEmpty(error));
    }

    // ------------------------------------------------------------------ valid heads

    [Fact]
    public void Http11_WithContentLength_ParsesStatusFieldsAndFraming()
    {
        const string headText = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Empty:\r\nX-Ows: \t spaced value \t \r\n\r\n";
        AssertComplete(headText + "hello", headText.Length, out var head, out var fields);
        Assert.Equal(200, head.StatusCode);
        Assert.Equal(1, head.MinorVersion);
        Assert.Equal(5, head.ContentLength);
        Assert.False(head.Chunked);
        Assert.False(head.ConnectionClose);
        Assert.True(head.KeepAlive);
        Assert.False(head.IsInformational);
        Assert.Equal(4, head.HeaderCount);
        Assert.Equal(new[] { ("Content-Type", "text/plain"), ("Content-Length", "5"), ("X-Empty", ""), ("X-Ows", "spaced value") }, fields);
    }

    [Fact]
    public void Http10_IsNotKeepAlive_UnlessItSaysSo()
    {
        AssertComplete("HTTP/1.0 200 OK\r\n\r\n", 19, out var plain, out _);
        Assert.Equal(0, plain.MinorVersion);
        Assert.Equal(-1, plain.ContentLength);
        Assert.False(plain.KeepAlive);

        AssertComplete("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n", 43, out var keep, out _);
        Assert.True(keep.ConnectionKeepAlive);
        Assert.True(keep.KeepAlive);
    }

    [Fact]
    public void ConnectionClose_EndsKeepAlive_AndNamedFieldsAreHopByHop()
    {
        const string text = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private ,close\r\nX-Private: 1\r\n\r\n";
        var data = B(text);
        var (status, consumed, head, _) = Parse(data);
        Assert.Equal(HeadParseStatus.Complete, status);
        Assert.Equal(text.Length, consumed);
        Assert.True(head.ConnectionClose);
        Assert.False(head.KeepAlive);
        Assert.True(head.ConnectionNamesFields);
        Assert.True(head.IsNamedByConnection(data, "x-private"u8));
        Assert.False(head.IsNamedByConnection(data, "X-Other"u8));
    }

    [Fact]
    public void NoReasonPhrase_AndEmptyReasonPhrase_AreAccepted()
    {
        AssertComplete("HTTP/1.1 204\r\n\r\n", 16, out var none, out _);
        Assert.Equal(204, none.StatusCode);
        AssertComplete("HTTP/1.1 404 \r\n\r\n", 17, out var empty, out _);
        Assert.Equal(404, empty.StatusCode);
    }

    [Fact]
    public void LfOnlyLines_AreAccepted()
    {
        const string text = "HTTP/1.1 200 OK\nContent-Length: 3\nX-A: b\n\nabc";
        AssertComplete(text, text.Length - 3, out var head, out var fields);
        Assert.Equal(3, head.ContentLength);
        Assert.Equal(new[] { ("Content-Length", "3"), ("X-A", "b") }, fields);
    }

    [Fact]
    public void MixedLineEndings_AreAccepted()
    {
        const string text = "HTTP/1.1 200 OK\r\nX-A: b\nX-C: d\r\n\n";
        AssertComplete(text, text.Length, out _, out var fields);
        Assert.Equal(new[] { ("X-A", "b"), ("X-C", "d") }, fields);
    }

    [Theory]
    [InlineData("HTTP/1.1 100 Continue\r\n\r\n", 100)]
    [InlineData("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n", 103)]
    [InlineData("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 101)]
    public void Informational_IsRecognised(string text, int code)
    {
        AssertComplete(text + "HTTP/1.1 200 OK\r\n\r\n", text.Length, out var head, out _);
        Assert.Equal(code, head.StatusCode);
        Assert.True(head.IsInformational);
    }

    [Fact]
    public void RepeatedIdenticalContentLength_IsAccepted()
    {
        const string text = "HTTP/1.1 200 OK\r\nContent-Length: 42\r\ncontent-length: 42\r\n\r\n";
        AssertComplete(text, text.Length, out var head, out _);
        Assert.Equal(42, head.ContentLength);
    }

    [Fact]
    public void Chunked_IsCaseInsensitive()
    {
        AssertComplete("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n", 47, out var head, out _);
        Assert.True(head.Chunked);
        Assert.Equal(-1, head.ContentLength);
    }

    [Fact]
    public void ObsText_InValues_IsAccepted()
    {
        var data = B("HTTP/1.1 200 OK\r\nX-Latin: caf\u00e9 \u00ff\r\n\r\n");
        var (status, _, head, _) = Parse(data);
        Assert.Equal(HeadParseStatus.Complete, status);
        Assert.Equal(("X-Latin", "caf\u00e9 \u00ff"), Fields(head, data).Single());
    }

    [Fact]
    public void ParserInstance_IsReusable_AndResetsBetweenHeads()
    {
        var head = new Http1ResponseHead();
        var first = B("HTTP/1.0 500 Oops\r\nContent-Length: 9\r\nConnection: close, X-A\r\n\r\n");
        Assert.Equal(HeadParseStatus.Complete, head.TryParse(first, out _, out _));
        Assert.True(head.ConnectionClose);
        var second = B("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        Assert.Equal(HeadParseStatus.Complete, head.TryParse(second, out _, out _));
        Assert.Equal(200, head.StatusCode);
        Assert.Equal(1, head.MinorVersion);
        Assert.Equal(-1, head.ContentLength);
        Assert.True(head.Chunked);
        Assert.False(head.ConnectionClose);
        Assert.False(head.ConnectionNamesFields);
        Assert.Equal(1, head.HeaderCount);
    }

    [Fact]
    public void MaxHeaderCount_IsAccepted_OneMoreIsInvalid()
    {
        static string Lines(int n) => string.Concat(Enumerable.Range(0, n).Select(i => $"X-H{i}: {i}\r\n"));
        var ok = "HTTP/1.1 200 OK\r\n" + Lines(Http1ResponseHead.MaxHeaderCount) + "\r\n";
        AssertComplete(ok, ok.Length, out var head, out _);
        Assert.Equal(Http1ResponseHead.MaxHeaderCount, head.HeaderCount);
        AssertInvalid("HTTP/1.1 200 OK\r\n" + Lines(Http1ResponseHead.MaxHeaderCount + 1) + "\r\n");
    }

    // ------------------------------------------------------------------ incomplete

    [Fact]
    public void EveryStrictPrefix_IsIncomplete()
    {
        const string text = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n";
        var data = B(text);
        for (int k = 0; k < data.Length; k++)
        {
            var (status, consumed, _, error) = Parse(data[..k]);
            Assert.True(status == HeadParseStatus.Incomplete, $"prefix {k}: {status} ({error})");
            Assert.Equal(0, consumed);
        }
        Assert.Equal(HeadParseStatus.Complete, Parse(data).Status);
    }

    [Fact]
    public void HeadOver64KiB_IsInvalid_ExactlyAtTheLimitIsComplete()
    {
        const string start = "HTTP/1.1 200 OK\r\nX-Big: ";
        const string end = "\r\n\r\n";
        int fill = Http1ResponseHead.MaxHeadBytes - start.Length - end.Length;
        string exact = start + new string('a', fill) + end;
        Assert.Equal(Http1ResponseHead.MaxHeadBytes, exact.Length);
        AssertComplete(exact, exact.Length, out _, out _);

        string over = start + new string('a', fill + 1) + end;
        var (status, _, _, error) = Parse(over);
        Assert.Equal(HeadParseStatus.Invalid, status);
        Assert.Contains("too large", error);

        // Without an end in sight, 64 KiB of input is enough to give up.
        var endless = B(start + new string('a', Http1ResponseHead.MaxHeadBytes));
        Assert.Equal(HeadParseStatus.Invalid, Parse(endless).Status);
        Assert.Equal(HeadParseStatus.Incomplete, Parse(endless[..(Http1ResponseHead.MaxHeadBytes - 1)]).Status);
        // Many small lines count the same as one big one.
        string manyLines = "HTTP/1.1 200 OK\r\n" + string.Concat(Enumerable.Range(0, 200).Select(i => $"X-{i}: {new string('v', 400)}\r\n")) + "\r\n";
        Assert.True(manyLines.Length > Http1ResponseHead.MaxHeadBytes);
        Assert.Equal(HeadParseStatus.Invalid, Parse(manyLines).Status);
    }

    // ------------------------------------------------------------------ rejections

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\n X-A: a\r\n\r\n")]
    public void ObsFold_IsInvalid(string text)
    {
        var (status, _, _, error) = Parse(text);
        Assert.Equal(HeadParseStatus.Invalid, status);
        Assert.Contains("fold", error);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nX-A : a\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-A\t: a\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\n: a\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX(A): a\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX\u00e9: a\r\n\r\n")]
    public void MalformedFieldNames_AreInvalid(string text) => AssertInvalid(text);

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: a\u0001b\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: a\r\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: a\u007fb\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: \u001b[31m\r\n\r\n")]
    [InlineData("HTTP/1.1 200 O\rK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 O\0K\r\n\r\n")]
    public void ControlCharacters_InValuesOrReason_AreInvalid(string text) => AssertInvalid(text);

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 0\r\ntransfer-encoding: CHUNKED\r\n\r\n")]
    public void TransferEncodingWithContentLength_IsInvalid(string text) => AssertInvalid(text);

    [Theory]
    [InlineData("gzip")]
    [InlineData("identity")]
    [InlineData("gzip, chunked")]
    [InlineData("chunked, chunked")]
    [InlineData("chunked;q=1")]
    [InlineData("")]
    public void TransferEncodingOtherThanChunked_IsInvalid(string value) =>
        AssertInvalid($"HTTP/1.1 200 OK\r\nTransfer-Encoding: {value}\r\n\r\n");

    [Fact]
    public void TwoTransferEncodingFields_AreInvalid() =>
        AssertInvalid("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");

    [Theory]
    [InlineData("5", "6")]
    [InlineData("0", "10")]
    public void DifferingContentLengths_AreInvalid(string a, string b) =>
        AssertInvalid($"HTTP/1.1 200 OK\r\nContent-Length: {a}\r\nContent-Length: {b}\r\n\r\n");

    [Theory]
    [InlineData("abc")]
    [InlineData("-1")]
    [InlineData("+5")]
    [InlineData("5 5")]
    [InlineData("5, 5")]
    [InlineData("0x10")]
    [InlineData("1.0")]
    [InlineData("")]
    [InlineData("1234567890123456789")]
    [InlineData("99999999999999999999999")]
    public void NonDigitOrHugeContentLength_IsInvalid(string value) =>
        AssertInvalid($"HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");

    [Fact]
    public void EighteenDigitContentLength_IsAccepted()
    {
        AssertComplete("HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n", 55, out var head, out _);
        Assert.Equal(999_999_999_999_999_999L, head.ContentLength);
    }

    [Theory]
    [InlineData("HTTP/2 200 OK\r\n\r\n")]
    [InlineData("HTTP/2.0 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.2 200 OK\r\n\r\n")]
    [InlineData("http/1.1 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 20 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 2000 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 099 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 2x0 OK\r\n\r\n")]
    [InlineData("HTTP/1.1  200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1\t200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200\tOK\r\n\r\n")]
    [InlineData("ICY 200 OK\r\n\r\n")]
    [InlineData("garbage\r\n\r\n")]
    [InlineData("\r\n\r\n")]
    [InlineData("\r\nHTTP/1.1 200 OK\r\n\r\n")]
    public void MalformedStatusLines_AreInvalid(string text) => AssertInvalid(text);

    [Fact]
    public void StatusLineAlone_IsJudgedBeforeTheRestArrives()
    {
        // A garbage first line is refused as soon as it ends, without waiting for a whole head.
        Assert.Equal(HeadParseStatus.Invalid, Parse("SSH-2.0-OpenSSH_9.6\r\n").Status);
        Assert.Equal(HeadParseStatus.Incomplete, Parse("HTTP/1.1 200 OK\r\n").Status);
    }

    // ------------------------------------------------------------------ properties

    private const string TokenAlphabet = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

    private static readonly string[] FramingNames = { "content-length", "transfer-encoding", "connection" };

    /// <summary>A field name made of tchars that is not one the parser interprets.</summary>
    private static readonly Gen<string> GenName =
        Gen.Int[0, TokenAlphabet.Length - 1].Array[1, 24]
            .Select(ix => new string(ix.Select(i => TokenAlphabet[i]).ToArray()))
            .Select(n => FramingNames.Contains(n.ToLowerInvariant()) ? "X-" + n : n);

    /// <summary>A field-text byte: HTAB, SP, VCHAR or obs-text.</summary>
    private static readonly Gen<byte> GenFieldByte = Gen.Int[0, 100].SelectMany(p =>
        p < 5 ? Gen.Const((byte)'\t')
        : p < 15 ? Gen.Const((byte)' ')
        : p < 85 ? Gen.Byte[0x21, 0x7E]
        : Gen.Byte[0x80, 0xFF]);

    /// <summary>(raw value with optional surrounding OWS, the value the parser must report).</summary>
    private static readonly Gen<(byte[] Raw, byte[] Trimmed)> GenValue =
        Gen.Select(GenFieldByte.Array[0, 40], Gen.Byte[0, 1].Array[0, 3], Gen.Byte[0, 1].Array[0, 3])
            .Select((core, pre, post) =>
            {
                var trimmed = core.AsSpan().Trim(" \t"u8).ToArray();
                var raw = pre.Select(b => b == 0 ? (byte)' ' : (byte)'\t')
                    .Concat(trimmed)
                    .Concat(post.Select(b => b == 0 ? (byte)' ' : (byte)'\t'))
                    .ToArray();
                return (raw, trimmed);
            });

    private sealed record GeneratedHead(byte[] Bytes, int HeadLength, int Status, int Minor, long ContentLength,
        List<(byte[] Name, byte[] Value)> Fields);

    /// <summary>A valid response head with random fields, line endings and an optional Content-Length, followed by some body bytes.</summary>
    private static readonly Gen<GeneratedHead> GenHead =
        Gen.Select(
                Gen.Int[0, 1],
                Gen.Int[100, 999],
                Gen.Select(GenFieldByte.Array[0, 20], Gen.Bool),
                Gen.Select(GenName, GenValue, Gen.Bool).Array[0, 12],
                Gen.Select(Gen.Bool, Gen.Long[0, 999_999_999_999_999_999L], Gen.Int[0, 12], Gen.Bool),
                Gen.Bool,
                Gen.Byte.Array[0, 20])
            .Select((minor, status, reason, fields, cl, lastCrlf, body) =>
            {
                // Final responses only: an informational head has another one after it.
                if (status < 200)
                    status += 100;
                var bytes = new List<byte>();
                bytes.AddRange(Encoding.ASCII.GetBytes($"HTTP/1.{minor} {status}"));
                var (reasonBytes, hasReason) = reason;
                if (hasReason)
                {
                    bytes.Add((byte)' ');
                    bytes.AddRange(reasonBytes);
                }
                bytes.AddRange("\r\n"u8.ToArray());
                var expected = new List<(byte[], byte[])>();
                var (withCl, clValue, clPosition, clTwice) = cl;
                int clAt = withCl ? Math.Min(clPosition, fields.Length) : -1;
                for (int i = 0; i <= fields.Length; i++)
                {
                    if (i == clAt)
                    {
                        for (int c = 0; c < (clTwice ? 2 : 1); c++)
                        {
                            var clBytes = Encoding.ASCII.GetBytes(clValue.ToString(System.Globalization.CultureInfo.InvariantCulture));
                            bytes.AddRange("Content-Length: "u8.ToArray());
                            bytes.AddRange(clBytes);
                            bytes.AddRange("\r\n"u8.ToArray());
                            expected.Add(("Content-Length"u8.ToArray(), clBytes));
                        }
                    }
                    if (i == fields.Length)
                        break;
                    var (name, (raw, trimmed), crlf) = fields[i];
                    var nameBytes = Encoding.ASCII.GetBytes(name);
                    bytes.AddRange(nameBytes);
                    bytes.Add((byte)':');
                    bytes.AddRange(raw);
                    bytes.AddRange(crlf ? "\r\n"u8.ToArray() : "\n"u8.ToArray());
                    expected.Add((nameBytes, trimmed));
                }
                bytes.AddRange(lastCrlf ? "\r\n"u8.ToArray() : "\n"u8.ToArray());
                int headLength = bytes.Count;
                bytes.AddRange(body);
                return new GeneratedHead(bytes.ToArray(), headLength, status, minor, withCl ? clValue : -1, expected);
            });

    [Fact]
    public void Property_ValidHeads_ParseToExactlyTheirFields_AtEverySplitPoint()
    {
        GenHead.Sample(g =>
        {
            var head = new Http1ResponseHead();
            var status = head.TryParse(g.Bytes, out int consumed, out string? error);
            Assert.True(status == HeadParseStatus.Complete, $"{status}: {error} in {Encoding.Latin1.GetString(g.Bytes)}");
            Assert.Equal(g.HeadLength, consumed);
            Assert.Equal(g.Status, head.StatusCode);
            Assert.Equal(g.Minor, head.MinorVersion);
            Assert.Equal(g.ContentLength, head.ContentLength);
            Assert.False(head.Chunked);
            Assert.Equal(g.Fields.Count, head.HeaderCount);
            for (int i = 0; i < g.Fields.Count; i++)
            {
                var f = head.Headers[i];
                Assert.Equal(g.Fields[i].Name, g.Bytes.AsSpan(f.NameStart, f.NameLength).ToArray());
                Assert.Equal(g.Fields[i].Value, g.Bytes.AsSpan(f.ValueStart, f.ValueLength).ToArray());
            }

            for (int k = 0; k <= g.Bytes.Length; k++)
            {
                var prefix = head.TryParse(g.Bytes.AsSpan(0, k), out int c, out string? e);
                if (k < g.HeadLength)
                {
                    Assert.True(prefix == HeadParseStatus.Incomplete, $"prefix {k} of {g.HeadLength}: {prefix} ({e})");
                }
                else
                {
                    Assert.Equal(HeadParseStatus.Complete, prefix);
                    Assert.Equal(g.HeadLength, c);
                }
            }
        }, iter: 1000);
    }

    /// <summary>A mutation: position (scaled to the input), kind, and byte.</summary>
    private static readonly byte[] Interesting = { (byte)'\r', (byte)'\n', 0, (byte)' ', (byte)'\t', (byte)':', (byte)',', 0x7F, 0x80, 0xFF, (byte)'0', (byte)'9' };

    private static readonly Gen<(int Position, int Kind, byte Value)> GenMutation =
        Gen.Select(Gen.Int[0, int.MaxValue], Gen.Int[0, 3],
            Gen.Bool.SelectMany(pick => pick ? Gen.Int[0, Interesting.Length - 1].Select(i => Interesting[i]) : Gen.Byte));

    private static byte[] Mutate(byte[] input, (int Position, int Kind, byte Value)[] mutations)
    {
        var bytes = input.ToList();
        foreach (var (position, kind, value) in mutations)
        {
            int at = bytes.Count == 0 ? 0 : position % (bytes.Count + 1);
            switch (kind)
            {
                case 0 when at < bytes.Count: bytes[at] = value; break;
                case 1: bytes.Insert(at, value); break;
                case 2 when at < bytes.Count: bytes.RemoveAt(at); break;
                default: if (at < bytes.Count) bytes.RemoveRange(at, bytes.Count - at); break;
            }
        }
        return bytes.ToArray();
    }

    private static readonly byte[][] FramingSeeds =
    {
        B("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\nhello world!"),
        B("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"),
        B("HTTP/1.0 103 Early\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
        B("HTTP/1.1 301 Moved\nLocation: /x\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\n"),
    };

    private static void CheckParsesSafely(byte[] data)
    {
        var head = new Http1ResponseHead();
        var status = head.TryParse(data, out int consumed, out string? error);
        Assert.True(status is HeadParseStatus.Complete or HeadParseStatus.Incomplete or HeadParseStatus.Invalid);
        if (status == HeadParseStatus.Invalid)
        {
            Assert.False(string.IsNullOrEmpty(error));
            return;
        }
        if (status == HeadParseStatus.Incomplete)
        {
            Assert.Equal(0, consumed);
            return;
        }
        Assert.InRange(consumed, 14, data.Length);
        Assert.Equal((byte)'\n', data[consumed - 1]);
        Assert.InRange(head.StatusCode, 100, 999);
        Assert.InRange(head.MinorVersion, 0, 1);
        Assert.InRange(head.HeaderCount, 0, Http1ResponseHead.MaxHeaderCount);
        Assert.True(head.ContentLength >= -1);
        Assert.False(head.Chunked && head.ContentLength >= 0);
        foreach (var f in head.Headers)
        {
            Assert.True(f.NameStart >= 0 && f.NameStart + f.NameLength <= consumed);
            Assert.True(f.ValueStart >= 0 && f.ValueStart + f.ValueLength <= consumed);
            var name = data.AsSpan(f.NameStart, f.NameLength);
            var value = data.AsSpan(f.ValueStart, f.ValueLength);
            Assert.True(Http1ResponseHead.IsToken(name));
            Assert.True(Http1ResponseHead.IsFieldText(value));
            Assert.True(value.IndexOfAny((byte)'\r', (byte)'\n') < 0);
            Assert.True(value.IsEmpty || (value[0] is not ((byte)' ' or (byte)'\t') && value[^1] is not ((byte)' ' or (byte)'\t')));
            head.IsNamedByConnection(data, name);
        }
    }

    [Fact]
    public void Property_MutatedHeads_NeverThrow_AndCompleteOnesHoldOnlyFieldText()
    {
        var seeds = Gen.Int[0, 4].SelectMany(i => i < FramingSeeds.Length
            ? Gen.Const(FramingSeeds[i])
            : GenHead.Select(g => g.Bytes));
        Gen.Select(seeds, GenMutation.Array[1, 8]).Sample((seed, mutations) => CheckParsesSafely(Mutate(seed, mutations)), iter: 20_000);
    }

    [Fact]
    public void Property_RandomBytesAfterAStatusLine_NeverThrow()
    {
        var alphabet = Gen.Int[0, 9].SelectMany(p => p < 4 ? Gen.Int[0, Interesting.Length - 1].Select(i => Interesting[i]) : Gen.Byte);
        Gen.Select(alphabet.Array[0, 300], Gen.Bool).Sample((tail, prefixed) =>
            CheckParsesSafely(prefixed ? B("HTTP/1.1 200 OK\r\n").Concat(tail).ToArray() : tail), iter: 20_000);
    }
}
