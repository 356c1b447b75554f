using Warren.Ssh.Keys;
using Xunit;

namespace Warren.Ssh.Tests.Keys;

public class AuthorizedKeysTests
{
    private static readonly SshPublicKey s_key = TestKeys.Get("ssh-ed25519").PublicKey;
    private static string KeyText => s_key.ToOpenSshString();

    [Fact]
    public void BareKey_WithComment()
    {
        var line = AuthorizedKeyLine.Parse(KeyText + " alice@laptop");
        Assert.Empty(line.Options);
        Assert.Equal(s_key, line.Key);
        Assert.Equal("alice@laptop", line.Comment);
    }

    [Fact]
    public void Options_FlagsAndQuotedValues()
    {
        var line = AuthorizedKeyLine.Parse(
            "restrict,No-Pty,command=\"echo \\\"hi, there\\\" && ls\",from=\"10.0.0.0/8,!10.1.*\",permitopen=\"localhost:80\",permitopen=\"db:5432\",expiry-time=\"20300102Z\" "
            + KeyText + " deploy key");
        Assert.True(line.HasFlag("restrict"));
        Assert.True(line.HasFlag("no-pty"));
        Assert.False(line.HasFlag("no-user-rc"));
        Assert.Equal("echo \"hi, there\" && ls", line.Command);
        Assert.Equal(["10.0.0.0/8", "!10.1.*"], line.From);
        Assert.Equal(["localhost:80", "db:5432"], line.PermitOpen);
        Assert.Equal(new DateTimeOffset(2030, 1, 2, 0, 0, 0, TimeSpan.Zero), line.ExpiryTime);
        Assert.Equal(s_key, line.Key);
        Assert.Equal("deploy key", line.Comment);
    }

    [Fact]
    public void Options_QuotedValueMayContainSpacesAndKeyText()
    {
        var line = AuthorizedKeyLine.Parse($"command=\"{KeyText}\" {KeyText}");
        Assert.Equal(KeyText, line.Command);
        Assert.Null(line.Comment);
    }

    [Theory]
    [InlineData("bogus-option")]
    [InlineData("no-pty=\"x\"")]
    [InlineData("command")]
    [InlineData("command=unquoted")]
    [InlineData("command=\"unterminated")]
    [InlineData("expiry-time=\"2030\"")]
    [InlineData("restrict,,no-pty")]
    [InlineData("restrict,")]
    public void InvalidOptions_AreRejected(string options)
    {
        Assert.False(AuthorizedKeyLine.TryParse(options + " " + KeyText, out _, out var error));
        Assert.NotNull(error);
        Assert.Throws<FormatException>(() => AuthorizedKeyLine.Parse(options + " " + KeyText));
    }

    [Fact]
    public void ExpiryTime_Formats()
    {
        Assert.Equal(new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero),
            AuthorizedKeyLine.Parse("expiry-time=\"20300102030405Z\" " + KeyText).ExpiryTime);
        Assert.NotNull(AuthorizedKeyLine.Parse("expiry-time=\"203001020304\" " + KeyText).ExpiryTime);
    }

    [Fact]
    public void File_SkipsCommentsBlankAndReportsInvalid()
    {
        var text = "# comment\n\n   \n" + KeyText + " a\r\nnot a key\nno-pty " + KeyText + "\n";
        var file = AuthorizedKeysFile.Parse(text);
        Assert.Equal(2, file.Entries.Count);
        Assert.Equal("a", file.Entries[0].Comment);
        Assert.True(file.Entries[1].HasFlag("no-pty"));
        Assert.Single(file.InvalidLines);
        Assert.Equal(5, file.InvalidLines[0].LineNumber);
    }

    [Fact]
    public void Line_LongerThanLimit_IsRejected()
    {
        var line = KeyText + " " + new string('c', AuthorizedKeyLine.MaxLineChars);
        Assert.False(AuthorizedKeyLine.TryParse(line, out _));
    }
}
