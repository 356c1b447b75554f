using System.Text.RegularExpressions;
using Warren.Edge.Http;
using Warren.Edge.Http.FrontDoor;

namespace Warren.Edge.Tests.Http;

/// <summary>
/// The control host's login-link page with the real curl as one browser (one cookie jar): each link's page has its
/// own anti-forgery cookie, so pages of two links both log in; a browser keeps at most
/// <see cref="ControlHostPages.MaxConfirmCookies"/> of them.
/// </summary>
public sealed partial class LoginLinkPageTests(FrontDoorFixture fixture) : IClassFixture<FrontDoorFixture>, IDisposable
{
    private readonly string _jar = Path.Combine(Directory.CreateTempSubdirectory("warren-edge-jar-").FullName, "cookies");

    public void Dispose() => Directory.Delete(Path.GetDirectoryName(_jar)!, recursive: true);

    [GeneratedRegex("name=\"(secret|redirect|form_token)\" value=\"([^\"]*)\"")]
    private static partial Regex HiddenField();

    private string ControlUrl(string target) => $"https://{FrontDoorFixture.ControlHost}:{fixture.HttpsPort}{target}";

    private async Task<string> LinkAsync()
    {
        var links = (ILoginLinkService)fixture.Services.GetService(typeof(ILoginLinkService))!;
        var frontDoor = (HttpFrontDoor)fixture.Services.GetService(typeof(HttpFrontDoor))!;
        return frontDoor.BuildControlLoginLink(await links.IssueAsync(People.Owner, FrontDoorFixture.ControlHost, CancellationToken.None));
    }

    /// <summary>GETs the link's page in this jar; returns its form's fields as curl arguments, and its response headers.</summary>
    private async Task<(string[] Form, string Headers)> OpenPageAsync(string link)
    {
        var (status, body, headers) = await fixture.CurlAsync("-b", _jar, "-c", _jar, link);
        Assert.Equal(200, status);
        var form = HiddenField().Matches(body)
            .SelectMany(m => new[] { "--data-urlencode", m.Groups[1].Value + "=" + System.Net.WebUtility.HtmlDecode(m.Groups[2].Value) })
            .ToArray();
        return (form, headers);
    }

    /// <summary>
    /// The confirm cookies a response sets and the ones it expires. (Asked of the headers, not of curl's jar: curl 7.88
    /// keeps a cookie whose Set-Cookie has Max-Age=0 with an Expires in 1970; Chromium drops it, as RFC 6265 §5.3 says.)
    /// </summary>
    private static (int Set, int Expired) ConfirmCookies(string headers)
    {
        var lines = headers.Split('\n').Where(l => l.StartsWith("set-cookie: " + ControlHostPages.ConfirmCookiePrefix, StringComparison.OrdinalIgnoreCase)).ToList();
        int expired = lines.Count(l => l.Contains("max-age=0", StringComparison.OrdinalIgnoreCase));
        return (lines.Count - expired, expired);
    }

    private int ConfirmCookiesInJar() =>
        File.ReadAllLines(_jar).Count(line => line.Contains("\t" + ControlHostPages.ConfirmCookiePrefix, StringComparison.Ordinal));

    [Fact]
    public async Task PagesOfTwoLinks_OpenedOneAfterTheOther_BothLogIn()
    {
        var (first, _) = await OpenPageAsync(await LinkAsync());
        var (second, _) = await OpenPageAsync(await LinkAsync());
        Assert.Equal(2, ConfirmCookiesInJar()); // two names: the second did not overwrite the first

        var (firstLogin, _, firstHeaders) = await fixture.CurlAsync(["-b", _jar, "-c", _jar, .. first, ControlUrl("/auth")]);
        Assert.Equal(303, firstLogin);
        Assert.Equal((0, 1), ConfirmCookies(firstHeaders)); // its own cookie used up with its link
        var (secondLogin, _, _) = await fixture.CurlAsync(["-b", _jar, "-c", _jar, .. second, ControlUrl("/auth")]);
        Assert.Equal(303, secondLogin);
    }

    [Fact]
    public async Task ABrowser_KeepsAtMostMaxConfirmCookies()
    {
        for (int i = 0; i < ControlHostPages.MaxConfirmCookies - 1; i++)
        {
            var (_, headers) = await OpenPageAsync(ControlUrl("/auth?secret=never-issued-" + i));
            Assert.Equal((1, 0), ConfirmCookies(headers));
        }

        // With the most a browser keeps already sent, a page expires them all and sets its own.
        var (_, full) = await OpenPageAsync(await LinkAsync());
        Assert.Equal((1, 0), ConfirmCookies(full));
        var (_, over) = await OpenPageAsync(await LinkAsync());
        Assert.Equal((1, ControlHostPages.MaxConfirmCookies), ConfirmCookies(over));
    }

    /// <summary>
    /// The control host's own logout: GET asks, a POST from another site's form is refused, the page's POST ends the
    /// session on the server (the old cookie no longer signs in), as the logged-out page's button does.
    /// </summary>
    [Fact]
    public async Task ControlHostLogout_EndsTheSession_NotFromAnotherSite()
    {
        var (form, _) = await OpenPageAsync(await LinkAsync());
        var (login, _, _) = await fixture.CurlAsync(["-b", _jar, "-c", _jar, .. form, ControlUrl("/auth")]);
        Assert.Equal(303, login);
        var (signedIn, signedInBody, _) = await fixture.CurlAsync("-b", _jar, ControlUrl("/login"));
        Assert.Equal(200, signedIn);
        Assert.Contains(People.Owner.Email, signedInBody);

        var (ask, askBody, _) = await fixture.CurlAsync("-b", _jar, ControlUrl("/logout"));
        Assert.Equal(200, ask);
        Assert.Contains("method=\"post\" action=\"/logout\"", askBody);
        var (loggedOutPage, loggedOutBody, _) = await fixture.CurlAsync(ControlUrl("/logged-out"));
        Assert.Equal(200, loggedOutPage);
        Assert.Contains("action=\"/logout\"", loggedOutBody);

        var (forged, _, _) = await fixture.CurlAsync("-b", _jar, "-H", "Origin: https://evil.example", "-X", "POST", ControlUrl("/logout"));
        Assert.Equal(403, forged);
        Assert.Equal(200, (await fixture.CurlAsync("-b", _jar, ControlUrl("/login"))).Status);

        var (logout, _, headers) = await fixture.CurlAsync("-b", _jar, "-H", "Origin: null", "-X", "POST", ControlUrl("/logout"));
        Assert.Equal(200, logout);
        Assert.Contains("set-cookie: exe-auth=;", headers, StringComparison.OrdinalIgnoreCase);
        // The jar still holds the old value (curl keeps it, see ConfirmCookies): the server no longer knows it.
        Assert.Equal(401, (await fixture.CurlAsync("-b", _jar, ControlUrl("/login"))).Status);
        Assert.Equal(405, (await fixture.CurlAsync("-X", "DELETE", ControlUrl("/logout"))).Status);
    }
}
