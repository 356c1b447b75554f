using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Warren.Edge.Limits;

namespace Warren.Edge.Http;

/// <summary>
/// <c>POST /exec</c> on the control host (exe.dev): the body is a command line, run as the
/// token's user with JSON output. Checks in the reference's order: 405, 401 (header), 401 (token),
/// 500, 403 (key expired), 429, 413, 400, 404, 403 (cmds), 504, 422, 200.
/// </summary>
internal sealed class ExecEndpoint
{
    private const string JsonContentType = "application/json; charset=utf-8";

    private readonly HttpFrontDoorOptions _options;
    private readonly IWebTokenValidator _tokens;
    private readonly IExecCommandRunner _runner;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly KeyedTokenBucket _limiter;
    private readonly string _namespace;

    public ExecEndpoint(HttpFrontDoorOptions options, IWebTokenValidator tokens, IExecCommandRunner runner, TimeProvider time, ILogger<ExecEndpoint> logger)
    {
        _options = options;
        _tokens = tokens;
        _runner = runner;
        _time = time;
        _logger = logger;
        _limiter = new KeyedTokenBucket(time, HttpFrontDoorLimits.ExecRateBurst, HttpFrontDoorLimits.ExecRatePerSecond, HttpFrontDoorLimits.ExecRateOverdraft);
        _namespace = "v0@" + options.ControlHost.Trim().TrimEnd('.').ToLowerInvariant();
    }

    public async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var ct = context.RequestAborted;

        // :: 405
        if (!HttpMethods.IsPost(request.Method))
        {
            context.Response.Headers.Allow = "POST";
            await RejectBeforeBodyAsync(context, StatusCodes.Status405MethodNotAllowed, "method not allowed").ConfigureAwait(false);
            return;
        }

        // :: 401 header
        var auth = request.Headers.Authorization;
        if (auth.Count != 1 || !HeaderParsing.TryGetBearer(auth[0], out string token))
        {
            context.Response.Headers.WWWAuthenticate = "Bearer";
            await RejectBeforeBodyAsync(context, StatusCodes.Status401Unauthorized, "missing or invalid Authorization header").ConfigureAwait(false);
            return;
        }

        // :: 401 token / 500 / 403 key expired
        TokenValidation validation;
        try
        {
            validation = await _tokens.ValidateAsync(token, _namespace, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            Log.Failed(_logger, ex);
            validation = new TokenValidation(TokenValidationStatus.InternalError);
        }
        switch (validation.Status)
        {
            case TokenValidationStatus.Invalid:
                context.Response.Headers.WWWAuthenticate = "Bearer";
                await RejectBeforeBodyAsync(context, StatusCodes.Status401Unauthorized, validation.Error ?? "invalid token").ConfigureAwait(false);
                return;
            case TokenValidationStatus.InternalError:
                await RejectBeforeBodyAsync(context, StatusCodes.Status500InternalServerError, "internal error").ConfigureAwait(false);
                return;
            case TokenValidationStatus.KeyExpired:
                await RejectBeforeBodyAsync(context, StatusCodes.Status403Forbidden, "SSH key has expired").ConfigureAwait(false);
                return;
        }
        var principal = validation.Principal!;

        // :: 429 (after authentication, before the body is read)
        if (!_limiter.TryAcquire(principal.RateLimitKey))
        {
            await RejectBeforeBodyAsync(context, StatusCodes.Status429TooManyRequests, "rate limit exceeded").ConfigureAwait(false);
            return;
        }

        // :: 413 / 400 body
        if (request.ContentLength > HttpFrontDoorLimits.MaxExecBodyBytes)
        {
            await ErrorAsync(context, StatusCodes.Status413PayloadTooLarge, "request body exceeds 64KB limit").ConfigureAwait(false);
            return;
        }
        // Owned by this request; returned once in finally.
        byte[] buffer = ArrayPool<byte>.Shared.Rent(HttpFrontDoorLimits.MaxExecBodyBytes + 1);
        string commandLine;
        try
        {
            int total = 0;
            try
            {
                while (total <= HttpFrontDoorLimits.MaxExecBodyBytes)
                {
                    int read = await request.Body.ReadAsync(buffer.AsMemory(total, HttpFrontDoorLimits.MaxExecBodyBytes + 1 - total), ct).ConfigureAwait(false);
                    if (read == 0)
                        break;
                    total += read;
                }
            }
            catch (Exception ex) when (ex is IOException or BadHttpRequestException)
            {
                await ErrorAsync(context, StatusCodes.Status400BadRequest, "failed to read request body").ConfigureAwait(false);
                return;
            }
            if (total > HttpFrontDoorLimits.MaxExecBodyBytes)
            {
                await ErrorAsync(context, StatusCodes.Status413PayloadTooLarge, "request body exceeds 64KB limit").ConfigureAwait(false);
                return;
            }
            if (buffer.AsSpan(0, total).IndexOf((byte)0) >= 0)
            {
                await ErrorAsync(context, StatusCodes.Status400BadRequest, "command contains null bytes").ConfigureAwait(false);
                return;
            }
            try
            {
                commandLine = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(buffer, 0, total).Trim();
            }
            catch (DecoderFallbackException)
            {
                await ErrorAsync(context, StatusCodes.Status400BadRequest, "invalid command syntax").ConfigureAwait(false);
                return;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (commandLine.Length == 0)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, "empty command").ConfigureAwait(false);
            return;
        }

        var runner = _runner;
        if (!runner.TrySplit(commandLine, out var argv) || argv.Count == 0)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, "invalid command syntax").ConfigureAwait(false);
            return;
        }

        // :: 404 / 403 cmds
        string? canonical = runner.Resolve(argv);
        if (canonical is null)
        {
            await ErrorAsync(context, StatusCodes.Status404NotFound, "unknown command").ConfigureAwait(false);
            return;
        }
        if (!runner.IsAllowed(principal.AllowedCommands, argv))
        {
            await ErrorAsync(context, StatusCodes.Status403Forbidden, "command not allowed by token permissions").ConfigureAwait(false);
            return;
        }

        // :: run: 504 / 422 / 200
        using var timeout = new CancellationTokenSource(_options.ExecTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, ct);
        ExecOutcome outcome;
        try
        {
            outcome = await runner.RunAsync(new ExecInvocation(principal, argv, canonical), linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            await ErrorAsync(context, StatusCodes.Status504GatewayTimeout, "command timed out").ConfigureAwait(false);
            return;
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            Log.Failed(_logger, ex);
            await ErrorAsync(context, StatusCodes.Status422UnprocessableEntity, "internal error").ConfigureAwait(false);
            return;
        }

        if (outcome.ExitCode != 0 && timeout.IsCancellationRequested)
        {
            await ErrorAsync(context, StatusCodes.Status504GatewayTimeout, "command timed out").ConfigureAwait(false);
            return;
        }
        int status = outcome.ExitCode == 0 ? StatusCodes.Status200OK : StatusCodes.Status422UnprocessableEntity;
        await WriteAsync(context, status, outcome.Output.Trim() + "\n").ConfigureAwait(false);
    }

    /// <summary>
    /// An answer given before the body was read, sent after reading (and dropping) a body of up to the exec limit:
    /// over HTTP/2 an answer that comes before the upload ends is followed by RST_STREAM(NO_ERROR), which RFC 9113
    /// §8.1 lets clients take, but curl 7.x (Debian 12's) then fails the transfer ("Stream error in the HTTP/2
    /// framing layer") instead of showing the 401. A larger or never-ending body is not waited for (bounded).
    /// </summary>
    private static async Task RejectBeforeBodyAsync(HttpContext context, int status, string message)
    {
        var request = context.Request;
        if (request.ContentLength is not > HttpFrontDoorLimits.MaxExecBodyBytes)
        {
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
            bounded.CancelAfter(RejectedBodyWait);
            byte[] scratch = ArrayPool<byte>.Shared.Rent(4096);
            try
            {
                long total = 0;
                while (total <= HttpFrontDoorLimits.MaxExecBodyBytes)
                {
                    int read = await request.Body.ReadAsync(scratch, bounded.Token).ConfigureAwait(false);
                    if (read == 0)
                        break;
                    total += read;
                }
            }
            catch (Exception ex) when (ex is IOException or BadHttpRequestException or OperationCanceledException)
            {
                // Answered anyway: the body only mattered to the client's ability to read the answer.
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(scratch);
            }
        }
        await ErrorAsync(context, status, message).ConfigureAwait(false);
    }

    /// <summary>How long a rejected request's body is waited for before the answer goes anyway.</summary>
    internal static readonly TimeSpan RejectedBodyWait = TimeSpan.FromSeconds(2);

    internal static Task ErrorAsync(HttpContext context, int status, string message) =>
        WriteAsync(context, status, JsonSerializer.Serialize(new Dictionary<string, string> { ["error"] = message }) + "\n");

    /// <summary>A JSON answer (<c>application/json; charset=utf-8</c>, not cached); <paramref name="body"/> ends in a newline.</summary>
    internal static Task WriteAsync(HttpContext context, int status, string body)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = JsonContentType;
        context.Response.Headers.CacheControl = "no-store";
        return context.Response.WriteAsync(body, context.RequestAborted);
    }

    private static class Log
    {
        private static readonly Action<ILogger, Exception?> s_failed = LoggerMessage.Define(
            LogLevel.Error, EdgeEventIds.ExecFailed, "/exec failed inside the platform");
        public static void Failed(ILogger l, Exception ex) => s_failed(l, ex);
    }
}
