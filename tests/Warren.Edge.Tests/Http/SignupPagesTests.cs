using CsCheck;
using Warren.Edge.Http;
using Xunit;

namespace Warren.Edge.Tests.Http;

/// <summary>The redirect a web sign-up returns to comes from a form: it must stay on the control host.</summary>
public sealed class SignupPagesTests
{
    [Theory]
    [InlineData("/", "/")]
    [InlineData("/login?redirect=%2F", "/login?redirect=%2F")]
    [InlineData("//evil.example/", null)]
    [InlineData("/\\evil.example/", null)]
    [InlineData("https://evil.example/", null)]
    [InlineData("javascript:alert(1)", null)]
    [InlineData("/a\r\nSet-Cookie: x=1", null)]
    [InlineData("", null)]
    public void Redirect_IsALocalPathOrNothing(string input, string? expected)
        => Assert.Equal(expected, SignupPages.LocalPath(input));

    [Fact]
    public void AnyRedirect_IsNullOrALocalPathWithoutControlCharacters()
        => Gen.String.Sample(s =>
        {
            var r = SignupPages.LocalPath(s);
            return r is null || (r[0] == '/' && !r.StartsWith("//", StringComparison.Ordinal) && !r.StartsWith("/\\", StringComparison.Ordinal)
                && !r.Any(char.IsControl) && r.Length <= 1024);
        }, iter: 5000);
}
