using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Edge.Http;
using Warren.Platform.Mail;

namespace Warren.Edge.Metadata;

/// <summary>
/// One request to the metadata address (exe.dev's docs: metadata, send email, integrations). Identifies the caller
/// by the path it arrived on (<see cref="MetadataCallerResolver"/>), rate-limits per VM, then: <c>GET /</c> →
/// <c>{"name","source_ip"}</c>; <c>POST /gateway/email/send</c> → the email gateway; Host <c>NAME.int.&lt;vm-domain&gt;</c>
/// → the integration handler; anything else 404. Every answer is JSON, every error <c>{"error": "…"}</c>.
/// </summary>
public sealed partial class MetadataRequestHandler
{
    public const string EmailSendPath = "/gateway/email/send";

    private readonly IMetadataCallerSource _callers;
    private readonly MetadataOptions _options;
    private readonly string _vmDomain;
    private readonly VmEmailGateway? _email;
    private readonly IIntegrationRequestHandler? _integrations;
    private readonly KeyedTokenBucket _requests;
    private readonly KeyedTokenBucket _emails;
    private readonly ILogger _log;

    public MetadataRequestHandler(IMetadataCallerSource callers, MetadataOptions options, string vmDomain,
        TimeProvider time, VmEmailGateway? email = null, IIntegrationRequestHandler? integrations = null, ILogger<MetadataRequestHandler>? log = null)
    {
        _callers = callers;
        _options = options;
        _vmDomain = vmDomain;
        _email = email;
        _integrations = integrations;
        _requests = new KeyedTokenBucket(time, Math.Max(1, options.RequestBurstPerVm), Math.Max(0.001, options.RequestsPerSecondPerVm), overdraft: 0);
        _emails = new KeyedTokenBucket(time, Math.Max(1, options.EmailBurstPerVm), Math.Max(0.000_001, options.EmailsPerHourPerVm / 3600.0), overdraft: 0);
        _log = (ILogger?)log ?? NullLogger.Instance;
    }

    public async Task HandleAsync(HttpContext context)
    {
        var ct = context.RequestAborted;
        var caller = await _callers.ResolveAsync(context.Connection.LocalIpAddress, context.Connection.RemoteIpAddress, ct).ConfigureAwait(false);
        if (caller is null)
        {
            // Not reached through a VM's own network (or the VM is gone): nobody to answer for.
            await ErrorAsync(context, StatusCodes.Status403Forbidden, "the metadata service answers VMs only").ConfigureAwait(false);
            return;
        }
        if (!_requests.TryAcquire(caller.VmId, out var retry))
        {
            context.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(retry.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
            await ErrorAsync(context, StatusCodes.Status429TooManyRequests, "too many requests").ConfigureAwait(false);
            return;
        }

        // The raw header: Request.Host would IDN-decode it, which throws on a malformed "xn--" label.
        switch (MetadataHostName.Classify(context.Request.Headers.Host.ToString(), _vmDomain, out var integration))
        {
            case MetadataHostKind.Integration when _integrations is not null:
                await _integrations.HandleAsync(context, caller, integration!, ct).ConfigureAwait(false);
                return;
            case MetadataHostKind.Integration:
            case MetadataHostKind.InvalidIntegration:
                await ErrorAsync(context, StatusCodes.Status404NotFound, "no such integration").ConfigureAwait(false);
                return;
        }

        string path = context.Request.Path.Value ?? "/";
        if (path is "" or "/")
        {
            if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
            {
                await MethodNotAllowedAsync(context, "GET, HEAD").ConfigureAwait(false);
                return;
            }
            await JsonAsync(context, StatusCodes.Status200OK, new Identity(caller.VmName, caller.SourceAddress.ToString()), MetadataJson.Default.Identity).ConfigureAwait(false);
            return;
        }
        if (path == EmailSendPath)
        {
            if (!HttpMethods.IsPost(context.Request.Method))
            {
                await MethodNotAllowedAsync(context, "POST").ConfigureAwait(false);
                return;
            }
            await SendEmailAsync(context, caller, ct).ConfigureAwait(false);
            return;
        }
        await ErrorAsync(context, StatusCodes.Status404NotFound, "not found").ConfigureAwait(false);
    }

    private async Task SendEmailAsync(HttpContext context, MetadataCaller caller, CancellationToken ct)
    {
        if (_email is null || !_email.Enabled)
        {
            await ErrorAsync(context, StatusCodes.Status503ServiceUnavailable, "email is not configured on this server").ConfigureAwait(false);
            return;
        }
        var body = await ReadBodyAsync(context, ct).ConfigureAwait(false);
        if (body is null)
        {
            await ErrorAsync(context, StatusCodes.Status413PayloadTooLarge, $"request body is larger than {_options.MaxRequestBodyBytes} bytes").ConfigureAwait(false);
            return;
        }
        if (!TryParseEmail(body, out var request))
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, "body must be a JSON object with string fields to, subject, body (and optionally reply_to)").ConfigureAwait(false);
            return;
        }
        if (VmEmailGateway.Validate(request) is { } invalid)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, invalid.Error!).ConfigureAwait(false);
            return;
        }
        if (!_emails.TryAcquire(caller.VmId, out var retry))
        {
            context.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(retry.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
            await ErrorAsync(context, StatusCodes.Status429TooManyRequests, "email rate limit reached; try again later").ConfigureAwait(false);
            return;
        }
        var result = await _email.SendAsync(caller.VmId, caller.AccountId, request, ct).ConfigureAwait(false);
        int status = result.Outcome switch
        {
            VmEmailOutcome.Sent => StatusCodes.Status200OK,
            VmEmailOutcome.Invalid => StatusCodes.Status400BadRequest,
            VmEmailOutcome.RecipientNotAllowed => StatusCodes.Status403Forbidden,
            VmEmailOutcome.Unavailable => StatusCodes.Status503ServiceUnavailable,
            _ => StatusCodes.Status502BadGateway,
        };
        if (result.Outcome == VmEmailOutcome.Sent)
            await JsonAsync(context, status, new EmailSent(true), MetadataJson.Default.EmailSent).ConfigureAwait(false);
        else
        {
            LogEmailRefused(caller.VmId, result.Outcome);
            await ErrorAsync(context, status, result.Error ?? "not sent").ConfigureAwait(false);
        }
    }

    /// <summary>The email gateway's JSON: strings only; unknown fields (exe.dev's in_reply_to, references) are ignored.</summary>
    public static bool TryParseEmail(ReadOnlySpan<byte> json, out VmEmailRequest request)
    {
        request = new VmEmailRequest(null, null, null, null);
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 4, CommentHandling = JsonCommentHandling.Disallow });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) return false;
            string? to = null, subject = null, body = null, replyTo = null;
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.EndObject)
                {
                    if (reader.Read()) return false;
                    request = new VmEmailRequest(to, subject, body, replyTo);
                    return true;
                }
                if (reader.TokenType != JsonTokenType.PropertyName) return false;
                string name = reader.GetString()!;
                if (!reader.Read()) return false;
                switch (name)
                {
                    case "to": if (!TryString(ref reader, out to)) return false; break;
                    case "subject": if (!TryString(ref reader, out subject)) return false; break;
                    case "body": if (!TryString(ref reader, out body)) return false; break;
                    case "reply_to": if (!TryString(ref reader, out replyTo)) return false; break;
                    default: reader.Skip(); break;
                }
            }
            return false;
        }
        catch (JsonException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static bool TryString(ref Utf8JsonReader reader, out string? value)
    {
        value = null;
        if (reader.TokenType == JsonTokenType.Null) return true;
        if (reader.TokenType != JsonTokenType.String) return false;
        value = reader.GetString();
        return true;
    }

    /// <summary>The body, or null when it is larger than <see cref="MetadataOptions.MaxRequestBodyBytes"/>.</summary>
    private async Task<byte[]?> ReadBodyAsync(HttpContext context, CancellationToken ct)
    {
        long limit = _options.MaxRequestBodyBytes;
        if (context.Request.ContentLength > limit) return null;
        using var buffer = new MemoryStream();
        var chunk = new byte[8192];
        try
        {
            while (true)
            {
                int read = await context.Request.Body.ReadAsync(chunk, ct).ConfigureAwait(false);
                if (read == 0) break;
                if (buffer.Length + read > limit) return null;
                buffer.Write(chunk, 0, read);
            }
        }
        catch (BadHttpRequestException)
        {
            return null;
        }
        return buffer.ToArray();
    }

    private static Task MethodNotAllowedAsync(HttpContext context, string allow)
    {
        context.Response.Headers.Allow = allow;
        return ErrorAsync(context, StatusCodes.Status405MethodNotAllowed, "method not allowed");
    }

    public static Task ErrorAsync(HttpContext context, int status, string message) =>
        JsonAsync(context, status, new ErrorBody(message), MetadataJson.Default.ErrorBody);

    private static async Task JsonAsync<T>(HttpContext context, int status, T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        var bytes = JsonSerializer.SerializeToUtf8Bytes(value, type);
        context.Response.ContentLength = bytes.Length + 1;
        if (HttpMethods.IsHead(context.Request.Method)) return;
        await context.Response.Body.WriteAsync(bytes, context.RequestAborted).ConfigureAwait(false);
        await context.Response.Body.WriteAsync("\n"u8.ToArray(), context.RequestAborted).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 4601, Level = LogLevel.Information, Message = "metadata.email-refused: VM {VmId}: {Outcome}")]
    private partial void LogEmailRefused(string vmId, VmEmailOutcome outcome);

    internal sealed record Identity([property: JsonPropertyName("name")] string Name, [property: JsonPropertyName("source_ip")] string SourceIp);
    internal sealed record ErrorBody([property: JsonPropertyName("error")] string Error);
    internal sealed record EmailSent([property: JsonPropertyName("success")] bool Success);
}

[JsonSerializable(typeof(MetadataRequestHandler.Identity))]
[JsonSerializable(typeof(MetadataRequestHandler.ErrorBody))]
[JsonSerializable(typeof(MetadataRequestHandler.EmailSent))]
internal sealed partial class MetadataJson : JsonSerializerContext;
