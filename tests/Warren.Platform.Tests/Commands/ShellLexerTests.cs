using CsCheck;
using Warren.Platform.Commands;
using Xunit;

namespace Warren.Platform.Tests.Commands;

public class ShellLexerTests
{
    private const int PropertyIterations = 2000;

    [Theory]
    [InlineData("ls", new[] { "ls" })]
    [InlineData("  ls   --json  ", new[] { "ls", "--json" })]
    [InlineData("new --name=x", new[] { "new", "--name=x" })]
    [InlineData("comment vm 'staging copy'", new[] { "comment", "vm", "staging copy" })]
    [InlineData("comment vm \"a \\\"b\\\" c\"", new[] { "comment", "vm", "a \"b\" c" })]
    [InlineData("a\\ b", new[] { "a b" })]
    [InlineData("x''", new[] { "x" })]
    [InlineData("''", new[] { "" })]
    [InlineData("\"\"", new[] { "" })]
    [InlineData("a'b'\"c\"d", new[] { "abcd" })]
    [InlineData("\"a\\nb\"", new[] { "a\\nb" })]
    [InlineData("echo $HOME * # ; |", new[] { "echo", "$HOME", "*", "#", ";", "|" })]
    [InlineData("a\\\nb", new[] { "ab" })]
    [InlineData("a\tb\r\nc", new[] { "a", "b", "c" })]
    [InlineData("ssh-key generate-api-key --cmds=\"'ssh my-vm'\"", new[] { "ssh-key", "generate-api-key", "--cmds='ssh my-vm'" })]
    [InlineData("", new string[0])]
    public void TrySplit_SplitsLikeTheShell(string line, string[] expected)
    {
        Assert.True(ShellLexer.TrySplit(line, out var argv, out var error), error);
        Assert.Equal(expected, argv);
    }

    [Theory]
    [InlineData("'open", "invalid command syntax: unterminated single quote")]
    [InlineData("\"open", "invalid command syntax: unterminated double quote")]
    [InlineData("a \"b\\\"", "invalid command syntax: unterminated double quote")]
    [InlineData("trailing\\", "invalid command syntax: trailing backslash")]
    public void TrySplit_RejectsMalformedQuoting(string line, string message)
    {
        Assert.False(ShellLexer.TrySplit(line, out var argv, out var error));
        Assert.Equal(message, error);
        Assert.Empty(argv);
    }

    [Fact]
    public void Quote_ThenSplit_RoundTripsAnyArgv()
    {
        var gen = Gen.String[Gen.Char, 0, 12].Array[0, 6];
        gen.Sample(argv =>
        {
            var line = ShellLexer.Join(argv);
            Assert.True(ShellLexer.TrySplit(line, out var back, out var error), error);
            Assert.Equal(argv, back);
        }, iter: PropertyIterations, threads: 1);
    }

    [Fact]
    public void Quote_ThenSplit_RoundTripsShellMetacharacters()
    {
        var gen = Gen.String[Gen.Char[" \t\n'\"\\$`*#;|&<>()=-abc"], 0, 10].Array[0, 5];
        gen.Sample(argv =>
        {
            Assert.True(ShellLexer.TrySplit(ShellLexer.Join(argv), out var back, out _));
            Assert.Equal(argv, back);
        }, iter: PropertyIterations, threads: 1);
    }

    [Fact]
    public void TrySplit_NeverThrows()
    {
        Gen.String[Gen.Char[" '\"\\\n\tab$"], 0, 20].Sample(line =>
        {
            bool ok = ShellLexer.TrySplit(line, out var argv, out var error);
            Assert.Equal(ok, error is null);
            if (!ok) Assert.Empty(argv);
        }, iter: PropertyIterations, threads: 1);
        Gen.String.Sample(line => { ShellLexer.TrySplit(line, out _, out _); }, iter: PropertyIterations, threads: 1);
    }

    [Fact]
    public void Quote_LeavesSafeWordsAlone()
    {
        Assert.Equal("--name=web-1", ShellLexer.Quote("--name=web-1"));
        Assert.Equal("''", ShellLexer.Quote(""));
        Assert.Equal("'it'\\''s'", ShellLexer.Quote("it's"));
    }
}
