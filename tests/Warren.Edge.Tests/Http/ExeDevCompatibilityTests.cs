using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using CsCheck;
using Warren.Edge.Http;
using Warren.Edge.Http.FrontDoor;
using Warren.Edge.Http.Access;
using Warren.Edge.Http.Routing;

namespace Warren.Edge.Tests.Http;

/// <summary>
/// The web side as exe.dev answers it (share links, logout, the sign-in page, the control host's JSON), with the
/// real curl where a status line or a header is the point.
/// </summary>
[Collection(FrontDoorCollection.Name)]
public sealed class ExeDevCompatibilityTests(FrontDoorFixture fixture)
{
    private readonly FrontDoorFixture _f = fixture;

    private string Control => $"https://{FrontDoorFixture.ControlHost}:{_f.HttpsPort}";
    private string WebHost => $"web.{FrontDoorFixture.Domain}:{_f.HttpsPort}";

    private static JsonElement Json(string body) => JsonDocument.Parse(body).RootElement;

    private static string Header(string headers, string name) =>
        headers.Split('\n').Select(l => l.Trim()).Last(l => l.StartsWith(name + ":", StringComparison.OrdinalIgnoreCase))[(name.Length + 1)..].Trim();

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string url, string? cookie = null)
    {
        using var client = _f.CreateClient();
        var request = new HttpRequestMessage(method, url);
        if (cookie is not null)
            request.Headers.Add("Cookie", cookie);
        return await client.SendAsync(request);
    }

    /// <summary>Signs <paramref name="user"/> in on the control host; the <c>exe-auth</c> cookie.</summary>
    private async Task<string> ControlCookieAsync(WebUser user)
    {
        var links = (ILoginLinkService)_f.Services.GetService(typeof(ILoginLinkService))!;
        var frontDoor = (HttpFrontDoor)_f.Services.GetService(typeof(HttpFrontDoor))!;
        var auth = await _f.OpenControlLoginLinkAsync(frontDoor.BuildControlLoginLink(await links.IssueAsync(user, FrontDoorFixture.ControlHost, CancellationToken.None)));
        Assert.Equal(HttpStatusCode.SeeOther, auth.StatusCode);
        string cookie = auth.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith(ControlPaths.CookieName + "=", StringComparison.Ordinal)).Split(';')[0];
        return cookie;
    }

    // ------------------------------------------------------------------ share links

    [Fact]
    public async Task ShareLink_GetIs302_KeepingEveryOtherParameterAsSent()
    {
        var visitor = new WebUser("u-share-get", "share-get@example.com");
        _f.Access.ShareLinks[("vm-web", "lnkget")] = true;
        string cookie = await _f.LoginCookieAsync(visitor);

        var (status, _, headers) = await _f.CurlAsync("-H", $"Cookie: {cookie}", _f.Url("web", "/page?a=1&share=lnkget&b=%2Fx+y&shared=z&a=2"));
        Assert.Equal(302, status);
        Assert.Equal("/page?a=1&b=%2Fx+y&shared=z&a=2", Header(headers, "location"));
        Assert.True(_f.Access.Shares.ContainsKey(("vm-web", visitor.UserId)));

        // Only parameter: the URL keeps no bare "?"; HEAD is redirected too.
        var (headStatus, _, headHeaders) = await _f.CurlAsync("-I", "-H", $"Cookie: {cookie}", _f.Url("web", "/?share=lnkget"));
        Assert.Equal(302, headStatus);
        Assert.Equal("/", Header(headHeaders, "location"));
    }

    [Fact]
    public async Task ShareLink_PostIsNotRedirected_TheAppGetsItWithoutShare()
    {
        var visitor = new WebUser("u-share-post", "share-post@example.com");
        _f.Access.ShareLinks[("vm-web", "lnkpost")] = true;
        string cookie = await _f.LoginCookieAsync(visitor);
        int before = _f.Web.Requests;

        var (status, body, _) = await _f.CurlAsync("-H", $"Cookie: {cookie}", "--data", "x=1", _f.Url("web", "/submit?share=lnkpost&keep=%20yes"));
        Assert.Equal(200, status);
        var echo = Json(body);
        Assert.Equal("POST", echo.GetProperty("method").GetString());
        Assert.Equal("/submit?keep=%20yes", echo.GetProperty("path").GetString());
        Assert.Equal(before + 1, _f.Web.Requests);
        Assert.True(_f.Access.Shares.ContainsKey(("vm-web", visitor.UserId)));
    }

    [Fact]
    public void WithoutQueryParameter_DropsOnlyThatField_KeepingTheRestByteForByte()
    {
        Assert.Equal("/p", ShareLinks.WithoutQueryParameter("/p?share=x", "share"));
        Assert.Equal("/p?a=1&b", ShareLinks.WithoutQueryParameter("/p?share&a=1&%73hare=2&b&share=", "share"));
        Assert.Equal("/p?a=%zz&sharex=1", ShareLinks.WithoutQueryParameter("/p?a=%zz&sharex=1", "share"));
        Assert.Equal("/p", ShareLinks.WithoutQueryParameter("/p", "share"));

        // Any target: no exception, no share field left, every other field kept in order.
        var field = Gen.OneOf(Gen.Const("share=t"), Gen.Const("share"), Gen.String[Gen.Char['!', '~'], 0, 12]);
        Gen.Select(Gen.String[Gen.Char['!', '~'], 0, 20], field.Array[0, 8]).Sample((path, fields) =>
        {
            string target = "/" + path.Replace("?", "", StringComparison.Ordinal).Replace("#", "", StringComparison.Ordinal)
                + (fields.Length == 0 ? "" : "?" + string.Join('&', fields));
            string result = ShareLinks.WithoutQueryParameter(target, "share");
            int q = result.IndexOf('?', StringComparison.Ordinal);
            var left = q < 0 ? [] : result[(q + 1)..].Split('&');
            Assert.DoesNotContain(left, f => Uri.UnescapeDataString(f.Split('=')[0].Replace('+', ' ')) == "share");
            var expected = fields.SelectMany(f => f.Split('&')).Where(f => f.Length > 0 && Uri.UnescapeDataString(f.Split('=')[0].Replace('+', ' ')) != "share");
            Assert.Equal(expected, left);
        });
    }

    // ------------------------------------------------------------------ logout

    [Fact]
    public async Task Logout_PostIs307ToTheControlHostsLoggedOutPage_AndExpiresTheCookie()
    {
        string cookie = await _f.LoginCookieAsync(People.Owner);
        var (status, _, headers) = await _f.CurlAsync("-X", "POST", "-H", $"Cookie: {cookie}", _f.Url("web", "/__exe.dev/logout"));
        Assert.Equal(307, status);
        Assert.Equal(Control + "/logged-out", Header(headers, "location"));
        string setCookie = Header(headers, "set-cookie");
        Assert.StartsWith($"login-with-exe-{_f.HttpsPort}=;", setCookie);
        Assert.Contains("max-age=0", setCookie, StringComparison.OrdinalIgnoreCase);

        // The session is gone, and curl following the 307 repeats the POST at the control host, which answers it.
        var after = await SendAsync(HttpMethod.Get, _f.Url("web"), cookie);
        Assert.Equal(HttpStatusCode.TemporaryRedirect, after.StatusCode);
        string again = await _f.LoginCookieAsync(People.Owner);
        var (followed, body, _) = await _f.CurlAsync("-L", "-X", "POST", "-H", $"Cookie: {again}", _f.Url("web", "/__exe.dev/logout"));
        Assert.Equal(200, followed);
        Assert.Contains("Logged out", body);

        // The site itself has no logged-out page (exe.dev's other /__exe.dev paths are 404), and GET still confirms.
        Assert.Equal(HttpStatusCode.NotFound, (await SendAsync(HttpMethod.Get, _f.Url("web", "/__exe.dev/logged-out"))).StatusCode);
        var form = await SendAsync(HttpMethod.Get, _f.Url("web", "/__exe.dev/logout"));
        Assert.Equal(HttpStatusCode.OK, form.StatusCode);
        Assert.Contains("method=\"post\"", await form.Content.ReadAsStringAsync());
        // The logout's 307 leaves the site for the control host: the page's CSP form-action must allow that origin.
        Assert.Equal($"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self' {Control}", form.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await SendAsync(HttpMethod.Delete, _f.Url("web", "/__exe.dev/logout"))).StatusCode);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await SendAsync(HttpMethod.Delete, Control + "/logged-out")).StatusCode);
    }

    // ------------------------------------------------------------------ sign-in page

    [Fact]
    public async Task NotSignedIn_PrivateSiteLeadsToTheControlHostsSignInPage_401_CarryingTheWayBack()
    {
        // curl following every hop: site → its login → the control host's sign-in page.
        var (status, body, headers) = await _f.CurlAsync("-L", _f.Url("web", "/deep?q=1"));
        Assert.Equal(401, status);
        Assert.Contains("<title>Sign in to continue</title>", body);
        Assert.Contains(WebHost, body);
        Assert.Contains($"ssh {FrontDoorFixture.ControlHost} browser", body);
        Assert.Contains($"location: {Control}/login?redirect=%2Fdeep%3Fq%3D1&return_host={Uri.EscapeDataString(WebHost)}", headers, StringComparison.OrdinalIgnoreCase);

        // exe.dev's own sign-in address answers the same.
        var (authStatus, authBody, _) = await _f.CurlAsync($"{Control}/auth?redirect=%2Fdeep&return_host={Uri.EscapeDataString(WebHost)}");
        Assert.Equal(401, authStatus);
        Assert.Contains("Sign in to continue", authBody);

        // Hostile values are escaped or dropped, never a 500.
        foreach (var hostile in new[] { "%3Cscript%3E", "%00", "evil.example", new string('a', 3000) })
        {
            var (s, b, _) = await _f.CurlAsync($"{Control}/login?redirect={hostile}&return_host={hostile}");
            Assert.Equal(401, s);
            Assert.DoesNotContain("<script>", b);
        }
    }

    // ------------------------------------------------------------------ /api/profile, /api/dashboard

    [Fact]
    public async Task Api_WithoutTheControlCookie_Is401Json_OtherMethods405()
    {
        foreach (var path in new[] { ControlPaths.ProfileApi, ControlPaths.DashboardApi })
        {
            var (status, body, headers) = await _f.CurlAsync(Control + path);
            Assert.Equal(401, status);
            Assert.Equal("not signed in", Json(body).GetProperty("error").GetString());
            Assert.StartsWith("application/json", Header(headers, "content-type"));

            // A site's cookie is no control-host cookie.
            string siteCookie = await _f.LoginCookieAsync(People.Owner);
            var (siteStatus, _, _) = await _f.CurlAsync("-H", "Cookie: " + siteCookie.Replace($"login-with-exe-{_f.HttpsPort}", "exe-auth", StringComparison.Ordinal), Control + path);
            Assert.Equal(401, siteStatus);

            var (post, _, postHeaders) = await _f.CurlAsync("-X", "POST", Control + path);
            Assert.Equal(405, post);
            Assert.Equal("GET, HEAD", Header(postHeaders, "allow"));
        }
    }

    [Fact]
    public async Task Profile_ListsTheSitesSignedInTo_NotOnceTheVmIsGone_NorAnotherAccounts()
    {
        var person = new WebUser("u-profile", "profile@example.com");
        var second = new WebUser("u-profile-2", "profile-2@example.com");
        _f.Sites.Sites["gone"] = new WebSite("vm-gone", "gone", People.Owner.UserId, 80, IsPublic: true);
        try
        {
            await _f.LoginCookieAsync(person, "web");
            await _f.LoginCookieAsync(person, "gone");
            await _f.LoginCookieAsync(second, "pub");
            string cookie = await ControlCookieAsync(person);

            var (status, body, _) = await _f.CurlAsync("-H", "Cookie: " + cookie, Control + ControlPaths.ProfileApi);
            Assert.Equal(200, status);
            var profile = Json(body);
            Assert.Equal(person.Email, profile.GetProperty("email").GetString());
            var hosts = profile.GetProperty("sites").EnumerateArray().Select(s => s.GetProperty("host").GetString()).ToList();
            Assert.Equal(2, hosts.Count);
            Assert.Contains(WebHost, hosts);
            Assert.Contains($"gone.{FrontDoorFixture.Domain}:{_f.HttpsPort}", hosts);
            var web = profile.GetProperty("sites").EnumerateArray().Single(s => s.GetProperty("vm_name").GetString() == "web");
            Assert.Equal($"https://{WebHost}/", web.GetProperty("url").GetString());

            // Removed (or renamed away): the session no longer shows.
            _f.Sites.Sites.TryRemove("gone", out _);
            (_, body, _) = await _f.CurlAsync("-H", "Cookie: " + cookie, Control + ControlPaths.ProfileApi);
            Assert.Equal([WebHost], Json(body).GetProperty("sites").EnumerateArray().Select(s => s.GetProperty("host").GetString()));

            // The second account sees its own sites only.
            (_, body, _) = await _f.CurlAsync("-H", "Cookie: " + await ControlCookieAsync(second), Control + ControlPaths.ProfileApi);
            var other = Json(body);
            Assert.Equal(second.Email, other.GetProperty("email").GetString());
            Assert.DoesNotContain(person.Email, body);
            Assert.Equal([$"pub.{FrontDoorFixture.Domain}:{_f.HttpsPort}"], other.GetProperty("sites").EnumerateArray().Select(s => s.GetProperty("host").GetString()));
        }
        finally
        {
            _f.Sites.Sites.TryRemove("gone", out _);
        }
    }

    [Fact]
    public async Task Dashboard_IsTheSignedInPersonsOwn()
    {
        var person = new WebUser("u-dash", "dash@example.com");
        _f.Dashboard.ByUser[person.UserId] = new WebDashboard(
            [new WebDashboardVm("mine", "running", person.Email, IsPublic: false, 8080)],
            [new WebDashboardVm("theirs", "stopped", "owner@example.com", IsPublic: true, 80)]);
        var (status, body, _) = await _f.CurlAsync("-H", "Cookie: " + await ControlCookieAsync(person), Control + ControlPaths.DashboardApi);
        Assert.Equal(200, status);
        var d = Json(body);
        Assert.Equal(person.Email, d.GetProperty("email").GetString());
        var mine = Assert.Single(d.GetProperty("vms").EnumerateArray());
        Assert.Equal("mine", mine.GetProperty("vm_name").GetString());
        Assert.Equal($"https://mine.{FrontDoorFixture.Domain}:{_f.HttpsPort}", mine.GetProperty("https_url").GetString());
        Assert.Equal(8080, mine.GetProperty("port").GetInt32());
        var theirs = Assert.Single(d.GetProperty("shared_vms").EnumerateArray());
        Assert.Equal("owner@example.com", theirs.GetProperty("owner_email").GetString());
        Assert.True(theirs.GetProperty("public").GetBoolean());

        (_, body, _) = await _f.CurlAsync("-H", "Cookie: " + await ControlCookieAsync(People.Stranger), Control + ControlPaths.DashboardApi);
        Assert.Empty(Json(body).GetProperty("vms").EnumerateArray());
        Assert.DoesNotContain("mine", body);
    }
}
