using System.Net;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using Warren.Edge.Http;
using Warren.Edge.Http.FrontDoor;

namespace Warren.Edge.Tests.Http;

/// <summary>End-to-end behaviour of the front door (reference §4), with real curl and HttpClient.</summary>
[Collection(FrontDoorCollection.Name)]
public sealed class FrontDoorTests
{
    private readonly FrontDoorFixture _f;

    public FrontDoorTests(FrontDoorFixture fixture) => _f = fixture;

    private static JsonElement Json(string body) => JsonDocument.Parse(body).RootElement;

    private static Dictionary<string, string> Headers(string body) =>
        Json(body).GetProperty("headers").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);

    private async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request)
    {
        using var client = _f.CreateClient();
        return await client.SendAsync(request);
    }

    private Task<HttpResponseMessage> GetAsync(string url, Action<HttpRequestHeaders>? headers = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, url);
        headers?.Invoke(request.Headers);
        return SendAsync(request);
    }

    private Task<string> LoginCookieAsync(WebUser user, string vm = "web") => _f.LoginCookieAsync(user, vm);

    // ------------------------------------------------------------------ routing

    [Fact]
    public async Task PublicSite_Is200_WithCurl()
    {
        var (status, body, _) = await _f.CurlAsync(_f.Url("pub", "/hello?x=1"));
        Assert.Equal(200, status);
        Assert.Equal("pub", Json(body).GetProperty("id").GetString());
        Assert.Equal("/hello?x=1", Json(body).GetProperty("path").GetString());
    }

    [Fact]
    public async Task HostHeader_PicksTheVm()
    {
        string cookie = await LoginCookieAsync(People.Owner);
        var web = await GetAsync(_f.Url("web"), h => h.Add("Cookie", cookie));
        var pub = await GetAsync(_f.Url("pub"));
        Assert.Equal("web", Json(await web.Content.ReadAsStringAsync()).GetProperty("id").GetString());
        Assert.Equal("pub", Json(await pub.Content.ReadAsStringAsync()).GetProperty("id").GetString());
    }

    [Fact]
    public async Task HostName_IsCaseInsensitive()
    {
        var response = await GetAsync($"https://PUB.Box.LocalHost:{_f.HttpsPort}/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task PlainHttp_RedirectsToHttps()
    {
        var response = await GetAsync($"http://pub.{FrontDoorFixture.Domain}:{_f.HttpPort}/a?b=c");
        Assert.Equal(HttpStatusCode.PermanentRedirect, response.StatusCode);
        Assert.Equal($"https://pub.{FrontDoorFixture.Domain}:{_f.HttpsPort}/a?b=c", response.Headers.Location!.ToString());
    }

    [Fact]
    public async Task UnknownHost_FallsThroughToNextMiddleware()
    {
        var response = await GetAsync($"https://{FrontDoorFixture.ControlHost}:{_f.HttpsPort}/other");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("fallthrough", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task AlternatePort_ReachesThatPort_ForOwner()
    {
        var bearer = await GetAsync(_f.Url("web", "/", _f.Web.AltPort), h => h.Add("X-Exedev-Authorization", "Bearer tok-owner"));
        Assert.Equal(HttpStatusCode.OK, bearer.StatusCode);
        Assert.Equal(_f.Web.AltPort, Json(await bearer.Content.ReadAsStringAsync()).GetProperty("port").GetInt32());
    }

    [Fact]
    public async Task AlternatePort_IsPrivateEvenOnPublicSite()
    {
        var anonymous = await GetAsync(_f.Url("pub", "/", _f.Pub.AltPort));
        Assert.Equal(HttpStatusCode.TemporaryRedirect, anonymous.StatusCode);
        var stranger = await GetAsync(_f.Url("pub", "/", _f.Pub.AltPort), h => h.Add("X-Exedev-Authorization", "Bearer tok-stranger"));
        Assert.Equal(HttpStatusCode.Unauthorized, stranger.StatusCode);
    }

    [Fact]
    public async Task AlternatePort_SharedPerson_IsDenied_OwnerIsNot()
    {
        // A share covers the default route only, as exe.dev's: the friend reaches web's site, not its other ports.
        _f.Tokens.Table[("tok-friend", $"v0@web.{FrontDoorFixture.Domain}")] =
            TokenValidation.Valid(new TokenPrincipal(People.Friend, "fp-friend", Array.Empty<string>(), null));
        int before = _f.Web.Requests;
        var standard = await GetAsync(_f.Url("web"), h => h.Add("X-Exedev-Authorization", "Bearer tok-friend"));
        Assert.Equal(HttpStatusCode.OK, standard.StatusCode);
        var alternate = await GetAsync(_f.Url("web", "/", _f.Web.AltPort), h => h.Add("X-Exedev-Authorization", "Bearer tok-friend"));
        Assert.Equal(HttpStatusCode.Unauthorized, alternate.StatusCode);
        Assert.Contains("Access Denied", await alternate.Content.ReadAsStringAsync());
        Assert.Equal(before + 1, _f.Web.Requests);

        var owner = await GetAsync(_f.Url("web", "/", _f.Web.AltPort), h => h.Add("X-Exedev-Authorization", "Bearer tok-owner"));
        Assert.Equal(HttpStatusCode.OK, owner.StatusCode);
    }

    [Fact]
    public async Task PortOutsideAlternateRange_Is404()
    {
        var response = await GetAsync(_f.Url("pub", "/", 2999));
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    // ------------------------------------------------------------------ access

    [Fact]
    public async Task PrivateSite_Anonymous_Gets307ToLogin_WithCurl()
    {
        int before = _f.Web.Requests;
        var (status, _, headers) = await _f.CurlAsync(_f.Url("web", "/deep/path?q=1"));
        Assert.Equal(307, status);
        Assert.Contains("location: /__exe.dev/login?redirect=%2Fdeep%2Fpath%3Fq%3D1", headers, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(before, _f.Web.Requests);
    }

    [Fact]
    public async Task MissingSite_Anonymous_Gets307_LoggedIn_Gets401()
    {
        var anonymous = await GetAsync(_f.Url("nosuch"));
        Assert.Equal(HttpStatusCode.TemporaryRedirect, anonymous.StatusCode);
        string cookie = await LoginCookieAsync(People.Stranger, "nosuch");
        var loggedIn = await GetAsync(_f.Url("nosuch"), h => h.Add("Cookie", cookie));
        Assert.Equal(HttpStatusCode.Unauthorized, loggedIn.StatusCode);
        Assert.Contains("Access Denied", await loggedIn.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task LoggedInWithoutAccess_Gets401YouNeedAccess()
    {
        string cookie = await LoginCookieAsync(People.Stranger);
        var response = await GetAsync(_f.Url("web"), h => h.Add("Cookie", cookie));
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("You need access", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task SharedUser_GetsIn_WithIdentityHeaders()
    {
        string cookie = await LoginCookieAsync(People.Friend);
        var response = await GetAsync(_f.Url("web"), h => h.Add("Cookie", cookie));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var headers = Headers(await response.Content.ReadAsStringAsync());
        Assert.Equal(People.Friend.UserId, headers["x-exedev-userid"]);
        Assert.Equal(People.Friend.Email, headers["x-exedev-email"]);
        Assert.False(headers.ContainsKey("x-exedev-token-ctx"));
    }

    [Fact]
    public async Task ShareLink_AdmitsLoggedInVisitor_AndIsStrippedFromUrl()
    {
        var visitor = new WebUser("u-visitor", "visitor@example.com");
        _f.Access.ShareLinks[("vm-web", "lnk123")] = true;
        string cookie = await LoginCookieAsync(visitor);
        var redeem = await GetAsync(_f.Url("web", "/page?share=lnk123&x=1"), h => h.Add("Cookie", cookie));
        Assert.Equal(HttpStatusCode.Found, redeem.StatusCode);
        Assert.Equal("/page?x=1", redeem.Headers.Location!.ToString());
        var after = await GetAsync(_f.Url("web", "/page?x=1"), h => h.Add("Cookie", cookie));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    // ------------------------------------------------------------------ login flow

    [Fact]
    public async Task LoginLink_SetsHostOnlyCookie_GrantsAccess_IsOneTime()
    {
        var links = (ILoginLinkService)_f.Services.GetService(typeof(ILoginLinkService))!;
        string secret = await links.IssueAsync(People.Owner, $"web.{FrontDoorFixture.Domain}", CancellationToken.None);
        string authUrl = _f.Url("web", $"/__exe.dev/auth?secret={Uri.EscapeDataString(secret)}&redirect=%2Fafter%3Fz%3D1");

        var (status, _, headers) = await _f.CurlAsync(authUrl);
        Assert.Equal(303, status);
        Assert.Contains("location: /after?z=1", headers, StringComparison.OrdinalIgnoreCase);
        var setCookie = headers.Split('\n').Single(l => l.StartsWith("set-cookie:", StringComparison.OrdinalIgnoreCase)).Trim();
        Assert.StartsWith($"set-cookie: login-with-exe-{_f.HttpsPort}=", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("httponly", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("secure", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=lax", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("path=/", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("max-age=2592000", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("domain=", setCookie, StringComparison.OrdinalIgnoreCase);
        string cookie = setCookie["set-cookie: ".Length..].Split(';')[0];

        var (okStatus, body, _) = await _f.CurlAsync("-H", $"Cookie: {cookie}; theme=dark", _f.Url("web", "/"));
        Assert.Equal(200, okStatus);
        var seen = Headers(body);
        Assert.Equal(People.Owner.Email, seen["x-exedev-email"]);
        Assert.Equal("theme=dark", seen["cookie"]); // the login cookie never reaches the VM

        var (reuse, _, _) = await _f.CurlAsync(authUrl);
        Assert.Equal(401, reuse);
    }

    [Fact]
    public async Task LoginLink_ForAnotherHost_IsRejected()
    {
        var links = (ILoginLinkService)_f.Services.GetService(typeof(ILoginLinkService))!;
        string secret = await links.IssueAsync(People.Owner, $"pub.{FrontDoorFixture.Domain}", CancellationToken.None);
        var response = await GetAsync(_f.Url("web", $"/__exe.dev/auth?secret={Uri.EscapeDataString(secret)}"));
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task Cookie_FromOneSite_DoesNotWorkOnAnother()
    {
        string cookie = await LoginCookieAsync(People.Owner, "pub");
        var response = await GetAsync(_f.Url("web"), h => h.Add("Cookie", cookie));
        Assert.Equal(HttpStatusCode.TemporaryRedirect, response.StatusCode);
    }

    [Fact]
    public async Task AuthRedirect_ToAnotherSite_BecomesRoot()
    {
        var links = (ILoginLinkService)_f.Services.GetService(typeof(ILoginLinkService))!;
        string secret = await links.IssueAsync(People.Owner, null, CancellationToken.None);
        var response = await GetAsync(_f.Url("web", $"/__exe.dev/auth?secret={Uri.EscapeDataString(secret)}&redirect=%2F%2Fevil.example%2F"));
        Assert.Equal("/", response.Headers.Location!.ToString());
    }

    [Fact]
    public async Task Logout_GetShowsForm_PostEndsSession()
    {
        string cookie = await LoginCookieAsync(People.Owner);
        var form = await GetAsync(_f.Url("web", "/__exe.dev/logout"), h => h.Add("Cookie", cookie));
        Assert.Equal(HttpStatusCode.OK, form.StatusCode);
        Assert.Contains("<form method=\"post\"", await form.Content.ReadAsStringAsync());

        var post = new HttpRequestMessage(HttpMethod.Post, _f.Url("web", "/__exe.dev/logout"));
        post.Headers.Add("Cookie", cookie);
        var logout = await SendAsync(post);
        Assert.Equal(HttpStatusCode.TemporaryRedirect, logout.StatusCode);
        Assert.Equal($"https://{FrontDoorFixture.ControlHost}:{_f.HttpsPort}/logged-out", logout.Headers.Location!.ToString());
        Assert.Contains(logout.Headers.GetValues("Set-Cookie"), c => c.StartsWith($"login-with-exe-{_f.HttpsPort}=;", StringComparison.Ordinal));

        var after = await GetAsync(_f.Url("web"), h => h.Add("Cookie", cookie));
        Assert.Equal(HttpStatusCode.TemporaryRedirect, after.StatusCode);

        var put = await SendAsync(new HttpRequestMessage(HttpMethod.Put, _f.Url("web", "/__exe.dev/logout")));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, put.StatusCode);
    }

    [Fact]
    public async Task ExeDevPaths_NeverReachTheVm()
    {
        int before = _f.Pub.Requests;
        var unknown = await GetAsync(_f.Url("pub", "/__exe.dev/whatever"));
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        var login = await GetAsync(_f.Url("pub", "/__exe.dev/login?redirect=%2Fx"));
        Assert.Equal(HttpStatusCode.TemporaryRedirect, login.StatusCode);
        var cased = await GetAsync(_f.Url("pub", "/__EXE.dev/x"));
        Assert.Equal(HttpStatusCode.NotFound, cased.StatusCode);
        Assert.Equal(before, _f.Pub.Requests);
    }

    // ------------------------------------------------------------------ tokens

    [Fact]
    public async Task ExeDevAuthorizationBearer_Authenticates_AndIsStripped_WithCurl()
    {
        var (status, body, _) = await _f.CurlAsync("-H", "X-Exedev-Authorization: Bearer tok-owner", _f.Url("web"));
        Assert.Equal(200, status);
        var seen = Headers(body);
        Assert.Equal(People.Owner.UserId, seen["x-exedev-userid"]);
        Assert.Equal("{\"ci\":true}", seen["x-exedev-token-ctx"]);
        Assert.False(seen.ContainsKey("x-exedev-authorization"));
        Assert.Contains($"v0@web.{FrontDoorFixture.Domain}", _f.Tokens.SeenNamespaces);
    }

    [Fact]
    public async Task AuthorizationBearer_Authenticates_AndIsRemoved()
    {
        var (status, body, _) = await _f.CurlAsync("-H", "Authorization: bearer tok-owner", _f.Url("web"));
        Assert.Equal(200, status);
        var seen = Headers(body);
        Assert.Equal(People.Owner.Email, seen["x-exedev-email"]);
        Assert.False(seen.ContainsKey("authorization"));
    }

    [Fact]
    public async Task BasicAuth_WithTokenAsPassword_Authenticates()
    {
        var (status, body, _) = await _f.CurlAsync("-u", "anything:tok-owner", _f.Url("web"));
        Assert.Equal(200, status);
        Assert.Equal(People.Owner.UserId, Headers(body)["x-exedev-userid"]);
    }

    [Fact]
    public async Task SameValueInBothHeaders_Is400()
    {
        var response = await GetAsync(_f.Url("web"), h =>
        {
            h.TryAddWithoutValidation("Authorization", "Bearer tok-owner");
            h.TryAddWithoutValidation("X-Exedev-Authorization", "Bearer tok-owner");
        });
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    [Fact]
    public async Task InvalidToken_OnPrivateSite_Is401()
    {
        var response = await GetAsync(_f.Url("web"), h => h.Add("X-Exedev-Authorization", "Bearer nope"));
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("invalid or missing authentication", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task AppOwnAuthorization_OnPublicSite_PassesThroughUntouched()
    {
        var response = await GetAsync(_f.Url("pub"), h => h.TryAddWithoutValidation("Authorization", "Bearer the-apps-own-token"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var seen = Headers(await response.Content.ReadAsStringAsync());
        Assert.Equal("Bearer the-apps-own-token", seen["authorization"]);
        Assert.False(seen.ContainsKey("x-exedev-userid"));
    }

    // ------------------------------------------------------------------ header rules

    [Fact]
    public async Task SpoofedExeDevHeaders_AreStripped_ForwardedHeadersSet()
    {
        var (status, body, _) = await _f.CurlAsync(
            "-H", "X-ExeDev-UserID: u-owner",
            "-H", "X-ExeDev-Email: owner@example.com",
            "-H", "x-exedev-token-ctx: {}",
            "-H", "X-Exedev-Source-Vm: web",
            "-H", "X-ExeDev-Anything: 1",
            "-H", "X-Forwarded-For: 203.0.113.7",
            "-H", "X-Forwarded-Proto: http",
            "-H", "X-Forwarded-Host: evil.example",
            _f.Url("pub"));
        Assert.Equal(200, status);
        var seen = Headers(body);
        Assert.DoesNotContain(seen.Keys, k => k.StartsWith("x-exedev-", StringComparison.Ordinal));
        Assert.Equal("203.0.113.7, 127.0.0.1", seen["x-forwarded-for"]);
        Assert.Equal("https", seen["x-forwarded-proto"]);
        Assert.Equal($"pub.{FrontDoorFixture.Domain}:{_f.HttpsPort}", seen["x-forwarded-host"]);
        Assert.Equal($"pub.{FrontDoorFixture.Domain}:{_f.HttpsPort}", seen["host"]);
    }

    [Fact]
    public async Task SpoofedIdentity_WithRealLogin_IsReplaced()
    {
        string cookie = await LoginCookieAsync(People.Friend);
        var response = await GetAsync(_f.Url("web"), h =>
        {
            h.Add("Cookie", cookie);
            h.Add("X-ExeDev-UserID", People.Owner.UserId);
        });
        var seen = Headers(await response.Content.ReadAsStringAsync());
        Assert.Equal(People.Friend.UserId, seen["x-exedev-userid"]);
    }

    [Fact]
    public async Task UpstreamSetCookie_LosesDomain()
    {
        var response = await GetAsync(_f.Url("pub", "/setcookie"));
        var cookies = response.Headers.GetValues("Set-Cookie").ToArray();
        Assert.Equal(new[] { "a=1; Path=/", "b=2; path=/; HttpOnly" }, cookies);
    }

    // ------------------------------------------------------------------ failures

    [Fact]
    public async Task StoppedVm_Owner502PortUnbound_Others503()
    {
        var owner = await GetAsync(_f.Url("stopped"), h => h.Add("X-Exedev-Authorization", "Bearer tok-owner"));
        Assert.Equal(HttpStatusCode.BadGateway, owner.StatusCode);
        Assert.Contains("Port 80 unbound.", await owner.Content.ReadAsStringAsync());
        var anonymous = await GetAsync(_f.Url("stopped"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, anonymous.StatusCode);
    }

    [Fact]
    public async Task NothingListening_Owner502_Others503()
    {
        var owner = await GetAsync(_f.Url("unbound"), h => h.Add("X-Exedev-Authorization", "Bearer tok-owner"));
        Assert.Equal(HttpStatusCode.BadGateway, owner.StatusCode);
        Assert.Contains($"Port {_f.UnboundPort} unbound.", await owner.Content.ReadAsStringAsync());
        var (status, body, _) = await _f.CurlAsync(_f.Url("unbound"));
        Assert.Equal(503, status);
        Assert.Contains("Service Unavailable", body);
    }

    // ------------------------------------------------------------------ protocols

    [Fact]
    public async Task Http2_IsNegotiated()
    {
        var request = new HttpRequestMessage(HttpMethod.Get, _f.Url("pub")) { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        var response = await SendAsync(request);
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var (status, _, headers) = await _f.CurlAsync("--http2", _f.Url("pub"));
        Assert.Equal(200, status);
        Assert.StartsWith("HTTP/2", headers);
    }

    [Fact]
    public async Task WebSocket_Echoes()
    {
        using var invoker = new HttpMessageInvoker(_f.CreateHandler());
        using var socket = new ClientWebSocket();
        socket.Options.SetRequestHeader("X-Exedev-Authorization", "Bearer tok-owner");
        await socket.ConnectAsync(new Uri($"wss://web.{FrontDoorFixture.Domain}:{_f.HttpsPort}/ws"), invoker, CancellationToken.None);
        var buffer = new byte[1024];
        for (int i = 0; i < 3; i++)
        {
            var message = Encoding.UTF8.GetBytes($"hello {i}");
            await socket.SendAsync(message, WebSocketMessageType.Text, true, CancellationToken.None);
            var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
            Assert.Equal($"hello {i}", Encoding.UTF8.GetString(buffer, 0, result.Count));
        }
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);
    }

    /// <summary>The upgrade tunnel (YARP) drops the same client fields as the other paths, over HTTP/1.1 and HTTP/2.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task WebSocket_Upgrade_DropsUnderscoreExeDevForwardedAndXRealIp(bool http2)
    {
        using var invoker = new HttpMessageInvoker(_f.CreateHandler());
        using var socket = new ClientWebSocket();
        if (http2)
        {
            socket.Options.HttpVersion = HttpVersion.Version20;
            socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        }
        socket.Options.SetRequestHeader("X-Exedev-Authorization", "Bearer tok-owner");
        socket.Options.SetRequestHeader("X_ExeDev_Email", "boss@example.com");
        socket.Options.SetRequestHeader("X-ExeDev-UserID", "u-boss");
        socket.Options.SetRequestHeader("X_Forwarded_For", "203.0.113.9");
        socket.Options.SetRequestHeader("Forwarded", "for=203.0.113.9");
        socket.Options.SetRequestHeader("X-Real-IP", "203.0.113.9");
        socket.Options.SetRequestHeader("X-Keep-Me", "2");
        await socket.ConnectAsync(new Uri($"wss://web.{FrontDoorFixture.Domain}:{_f.HttpsPort}/ws-headers"), invoker, CancellationToken.None);
        var buffer = new byte[16 * 1024];
        var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
        var seen = JsonSerializer.Deserialize<Dictionary<string, string>>(buffer.AsSpan(0, result.Count))!;
        Assert.DoesNotContain(seen.Keys, k => k.Contains('_'));
        Assert.DoesNotContain(seen.Values, v => v.Contains("boss", StringComparison.Ordinal) || v.Contains("203.0.113.9", StringComparison.Ordinal));
        Assert.False(seen.ContainsKey("forwarded"));
        Assert.False(seen.ContainsKey("x-real-ip"));
        Assert.Equal(People.Owner.Email, seen["x-exedev-email"]);
        Assert.Equal(People.Owner.UserId, seen["x-exedev-userid"]);
        Assert.Equal("2", seen["x-keep-me"]);
    }

    [Fact]
    public async Task WebSocket_OverHttp2_Echoes()
    {
        using var invoker = new HttpMessageInvoker(_f.CreateHandler());
        using var socket = new ClientWebSocket();
        socket.Options.HttpVersion = HttpVersion.Version20;
        socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        await socket.ConnectAsync(new Uri($"wss://pub.{FrontDoorFixture.Domain}:{_f.HttpsPort}/ws"), invoker, CancellationToken.None);
        var buffer = new byte[1024];
        await socket.SendAsync(Encoding.UTF8.GetBytes("over h2"), WebSocketMessageType.Text, true, CancellationToken.None);
        var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
        Assert.Equal("over h2", Encoding.UTF8.GetString(buffer, 0, result.Count));
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);
    }

    [Fact]
    public async Task LargeUpload_50MiB_ArrivesWhole()
    {
        const int size = 50 * 1024 * 1024;
        var payload = new byte[size];
        new Random(7).NextBytes(payload);
        long expectedSum = 0;
        foreach (var b in payload) expectedSum += b;
        var request = new HttpRequestMessage(HttpMethod.Post, _f.Url("pub", "/upload")) { Content = new ByteArrayContent(payload) };
        var response = await SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"{size} {expectedSum}", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task LargeUpload_Chunked_WithCurl()
    {
        string file = Path.Combine(_f.DataDirectory, "upload.bin");
        var payload = new byte[8 * 1024 * 1024];
        new Random(8).NextBytes(payload);
        await File.WriteAllBytesAsync(file, payload);
        long sum = 0;
        foreach (var b in payload) sum += b;
        var (status, body, _) = await _f.CurlAsync("-H", "Transfer-Encoding: chunked", "--data-binary", "@" + file, _f.Url("pub", "/upload"));
        Assert.Equal(200, status);
        Assert.Equal($"{payload.Length} {sum}", body);
        File.Delete(file);
    }

    [Fact]
    public async Task StreamingResponse_IsForwarded()
    {
        using var client = _f.CreateClient();
        using var response = await client.GetAsync(_f.Url("pub", "/stream"), HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        for (int i = 0; i < 5; i++)
            Assert.Equal($"chunk{i}", await reader.ReadLineAsync());
        Assert.Null(await reader.ReadLineAsync());
    }

    // ------------------------------------------------------------------ browser flow through the control host

    [Fact]
    public async Task BrowserFlow_ControlHostLink_ThenRedirectChain_LogsIntoPrivateSite()
    {
        string control = $"https://{FrontDoorFixture.ControlHost}:{_f.HttpsPort}";
        string webHost = $"web.{FrontDoorFixture.Domain}:{_f.HttpsPort}";

        // Not logged in anywhere: the control host's sign-in page (401) explains how.
        var page = await GetAsync(control + "/login?redirect=%2F&return_host=" + Uri.EscapeDataString(webHost));
        Assert.Equal(HttpStatusCode.Unauthorized, page.StatusCode);
        Assert.Contains($"ssh {FrontDoorFixture.ControlHost} browser", await page.Content.ReadAsStringAsync());

        // `ssh control browser` → a one-time link on the control host.
        var frontDoor = (HttpFrontDoor)_f.Services.GetService(typeof(HttpFrontDoor))!;
        var links = (ILoginLinkService)_f.Services.GetService(typeof(ILoginLinkService))!;
        string link = frontDoor.BuildControlLoginLink(await links.IssueAsync(People.Friend, FrontDoorFixture.ControlHost, CancellationToken.None));
        Assert.StartsWith(control + "/auth?secret=", link);
        var auth = await _f.OpenControlLoginLinkAsync(link);
        Assert.Equal(HttpStatusCode.SeeOther, auth.StatusCode);
        string controlCookie = auth.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("exe-auth=", StringComparison.Ordinal)).Split(';')[0];
        Assert.StartsWith("exe-auth=", controlCookie);

        // The private site → its login page → the control host → back with a secret → the page.
        var step1 = await GetAsync(_f.Url("web", "/x?y=1"));
        Assert.Equal(HttpStatusCode.TemporaryRedirect, step1.StatusCode);
        var step2 = await GetAsync(_f.Url("web", step1.Headers.Location!.ToString()));
        Assert.Equal(HttpStatusCode.TemporaryRedirect, step2.StatusCode);
        Assert.Equal(control + "/login?redirect=%2Fx%3Fy%3D1&return_host=" + Uri.EscapeDataString(webHost), step2.Headers.Location!.ToString());
        var step3 = await GetAsync(step2.Headers.Location!.ToString(), h => h.Add("Cookie", controlCookie));
        Assert.Equal(HttpStatusCode.TemporaryRedirect, step3.StatusCode);
        Assert.StartsWith($"https://{webHost}/__exe.dev/auth?secret=", step3.Headers.Location!.ToString());
        var step4 = await GetAsync(step3.Headers.Location!.ToString());
        Assert.Equal(HttpStatusCode.SeeOther, step4.StatusCode);
        Assert.Equal("/x?y=1", step4.Headers.Location!.ToString());
        string siteCookie = step4.Headers.GetValues("Set-Cookie").Single().Split(';')[0];
        var final = await GetAsync(_f.Url("web", "/x?y=1"), h => h.Add("Cookie", siteCookie));
        Assert.Equal(HttpStatusCode.OK, final.StatusCode);
        Assert.Equal(People.Friend.Email, Headers(await final.Content.ReadAsStringAsync())["x-exedev-email"]);
    }

    [Fact]
    public async Task ControlLogin_NeverRedirectsOutsideTheVmDomain()
    {
        var links = (ILoginLinkService)_f.Services.GetService(typeof(ILoginLinkService))!;
        var frontDoor = (HttpFrontDoor)_f.Services.GetService(typeof(HttpFrontDoor))!;
        var auth = await _f.OpenControlLoginLinkAsync(frontDoor.BuildControlLoginLink(await links.IssueAsync(People.Owner, FrontDoorFixture.ControlHost, CancellationToken.None)));
        string cookie = auth.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("exe-auth=", StringComparison.Ordinal)).Split(';')[0];
        foreach (var evil in new[] { "evil.example", "a.b.box.localhost", "box.localhost", "evil.example/.box.localhost", "evil/x.box.localhost", "evil@x.box.localhost", "evil#.box.localhost" })
        {
            var response = await GetAsync($"https://{FrontDoorFixture.ControlHost}:{_f.HttpsPort}/login?redirect=%2F&return_host={Uri.EscapeDataString(evil)}",
                h => h.Add("Cookie", cookie));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }
}
