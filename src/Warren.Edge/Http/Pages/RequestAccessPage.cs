using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http.Identity;
using Warren.Edge.Http.Routing;
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
internal sealed class RequestAccessPage
{
    public const string Path = SitePages.ExeDevPathPrefix + "/request-access";
    internal const string FormTokenField = "csrf";
    internal const string MessageField = "message";

    private readonly ControlUrls _urls;
    private readonly RequestIdentityReader _identity;
    private readonly IWebSiteDirectory _directory;
    private readonly IWebAccessService _access;
    private readonly OwnForms _forms;
    private readonly ILogger _logger;
    private readonly IAccessRequestSender? _sender;
    private readonly KeyedTokenBucket<(string UserId, string VmId)> _accessRequestsPerSite;
    private readonly KeyedTokenBucket _accessRequestsPerRequester;

    public RequestAccessPage(ControlUrls urls, RequestIdentityReader identity, IWebSiteDirectory directory, IWebAccessService access,
        OwnForms forms, TimeProvider time, ILogger<RequestAccessPage> logger, IAccessRequestSender? sender = null)
    {
        _urls = urls;
        _identity = identity;
        _directory = directory;
        _access = access;
        _forms = forms;
        _logger = logger;
        _sender = sender;
        _accessRequestsPerSite = new KeyedTokenBucket<(string UserId, string VmId)>(time,
            HttpFrontDoorLimits.AccessRequestBurstPerSite, HttpFrontDoorLimits.AccessRequestsPerSecondPerSite, overdraft: 0);
        _accessRequestsPerRequester = new KeyedTokenBucket(time,
            HttpFrontDoorLimits.AccessRequestBurstPerRequester, HttpFrontDoorLimits.AccessRequestsPerSecondPerRequester, overdraft: 0);
    }

    /// <summary>Whether the form can be offered at all (an access-request sender is configured).</summary>
    public bool Enabled => _sender is not null;

    public async Task HandleAsync(HttpContext context, string vmName)
    {
        var request = context.Request;
        var ct = context.RequestAborted;
        bool post = HttpMethods.IsPost(request.Method);
        var sender = _sender;
        if (sender is null)
        {
            await Pages.NotFoundAsync(context).ConfigureAwait(false);
            return;
        }
        if (post && !OwnForms.IsSameOrigin(context))
        {
            await Pages.WriteAsync(context, StatusCodes.Status403Forbidden, "Forbidden", "<p>This form can only be sent from the site itself.</p>").ConfigureAwait(false);
            return;
        }
        IFormCollection? form = null;
        if (post && (form = await OwnForms.ReadAsync(context).ConfigureAwait(false)) is null)
            return;

        var session = await _identity.FindSessionAsync(context, RequestIdentityReader.SiteCookieName(context), ct).ConfigureAwait(false);
        if (session is null)
        {
            // The form is for a signed-in person: 401 and the way to sign in, coming back here.
            await Pages.SignInToSiteAsync(context, SitePages.LoginPath + "?redirect=" + Uri.EscapeDataString(Path)).ConfigureAwait(false);
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
            FrontDoorLog.DirectoryFailed(_logger, ex);
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
            await Pages.NeedAccessAsync(context, StatusCodes.Status200OK, user.Email, _urls.ControlHost, site.Name, _forms.FormToken(session.SessionKey), _urls.ControlUrl("")).ConfigureAwait(false);
            return;
        }

        if (!_forms.IsValidFormToken(session.SessionKey, form[FormTokenField]))
        {
            await Pages.WriteAsync(context, StatusCodes.Status403Forbidden, "Form expired",
                "<p>This form has expired. <a href=\"/\">Reload the site</a> and send it again.</p>").ConfigureAwait(false);
            return;
        }
        if (!TryNormalizeAccessRequestMessage(form[MessageField], out string? message))
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
            FrontDoorLog.AccessRequestFailed(_logger, user.UserId, site.Name, ex);
            await Pages.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Not sent",
                "<p>Your request could not be sent right now. Try again later.</p>").ConfigureAwait(false);
            return;
        }
        FrontDoorLog.AccessRequested(_logger, user.UserId, site.Name);
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

}
