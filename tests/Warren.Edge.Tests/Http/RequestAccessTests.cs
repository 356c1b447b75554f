using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Warren.Edge.Http;
using Warren.Edge.Http.Identity;

namespace Warren.Edge.Tests.Http;

/// <summary>
/// <c>/__exe.dev/request-access</c>: the form on "You need access", its anti-CSRF token, limits, and
/// that the answer never names the owner. Every test logs in its own person, so the per-requester
/// limits of one test never touch another.
/// </summary>
[Collection(FrontDoorCollection.Name)]
public sealed partial class RequestAccessTests
{
    private readonly FrontDoorFixture _f;

    public RequestAccessTests(FrontDoorFixture fixture) => _f = fixture;

    [GeneratedRegex("name=\"csrf\" value=\"([^\"]+)\"")]
    private static partial Regex CsrfField();

    private static WebUser NewPerson() => new("u-" + Guid.NewGuid().ToString("N"), $"p{Guid.NewGuid():N}@example.com");

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string url, string? cookie, IEnumerable<KeyValuePair<string, string>>? form = null,
        string? origin = null, HttpContent? content = null)
    {
        using var client = _f.CreateClient();
        var request = new HttpRequestMessage(method, url);
        if (cookie is not null)
            request.Headers.Add("Cookie", cookie);
        if (origin is not null)
            request.Headers.Add("Origin", origin);
        if (form is not null)
            request.Content = new FormUrlEncodedContent(form);
        else if (content is not null)
            request.Content = content;
        return await client.SendAsync(request);
    }

    private string RequestUrl => _f.Url("web", RequestAccessPage.Path);

    /// <summary>Logs a new person in on "web" and returns their cookie and the form's token from the "You need access" page.</summary>
    private async Task<(WebUser Person, string Cookie, string Token)> StrangerWithFormAsync()
    {
        var person = NewPerson();
        string cookie = await _f.LoginCookieAsync(person);
        var page = await SendAsync(HttpMethod.Get, _f.Url("web", "/some/page"), cookie);
        Assert.Equal(HttpStatusCode.Unauthorized, page.StatusCode);
        string html = await page.Content.ReadAsStringAsync();
        Assert.Contains("You need access", html);
        Assert.Contains($"action=\"{RequestAccessPage.Path}\"", html);
        var match = CsrfField().Match(html);
        Assert.True(match.Success, html);
        return (person, cookie, WebUtility.HtmlDecode(match.Groups[1].Value));
    }

    private static Dictionary<string, string> Form(string token, string? message = null)
    {
        var form = new Dictionary<string, string> { ["csrf"] = token };
        if (message is not null)
            form["message"] = message;
        return form;
    }

    [Fact]
    public async Task NeedAccessPage_HasTheForm_AndPostingItMailsTheOwner_WithoutNamingThem()
    {
        var (person, cookie, token) = await StrangerWithFormAsync();
        var response = await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token, "Hi,\r\nI'm on the team.\u202E"));
        string body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("Access requested", body);
        Assert.DoesNotContain(People.Owner.Email, body);
        Assert.DoesNotContain(People.Owner.UserId, body);

        var sent = Assert.Single(_f.AccessRequests.For(person));
        Assert.Equal("vm-web", sent.Site.VmId);
        Assert.Equal(person, sent.Requester);
        Assert.Equal("Hi,\nI'm on the team.", sent.Message); // CRLF normalised, the bidi override dropped
    }

    [Fact]
    public async Task WithCurl_GetShowsTheForm_PostSendsTheRequest()
    {
        var person = NewPerson();
        string cookie = await _f.LoginCookieAsync(person);
        var (status, html, _) = await _f.CurlAsync("-H", "Cookie: " + cookie, RequestUrl);
        Assert.Equal(200, status);
        string token = WebUtility.HtmlDecode(CsrfField().Match(html).Groups[1].Value);
        Assert.NotEmpty(token);

        var (posted, body, _) = await _f.CurlAsync("-H", "Cookie: " + cookie, "--data-urlencode", "csrf=" + token, RequestUrl);
        Assert.Equal(200, posted);
        Assert.Contains("Access requested", body);
        var sent = Assert.Single(_f.AccessRequests.For(person));
        Assert.Null(sent.Message);
    }

    [Fact]
    public async Task SecondRequest_ForTheSameSite_Is429_UntilTheIntervalPassed()
    {
        var (person, cookie, token) = await StrangerWithFormAsync();
        Assert.Equal(HttpStatusCode.OK, (await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token))).StatusCode);

        var again = await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token, "please"));
        Assert.Equal(HttpStatusCode.TooManyRequests, again.StatusCode);
        int retryAfter = int.Parse(again.Headers.GetValues("Retry-After").Single());
        Assert.InRange(retryAfter, 1, 600);
        Assert.Single(_f.AccessRequests.For(person));

        _f.Time.Advance(TimeSpan.FromSeconds(retryAfter + 1));
        Assert.Equal(HttpStatusCode.OK, (await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token))).StatusCode);
        Assert.Equal(2, _f.AccessRequests.For(person).Count);
    }

    [Fact]
    public async Task MissingWrongOrForeignToken_Is403_AndSendsNothing()
    {
        var (person, cookie, token) = await StrangerWithFormAsync();
        var (_, _, otherToken) = await StrangerWithFormAsync();
        foreach (var form in new[]
        {
            new Dictionary<string, string> { ["message"] = "no token" },
            Form((token[0] == 'x' ? "y" : "x") + token[1..]), // one character changed (a token may itself start with x)
            Form(otherToken),      // another session's token
            Form(new string('A', 5000)),
        })
        {
            var response = await SendAsync(HttpMethod.Post, RequestUrl, cookie, form);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        }
        Assert.Empty(_f.AccessRequests.For(person));
    }

    [Fact]
    public async Task CrossSiteOrigin_Is403()
    {
        var (person, cookie, token) = await StrangerWithFormAsync();
        var response = await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token), origin: "https://evil.example");
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Empty(_f.AccessRequests.For(person));

        // The site's own origin is fine.
        var own = await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token), origin: $"https://web.{FrontDoorFixture.Domain}:{_f.HttpsPort}");
        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
    }

    [Fact]
    public async Task Anonymous_Gets401_WithTheWayToSignInAndComeBackToTheForm()
    {
        var get = await SendAsync(HttpMethod.Get, RequestUrl, cookie: null);
        Assert.Equal(HttpStatusCode.Unauthorized, get.StatusCode);
        string page = await get.Content.ReadAsStringAsync();
        Assert.Contains("Sign in to continue", page);
        Assert.Contains("href=\"/__exe.dev/login?redirect=%2F__exe.dev%2Frequest-access\"", page);

        var post = await SendAsync(HttpMethod.Post, RequestUrl, cookie: null, Form("whatever"));
        Assert.Equal(HttpStatusCode.Unauthorized, post.StatusCode);
    }

    [Fact]
    public async Task OwnerAndSharedUser_HaveNothingToRequest_303ToTheSite()
    {
        foreach (var user in new[] { People.Owner, People.Friend })
        {
            string cookie = await _f.LoginCookieAsync(user);
            var response = await SendAsync(HttpMethod.Get, RequestUrl, cookie);
            Assert.Equal(HttpStatusCode.SeeOther, response.StatusCode);
            Assert.Equal("/", response.Headers.Location!.ToString());
        }
    }

    [Fact]
    public async Task UnknownSite_LooksLikeAccessDenied()
    {
        var person = NewPerson();
        string cookie = await _f.LoginCookieAsync(person, "nosuch");
        var response = await SendAsync(HttpMethod.Get, _f.Url("nosuch", RequestAccessPage.Path), cookie);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("Access Denied", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task BadBodies_GetClearStatusCodes()
    {
        var (person, cookie, token) = await StrangerWithFormAsync();

        var notAForm = await SendAsync(HttpMethod.Post, RequestUrl, cookie, content: new StringContent("csrf=" + token, Encoding.UTF8, "text/plain"));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, notAForm.StatusCode);

        var huge = await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token, new string('m', 100_000)));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, huge.StatusCode);

        var tooLong = await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token, new string('m', HttpFrontDoorLimits.MaxAccessRequestMessageChars + 1)));
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.StatusCode);

        var put = await SendAsync(HttpMethod.Put, RequestUrl, cookie, Form(token));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, put.StatusCode);
        Assert.Equal("GET, HEAD, POST", string.Join(", ", put.Content.Headers.Allow));

        Assert.Empty(_f.AccessRequests.For(person));
    }

    [Fact]
    public async Task DeliveryFailure_Is503()
    {
        var (person, cookie, token) = await StrangerWithFormAsync();
        _f.AccessRequests.FailFor[person.UserId] = true;
        var response = await SendAsync(HttpMethod.Post, RequestUrl, cookie, Form(token));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Contains("could not be sent", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task TokenLogin_SeesNoForm()
    {
        // The form's token is bound to a login session; a bearer token has none.
        var response = await GetWithBearerAsync("tok-stranger");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        string html = await response.Content.ReadAsStringAsync();
        Assert.Contains("You need access", html);
        Assert.DoesNotContain(RequestAccessPage.Path, html);
    }

    private async Task<HttpResponseMessage> GetWithBearerAsync(string token)
    {
        using var client = _f.CreateClient();
        var request = new HttpRequestMessage(HttpMethod.Get, _f.Url("web"));
        request.Headers.Add(CredentialFields.ExeDevAuthorization, "Bearer " + token);
        return await client.SendAsync(request);
    }

    [Theory]
    [InlineData(null, null)]
    [InlineData("   \r\n ", null)]
    [InlineData(" hello ", "hello")]
    [InlineData("a\r\nb\tc", "a\nb\tc")]
    [InlineData("x\u0000y\u001bz\u200Bw", "xyzw")]
    public void Message_IsNormalised(string? raw, string? expected)
    {
        Assert.True(RequestAccessPage.TryNormalizeAccessRequestMessage(raw, out var message));
        Assert.Equal(expected, message);
    }

    [Fact]
    public void Message_TooLong_IsRefused()
    {
        Assert.False(RequestAccessPage.TryNormalizeAccessRequestMessage(new string('a', HttpFrontDoorLimits.MaxAccessRequestMessageChars + 1), out _));
        Assert.True(RequestAccessPage.TryNormalizeAccessRequestMessage(new string('a', HttpFrontDoorLimits.MaxAccessRequestMessageChars), out _));
    }
}
