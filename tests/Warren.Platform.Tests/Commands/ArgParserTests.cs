using CsCheck;
using Warren.Platform.Commands;
using Xunit;

namespace Warren.Platform.Tests.Commands;

public class ArgParserTests
{
    private static readonly FlagDefinition[] s_flags =
    [
        new("name", FlagKind.Value, ""),
        new("tag", FlagKind.Repeated, ""),
        new("copy-tags", FlagKind.Bool, ""),
        new("l", FlagKind.Bool, ""),
    ];

    private static ParsedArgs Parse(params string[] args)
    {
        Assert.True(ArgParser.TryParse(args, s_flags, out var parsed, out var error), error);
        return parsed;
    }

    [Fact]
    public void FlagsMayAppearAnywhere()
    {
        var p = Parse("a", "--name", "x", "b", "--json");
        Assert.Equal(["a", "b"], p.Positionals);
        Assert.Equal("x", p.Value("name"));
        Assert.True(p.Flag("json"));
    }

    [Fact]
    public void SingleAndDoubleDashAreTheSameFlag()
    {
        Assert.Equal("x", Parse("-name=x").Value("name"));
        Assert.True(Parse("--l").Flag("l"));
        Assert.True(Parse("-l", "pattern").Flag("l"));
        Assert.Equal(["pattern"], Parse("-l", "pattern").Positionals);
    }

    [Fact]
    public void ValueFlagDoesNotTakeADashToken()
    {
        Assert.False(ArgParser.TryParse(["--name", "--json"], s_flags, out _, out var error));
        Assert.Equal("flag needs an argument: --name", error);
        Assert.False(ArgParser.TryParse(["--name"], s_flags, out _, out error));
        Assert.Equal("flag needs an argument: --name", error);
        Assert.Equal("-", Parse("--name", "-").Value("name"));
    }

    [Fact]
    public void RepeatedFlagsKeepEveryValue_ValueFlagsKeepTheLast()
    {
        var p = Parse("--tag", "a", "--tag=b", "--name=x", "--name=y");
        Assert.Equal(["a", "b"], p.Values("tag"));
        Assert.Equal("y", p.Value("name"));
    }

    [Theory]
    [InlineData("--copy-tags=false", false)]
    [InlineData("--copy-tags=0", false)]
    [InlineData("--copy-tags=true", true)]
    [InlineData("--copy-tags", true)]
    public void BooleanFlagsTakeAnExplicitValue(string arg, bool expected)
        => Assert.Equal(expected, Parse(arg).Flag("copy-tags"));

    [Fact]
    public void BooleanFlagDefaultAppliesWhenAbsent()
        => Assert.True(Parse().Flag("copy-tags", defaultValue: true));

    [Fact]
    public void DoubleDashEndsFlags()
    {
        var p = Parse("--", "--name", "-l");
        Assert.Equal(["--name", "-l"], p.Positionals);
        Assert.False(p.Has("name"));
    }

    [Fact]
    public void UnknownFlagSuggestsTheNearest()
    {
        Assert.False(ArgParser.TryParse(["--nmae=x"], s_flags, out _, out var error));
        Assert.Equal("unknown flag: --nmae (did you mean --name?)", error);
        Assert.False(ArgParser.TryParse(["--zzzzzz"], s_flags, out _, out error));
        Assert.Equal("unknown flag: --zzzzzz", error);
    }

    [Fact]
    public void BadBoolean()
    {
        Assert.False(ArgParser.TryParse(["--copy-tags=nope"], s_flags, out _, out var error));
        Assert.Equal("invalid boolean value \"nope\" for --copy-tags", error);
    }

    [Fact]
    public void StopAtFirstPositional_LeavesTheRestAlone()
    {
        Assert.True(ArgParser.TryParse(["vm", "ls", "-la"], [], out var p, out _, stopAtFirstPositional: true));
        Assert.Equal(["vm", "ls", "-la"], p.Positionals);
    }

    [Theory]
    [InlineData("lss", "ls")]
    [InlineData("whaomi", "whoami")]
    [InlineData("restrat", "restart")]
    [InlineData("gen", null)]
    public void Suggest_FindsNearbyCommands(string input, string? expected)
        => Assert.Equal(expected, Suggest.Nearest(input, ["ls", "new", "whoami", "restart", "rename", "rm"]));

    [Fact]
    public void ArbitraryArgv_NeverThrows()
    {
        CsCheck.Gen.String[CsCheck.Gen.Char["-=abcnmelt "], 0, 8].Array[0, 6].Sample(args =>
        {
            bool ok = ArgParser.TryParse(args, s_flags, out var parsed, out var error);
            Assert.Equal(ok, parsed is not null);
            Assert.Equal(ok, error is null);
        }, iter: 2000, threads: 1);
    }

    [Fact]
    public void Resolve_ArbitraryArgv_NeverThrows()
    {
        CsCheck.Gen.String[CsCheck.Gen.Char["-=abcdehiklmnrstwy "], 0, 10].Array[0, 5].Sample(args =>
        {
            var path = CommandDispatcher.Resolve(args);
            if (path is not null) Assert.NotNull(CommandCatalog.FindPath(path));
        }, iter: 2000, threads: 1);
    }
}
