using Warren.Edge.Http;
using Warren.Edge.Tests.Http.Forwarding;

namespace Warren.Edge.Tests.Http;

public sealed class LongRequestTargetTests(FrontDoorFixture fixture)
    : LongRequestTargetTestsBase(fixture), IClassFixture<FrontDoorFixture>;

public sealed class LongRequestTargetKestrelTransportTests(KestrelTransportFrontDoorFixture fixture)
    : LongRequestTargetTestsBase(fixture), IClassFixture<KestrelTransportFrontDoorFixture>;

/// <summary>
/// Request targets at and past <see cref="HttpFrontDoorLimits.MaxRequestTargetBytes"/>, with the real curl over HTTP/2
/// and HTTP/1.1, on both transports: up to the limit the page is served, past it the answer is 414 with a page — on
/// HTTP/2 too, where Kestrel's own limit used to reset the stream (PROTOCOL_ERROR) instead of answering.
/// </summary>
public abstract class LongRequestTargetTestsBase(FrontDoorFixture fixture)
{
    private const string SignInPrefix = "/login?redirect=/";

    private string ControlUrl(string target) => $"https://{FrontDoorFixture.ControlHost}:{fixture.HttpsPort}{target}";

    private static string TargetOfLength(string prefix, int length) => prefix + new string('a', length - prefix.Length);

    [Theory]
    [InlineData("--http2")]
    [InlineData("--http1.1")]
    public async Task ARequestTarget_AtTheLimit_IsServed_OneByteMore_Gets414(string protocol)
    {
        var (atLimit, atLimitBody, _) = await fixture.CurlAsync(protocol, ControlUrl(TargetOfLength(SignInPrefix, HttpFrontDoorLimits.MaxRequestTargetBytes)));
        Assert.Equal(401, atLimit); // the sign-in page
        Assert.Contains(Pages.SignInTitle, atLimitBody);

        var (over, overBody, headers) = await fixture.CurlAsync(protocol, ControlUrl(TargetOfLength(SignInPrefix, HttpFrontDoorLimits.MaxRequestTargetBytes + 1)));
        Assert.Equal(414, over);
        Assert.Contains("URI Too Long", overBody);
        Assert.Contains("cache-control: no-store", headers, StringComparison.OrdinalIgnoreCase);

        // A site's address too, before anything is forwarded.
        var (site, _, _) = await fixture.CurlAsync(protocol, fixture.Url("pub", TargetOfLength("/hello?x=", HttpFrontDoorLimits.MaxRequestTargetBytes + 1)));
        Assert.Equal(414, site);
    }
}
