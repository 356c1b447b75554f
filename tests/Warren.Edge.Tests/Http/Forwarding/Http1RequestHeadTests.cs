using System.Text;
using CsCheck;
using Warren.Edge.Http.Forwarding;

namespace Warren.Edge.Tests.Http.Forwarding;

/// <summary>
/// The strict parser of a client's HTTP/1.1 request head. It accepts only the plainest heads and hands everything
/// else to Kestrel, so "false" is never an error — but it must never be true for a head outside its grammar, and it
/// must never throw.
/// </summary>
public class Http1RequestHeadTests
{
    private static byte[] B(string s) => Encoding.Latin1.GetBytes(s);

    private static string S(ReadOnlySpan<byte> s) => Encoding.Latin1.GetString(s);

    private sealed record Parsed(string Method, string Target, List<(string Name, string Value)> Fields);

    private static Parsed? Parse(byte[] data)
    {
        var head = new Http1RequestHead();
        if (!head.TryParse(data))
            return null;
        return Describe(head, data);
    }

    private static Parsed Describe(Http1RequestHead head, byte[] data)
    {
        var fields = new List<(string, string)>();
        foreach (var f in head.Headers)
            fields.Add((S(data.AsSpan(f.NameStart, f.NameLength)), S(data.AsSpan(f.ValueStart, f.ValueLength))));
        return new Parsed(S(data.AsSpan(0, head.MethodLength)), S(data.AsSpan(head.TargetStart, head.TargetLength)), fields);
    }

    private static Parsed AssertParses(string text)
    {
        var parsed = Parse(B(text));
        Assert.True(parsed is not null, $"expected true for {Escape(text)}");
        return parsed!;
    }

    private static void AssertRejected(string text)
    {
        var head = new Http1RequestHead();
        Assert.False(head.TryParse(B(text)), $"expected false for {Escape(text)}");
    }

    private static string Escape(string s) =>
        string.Concat(s.Select(c => c is >= ' ' and <= '~' ? c.ToString() : $"\\x{(int)c:X2}"));

    private static string Lines(int n) => string.Concat(Enumerable.Range(0, n).Select(i => $"X-H{i}: {i}\r\n"));

    // ------------------------------------------------------------------ accepted heads

    [Fact]
    public void SimpleGet_WithHost()
    {
        const string text = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
        var head = new Http1RequestHead();
        var data = B(text);
        Assert.True(head.TryParse(data));
        Assert.Equal(3, head.MethodLength);
        Assert.Equal("GET", Encoding.ASCII.GetString(data, 0, head.MethodLength));
        Assert.Equal(4, head.TargetStart);
        Assert.Equal("/index.html?q=1".Length, head.TargetLength);
        Assert.Equal(1, head.HeaderCount);
        var f = head.Headers[0];
        Assert.Equal(new HeaderField(30, 4, 36, 11), f);
        Assert.Equal("Host", S(data.AsSpan(f.NameStart, f.NameLength)));
        Assert.Equal("example.com", S(data.AsSpan(f.ValueStart, f.ValueLength)));
    }

    [Fact]
    public void NoFields_IsAccepted()
    {
        var p = AssertParses("GET / HTTP/1.1\r\n\r\n");
        Assert.Equal("GET", p.Method);
        Assert.Equal("/", p.Target);
        Assert.Empty(p.Fields);
    }

    [Fact]
    public void SeveralFields_AreReportedInOrder()
    {
        var p = AssertParses(
            "POST /api/v1/items HTTP/1.1\r\nHost: a.example\r\nContent-Type: application/json\r\nContent-Length: 12\r\n" +
            "Accept: */*\r\nX-Weird: a:b;c=\"d\" e\r\nHost: again\r\n\r\n");
        Assert.Equal("POST", p.Method);
        Assert.Equal("/api/v1/items", p.Target);
        Assert.Equal(new[]
        {
            ("Host", "a.example"), ("Content-Type", "application/json"), ("Content-Length", "12"),
            ("Accept", "*/*"), ("X-Weird", "a:b;c=\"d\" e"), ("Host", "again"),
        }, p.Fields);
    }

    [Theory]
    [InlineData("X-A: value\r\n", "value")]
    [InlineData("X-A:value\r\n", "value")]
    [InlineData("X-A:   value   \r\n", "value")]
    [InlineData("X-A:\t\tvalue\t\t\r\n", "value")]
    [InlineData("X-A: \t \tspaced \t inside\t \t \r\n", "spaced \t inside")]
    [InlineData("X-A:\tv\r\n", "v")]
    public void Ows_IsTrimmedOnBothSides_InteriorWhitespaceKept(string field, string expected)
    {
        var p = AssertParses("GET / HTTP/1.1\r\n" + field + "\r\n");
        Assert.Equal(("X-A", expected), p.Fields.Single());
    }

    [Theory]
    [InlineData("X-Empty:\r\n")]
    [InlineData("X-Empty: \r\n")]
    [InlineData("X-Empty: \t \t\r\n")]
    public void EmptyValue_IsAccepted(string field)
    {
        var data = B("GET / HTTP/1.1\r\n" + field + "\r\n");
        var head = new Http1RequestHead();
        Assert.True(head.TryParse(data));
        var f = head.Headers.ToArray().Single();
        Assert.Equal(0, f.ValueLength);
        Assert.InRange(f.ValueStart, f.NameStart + f.NameLength + 1, data.Length);
        Assert.Equal("X-Empty", S(data.AsSpan(f.NameStart, f.NameLength)));
    }

    [Fact]
    public void ExactlyMaxHeaderCount_IsAccepted_OneMoreIsRejected()
    {
        Assert.Equal(100, Http1RequestHead.MaxHeaderCount);
        var p = AssertParses("GET / HTTP/1.1\r\n" + Lines(100) + "\r\n");
        Assert.Equal(100, p.Fields.Count);
        Assert.Equal(("X-H99", "99"), p.Fields[^1]);
        AssertRejected("GET / HTTP/1.1\r\n" + Lines(101) + "\r\n");
    }

    [Fact]
    public void SixteenByteMethod_IsAccepted_SeventeenIsRejected()
    {
        Assert.Equal(16, Http1RequestHead.MaxMethodLength);
        var p = AssertParses("ABCDEFGHIJKLMNOP / HTTP/1.1\r\n\r\n");
        Assert.Equal("ABCDEFGHIJKLMNOP", p.Method);
        AssertRejected("ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n\r\n");
    }

    [Theory]
    [InlineData("get")]
    [InlineData("M-SEARCH")]
    [InlineData("PROPFIND")]
    [InlineData("X")]
    [InlineData("!#$%&'*+-.^_`|~")]
    public void AnyTokenMethod_IsAccepted(string method) => Assert.Equal(method, AssertParses($"{method} / HTTP/1.1\r\n\r\n").Method);

    [Theory]
    [InlineData("/")]
    [InlineData("/a/b/c?x=1&y=%20#frag")]
    [InlineData("//double")]
    [InlineData("/!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")]
    public void OriginFormTargets_AreAccepted(string target) => Assert.Equal(target, AssertParses($"GET {target} HTTP/1.1\r\n\r\n").Target);

    [Fact]
    public void ParserInstance_IsReusable_AndResetsBetweenHeads()
    {
        var head = new Http1RequestHead();
        var first = B("PATCH /first HTTP/1.1\r\n" + Lines(5) + "\r\n");
        Assert.True(head.TryParse(first));
        Assert.Equal(5, head.HeaderCount);

        Assert.False(head.TryParse(B("GET / HTTP/1.0\r\n\r\n")));

        var second = B("GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
        Assert.True(head.TryParse(second));
        var p = Describe(head, second);
        Assert.Equal(new[] { ("Host", "h") }, p.Fields);
        Assert.Equal("GET", p.Method);
        Assert.Equal("/s", p.Target);
    }

    // ------------------------------------------------------------------ rejections

    [Theory]
    [InlineData("GET / HTTP/1.0\r\n\r\n")]
    [InlineData("GET / HTTP/2.0\r\n\r\n")]
    [InlineData("GET / HTTP/1.10\r\n\r\n")]
    [InlineData("GET / http/1.1\r\n\r\n")]
    [InlineData("GET / HTTP/1.1 \r\n\r\n")]
    [InlineData("GET / HTTP/1.1\t\r\n\r\n")]
    [InlineData("GET /\r\n\r\n")]
    [InlineData("GET / \r\n\r\n")]
    [InlineData("GET\r\n\r\n")]
    [InlineData("GET  / HTTP/1.1\r\n\r\n")]
    [InlineData("GET /  HTTP/1.1\r\n\r\n")]
    [InlineData("GET\t/ HTTP/1.1\r\n\r\n")]
    [InlineData(" GET / HTTP/1.1\r\n\r\n")]
    public void WrongVersionOrSpacing_IsRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("GET http://x/ HTTP/1.1\r\n\r\n")]
    [InlineData("GET http://x/path HTTP/1.1\r\nHost: x\r\n\r\n")]
    [InlineData("OPTIONS * HTTP/1.1\r\n\r\n")]
    [InlineData("CONNECT example.com:443 HTTP/1.1\r\n\r\n")]
    [InlineData("GET a/b HTTP/1.1\r\n\r\n")]
    public void NonOriginFormTargets_AreRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("GET /a b HTTP/1.1\r\n\r\n")]
    [InlineData("GET /a\u007fb HTTP/1.1\r\n\r\n")]
    [InlineData("GET /a\u0080b HTTP/1.1\r\n\r\n")]
    [InlineData("GET /caf\u00e9 HTTP/1.1\r\n\r\n")]
    [InlineData("GET /a\tb HTTP/1.1\r\n\r\n")]
    [InlineData("GET /a\0b HTTP/1.1\r\n\r\n")]
    [InlineData("GET /a\rb HTTP/1.1\r\n\r\n")]
    [InlineData("GET /a\nb HTTP/1.1\r\n\r\n")]
    public void TargetsWithForbiddenBytes_AreRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData(" / HTTP/1.1\r\n\r\n")]
    [InlineData("GE(T / HTTP/1.1\r\n\r\n")]
    [InlineData("G:T / HTTP/1.1\r\n\r\n")]
    [InlineData("G\u00e9T / HTTP/1.1\r\n\r\n")]
    [InlineData("G\0T / HTTP/1.1\r\n\r\n")]
    public void EmptyOrNonTokenMethod_IsRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("\r\nGET / HTTP/1.1\r\n\r\n")]
    [InlineData("\r\n\r\nGET / HTTP/1.1\r\n\r\n")]
    [InlineData("\r\n\r\n")]
    [InlineData("\nGET / HTTP/1.1\r\n\r\n")]
    public void LeadingEmptyLines_AreRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost : a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nContent-Length : 0\r\n\r\n")]
    public void WhitespaceBeforeColon_IsRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("GET / HTTP/1.1\r\n: a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\n:\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nNoColon\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX(A): a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX\u00e9: a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX A: a\r\n\r\n")]
    public void EmptyOrNonTokenFieldName_IsRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\n Host: a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\r\n b: c\r\n\r\n")]
    public void ObsFold_IsRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("GET / HTTP/1.1\nHost: a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\nX-B: b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\n\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\n\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\n\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\rHost: a\r\n\r\n")]
    public void BareLfOrCrLineEndings_AreRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\r\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: \ra\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: \0\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\u0001b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: \u001b[31m\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\u007fb\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: caf\u00e9\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: \u0080\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: \u00ff\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\u000bb\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\u000cb\r\n\r\n")]
    public void CtlDelOrObsTextInValue_IsRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("GET / HTTP/1.1\r\n\r\nx")]
    [InlineData("GET / HTTP/1.1\r\n\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\n\r\n\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\nX-B: b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")]
    public void BytesAfterTheEmptyLine_AreRejected(string text) => AssertRejected(text);

    [Theory]
    [InlineData("")]
    [InlineData("\r\n")]
    [InlineData("GET / HTTP/1.1")]
    [InlineData("GET / HTTP/1.1\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\n\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\n")]
    [InlineData("GET / HTTP/1.1\n\n")]
    public void HeadNotEndingInCrLfCrLf_IsRejected(string text) => AssertRejected(text);

    // ------------------------------------------------------------------ FindEnd

    [Theory]
    [InlineData("", -1)]
    [InlineData("GET / HTTP/1.1", -1)]
    [InlineData("GET / HTTP/1.1\r\n", -1)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r", -1)]
    [InlineData("GET / HTTP/1.1\n\n", Http1RequestHead.NotPlain)]
    [InlineData("GET / HTTP/1.1\r\n\n\r\n", Http1RequestHead.NotPlain)]
    [InlineData("GET / HTTP/1.1\nHost: a", Http1RequestHead.NotPlain)]
    [InlineData("\n", Http1RequestHead.NotPlain)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n", -1)]
    [InlineData("\r\n\r\n", 4)]
    [InlineData("GET / HTTP/1.1\r\n\r\n", 18)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 27)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\n", 27)]
    [InlineData("\r\r\n\r\n\r\n", 5)]
    public void FindEnd_ReturnsTheIndexJustPastTheFirstCrLfCrLf(string text, int expected) =>
        Assert.Equal(expected, Http1RequestHead.FindEnd(B(text)));

    [Fact]
    public void FindEnd_ThenTryParse_OnAHeadWithBody()
    {
        var data = B("PUT /upload HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        int end = Http1RequestHead.FindEnd(data);
        Assert.Equal(data.Length - 5, end);
        var head = new Http1RequestHead();
        Assert.True(head.TryParse(data.AsSpan(0, end)));
        Assert.False(head.TryParse(data));
    }

    // ------------------------------------------------------------------ a reference of the contract

    private const string TokenAlphabet = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

    private static bool IsTokenChar(char c) => TokenAlphabet.Contains(c);

    private static bool IsToken(string s) => s.Length > 0 && s.All(IsTokenChar);

    private static bool IsValueChar(char c) => c is ' ' or '\t' or >= '\x21' and <= '\x7E';

    private static bool IsOws(char c) => c is ' ' or '\t';

    /// <summary>
    /// The contract, written independently of the parser (string splitting on a Latin-1 view of the bytes): the
    /// parse a plain HTTP/1.1 head must give, or null when the parser must answer false.
    /// </summary>
    private static Parsed? Reference(byte[] data)
    {
        string s = Encoding.Latin1.GetString(data);
        // The first CRLFCRLF is the end of the head and must be the end of the input.
        if (!s.EndsWith("\r\n\r\n", StringComparison.Ordinal) || s.IndexOf("\r\n\r\n", StringComparison.Ordinal) != s.Length - 4)
            return null;
        var lines = s[..^4].Split("\r\n");
        if (lines.Any(l => l.Contains('\r') || l.Contains('\n')))
            return null;

        var parts = lines[0].Split(' ');
        if (parts.Length != 3 || parts[2] != "HTTP/1.1")
            return null;
        string method = parts[0], target = parts[1];
        if (!IsToken(method) || method.Length > 16)
            return null;
        if (!target.StartsWith('/') || !target.All(c => c is >= '\x21' and <= '\x7E'))
            return null;

        if (lines.Length - 1 > 100)
            return null;
        var fields = new List<(string, string)>();
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            if (colon < 0)
                return null;
            string name = line[..colon];
            if (!IsToken(name))
                return null;
            string value = line[(colon + 1)..].Trim(' ', '\t');
            if (!value.All(IsValueChar))
                return null;
            fields.Add((name, value));
        }
        return new Parsed(method, target, fields);
    }

    /// <summary>Checks one input: never throws, agrees with <see cref="Reference"/>, and a true parse is well-formed.</summary>
    private static void CheckAgainstContract(byte[] data)
    {
        var head = new Http1RequestHead();
        bool ok = head.TryParse(data);
        var expected = Reference(data);
        Assert.True(ok == (expected is not null),
            $"TryParse returned {ok}, the contract says {expected is not null}, for {Escape(Encoding.Latin1.GetString(data))}");
        if (!ok)
            return;

        // Ranges lie inside the input.
        Assert.InRange(head.MethodLength, 1, Http1RequestHead.MaxMethodLength);
        Assert.Equal(head.MethodLength + 1, head.TargetStart);
        Assert.True(head.TargetLength >= 1 && head.TargetStart + head.TargetLength <= data.Length);
        Assert.InRange(head.HeaderCount, 0, Http1RequestHead.MaxHeaderCount);
        Assert.Equal(data.Length, Http1RequestHead.FindEnd(data));

        var method = S(data.AsSpan(0, head.MethodLength));
        var target = S(data.AsSpan(head.TargetStart, head.TargetLength));
        Assert.True(IsToken(method));
        Assert.StartsWith("/", target);
        Assert.True(target.All(c => c is >= '\x21' and <= '\x7E'));

        int previousEnd = head.TargetStart + head.TargetLength;
        foreach (var f in head.Headers)
        {
            Assert.True(f.NameStart > previousEnd && f.NameLength > 0 && f.NameStart + f.NameLength <= data.Length);
            Assert.True(f.ValueStart > f.NameStart + f.NameLength && f.ValueLength >= 0 && f.ValueStart + f.ValueLength <= data.Length);
            var name = S(data.AsSpan(f.NameStart, f.NameLength));
            var value = S(data.AsSpan(f.ValueStart, f.ValueLength));
            Assert.True(IsToken(name), $"name {Escape(name)}");
            Assert.True(value.All(IsValueChar), $"value {Escape(value)}");
            Assert.True(value.Length == 0 || (!IsOws(value[0]) && !IsOws(value[^1])), $"value {Escape(value)}");
            previousEnd = f.ValueStart + f.ValueLength;
        }

        var actual = Describe(head, data);
        Assert.Equal(expected!.Method, actual.Method);
        Assert.Equal(expected.Target, actual.Target);
        Assert.Equal(expected.Fields, actual.Fields);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: \t b \t\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\n\r\nx\r\n\r\n")]
    [InlineData("GET http://x/ HTTP/1.1\r\n\r\n")]
    public void Reference_AgreesWithTheParser_OnExamples(string text) => CheckAgainstContract(B(text));

    // ------------------------------------------------------------------ properties

    private static readonly Gen<string> GenMethod =
        Gen.Int[0, TokenAlphabet.Length - 1].Array[1, Http1RequestHead.MaxMethodLength]
            .Select(ix => new string(ix.Select(i => TokenAlphabet[i]).ToArray()));

    private static readonly Gen<string> GenTarget =
        Gen.Byte[0x21, 0x7E].Array[0, 40].Select(b => "/" + Encoding.ASCII.GetString(b));

    private static readonly Gen<string> GenName =
        Gen.Int[0, TokenAlphabet.Length - 1].Array[1, 24]
            .Select(ix => new string(ix.Select(i => TokenAlphabet[i]).ToArray()));

    /// <summary>A value byte: HTAB, SP or VCHAR.</summary>
    private static readonly Gen<char> GenValueChar = Gen.Int[0, 100].SelectMany(p =>
        p < 5 ? Gen.Const('\t')
        : p < 15 ? Gen.Const(' ')
        : Gen.Byte[0x21, 0x7E].Select(b => (char)b));

    private static readonly Gen<string> GenOws =
        Gen.Bool.Array[0, 3].Select(a => new string(a.Select(t => t ? '\t' : ' ').ToArray()));

    /// <summary>(raw value with random surrounding OWS, the trimmed value the parser must report).</summary>
    private static readonly Gen<(string Raw, string Trimmed)> GenValue =
        Gen.Select(GenValueChar.Array[0, 40], GenOws, GenOws).Select((core, pre, post) =>
        {
            var trimmed = new string(core).Trim(' ', '\t');
            return (pre + trimmed + post, trimmed);
        });

    private sealed record GeneratedHead(byte[] Bytes, string Method, string Target, List<(string Name, string Value)> Fields);

    private static readonly Gen<GeneratedHead> GenHead =
        Gen.Select(GenMethod, GenTarget, Gen.Select(GenName, GenValue).Array[0, Http1RequestHead.MaxHeaderCount])
            .Select((method, target, fields) =>
            {
                var text = new StringBuilder();
                text.Append(method).Append(' ').Append(target).Append(" HTTP/1.1\r\n");
                var expected = new List<(string, string)>();
                foreach (var (name, (raw, trimmed)) in fields)
                {
                    text.Append(name).Append(':').Append(raw).Append("\r\n");
                    expected.Add((name, trimmed));
                }
                text.Append("\r\n");
                return new GeneratedHead(B(text.ToString()), method, target, expected);
            });

    [Fact]
    public void Property_ValidHeads_ParseToExactlyTheGeneratedParts()
    {
        GenHead.Sample(g =>
        {
            var head = new Http1RequestHead();
            Assert.True(head.TryParse(g.Bytes), $"false for {Escape(Encoding.Latin1.GetString(g.Bytes))}");
            Assert.Equal(g.Bytes.Length, Http1RequestHead.FindEnd(g.Bytes));
            var p = Describe(head, g.Bytes);
            Assert.Equal(g.Method, p.Method);
            Assert.Equal(g.Method, Encoding.ASCII.GetString(g.Bytes, 0, head.MethodLength));
            Assert.Equal(g.Target, p.Target);
            Assert.Equal(g.Fields, p.Fields);

            // The same head followed by anything is not one head.
            var withTail = g.Bytes.Concat("x"u8.ToArray()).ToArray();
            Assert.False(head.TryParse(withTail));
            // And every strict prefix is not a complete head (a prefix may end in CRLFCRLF only at the very end).
            Assert.False(head.TryParse(g.Bytes.AsSpan(0, g.Bytes.Length - 1)));
        }, iter: 500);
    }

    private static readonly byte[] Interesting =
    {
        (byte)'\r', (byte)'\n', 0, (byte)' ', (byte)'\t', (byte)':', (byte)'/', 0x7F, 0x80, 0xE9, 0xFF, (byte)'a',
    };

    private static readonly Gen<byte> GenInterestingByte =
        Gen.Bool.SelectMany(pick => pick ? Gen.Int[0, Interesting.Length - 1].Select(i => Interesting[i]) : Gen.Byte);

    /// <summary>A mutation: position (scaled to the input), kind (flip/insert/delete), and byte.</summary>
    private static readonly Gen<(int Position, int Kind, byte Value)> GenMutation =
        Gen.Select(Gen.Int[0, int.MaxValue], Gen.Int[0, 2], GenInterestingByte);

    private static byte[] Mutate(byte[] input, (int Position, int Kind, byte Value)[] mutations)
    {
        var bytes = input.ToList();
        foreach (var (position, kind, value) in mutations)
        {
            int at = position % (bytes.Count + 1);
            switch (kind)
            {
                case 0 when at < bytes.Count: bytes[at] = value; break;
                case 2 when at < bytes.Count: bytes.RemoveAt(at); break;
                default: bytes.Insert(at, value); break;
            }
        }
        return bytes.ToArray();
    }

    private static readonly byte[][] Seeds =
    {
        B("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        B("POST /p?q HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-Ows: \t v \t\r\nX-Empty:\r\n\r\n"),
        B("ABCDEFGHIJKLMNOP / HTTP/1.1\r\n\r\n"),
        B("GET / HTTP/1.1\r\n" + Lines(100) + "\r\n"),
    };

    [Fact]
    public void Property_MutatedHeads_NeverThrow_AndTrueMeansAPlainHead()
    {
        var seeds = Gen.Int[0, 7].SelectMany(i => i < Seeds.Length ? Gen.Const(Seeds[i]) : GenHead.Select(g => g.Bytes));
        Gen.Select(seeds, GenMutation.Array[1, 4]).Sample((seed, mutations) =>
        {
            var data = Mutate(seed, mutations);
            CheckAgainstContract(data);
            // What a caller would hand over: the input up to its first CRLFCRLF.
            int end = Http1RequestHead.FindEnd(data);
            if (end >= 0 && end != data.Length)
                CheckAgainstContract(data[..end]);
        }, iter: 1000);
    }

    [Fact]
    public void Property_RandomBytes_NeverThrow_AndTrueMeansAPlainHead()
    {
        var alphabet = Gen.Int[0, 9].SelectMany(p => p < 5 ? Gen.Int[0, Interesting.Length - 1].Select(i => Interesting[i]) : Gen.Byte);
        Gen.Select(alphabet.Array[0, 200], Gen.Int[0, 3]).Sample((body, shape) =>
        {
            var data = shape switch
            {
                0 => body,
                1 => body.Concat("\r\n\r\n"u8.ToArray()).ToArray(),
                2 => B("GET / HTTP/1.1\r\n").Concat(body).ToArray(),
                _ => B("GET / HTTP/1.1\r\n").Concat(body).Concat("\r\n\r\n"u8.ToArray()).ToArray(),
            };
            CheckAgainstContract(data);
        }, iter: 1000);
    }

    [Fact]
    public void Property_FindEnd_AgreesWithANaiveSearch()
    {
        var alphabet = Gen.Int[0, 3].Select(i => "\r\na "[i]);
        alphabet.Array[0, 40].Sample(chars =>
        {
            var data = B(new string(chars));
            int naive = -1;
            for (int i = 0; i + 4 <= data.Length; i++)
            {
                if (data[i] == '\r' && data[i + 1] == '\n' && data[i + 2] == '\r' && data[i + 3] == '\n')
                {
                    naive = i + 4;
                    break;
                }
            }
            // Without a CRLF CRLF, any LF not after a CR makes the bytes not a plain head.
            if (naive < 0 && data.Where((b, i) => b == '\n' && (i == 0 || data[i - 1] != '\r')).Any())
                naive = Http1RequestHead.NotPlain;
            Assert.Equal(naive, Http1RequestHead.FindEnd(data));
        }, iter: 1000);
    }
}
