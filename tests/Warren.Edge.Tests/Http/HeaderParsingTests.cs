using System.Text;
using CsCheck;
using Warren.Edge.Http;

namespace Warren.Edge.Tests.Http;

/// <summary>Property and edge tests for the header parsers that face the network.</summary>
public class HeaderParsingTests
{
    private static readonly Gen<string> AnyString = Gen.String[Gen.Char, 0, 300];
    private static readonly Gen<string> TokenChars = Gen.String[Gen.Char['!', '~'], 1, 200];

    [Fact]
    public void Parsers_NeverThrow_OnAnyInput()
    {
        AnyString.Sample(s =>
        {
            HeaderParsing.TryGetBearer(s, out _);
            HeaderParsing.TryGetBasicPassword(s, out _);
            HeaderParsing.GetCookie(s, "login-with-exe-443");
            HeaderParsing.RemoveCookies(s, "login-with-exe-");
            HeaderParsing.RemoveDomainAttribute(s);
            HeaderParsing.TryParseHost(s, out _, out _);
            HeaderParsing.SanitizeRedirect(s);
        }, iter: 20_000);
    }

    [Fact]
    public void Bearer_RoundTrips_AnySchemeCase()
    {
        Gen.Select(TokenChars, Gen.Bool, Gen.Int[1, 3]).Sample((token, upper, spaces) =>
        {
            string header = (upper ? "BEARER" : "bearer") + new string(' ', spaces) + token;
            Assert.True(HeaderParsing.TryGetBearer(header, out var parsed));
            Assert.Equal(token, parsed);
        });
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("Bearer")]
    [InlineData("Bearer ")]
    [InlineData("Bearertoken")]
    [InlineData("Basic abc")]
    [InlineData("Bearer a b")]
    public void Bearer_Rejects(string? header) => Assert.False(HeaderParsing.TryGetBearer(header, out _));

    [Fact]
    public void Bearer_RejectsTokenOverLimit_AcceptsLimit()
    {
        Assert.True(HeaderParsing.TryGetBearer("Bearer " + new string('a', HeaderParsing.MaxTokenLength), out _));
        Assert.False(HeaderParsing.TryGetBearer("Bearer " + new string('a', HeaderParsing.MaxTokenLength + 1), out _));
    }

    [Fact]
    public void Basic_RoundTrips_PasswordAfterFirstColon()
    {
        Gen.Select(Gen.String[Gen.Char['a', 'z'], 0, 20], TokenChars).Sample((user, token) =>
        {
            string header = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes(user + ":" + token));
            Assert.True(HeaderParsing.TryGetBasicPassword(header, out var password));
            Assert.Equal(token, password);
        });
    }

    [Theory]
    [InlineData("Basic !!!")]
    [InlineData("Basic dXNlcg==")]      // "user": no colon
    [InlineData("Basic dXNlcjo=")]      // "user:": empty password
    public void Basic_Rejects(string header) => Assert.False(HeaderParsing.TryGetBasicPassword(header, out _));

    [Fact]
    public void RemoveCookies_DropsExactlyThePrefixed_KeepsOthersInOrder()
    {
        var name = Gen.String[Gen.Char['a', 'z'], 1, 8];
        Gen.Select(name.Array[0, 6], Gen.Bool.Array[6]).Sample((names, login) =>
        {
            var pairs = names.Select((n, i) => (Name: login[i] ? "login-with-exe-" + n : n, Value: "v" + i)).ToArray();
            string header = string.Join("; ", pairs.Select(p => p.Name + "=" + p.Value));
            string? result = HeaderParsing.RemoveCookies(header, "login-with-exe-");
            var kept = pairs.Where(p => !p.Name.StartsWith("login-with-exe-", StringComparison.Ordinal)).Select(p => p.Name + "=" + p.Value).ToArray();
            if (kept.Length == 0)
                Assert.Null(result);
            else
                Assert.Equal(string.Join("; ", kept), result);
        });
    }

    [Fact]
    public void RemoveCookies_IsCaseInsensitiveOnPrefix()
    {
        Assert.Equal("a=1", HeaderParsing.RemoveCookies("LOGIN-WITH-EXE-443=x; a=1", "login-with-exe-"));
    }

    [Fact]
    public void GetCookie_FindsFirstExactName()
    {
        Assert.Equal("s1", HeaderParsing.GetCookie("x=1; login-with-exe-443=s1; login-with-exe-443=s2", "login-with-exe-443"));
        Assert.Null(HeaderParsing.GetCookie("login-with-exe-4430=s1", "login-with-exe-443"));
    }

    [Fact]
    public void RemoveDomain_NeverLeavesADomainAttribute_KeepsNameValue()
    {
        string[] choices = { "Path=/", "HttpOnly", "Secure", "Domain=example.com", "domain=.x.y", " DOMAIN = z ", "SameSite=Lax", "Max-Age=5" };
        var attr = Gen.Int[0, choices.Length - 1].Select(i => choices[i]);
        Gen.Select(Gen.String[Gen.Char['a', 'z'], 1, 8], attr.Array[0, 6]).Sample((value, attributes) =>
        {
            string header = string.Join(";", new[] { "n=" + value }.Concat(attributes));
            string result = HeaderParsing.RemoveDomainAttribute(header);
            Assert.StartsWith("n=" + value, result);
            Assert.DoesNotContain(result.Split(';').Skip(1), a => a.Trim().StartsWith("domain", StringComparison.OrdinalIgnoreCase));
            Assert.Equal(attributes.Count(a => !a.Trim().StartsWith("domain", StringComparison.OrdinalIgnoreCase)), result.Split(';').Length - 1);
        });
    }

    [Theory]
    [InlineData("Web.Box.Localhost", "web.box.localhost", null)]
    [InlineData("web.box.localhost:8443", "web.box.localhost", 8443)]
    [InlineData("web.box.localhost.:3000", "web.box.localhost", 3000)]
    public void Host_Parses(string host, string name, int? port)
    {
        Assert.True(HeaderParsing.TryParseHost(host, out var n, out var p));
        Assert.Equal(name, n);
        Assert.Equal(port, p);
    }

    [Theory]
    [InlineData("")]
    [InlineData("[::1]:443")]
    [InlineData("a:b:c")]
    [InlineData("host:0")]
    [InlineData("host:65536")]
    [InlineData("host:")]
    [InlineData("host:+80")]
    public void Host_Rejects(string host) => Assert.False(HeaderParsing.TryParseHost(host, out _, out _));

    [Theory]
    [InlineData("/a/b?c=d", "/a/b?c=d")]
    [InlineData("//evil.example/", "/")]
    [InlineData("/\\evil.example/", "/")]
    [InlineData("https://evil.example/", "/")]
    [InlineData("javascript:alert(1)", "/")]
    [InlineData("/a\r\nSet-Cookie: x", "/")]
    [InlineData(null, "/")]
    public void Redirect_StaysOnSite(string? input, string expected) => Assert.Equal(expected, HeaderParsing.SanitizeRedirect(input));

    [Fact]
    public void Redirect_AlwaysRelativeSingleSlash()
    {
        AnyString.Sample(s =>
        {
            string r = HeaderParsing.SanitizeRedirect(s);
            Assert.StartsWith("/", r);
            Assert.False(r.Length > 1 && (r[1] == '/' || r[1] == '\\'));
            Assert.DoesNotContain(r, char.IsControl);
        }, iter: 20_000);
    }
}
