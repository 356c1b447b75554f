using Warren.Platform.Accounts;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Vms;

public sealed class ValidationTests
{
    private static readonly PlatformOptions Options = new();

    [Theory]
    [InlineData("a")]
    [InlineData("web")]
    [InlineData("my-vm-2")]
    [InlineData("a23456789012345678901234567890123456789012345678901234567890123")] // 63
    public void VmNames_Valid(string name) => Assert.True(VmNames.IsValid(name));

    [Theory]
    [InlineData("")]
    [InlineData("1web")]
    [InlineData("-web")]
    [InlineData("web-")]
    [InlineData("Web")]
    [InlineData("web_1")]
    [InlineData("web.box")]
    [InlineData("wéb")]
    [InlineData("a234567890123456789012345678901234567890123456789012345678901234")] // 64
    [InlineData(null)]
    public void VmNames_Invalid(string? name)
    {
        Assert.False(VmNames.IsValid(name));
        var e = Assert.Throws<PlatformException>(() => VmNames.Validate(name));
        Assert.Equal(PlatformErrorCodes.VmNameInvalid, e.Code);
    }

    [Fact]
    public void VmNames_MaxLengthIsADnsLabel()
    {
        Assert.True(VmNames.IsValid(new string('a', VmNames.MaxLength)));
        Assert.False(VmNames.IsValid(new string('a', VmNames.MaxLength + 1)));
    }

    [Theory]
    [InlineData("warren")]
    [InlineData("box")]
    [InlineData("s001")]
    [InlineData("s1016")]
    [InlineData("www")]
    [InlineData("api")]
    [InlineData("xn--abc")]
    public void VmNames_Reserved(string name) => Assert.True(VmNames.IsReserved(name, Options));

    [Theory]
    [InlineData("web.box.localhost", "web")]
    [InlineData("WEB.BOX.LOCALHOST.", "WEB")]
    [InlineData("web", "web")]
    [InlineData(" web ", "web")]
    [InlineData("web.other.domain", "web.other.domain")]
    public void VmNames_NormalizeStripsTheVmDomain(string input, string expected)
        => Assert.Equal(expected, VmNames.Normalize(input, "box.localhost"));

    [Theory]
    [InlineData("prod", true)]
    [InlineData("web_1-x", true)]
    [InlineData("1prod", false)]
    [InlineData("Prod", false)]
    [InlineData("pr od", false)]
    [InlineData("", false)]
    [InlineData("_x", false)]
    public void Tags(string tag, bool valid) => Assert.Equal(valid, VmTags.IsValid(tag));

    [Fact]
    public void Tags_LengthCap() => Assert.False(VmTags.IsValid("a" + new string('b', VmTags.MaxLength)));

    [Theory]
    [InlineData("staging copy", true)]
    [InlineData("  padded  ", true)]
    [InlineData("ünïcödé ok", true)]
    [InlineData("tab\there", false)]
    [InlineData("new\nline", false)]
    [InlineData("<script>", false)]
    [InlineData("a & b", false)]
    [InlineData("quote\"", false)]
    [InlineData("it's", false)]
    [InlineData("back`tick", false)]
    [InlineData("bidi\u202Eevil", false)]
    [InlineData("zero\u200Bwidth", false)]
    [InlineData("bell\u0007", false)]
    public void Comments(string text, bool valid) => Assert.Equal(valid, VmComments.TryNormalize(text, out _, out _));

    [Fact]
    public void Comments_ByteLimit()
    {
        Assert.True(VmComments.TryNormalize(new string('a', VmComments.MaxBytes), out _, out _));
        Assert.False(VmComments.TryNormalize(new string('a', VmComments.MaxBytes + 1), out _, out _));
        // 100 two-byte characters = 200 bytes; one more is over.
        Assert.True(VmComments.TryNormalize(new string('é', VmComments.MaxBytes / 2), out _, out _));
        Assert.False(VmComments.TryNormalize(new string('é', VmComments.MaxBytes / 2 + 1), out _, out _));
        Assert.Equal("x", VmComments.Normalize("  x \u00A0".Trim()));
    }

    [Theory]
    [InlineData("4", 4L << 30)]
    [InlineData("4GB", 4L << 30)]
    [InlineData("4gib", 4L << 30)]
    [InlineData("4G", 4L << 30)]
    [InlineData("512MB", 512L << 20)]
    [InlineData("512m", 512L << 20)]
    [InlineData("1.5GB", 3L << 29)]
    [InlineData("1TB", 1L << 40)]
    [InlineData("2048K", 2L << 20)]
    [InlineData("100B", 100)]
    [InlineData(" 8 GB ", 8L << 30)]
    public void ByteSize_Parses(string text, long expected)
    {
        Assert.True(ByteSize.TryParse(text, out var b));
        Assert.Equal(expected, b);
    }

    [Theory]
    [InlineData("")]
    [InlineData("GB")]
    [InlineData("-4GB")]
    [InlineData("4PB")]
    [InlineData("4 G B")]
    [InlineData("1.2.3")]
    [InlineData(".5")]
    [InlineData("0")]
    [InlineData("99999999999999999999TB")]
    [InlineData("4,5GB")]
    [InlineData(null)]
    public void ByteSize_Rejects(string? text)
    {
        Assert.False(ByteSize.TryParse(text, out _));
        Assert.Equal(PlatformErrorCodes.SizeInvalid, Assert.Throws<PlatformException>(() => ByteSize.Parse(text)).Code);
    }

    [Theory]
    [InlineData(8L << 30, "8 GB")]
    [InlineData(512L << 20, "512 MB")]
    [InlineData(3L << 29, "1.5 GB")]
    public void ByteSize_Formats(long bytes, string text) => Assert.Equal(text, ByteSize.Format(bytes));

    [Theory]
    [InlineData("Alice@Example.COM", "alice@example.com")]
    [InlineData(" bob@mail.example.org ", "bob@mail.example.org")]
    [InlineData("a+tag@x.io", "a+tag@x.io")]
    public void Email_Normalizes(string input, string expected)
    {
        Assert.True(EmailAddress.TryNormalize(input, out var e));
        Assert.Equal(expected, e);
    }

    [Theory]
    [InlineData("")]
    [InlineData("alice")]
    [InlineData("alice@")]
    [InlineData("@example.com")]
    [InlineData("alice@localhost")]
    [InlineData("a b@example.com")]
    [InlineData("a..b@example.com")]
    [InlineData("alice@exa_mple.com")]
    public void Email_Rejects(string input) => Assert.False(EmailAddress.TryNormalize(input, out _));

    [Theory]
    [InlineData("my laptop", "my-laptop")]
    [InlineData("ci;rm -rf $HOME", "cirm--rf-HOME")]
    [InlineData("`whoami`", "whoami")]
    [InlineData("", "")]
    public void KeyNames_Sanitize(string input, string expected) => Assert.Equal(expected, KeyNames.Sanitize(input));

    [Fact]
    public void KeyNames_TruncateTo64BytesOnARuneBoundary()
    {
        var s = KeyNames.Sanitize(new string('é', 40)); // 80 bytes
        Assert.Equal(32, s.Length);
        Assert.Equal(KeyNames.MaxBytes, System.Text.Encoding.UTF8.GetByteCount(s));
    }

    [Theory]
    [InlineData("KEY=value")]
    [InlineData("_K1=")]
    [InlineData("A=b=c")]
    public void Env_Parses(string entry) => VmEnv.Parse(entry);

    [Theory]
    [InlineData("KEY")]
    [InlineData("=v")]
    [InlineData("1KEY=v")]
    [InlineData("K-EY=v")]
    public void Env_Rejects(string entry)
    {
        var e = Assert.Throws<PlatformException>(() => VmEnv.Parse(entry));
        Assert.Equal($"invalid environment variable format \"{entry}\": must be KEY=VALUE", e.UserMessage);
    }

    [Fact]
    public void StateTransitions_AreExplicit()
    {
        Assert.True(VmStates.CanTransition(VmState.Creating, VmState.Running));
        Assert.True(VmStates.CanTransition(VmState.Running, VmState.Deleting));
        Assert.False(VmStates.CanTransition(VmState.Deleting, VmState.Running));
        Assert.False(VmStates.CanTransition(VmState.Stopped, VmState.Creating));
        Assert.False(VmStates.CanTransition(VmState.Creating, VmState.Stopped));
        foreach (var s in Enum.GetValues<VmState>()) Assert.Equal(s, VmStates.Parse(s.ToWire()));
    }

    [Fact]
    public void Options_DevDefaults_AreValid()
    {
        var o = new PlatformOptions();
        Assert.Empty(o.Validate());
        Assert.Equal(4, o.EffectiveSlots.Count);
        Assert.Equal("127.0.1.1", o.EffectiveSlots[0].LocalIp);
        o.ControlLocalIp = "127.0.1.1";
        Assert.NotEmpty(o.Validate());
    }
}
