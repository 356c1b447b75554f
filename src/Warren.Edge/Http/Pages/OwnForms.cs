using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Warren.Edge.Http;

/// <summary>The front door's own HTML forms: a bounded body reader, the same-origin check, and anti-CSRF tokens.</summary>
internal sealed class OwnForms
{
    /// <summary>Purpose label mixed into anti-CSRF tokens, so a token for one form is no token for another.</summary>
    private const string RequestAccessFormPurpose = "warren request-access form\n";

    /// <summary>Key of the anti-CSRF HMAC: per process, so a restart only asks people to reload a form.</summary>
    private readonly byte[] _formTokenKey = RandomNumberGenerator.GetBytes(32);

    /// <summary>The anti-CSRF token of the request-access form for a login session (by its stored key).</summary>
    public string FormToken(string sessionKey) =>
        LoginLinks.Base64Url(HMACSHA256.HashData(_formTokenKey, Encoding.UTF8.GetBytes(RequestAccessFormPurpose + sessionKey)));

    public bool IsValidFormToken(string sessionKey, string? presented)
    {
        if (string.IsNullOrEmpty(presented) || presented.Length > HeaderParsing.MaxTokenLength)
            return false;
        return CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(FormToken(sessionKey)), Encoding.UTF8.GetBytes(presented));
    }

    /// <summary>No <c>Origin</c> (not a browser, or an old one), or exactly this site's origin (RFC 6454).</summary>
    public static bool IsSameOrigin(HttpContext context)
    {
        var origin = context.Request.Headers.Origin;
        if (origin.Count == 0)
            return true;
        return origin.Count == 1 && string.Equals(origin[0], "https://" + context.Request.Host.Value, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// Reads and drops a small body the answer does not need, before answering early (415). Over HTTP/2 an answer that
    /// ends while the client is still sending makes the server reset the stream with NO_ERROR (RFC 9113 §8.1, allowed),
    /// which some clients (curl 7.88) report as a stream error instead of the answer. Bodies over <paramref name="max"/>
    /// are left for that reset.
    /// </summary>
    public static async Task DiscardBodyAsync(HttpContext context, long max)
    {
        if (context.Request.ContentLength > max) return;
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodyLimit)
            bodyLimit.MaxRequestBodySize = max;
        byte[] buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(4096);
        try
        {
            long total = 0;
            int read;
            while (total <= max && (read = await context.Request.Body.ReadAsync(buffer, context.RequestAborted).ConfigureAwait(false)) > 0)
                total += read;
        }
        catch (Exception e) when (e is BadHttpRequestException or IOException or OperationCanceledException) { /* the answer goes out anyway */ }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>
    /// Reads the body of one of the front door's own forms within <see cref="HttpFrontDoorLimits.MaxFormBodyBytes"/>.
    /// Null after answering 415 (not a form), 413 (too large) or 400 (malformed).
    /// </summary>
    public static async Task<IFormCollection?> ReadAsync(HttpContext context)
    {
        var request = context.Request;
        if (!request.HasFormContentType)
        {
            await DiscardBodyAsync(context, HttpFrontDoorLimits.MaxFormBodyBytes).ConfigureAwait(false);
            await Pages.WriteTextAsync(context, StatusCodes.Status415UnsupportedMediaType, "expected a form").ConfigureAwait(false);
            return null;
        }
        if (request.ContentLength > HttpFrontDoorLimits.MaxFormBodyBytes)
        {
            await Pages.WriteTextAsync(context, StatusCodes.Status413PayloadTooLarge, "form too large").ConfigureAwait(false);
            return null;
        }
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodyLimit)
            bodyLimit.MaxRequestBodySize = HttpFrontDoorLimits.MaxFormBodyBytes;
        var reader = new FormFeature(request, new FormOptions
        {
            BufferBody = false,
            ValueCountLimit = 16,
            KeyLengthLimit = 64,
            ValueLengthLimit = HttpFrontDoorLimits.MaxFormBodyBytes,
            MultipartBodyLengthLimit = HttpFrontDoorLimits.MaxFormBodyBytes,
            MultipartHeadersLengthLimit = HttpFrontDoorLimits.MaxFormBodyBytes,
        });
        try
        {
            return await reader.ReadFormAsync(context.RequestAborted).ConfigureAwait(false);
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await Pages.WriteTextAsync(context, StatusCodes.Status413PayloadTooLarge, "form too large").ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidDataException or BadHttpRequestException or IOException or FormatException)
        {
            await Pages.WriteTextAsync(context, StatusCodes.Status400BadRequest, "malformed form").ConfigureAwait(false);
        }
        return null;
    }
}
