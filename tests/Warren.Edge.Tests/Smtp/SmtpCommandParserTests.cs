using CsCheck;
using Warren.Edge.Smtp;

namespace Warren.Edge.Tests.Smtp;

public sealed class SmtpCommandParserTests
{
    /// <summary>One of the given values, uniformly.</summary>
    private static Gen<T> Pick<T>(params T[] values) => Gen.Int[0, values.Length - 1].Select(i => values[i]);

    [Theory]
    [InlineData("EHLO client.example", SmtpVerb.Ehlo, "client.example")]
    [InlineData("ehlo client.example  ", SmtpVerb.Ehlo, "client.example")]
    [InlineData("QUIT", SmtpVerb.Quit, "")]
    [InlineData("StartTLS", SmtpVerb.StartTls, "")]
    [InlineData("MAIL FROM:<a@b.example>", SmtpVerb.Mail, "FROM:<a@b.example>")]
    [InlineData("XYZZY plugh", SmtpVerb.Unknown, "plugh")]
    [InlineData("", SmtpVerb.Unknown, "")]
    public void Line_SplitsVerbAndArgument(string line, SmtpVerb verb, string argument)
    {
        var command = SmtpCommandParser.ParseLine(line);
        Assert.Equal(verb, command.Verb);
        Assert.Equal(argument, command.Argument);
    }

    [Theory]
    [InlineData("FROM:<a@b.example>", "a@b.example", null)]
    [InlineData("from:<a.b+tag@sub.b.example> SIZE=1000 BODY=8BITMIME", "a.b+tag@sub.b.example", 1000L)]
    [InlineData("FROM: <a@b.example>", "a@b.example", null)]
    [InlineData("FROM:<@relay.example,@r2.example:a@b.example>", "a@b.example", null)]
    [InlineData("FROM:<\"odd local\\\"part\"@b.example>", "\"odd local\\\"part\"@b.example", null)]
    [InlineData("FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]", null)]
    [InlineData("FROM:<a@[IPv6:2001:db8::1]> size=99999999999999999999999", "a@[IPv6:2001:db8::1]", long.MaxValue)]
    public void MailFrom_Valid(string argument, string address, long? size)
    {
        Assert.True(SmtpCommandParser.TryParseMailFrom(argument, out var sender, out var declared, out var error), error.ToString());
        Assert.Equal(address, sender!.ToString());
        Assert.Equal(size, declared);
    }

    [Fact]
    public void MailFrom_NullPath_IsNoSender()
    {
        Assert.True(SmtpCommandParser.TryParseMailFrom("FROM:<>", out var sender, out _, out _));
        Assert.Null(sender);
    }

    [Theory]
    [InlineData("FROM:a@b.example", 501)]           // no brackets
    [InlineData("FROM:<a@b.example", 501)]
    [InlineData("FROM:<a@@b.example>", 501)]
    [InlineData("FROM:<a..b@b.example>", 501)]
    [InlineData("FROM:<.a@b.example>", 501)]
    [InlineData("FROM:<a@-b.example>", 501)]
    [InlineData("FROM:<a@b-.example>", 501)]
    [InlineData("FROM:<a@b.example.>", 501)]
    [InlineData("FROM:<a b@b.example>", 501)]
    [InlineData("FROM:<a@[300.1.1.1]>", 501)]
    [InlineData("FROM:<a@[1.2.3]>", 501)]
    [InlineData("FROM:<a@b.example> SIZE=abc", 501)]
    [InlineData("FROM:<a@b.example> SIZE=1 SIZE=2", 501)]
    [InlineData("FROM:<a@b.example> BODY=BINARYMIME", 501)]
    [InlineData("FROM:<a@b.example> SMTPUTF8", 555)]
    [InlineData("FROM:<a@b.example> =x", 501)]
    [InlineData("FROM:<a@b.example>junk", 501)]
    [InlineData("TO:<a@b.example>", 501)]
    public void MailFrom_Invalid(string argument, int code)
    {
        Assert.False(SmtpCommandParser.TryParseMailFrom(argument, out _, out _, out var error));
        Assert.Equal(code, error.Code);
    }

    [Fact]
    public void Limits_LocalPartAndDomainLength()
    {
        string local64 = new('a', 64);
        Assert.True(SmtpCommandParser.TryParseRcptTo($"TO:<{local64}@b.example>", out _, out _));
        Assert.False(SmtpCommandParser.TryParseRcptTo($"TO:<{local64}a@b.example>", out _, out _));
        string label64 = new('c', 64);
        Assert.False(SmtpCommandParser.TryParseRcptTo($"TO:<a@{label64}.example>", out _, out _));
        string longDomain = string.Join('.', Enumerable.Repeat(new string('d', 60), 5));
        Assert.False(SmtpCommandParser.TryParseRcptTo($"TO:<a@{longDomain}>", out _, out _));
    }

    [Theory]
    [InlineData("TO:<>")]
    [InlineData("TO:<a@b.example> NOTIFY=NEVER")]
    [InlineData("TO:")]
    public void RcptTo_Invalid(string argument)
    {
        Assert.False(SmtpCommandParser.TryParseRcptTo(argument, out var recipient, out var error));
        Assert.Null(recipient);
        Assert.True(error.Code >= 500, error.ToString());
    }

    [Fact]
    public void RcptTo_Postmaster_WithoutDomain_IsSyntacticallyValid()
    {
        Assert.True(SmtpCommandParser.TryParseRcptTo("TO:<postMaster>", out var recipient, out _));
        Assert.Equal(new SmtpAddress("postMaster", ""), recipient);
        Assert.False(SmtpCommandParser.TryParseRcptTo("TO:<Postmaster> X=1", out _, out _));
    }

    [Theory]
    [InlineData("client.example", true)]
    [InlineData("localhost", true)]
    [InlineData("[127.0.0.1]", true)]
    [InlineData("[IPv6:::1]", true)]
    [InlineData("", false)]
    [InlineData("bad host", false)]
    [InlineData("host_name", false)]
    [InlineData("[not-an-ip]", false)]
    public void HeloArgument(string argument, bool valid) => Assert.Equal(valid, SmtpCommandParser.IsValidHeloArgument(argument));

    /// <summary>Any printable-ASCII argument: the parsers answer, never throw, and keep the length limits.</summary>
    [Fact]
    public void Property_ParsersAreTotal()
    {
        var printable = Gen.Char['!', '~'];
        var piece = Gen.OneOf(
            Gen.String[printable, 0, 30],
            Pick("FROM:", "TO:", "<", ">", "@", ".", "\"", "\\", "[", "]", "IPv6:", " ", "SIZE=", "BODY=8BITMIME", ",", ":", "a", "b.example"));
        var argument = piece.Array[0, 20].Select(parts => string.Concat(parts));
        argument.Sample(text =>
        {
            var command = SmtpCommandParser.ParseLine(text);
            _ = SmtpCommandParser.IsValidHeloArgument(text);
            if (SmtpCommandParser.TryParseMailFrom(text, out var sender, out _, out var mailError))
                Assert.True(sender is null || (sender.LocalPart.Length <= SmtpLimits.MaxLocalPartLength && sender.Domain.Length <= SmtpLimits.MaxDomainLength));
            else
                Assert.True(mailError.Code is 501 or 555);
            if (SmtpCommandParser.TryParseRcptTo(text, out var recipient, out var rcptError))
                Assert.NotNull(recipient);
            else
                Assert.True(rcptError.Code is 501 or 555);
            Assert.True(Enum.IsDefined(command.Verb));
        }, iter: 20_000);
    }

    /// <summary>Every address built from the RFC 5321 grammar parses back to itself.</summary>
    [Fact]
    public void Property_GrammarAddressesRoundTrip()
    {
        var atext = Gen.OneOf(Gen.Char['a', 'z'], Gen.Char['0', '9'], Pick('!', '#', '+', '-', '=', '_', '~'));
        var atom = Gen.String[atext, 1, 8];
        var local = atom.Array[1, 3].Select(a => string.Join('.', a));
        var label = Gen.String[Gen.Char['a', 'z'], 1, 10];
        var domain = label.Array[1, 4].Select(a => string.Join('.', a));
        Gen.Select(local, domain).Sample((l, d) =>
        {
            Assert.True(SmtpCommandParser.TryParseRcptTo($"TO:<{l}@{d}>", out var recipient, out var error), error.ToString());
            Assert.Equal(new SmtpAddress(l, d), recipient);
        }, iter: 5_000);
    }
}
