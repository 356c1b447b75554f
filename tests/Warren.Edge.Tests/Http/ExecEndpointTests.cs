using System.Net;
using System.Text;
using Warren.Edge.Http;

namespace Warren.Edge.Tests.Http;

/// <summary><c>POST /exec</c> on the control host: every status code of reference §3.</summary>
[Collection(FrontDoorCollection.Name)]
public sealed class ExecEndpointTests
{
    private readonly FrontDoorFixture _f;
    private readonly string _url;

    public ExecEndpointTests(FrontDoorFixture fixture)
    {
        _f = fixture;
        _url = $"https://{FrontDoorFixture.ControlHost}:{_f.HttpsPort}/exec";
    }

    private const string Namespace = "v0@" + FrontDoorFixture.ControlHost;

    /// <summary>A fresh token with its own rate-limit bucket.</summary>
    private string Token(params string[] cmds)
    {
        string token = "exec-" + Guid.NewGuid().ToString("N");
        _f.Tokens.Table[(token, Namespace)] = TokenValidation.Valid(new TokenPrincipal(
            People.Owner, "fp-" + token, cmds.Length == 0 ? new[] { "ls", "whoami", "fail", "sleep" } : cmds, null));
        return token;
    }

    private async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> ExecAsync(string? token, string body, HttpMethod? method = null)
    {
        using var client = _f.CreateClient();
        var request = new HttpRequestMessage(method ?? HttpMethod.Post, _url);
        if (method != HttpMethod.Get)
            request.Content = new StringContent(body, Encoding.UTF8, "text/plain");
        if (token is not null)
            request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + token);
        var response = await client.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response);
    }

    [Fact]
    public async Task Ok_200_JsonWithNewline()
    {
        var (status, body, response) = await ExecAsync(Token(), "  ls  ");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("{\"vms\":[]}\n", body);
        Assert.Equal("application/json; charset=utf-8", response.Content.Headers.ContentType!.ToString());
    }

    [Fact]
    public async Task Ok_200_WithCurl()
    {
        string token = Token();
        var (status, body, _) = await _f.CurlAsync("-X", "POST", "-H", $"Authorization: Bearer {token}", "--data-binary", "whoami", _url);
        Assert.Equal(200, status);
        Assert.Equal("{\"email\":\"owner@example.com\"}\n", body);
    }

    [Fact]
    public async Task Rejection_OverHttp2WithABody_ReachesCurl_EveryTime()
    {
        // Answered before the body is read, a rejection over HTTP/2 is followed by RST_STREAM(NO_ERROR), and curl
        // 7.x then fails the transfer (exit 92) instead of showing the 401 — unless the small body is read first.
        for (int i = 0; i < 20; i++)
        {
            var (status, body, _) = await _f.CurlAsync("--http2", "-X", "POST", "-H", "Authorization: Bearer exe0.bogus.token",
                "--data-binary", "whoami", _url);
            Assert.Equal(401, status);
            Assert.Contains("error", body);
        }
    }

    [Fact]
    public async Task WrongMethod_405_WithAllow()
    {
        var (status, body, response) = await ExecAsync(Token(), "", HttpMethod.Get);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, status);
        Assert.Equal("POST", string.Join(",", response.Content.Headers.Allow));
        Assert.Equal("{\"error\":\"method not allowed\"}\n", body);
    }

    [Fact]
    public async Task MissingAuthorization_401_WithChallenge()
    {
        var (status, body, response) = await ExecAsync(null, "ls");
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal("Bearer", response.Headers.WwwAuthenticate.ToString());
        Assert.Contains("missing or invalid Authorization header", body);
    }

    [Fact]
    public async Task InvalidToken_401()
    {
        var (status, body, _) = await ExecAsync("not-a-token", "ls");
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal("{\"error\":\"invalid token\"}\n", body);
    }

    [Fact]
    public async Task ValidatorFailure_500()
    {
        _f.Tokens.Table[("tok-broken", Namespace)] = new TokenValidation(TokenValidationStatus.InternalError);
        var (status, _, _) = await ExecAsync("tok-broken", "ls");
        Assert.Equal(HttpStatusCode.InternalServerError, status);
    }

    [Fact]
    public async Task ExpiredKey_403()
    {
        _f.Tokens.Table[("tok-expired-key", Namespace)] = new TokenValidation(TokenValidationStatus.KeyExpired);
        var (status, body, _) = await ExecAsync("tok-expired-key", "ls");
        Assert.Equal(HttpStatusCode.Forbidden, status);
        Assert.Contains("SSH key has expired", body);
    }

    [Fact]
    public async Task RateLimit_429_AfterBurst_RefillsWithTime()
    {
        string token = Token();
        for (int i = 0; i < HttpFrontDoorLimits.ExecRateBurst; i++)
            Assert.Equal(HttpStatusCode.OK, (await ExecAsync(token, "ls")).Status);
        var (status, body, _) = await ExecAsync(token, "ls");
        Assert.Equal(HttpStatusCode.TooManyRequests, status);
        Assert.Contains("rate limit exceeded", body);
        // The refused request dug one token deeper (overdraft): two seconds give one token back.
        _f.Time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(HttpStatusCode.OK, (await ExecAsync(token, "ls")).Status);
    }

    [Fact]
    public async Task BodyOverLimit_413_ButLimitItselfIsFine()
    {
        string token = Token();
        var (atLimit, _, _) = await ExecAsync(token, "ls" + new string(' ', HttpFrontDoorLimits.MaxExecBodyBytes - 2));
        Assert.Equal(HttpStatusCode.OK, atLimit);
        var (over, body, _) = await ExecAsync(token, "ls" + new string(' ', HttpFrontDoorLimits.MaxExecBodyBytes - 1));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, over);
        Assert.Contains("request body exceeds 64KB limit", body);
    }

    [Fact]
    public async Task ChunkedBodyOverLimit_413()
    {
        using var client = _f.CreateClient();
        var request = new HttpRequestMessage(HttpMethod.Post, _url)
        {
            Content = new StreamContent(new MemoryStream(new byte[HttpFrontDoorLimits.MaxExecBodyBytes + 1])),
        };
        request.Headers.TransferEncodingChunked = true;
        request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + Token());
        var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
    }

    [Theory]
    [InlineData("ls\0", "command contains null bytes")]
    [InlineData("   ", "empty command")]
    [InlineData("ls \"unterminated", "invalid command syntax")]
    public async Task BadCommandLine_400(string body, string message)
    {
        var (status, text, _) = await ExecAsync(Token(), body);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains(message, text);
    }

    [Fact]
    public async Task UnknownCommand_404()
    {
        var (status, body, _) = await ExecAsync(Token(), "frobnicate now");
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Contains("unknown command", body);
    }

    [Fact]
    public async Task CommandNotInToken_403()
    {
        var (status, body, _) = await ExecAsync(Token("whoami"), "ls");
        Assert.Equal(HttpStatusCode.Forbidden, status);
        Assert.Contains("command not allowed by token permissions", body);
    }

    [Fact]
    public async Task Timeout_504_AndTheCommandIsCancelled()
    {
        int cancelledBefore = _f.Runner.CancelledSleeps;
        var (status, body, _) = await ExecAsync(Token(), "sleep");
        Assert.Equal(HttpStatusCode.GatewayTimeout, status);
        Assert.Equal("{\"error\":\"command timed out\"}\n", body);
        // The answer comes after the command saw its token fire: nothing is left running.
        Assert.Equal(cancelledBefore + 1, _f.Runner.CancelledSleeps);
    }

    [Fact]
    public void ExecTimeout_OutOfRange_IsAConfigurationError()
    {
        foreach (var bad in new[] { TimeSpan.Zero, TimeSpan.FromSeconds(-1), TimeSpan.FromHours(2) })
        {
            var errors = new HttpFrontDoorOptions { ExecTimeout = bad }.Validate();
            Assert.Contains(errors, e => e.Contains("ExecTimeoutSeconds", StringComparison.Ordinal));
        }
        Assert.Empty(new HttpFrontDoorOptions { ExecTimeout = TimeSpan.FromSeconds(2) }.Validate());
    }

    [Fact]
    public async Task NonZeroExit_422_WithOutput()
    {
        var (status, body, _) = await ExecAsync(Token(), "fail");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, status);
        Assert.Equal("{\"error\":\"it failed\"}\n", body);
    }

    [Fact]
    public async Task VmToken_IsNotAcceptedOnExec()
    {
        var (status, _, _) = await ExecAsync("tok-owner", "ls");
        Assert.Equal(HttpStatusCode.Unauthorized, status);
    }
}
