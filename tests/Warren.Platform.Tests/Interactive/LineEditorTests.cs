using CsCheck;
using System.Text;
using Warren.Platform.Interactive;
using Xunit;

namespace Warren.Platform.Tests.Interactive;

public class LineEditorTests
{
    private const string Left = "\x1b[D", Right = "\x1b[C", Up = "\x1b[A", Down = "\x1b[B", Home = "\x1b[H", End = "\x1b[F";

    private static (LineEditor editor, MemoryStream output) Editor(string input, Func<string, int, Completion?>? complete = null)
    {
        var output = new MemoryStream();
        return (new LineEditor(new MemoryStream(Encoding.UTF8.GetBytes(input)), output, complete), output);
    }

    private static async Task<string?> ReadOne(string input)
    {
        var (e, _) = Editor(input);
        return await e.ReadLineAsync("> ");
    }

    [Theory]
    [InlineData("ls\r", "ls")]
    [InlineData("ls\n", "ls")]
    [InlineData("lx\x7fs\r", "ls")]
    [InlineData("lx\bs\r", "ls")]
    [InlineData("s" + Left + "l\r", "ls")]
    [InlineData("l" + Left + Right + "s\r", "ls")]
    [InlineData("s --json" + Home + "l\r", "ls --json")]
    [InlineData("s" + "\x01" + "l" + "\x05" + "!\r", "ls!")]
    [InlineData("\x1bOHx\x1bOF\r", "x")]
    [InlineData("ab\x1b[1~c\x1b[4~d\r", "cabd")]
    [InlineData("abc" + Left + Left + "\x1b[3~\r", "ac")]
    [InlineData("abc" + Left + "\x04\r", "ab")]
    [InlineData("garbage\x15ls\r", "ls")]
    [InlineData("abcdef" + Left + Left + "\x0b\r", "abcd")]
    [InlineData("new --name x\x17y\r", "new --name y")]
    [InlineData("new --name x  \x17\r", "new --name ")]
    [InlineData("h\u00e9llo \u2713\r", "h\u00e9llo \u2713")]
    [InlineData("a\x1b[99;5Xb\r", "ab")]
    [InlineData("a\u0007b\r", "ab")]
    [InlineData("ab\x1b\r", "ab")]
    [InlineData("a\u00ffb\r", "a\u00ffb")]
    public async Task EditsTheLine(string input, string expected) => Assert.Equal(expected, await ReadOne(input));

    [Fact]
    public async Task CtrlC_AbandonsTheLine()
    {
        var (e, output) = Editor("abc\x03");
        Assert.Equal("", await e.ReadLineAsync("> "));
        Assert.EndsWith("^C\r\n", Encoding.UTF8.GetString(output.ToArray()));
    }

    [Fact]
    public async Task CtrlD_OnEmptyLine_IsEndOfInput() => Assert.Null(await ReadOne("\x04"));

    [Fact]
    public async Task EndOfStream_IsEndOfInput() => Assert.Null(await ReadOne("partial"));

    [Fact]
    public async Task CrLf_IsOneEnter()
    {
        var (e, _) = Editor("a\r\nb\r\n");
        Assert.Equal("a", await e.ReadLineAsync("> "));
        Assert.Equal("b", await e.ReadLineAsync("> "));
    }

    [Fact]
    public async Task History_UpAndDown()
    {
        var (e, _) = Editor(Up + "\r" + Up + Up + "\r" + "dra" + Up + Down + "ft\r" + Up + Up + Up + Up + "\r");
        e.AddHistory("one");
        e.AddHistory("two");
        Assert.Equal("two", await e.ReadLineAsync("> "));
        Assert.Equal("one", await e.ReadLineAsync("> "));
        Assert.Equal("draft", await e.ReadLineAsync("> "));
        Assert.Equal("one", await e.ReadLineAsync("> ")); // stops at the oldest
    }

    [Fact]
    public void History_SkipsBlanksAndRepeats_AndIsBounded()
    {
        var (e, _) = Editor("");
        e.AddHistory("");
        e.AddHistory("ls");
        e.AddHistory("ls");
        Assert.Equal(["ls"], e.History);
        for (int i = 0; i < LineEditor.MaxHistory + 1; i++) e.AddHistory("c" + i);
        Assert.Equal(LineEditor.MaxHistory, e.History.Count);
    }

    [Fact]
    public async Task Tab_SingleCandidate_CompletesWithASpace()
    {
        var (e, _) = Editor("wh\tx\r", (line, cursor) => new Completion(0, ["whoami"]));
        Assert.Equal("whoami x", await e.ReadLineAsync("> "));
    }

    [Fact]
    public async Task Tab_FlagWithEquals_NoSpace()
    {
        var (e, _) = Editor("new --na\tweb\r", (line, cursor) => new Completion(4, ["--name="]));
        Assert.Equal("new --name=web", await e.ReadLineAsync("> "));
    }

    [Fact]
    public async Task Tab_ManyCandidates_InsertsCommonPrefixThenLists()
    {
        var (e, output) = Editor("r\t\t\r", (line, cursor) =>
            new Completion(0, new[] { "rename", "restart", "resize", "rm" }.Where(c => c.StartsWith(line[..cursor])).ToList()));
        Assert.Equal("r", await e.ReadLineAsync("> "));
        Assert.Contains("rename  restart  resize  rm\r\n", Encoding.UTF8.GetString(output.ToArray()));

        var (e2, _) = Editor("re\tn\t\r", (line, cursor) =>
            new Completion(0, new[] { "rename", "restart", "resize" }.Where(c => c.StartsWith(line[..cursor])).ToList()));
        Assert.Equal("rename ", await e2.ReadLineAsync("> "));
    }

    [Fact]
    public async Task Tab_CompleterThatThrows_IsIgnored()
    {
        var (e, _) = Editor("ls\t\r", (_, _) => throw new InvalidOperationException());
        Assert.Equal("ls", await e.ReadLineAsync("> "));
    }

    [Fact]
    public async Task Output_EchoesWithPromptAndCrLf()
    {
        var (e, output) = Editor("ls\r");
        await e.ReadLineAsync("warren> ");
        Assert.Equal("warren> ls\r\n", Encoding.UTF8.GetString(output.ToArray()));
    }

    [Fact]
    public async Task Output_RedrawMovesTheCursorBack()
    {
        var (e, output) = Editor("ab" + Left + "\r");
        await e.ReadLineAsync("> ");
        Assert.Contains("\r> ab\x1b[K\x1b[1D", Encoding.UTF8.GetString(output.ToArray()));
    }

    [Fact]
    public async Task LineLengthIsBounded()
    {
        var (e, _) = Editor(new string('a', LineEditor.MaxLineChars + 10) + "\r");
        Assert.Equal(LineEditor.MaxLineChars, (await e.ReadLineAsync(""))!.Length);
    }

    /// <summary>Delivers one byte per read, so escape sequences and UTF-8 characters arrive split.</summary>
    private sealed class DribbleStream(byte[] data) : Stream
    {
        private int _pos;
        public override int Read(byte[] buffer, int offset, int count)
        {
            if (_pos >= data.Length || count == 0) return 0;
            buffer[offset] = data[_pos++];
            return 1;
        }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => data.Length;
        public override long Position { get => _pos; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    [Fact]
    public async Task SplitReads_AreReassembled()
    {
        var input = new DribbleStream(Encoding.UTF8.GetBytes("\u00e9s" + Left + Left + "l" + "\x1b[3~" + End + "!\r"));
        var e = new LineEditor(input, new MemoryStream());
        Assert.Equal("ls!", await e.ReadLineAsync("> "));
    }

    [Fact]
    public async Task ArbitraryBytes_NeverThrow()
    {
        var gen = CsCheck.Gen.Byte.Array[0, 64];
        await Task.Run(() => gen.Sample(bytes =>
        {
            var e = new LineEditor(new MemoryStream(bytes), new MemoryStream(), (l, c) => new Completion(0, ["x", "xy"]));
            for (int i = 0; i < 70; i++)
                if (e.ReadLineAsync("> ").GetAwaiter().GetResult() is null) break;
        }, iter: 1000, threads: 1));
    }

    [Fact]
    public async Task MalformedUtf8_BecomesReplacement_WithoutEatingTheNextKey()
    {
        var e = new LineEditor(new MemoryStream([0x61, 0xE8, 0x66, 0xFF, 0x0D]), new MemoryStream());
        Assert.Equal("a\uFFFDf\uFFFD", await e.ReadLineAsync("> "));
    }

    [Fact]
    public async Task WithCompletion_KeepsTypedAheadInputAndHistory()
    {
        // One read brings both lines: the second must survive the hand-over (sign-up dialogue → shell).
        var e = new LineEditor(new MemoryStream(Encoding.UTF8.GetBytes("first\r\nsecond\r")), new MemoryStream());
        Assert.Equal("first", await e.ReadLineAsync("> "));
        e.AddHistory("first");
        var next = e.WithCompletion((l, c) => null);
        Assert.Equal("second", await next.ReadLineAsync("> "));
        Assert.Equal(["first"], next.History);
        Assert.Null(await next.ReadLineAsync("> "));
    }
}
