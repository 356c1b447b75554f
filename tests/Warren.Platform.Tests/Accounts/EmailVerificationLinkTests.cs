using CsCheck;
using Warren.Platform.Accounts;
using Warren.Platform.Tests.TestSupport;
using Xunit;

namespace Warren.Platform.Tests.Accounts;

public sealed class EmailVerificationLinkTests
{
    private static readonly PlatformOptions Options = new() { ControlHost = "warren.localhost", HttpsPort = 8443 };

    [Theory]
    [InlineData("a@example.com", true)]
    [InlineData("a@mail.example.net", true)]
    [InlineData("a@example.org", true)]
    [InlineData("a@shop.example", true)]
    [InlineData("a@host.test", true)]
    [InlineData("a@x.invalid", true)]
    [InlineData("a@dev.localhost", true)]
    [InlineData("a@example.co", false)]
    [InlineData("a@myexample.com", false)]
    [InlineData("a@test.org", false)]
    [InlineData("a@mail.internal", false)]
    public void ReservedDomains_AreRfc2606s(string email, bool reserved)
        => Assert.Equal(reserved, ReservedEmailDomains.IsReserved(email));

    [Fact]
    public void Find_UsesNothingUp_Confirm_WorksOnce()
    {
        var time = new ManualTimeProvider(DateTimeOffset.UnixEpoch.AddYears(56));
        var v = new EmailVerifications(Options, time);
        var (token, pending) = v.Create("a@mail.internal", VerificationPurpose.SshSignup)!.Value;
        Assert.StartsWith("https://warren.localhost:8443/verify-email?token=", v.Link(token));
        Assert.Same(pending, v.Find(token));
        Assert.Same(pending, v.Find(token));
        Assert.False(pending.Confirmed.IsCompleted);
        Assert.Same(pending, v.Confirm(token));
        Assert.True(pending.Confirmed.IsCompletedSuccessfully);
        Assert.Null(v.Confirm(token));
        Assert.Null(v.Find(token));
    }

    [Fact]
    public void AnExpiredLink_IsNotValid()
    {
        var time = new ManualTimeProvider(DateTimeOffset.UnixEpoch.AddYears(56));
        var v = new EmailVerifications(Options, time);
        var (token, _) = v.Create("a@mail.internal", VerificationPurpose.WebSignup, "/login")!.Value;
        time.Advance(Options.Signup.VerificationTimeout);
        Assert.Null(v.Find(token));
        Assert.Null(v.Confirm(token));
    }

    [Fact]
    public void ArbitraryTokens_NeverMatch_NorThrow()
    {
        var v = new EmailVerifications(Options, TimeProvider.System);
        v.Create("a@mail.internal", VerificationPurpose.SshSignup);
        Gen.String.Sample(t =>
        {
            Assert.Null(v.Find(t));
            Assert.Null(v.Confirm(t));
        }, iter: 2000);
        Assert.Null(v.Find(null));
    }
}
