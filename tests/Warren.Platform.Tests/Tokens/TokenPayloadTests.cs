using System.Buffers.Text;
using System.Text;
using CsCheck;
using Warren.Platform.Tokens;
using Xunit;

namespace Warren.Platform.Tests.Tokens;

public class TokenPayloadTests
{
    private const int FuzzIterations = 3000;

    private static TokenPayload Ok(string json)
    {
        Assert.True(TokenPayload.TryParse(Encoding.UTF8.GetBytes(json), out var p, out var error), error);
        return p;
    }

    private static string Fail(string json)
    {
        Assert.False(TokenPayload.TryParse(Encoding.UTF8.GetBytes(json), out _, out var error));
        return error;
    }

    [Fact]
    public void AcceptsEveryField()
    {
        var p = Ok("""{"exp":4102444800,"nbf":946684800,"cmds":["ls","ssh-key list"],"ctx":{"a":[1,{"b":null}]}}""");
        Assert.Equal(4102444800, p.Exp);
        Assert.Equal(946684800, p.Nbf);
        Assert.Equal(["ls", "ssh-key list"], p.Cmds);
        Assert.Equal("""{"a":[1,{"b":null}]}""", p.CtxRawJson);
    }

    [Fact]
    public void EmptyObjectHasDefaults()
    {
        var p = Ok("{}");
        Assert.Null(p.Exp);
        Assert.Null(p.Cmds);
        Assert.Null(p.CtxRawJson);
    }

    [Fact]
    public void CtxKeepsItsRawBytes()
    {
        Assert.Equal("\"x\\u0041\"", Ok("{\"ctx\":\"x\\u0041\"}").CtxRawJson);
        Assert.Equal("12.5e3", Ok("{\"ctx\":12.5e3}").CtxRawJson);
        Assert.Equal("[ 1, 2 ]", Ok("{\"ctx\":[ 1, 2 ]}").CtxRawJson);
    }

    [Fact]
    public void EmptyCmdsAllowsNothing() => Assert.Empty(Ok("""{"cmds":[]}""").Cmds!);

    [Theory]
    [InlineData("""{"foo":1}""", "foo")]
    [InlineData("""{"exp":1000000000,"Exp":1000000000}""", "Exp")]
    public void UnknownFieldIsNamed(string json, string field)
        => Assert.Equal($"invalid token: unknown field \"{field}\"", Fail(json));

    [Theory]
    [InlineData("""{"exp":1000000000,"exp":1000000001}""")]
    [InlineData("""{"ctx":{"a":1,"a":2}}""")]
    [InlineData("""{"ctx":[{"a":1},{"b":{"c":1,"c":1}}]}""")]
    [InlineData("""{"ctx":{"\u0061":1,"a":2}}""")]
    public void DuplicateKeysAtAnyDepthAreRejected(string json)
        => Assert.StartsWith("invalid token: duplicate field", Fail(json));

    [Fact]
    public void SameKeyInSiblingObjectsIsFine() => Ok("""{"ctx":[{"a":1},{"a":1}]}""");

    [Theory]
    [InlineData("946684799")]
    [InlineData("4102444801")]
    [InlineData("1000000000.0")]
    [InlineData("1e9")]
    [InlineData("01000000000")]
    [InlineData("-1000000000")]
    [InlineData("\"1000000000\"")]
    [InlineData("null")]
    [InlineData("99999999999999999999999")]
    public void TimesMustBePlainIntegersInRange(string value)
    {
        // Leading zeros are not JSON at all; the rest are JSON but not plain in-range integers.
        Assert.StartsWith("invalid token: ", Fail($"{{\"exp\":{value}}}"));
        Assert.StartsWith("invalid token: ", Fail($"{{\"nbf\":{value}}}"));
        if (!value.StartsWith('0')) Assert.StartsWith("invalid token: \"exp\" must be an integer", Fail($"{{\"exp\":{value}}}"));
    }

    [Theory]
    [InlineData("946684800")]
    [InlineData("4102444800")]
    [InlineData("1700000000")]
    public void TimesAtTheBoundsAreAccepted(string value) => Ok($"{{\"exp\":{value}}}");

    [Theory]
    [InlineData("""{"cmds":"ls"}""")]
    [InlineData("""{"cmds":[""]}""")]
    [InlineData("""{"cmds":[1]}""")]
    [InlineData("""{"cmds":null}""")]
    [InlineData("""{"cmds":[["ls"]]}""")]
    public void CmdsMustBeNonEmptyStrings(string json) => Assert.StartsWith("invalid token: ", Fail(json));

    [Theory]
    [InlineData(" {}")]
    [InlineData("{} ")]
    [InlineData("{}\n")]
    [InlineData("{\n}")]
    [InlineData("{\"ctx\":\"a\\u0000\"}\0")]
    [InlineData("[]")]
    [InlineData("{}{}")]
    [InlineData("{")]
    [InlineData("{\"exp\":1000000000,}")]
    [InlineData("{/*c*/}")]
    [InlineData("")]
    public void ShapeRules(string json) => Assert.StartsWith("invalid token", Fail(json));

    [Fact]
    public void InvalidUtf8IsRejected()
    {
        byte[] bad = [(byte)'{', (byte)'"', (byte)'c', (byte)'t', (byte)'x', (byte)'"', (byte)':', (byte)'"', 0xFF, (byte)'"', (byte)'}'];
        Assert.False(TokenPayload.TryParse(bad, out _, out _));
    }

    [Fact]
    public void ArbitraryBytesNeverThrow()
    {
        Gen.Byte.Array[0, 64].Sample(bytes =>
        {
            bool ok = TokenPayload.TryParse(bytes, out var p, out var error);
            Assert.Equal(ok, p is not null);
            Assert.Equal(ok, error is null);
            if (!ok) Assert.StartsWith("invalid token", error);
        }, iter: FuzzIterations, threads: 1);
    }

    [Fact]
    public void MutatedValidPayloadsNeverThrow()
    {
        var valid = Encoding.UTF8.GetBytes("""{"exp":1900000000,"cmds":["ls","whoami"],"ctx":{"k":[1,"v"]}}""");
        Gen.Select(Gen.Int[0, valid.Length - 1], Gen.Byte, Gen.Int[0, 2]).Array[1, 4].Sample(edits =>
        {
            var b = new List<byte>(valid);
            foreach (var (pos, value, op) in edits)
            {
                int p = Math.Min(pos, b.Count - 1);
                if (b.Count == 0) break;
                if (op == 0) b[p] = value; else if (op == 1) b.Insert(p, value); else b.RemoveAt(p);
            }
            bool ok = TokenPayload.TryParse(b.ToArray(), out _, out var error);
            if (!ok) Assert.StartsWith("invalid token", error);
        }, iter: FuzzIterations, threads: 1);
    }

    [Fact]
    public void Exe0_ArbitraryStringsNeverThrow()
    {
        Gen.String[Gen.Char["exe0.AZaz09-_=+/ {}\""], 0, 40].Sample(s =>
        {
            Assert.False(Exe0Token.TryParse(s, out _, out var error) && error is not null);
        }, iter: FuzzIterations, threads: 1);
    }

    [Fact]
    public void Exe0_StructureRules()
    {
        string p = Base64Url.EncodeToString("{}"u8);
        string s = Base64Url.EncodeToString("sig"u8);
        Assert.True(Exe0Token.TryParse($"exe0.{p}.{s}", out var t, out _));
        Assert.Equal("{}"u8.ToArray(), t.PayloadBytes);
        Assert.False(Exe0Token.TryParse($"exe0.{p}.{s}.x", out _, out var e1));
        Assert.Equal("invalid token", e1);
        Assert.False(Exe0Token.TryParse($"exe0.{p}=.{s}", out _, out _));
        Assert.False(Exe0Token.TryParse($"exe1.{p}.{s}", out _, out _));
        Assert.False(Exe0Token.TryParse($"exe0.{p}", out _, out _));
        Assert.False(Exe0Token.TryParse($"exe0..{s}", out _, out _));
        Assert.False(Exe0Token.TryParse($"exe0.{p}.{s}" + new string('A', Exe0Token.MaxTokenBytes), out _, out _));
        Assert.DoesNotContain(p, t.ToString());
    }
}
