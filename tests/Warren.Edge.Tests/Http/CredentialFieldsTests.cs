using System.Text;
using CsCheck;
using Microsoft.AspNetCore.Http;
using Warren.Edge.Http;
using Warren.Edge.Http.Forwarding;
using Warren.Edge.Http.Identity;

namespace Warren.Edge.Tests.Http;

/// <summary>
/// The one list of credential fields (<see cref="CredentialFields"/>): the lane's raw-head question and the full
/// path's parsed-header question give the same answer, and the lane serves none of them anonymously.
/// </summary>
public class CredentialFieldsTests
{
    private static readonly string[] Names =
        ["Authorization", "authorization", "AUTHORIZATION", "X-Exedev-Authorization", "x-exedev-authorization",
         "Cookie", "cookie", "Accept", "X-Authorization", "Authorization2", "User-Agent", "X-Exedev-Email"];

    private static readonly string[] Values =
        ["Bearer tok", "Basic dTpwYXNz", "", "login-with-exe-443=abc", "a=1; login-with-exe-8443=x", "a=1; b=2",
         "LOGIN-WITH-EXE-443=abc", "exe-auth=zzz", "text/html"];

    [Fact]
    public void RawAndParsedQuestions_AgreeOnEveryField()
    {
        Gen.Select(Gen.Int[0, Names.Length - 1], Gen.Int[0, Values.Length - 1]).Sample((n, v) =>
        {
            string name = Names[n], value = Values[v];
            var headers = new HeaderDictionary { [name] = value };
            bool raw = CredentialFields.IsCredential(Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value));
            return raw == CredentialFields.HasCredentials(headers);
        }, iter: 2_000);
    }

    [Theory]
    [InlineData("Authorization: Bearer tok")]
    [InlineData("Authorization: Basic dTpwYXNz")]
    [InlineData("authorization: Something-Else")]
    [InlineData("X-Exedev-Authorization: Bearer tok")]
    [InlineData("Cookie: a=1; login-with-exe-443=abc")]
    public void Lane_RefusesEveryCredentialField(string field)
    {
        var plain = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: pub.box.localhost\r\n\r\n");
        Assert.True(Http1LaneRules.Inspect(plain, new Http1RequestHead(), out _));
        var head = Encoding.ASCII.GetBytes($"GET / HTTP/1.1\r\nHost: pub.box.localhost\r\n{field}\r\n\r\n");
        Assert.False(Http1LaneRules.Inspect(head, new Http1RequestHead(), out _));
    }

    [Fact]
    public void Lane_ServesAnOrdinaryCookie()
    {
        var head = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: pub.box.localhost\r\nCookie: theme=dark\r\n\r\n");
        Assert.True(Http1LaneRules.Inspect(head, new Http1RequestHead(), out _));
    }
}
