using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Warren.Edge.Limits;

namespace Warren.Edge.Http;

/// <summary>
/// <c>/__exe.dev/request-access</c> on a site: a logged-in person without access asks the owner to let
/// them in (the form on the "You need access" page).
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>GET shows the form (200); POST sends the request. Anonymous → 401 with a link to the site's login, coming back here.</item>
/// <item>Login cookie only (the form is for browsers); the POST carries an anti-CSRF token bound to the
/// login session, and a cross-site <c>Origin</c> is refused.</item>
/// <item>Owner, or already shared → 303 to <c>/</c>; unknown VM → the same "Access Denied" as the site itself.</item>
/// <item>Limits: <see cref="HttpFrontDoorLimits.AccessRequestBurstPerSite"/> per requester and site,
/// <see cref="HttpFrontDoorLimits.AccessRequestBurstPerRequester"/> per requester → 429 with <c>Retry-After</c>.</item>
/// <item>The answer never names the owner.</item>
/// </list>
/// </remarks>
public sealed partial class HttpFrontDoor
{
    public const string RequestAccessPath = ExeDevPathPrefix + "/request-access";
    internal const string FormTokenField = "csrf";
    internal const string AccessRequestMessageField = "message";

    /// <summary>Purpose label mixed into anti-CSRF tokens, so a token for one form is no token for another.</summary>
    private const string RequestAccessFormPurpose = "warren request-access form\n";

    /// <summary>Key of the anti-CSRF HMAC: per process, so a restart only asks people to reload a form.</summary>
    private readonly byte[] _formTokenKey = RandomNumberGenerator.GetBytes(32);

    private readonly IAccessRequestSender? _accessRequests;

    private readonly KeyedTokenBucket<(string UserId, string VmId)> _accessRequestsPerSite;
    private readonly KeyedTokenBucket _accessRequestsPerRequester;

    /// <summary>The anti-CSRF token of the request-access form for a login session (by its stored key).</summary>
    internal string FormToken(string sessionKey) =>
        LoginLinks.Base64Url(HMACSHA256.HashData(_formTokenKey, Encoding.UTF8.GetBytes(RequestAccessFormPurpose + sessionKey)));

    private bool IsValidFormToken(string sessionKey, string? presented)
    {
        if (string.IsNullOrEmpty(presented) || presented.Length > HeaderParsing.MaxTokenLength)
            return false;
        return CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(FormToken(sessionKey)), Encoding.UTF8.GetBytes(presented));
    }

    private async Task RequestAccessAsync(HttpContext context, string vmName)
    {
        var request = context.Request;
        var ct = context.RequestAborted;
        bool post = HttpMethods.IsPost(request.Method);
        var sender = _accessRequests;
        if (sender is null)
        {
            await Pages.NotFoundAsync(context).ConfigureAwait(false);
            return;
        }
        if (post && !IsSameOrigin(context))
        {
            await Pages.WriteAsync(context, StatusCodes.Status403Forbidden, "Forbidden", "<p>This form can only be sent from the site itself.</p>").ConfigureAwait(false);
            return;
        }
        IFormCollection? form = null;
        if (post && (form = await ReadOwnFormAsync(context).ConfigureAwait(false)) is null)
            return;

        var session = await FindSessionAsync(context, CookieName(context), ct).ConfigureAwait(false);
        if (session is null)
        {
            // The form is for a signed-in person: 401 and the way to sign in, coming back here.
            await Pages.SignInToSiteAsync(context, ExeDevPathPrefix + "/login?redirect=" + Uri.EscapeDataString(RequestAccessPath)).ConfigureAwait(false);
            return;
        }
        var user = session.User;

        WebSite? site;
        try
        {
            site = await _directory.FindAsync(vmName, ct).ConfigureAwait(false);
            if (site is not null && (user.UserId == site.OwnerUserId || await _access.HasAccessAsync(site, user, ct).ConfigureAwait(false)))
            {
                // Nothing to ask for.
                context.Response.StatusCode = StatusCodes.Status303SeeOther;
                context.Response.Headers.Location = "/";
                return;
            }
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            Log.DirectoryFailed(_logger, ex);
            await Pages.ServiceUnavailableAsync(context).ConfigureAwait(false);
            return;
        }
        if (site is null)
        {
            await Pages.AccessDeniedAsync(context).ConfigureAwait(false);
            return;
        }

        if (form is null)
        {
            await Pages.NeedAccessAsync(context, StatusCodes.Status200OK, user.Email, _controlHost, site.Name, FormToken(session.SessionKey), ControlUrl("")).ConfigureAwait(false);
            return;
        }

        if (!IsValidFormToken(session.SessionKey, form[FormTokenField]))
        {
            await Pages.WriteAsync(context, StatusCodes.Status403Forbidden, "Form expired",
                "<p>This form has expired. <a href=\"/\">Reload the site</a> and send it again.</p>").ConfigureAwait(false);
            return;
        }
        if (!TryNormalizeAccessRequestMessage(form[AccessRequestMessageField], out string? message))
        {
            await Pages.WriteAsync(context, StatusCodes.Status400BadRequest, "Message too long",
                $"<p>The message may have at most {HttpFrontDoorLimits.MaxAccessRequestMessageChars} characters.</p>").ConfigureAwait(false);
            return;
        }

        // Per site first: a refusal there must not use up the requester's overall allowance.
        if (!_accessRequestsPerSite.TryAcquire((user.UserId, site.VmId), out var retryAfter)
            || !_accessRequestsPerRequester.TryAcquire(user.UserId, out retryAfter))
        {
            await Pages.AccessRequestLimitedAsync(context, retryAfter).ConfigureAwait(false);
            return;
        }

        try
        {
            await sender.SendAccessRequestAsync(site, user, message, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            Log.AccessRequestFailed(_logger, user.UserId, site.Name, ex);
            await Pages.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Not sent",
                "<p>Your request could not be sent right now. Try again later.</p>").ConfigureAwait(false);
            return;
        }
        Log.AccessRequested(_logger, user.UserId, site.Name);
        await Pages.AccessRequestedAsync(context, site.Name).ConfigureAwait(false);
    }

    /// <summary>
    /// The optional message: CRLF → LF, trimmed, control and format characters (bidi overrides, zero-width)
    /// other than newline and tab removed; blank → null. False when longer than
    /// <see cref="HttpFrontDoorLimits.MaxAccessRequestMessageChars"/>.
    /// </summary>
    internal static bool TryNormalizeAccessRequestMessage(string? raw, out string? message)
    {
        message = null;
        if (string.IsNullOrWhiteSpace(raw))
            return true;
        string text = raw.Replace("\r\n", "\n", StringComparison.Ordinal).Trim();
        if (text.Length > HttpFrontDoorLimits.MaxAccessRequestMessageChars)
            return false;
        var kept = new StringBuilder(text.Length);
        foreach (char c in text)
        {
            if (c is '\n' or '\t' || !(char.IsControl(c) || CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.Format))
                kept.Append(c);
        }
        string result = kept.ToString().Trim();
        message = result.Length == 0 ? null : result;
        return true;
    }

    /// <summary>No <c>Origin</c> (not a browser, or an old one), or exactly this site's origin.</summary>
    private static bool IsSameOrigin(HttpContext context)
    {
        var origin = context.Request.Headers.Origin;
        if (origin.Count == 0)
            return true;
        return origin.Count == 1 && string.Equals(origin[0], "https://" + context.Request.Host.Value, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// Reads the body of one of the front door's own forms within <see cref="HttpFrontDoorLimits.MaxFormBodyBytes"/>.
    /// Null after answering 415 (not a form), 413 (too large) or 400 (malformed).
    /// </summary>
    private static async Task<IFormCollection?> ReadOwnFormAsync(HttpContext context)
    {
        var request = context.Request;
        if (!request.HasFormContentType)
        {
            await WriteTextAsync(context, StatusCodes.Status415UnsupportedMediaType, "expected a form").ConfigureAwait(false);
            return null;
        }
        if (request.ContentLength > HttpFrontDoorLimits.MaxFormBodyBytes)
        {
            await WriteTextAsync(context, StatusCodes.Status413PayloadTooLarge, "form too large").ConfigureAwait(false);
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
            await WriteTextAsync(context, StatusCodes.Status413PayloadTooLarge, "form too large").ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidDataException or BadHttpRequestException or IOException or FormatException)
        {
            await WriteTextAsync(context, StatusCodes.Status400BadRequest, "malformed form").ConfigureAwait(false);
        }
        return null;
    }
}
