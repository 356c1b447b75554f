using Warren.Edge.Http.Routing;
using Warren.Edge.Limits;
using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Interactive;

namespace Warren.Edge.Http;

/// <summary>
/// The control host's sign-up pages (exe.dev's web sign-up and its mailed verification links):
/// <list type="bullet">
/// <item><c>POST /auth</c> with <c>email</c>: mails a one-click link that signs the browser up (a new account,
///   without keys) or in (the account with that address); its SSH key joins the account later through the SSH sign-up
///   dialogue, which verifies the address again.</item>
/// <item><c>GET /verify-email?token=T</c>: a page with one button; nothing is used up, so mail scanners and link
///   previews that fetch the link change nothing.</item>
/// <item><c>POST /verify-email</c> (the button): confirms. An SSH sign-up dialogue waiting on it goes on; a web sign-up
///   signs the browser in (<see cref="IControlHostLogin.SignInAsync"/> sets the session cookie), and the address counts
///   as verified: pending shares to it become active.</item>
/// <item><c>POST /auth</c> with <c>secret</c>: the button of a login link's page, handed to
///   <see cref="IControlHostLogin.ConfirmLinkAsync"/> (one form body, read once, decides which it is).</item>
/// </list>
/// Verification links are kept in SQLite (<see cref="EmailVerifications"/>): one mailed before a restart works after it.
/// Addresses at domains reserved for examples (RFC 2606) are not mailed; the page says so.
/// </summary>
public sealed partial class SignupPages
{
    /// <summary>The form field of a login link's confirmation (<c>POST /auth</c>); a sign-up form has <c>email</c> instead.</summary>
    public const string LoginSecretField = "secret";

    /// <summary>Largest form accepted (an address of RFC 5321's 254 octets, a redirect path and a token, encoded).</summary>
    public const int MaxFormBytes = 4096;

    /// <summary>Sign-up mails per address: a burst of 3, then one per 10 minutes (a person retries; a flood is refused).</summary>
    private const int MailBurstPerAddress = 3;
    private const double MailsPerSecondPerAddress = 1.0 / 600;

    /// <summary>Sign-up mails per source network: a burst of 10, then one a minute.</summary>
    private const int MailBurstPerSource = 10;
    private const double MailsPerSecondPerSource = 1.0 / 60;

    private readonly EmailVerifications _verifications;
    private readonly AccountService _accounts;
    private readonly PlatformOptions _options;
    private readonly IEmailSender? _email;
    private readonly ILogger<SignupPages> _logger;
    private readonly KeyedTokenBucket<string> _perAddress;
    private readonly KeyedTokenBucket<string> _perSource;

    public SignupPages(EmailVerifications verifications, AccountService accounts, PlatformOptions options,
        TimeProvider time, ILogger<SignupPages> logger, IEmailSender? email = null)
    {
        _verifications = verifications;
        _accounts = accounts;
        _options = options;
        _email = email;
        _logger = logger;
        _perAddress = new KeyedTokenBucket<string>(time, MailBurstPerAddress, MailsPerSecondPerAddress, 0);
        _perSource = new KeyedTokenBucket<string>(time, MailBurstPerSource, MailsPerSecondPerSource, 0);
    }

    /// <summary>Whether sign-up mails can be sent (a mail relay is configured): only then does a page offer the form.</summary>
    public bool CanMail => _email is not null;

    /// <summary>
    /// The control host's hook: answers <c>POST /auth</c> and <c>/verify-email</c> and returns true, or returns
    /// false for every other request (which the front door then serves as before).
    /// </summary>
    public async Task<bool> TryHandleAsync(HttpContext context, IControlHostLogin login)
    {
        var path = context.Request.Path;
        bool signup = path.Equals(ControlPaths.Auth, StringComparison.Ordinal) && HttpMethods.IsPost(context.Request.Method);
        bool verify = path.Equals(EmailVerifications.LinkPath, StringComparison.Ordinal);
        if (!signup && !verify) return false;
        if (signup) await SignupAsync(context, login).ConfigureAwait(false);
        else await VerifyAsync(context, login).ConfigureAwait(false);
        return true;
    }

    private async Task SignupAsync(HttpContext context, IControlHostLogin login)
    {
        var ct = context.RequestAborted;
        var form = await ReadFormAsync(context).ConfigureAwait(false);
        if (form is null) return;
        if (form.ContainsKey(LoginSecretField))
        {
            await login.ConfirmLinkAsync(context, form).ConfigureAwait(false);
            return;
        }
        if (_email is null)
        {
            await PageAsync(context, StatusCodes.Status503ServiceUnavailable, "Sign-up by e-mail is not available",
                $"<p>No mail relay is configured here. Sign up over SSH instead:</p><pre>ssh {E(_options.ControlHost)}</pre>").ConfigureAwait(false);
            return;
        }
        string input = form["email"].ToString();
        if (!EmailAddress.TryNormalize(input, out var email))
        {
            await PageAsync(context, StatusCodes.Status400BadRequest, "Invalid email address",
                "<p>Please enter an address like you@example.com.</p>" + SignupForm()).ConfigureAwait(false);
            return;
        }
        if (ReservedEmailDomains.IsReserved(email))
        {
            await PageAsync(context, StatusCodes.Status400BadRequest, "No mail can reach that address",
                $"<p>{E(ReservedEmailDomains.Message(email))}</p>" + SignupForm()).ConfigureAwait(false);
            return;
        }
        string source = SourceKey(context.Connection.RemoteIpAddress);
        if (!_perSource.TryAcquire(source) || !_perAddress.TryAcquire(email))
        {
            context.Response.Headers.RetryAfter = "600";
            await PageAsync(context, StatusCodes.Status429TooManyRequests, "Too many requests",
                "<p>Too many sign-up mails were asked for. Please wait a few minutes and try again.</p>").ConfigureAwait(false);
            return;
        }
        string redirect = LocalPath(form["redirect"].ToString()) ?? ControlPaths.Login;
        if (await _verifications.CreateAsync(email, VerificationPurpose.WebSignup, redirect, ct).ConfigureAwait(false) is not { } created)
        {
            await PageAsync(context, StatusCodes.Status503ServiceUnavailable, "Try again later",
                "<p>Too many sign-ups are waiting right now. Please try again in a few minutes.</p>").ConfigureAwait(false);
            return;
        }
        int minutes = (int)_options.Signup.VerificationTimeout.TotalMinutes;
        try
        {
            await _email.SendAsync(email, $"Sign in to {_options.ControlHost}",
                $"Open this link and confirm to sign in to {_options.ControlHost} as {email} (it works once, from any device, for {minutes} minutes):\n\n"
                + _verifications.Link(created.Token) + "\n\n"
                + "If you have no account yet, this makes one; add your SSH key with: ssh " + _options.ControlHost + "\n\n"
                + "If you did not ask for it, ignore this message.\n", ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or TimeoutException)
        {
            await _verifications.ForgetAsync(created.Token, CancellationToken.None).ConfigureAwait(false);
            MailFailed(_logger, e.Message);
            await PageAsync(context, StatusCodes.Status503ServiceUnavailable, "The mail could not be sent",
                "<p>The sign-in mail could not be sent. Please try again later.</p>").ConfigureAwait(false);
            return;
        }
        await PageAsync(context, StatusCodes.Status200OK, "Check your email",
            $"<p>A sign-in link is on its way to <b>{E(email)}</b>. Open it and confirm; it works for {minutes} minutes.</p>").ConfigureAwait(false);
    }

    private async Task VerifyAsync(HttpContext context, IControlHostLogin login)
    {
        var request = context.Request;
        var ct = context.RequestAborted;
        // The token is in the URL: keep it out of the Referer of anything on another origin, and out of caches.
        // "same-origin", not "no-referrer" (hasOwnForm): under no-referrer a browser sends the button's POST with
        // "Origin: null" (Fetch standard, "serializing a request origin"), which the same-origin check below refuses.
        context.Response.Headers["Referrer-Policy"] = "same-origin";
        context.Response.Headers.CacheControl = "no-store";
        if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method))
        {
            string token = request.Query["token"].ToString();
            if (await _verifications.FindAsync(token, ct).ConfigureAwait(false) is not { } pending)
            {
                await InvalidLinkAsync(context).ConfigureAwait(false);
                return;
            }
            string what = pending.Purpose == VerificationPurpose.SshSignup
                ? $"finish signing up at {E(_options.ControlHost)} with the SSH key waiting in your terminal"
                : $"sign in to {E(_options.ControlHost)}";
            // The button's answer signs in and may go on to a site (a sign-up that started at one): CSP must let it.
            await PageAsync(context, StatusCodes.Status200OK, "Confirm your email address",
                $"<p>Confirm that <b>{E(pending.Email)}</b> is yours, to {what}.</p>"
                + $"<form method=\"post\" action=\"{EmailVerifications.LinkPath}\">"
                + $"<input type=\"hidden\" name=\"token\" value=\"{E(token)}\"><button>Confirm</button></form>",
                hasOwnForm: true, formRedirectSources: login.FormRedirectSources).ConfigureAwait(false);
            return;
        }
        if (!HttpMethods.IsPost(request.Method))
        {
            context.Response.Headers.Allow = "GET, HEAD, POST";
            await PageAsync(context, StatusCodes.Status405MethodNotAllowed, "Method not allowed", "<p>Use the link from the mail.</p>").ConfigureAwait(false);
            return;
        }
        // The button's POST comes from this page: another site's form must not sign a browser in to an account of
        // its choosing (login CSRF); browsers send Origin with every cross-site POST (RFC 6454 §7).
        if (!OwnForms.IsSameOrigin(context))
        {
            await PageAsync(context, StatusCodes.Status403Forbidden, "Please open the link again",
                "<p>This form did not come from this site. Open the link from the mail again.</p>").ConfigureAwait(false);
            return;
        }
        var form = await ReadFormAsync(context).ConfigureAwait(false);
        if (form is null) return;
        if (await _verifications.ConfirmAsync(form["token"].ToString(), ct).ConfigureAwait(false) is not { } confirmed)
        {
            await InvalidLinkAsync(context).ConfigureAwait(false);
            return;
        }
        if (confirmed is { Purpose: VerificationPurpose.SshSignup, WaiterGone: true })
        {
            await PageAsync(context, StatusCodes.Status410Gone, "Sign-up ended",
                $"<p>The terminal sign-up that sent this link has ended (the server restarted). Run <code>ssh {E(_options.ControlHost)}</code> again.</p>").ConfigureAwait(false);
            return;
        }
        if (confirmed.Purpose == VerificationPurpose.SshSignup)
        {
            await PageAsync(context, StatusCodes.Status200OK, "Email verified",
                $"<p><b>{E(confirmed.Email)}</b> is verified. Go back to your terminal: your sign-up goes on there.</p>").ConfigureAwait(false);
            return;
        }
        var account = await _accounts.GetOrCreateVerifiedAsync(confirmed.Email, ct).ConfigureAwait(false);
        // This POST is the person's click: it signs the browser in at once (a login link would need a second click).
        await login.SignInAsync(context, new WebUser(account.Id, account.Email), confirmed.Redirect ?? ControlPaths.Login).ConfigureAwait(false);
    }

    private Task InvalidLinkAsync(HttpContext context)
        => PageAsync(context, StatusCodes.Status404NotFound, "Link not valid",
            $"<p>This link is invalid, expired or already used. Sign up again with <code>ssh {E(_options.ControlHost)}</code> or below.</p>" + SignupForm());

    private static string SignupForm()
        => $"<form method=\"post\" action=\"{ControlPaths.Auth}\"><p>Sign up or sign in by e-mail:</p>"
           + "<input type=\"email\" name=\"email\" required autocomplete=\"email\"> <button>Email me a link</button></form>";

    /// <summary>A redirect kept only when it is a local path ("/x", not "//host" or a URL), else null.</summary>
    internal static string? LocalPath(string value)
        => value.Length is > 0 and <= 1024 && value[0] == '/' && (value.Length == 1 || (value[1] != '/' && value[1] != '\\'))
           && !value.Any(char.IsControl) ? value : null;

    /// <summary>The rate-limit key of a source: its IPv4 address, or its IPv6 /64 (one customer holds a whole /64).</summary>
    private static string SourceKey(IPAddress? address)
    {
        if (address is null) return "";
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6) return address.ToString();
        var bytes = address.GetAddressBytes();
        Array.Clear(bytes, 8, 8);
        return new IPAddress(bytes).ToString();
    }

    /// <summary>An urlencoded or multipart form within <see cref="MaxFormBytes"/>; null after answering 400/413/415.</summary>
    private static async Task<IFormCollection?> ReadFormAsync(HttpContext context)
    {
        var request = context.Request;
        if (!request.HasFormContentType)
        {
            await OwnForms.DiscardBodyAsync(context, MaxFormBytes).ConfigureAwait(false);
            await PageAsync(context, StatusCodes.Status415UnsupportedMediaType, "Expected a form", "<p>Send the form from the page.</p>").ConfigureAwait(false);
            return null;
        }
        if (request.ContentLength > MaxFormBytes)
        {
            await PageAsync(context, StatusCodes.Status413PayloadTooLarge, "Form too large", "<p>The form is too large.</p>").ConfigureAwait(false);
            return null;
        }
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodyLimit)
            bodyLimit.MaxRequestBodySize = MaxFormBytes;
        var reader = new FormFeature(request, new FormOptions
        {
            BufferBody = false,
            ValueCountLimit = 8,
            KeyLengthLimit = 32,
            ValueLengthLimit = MaxFormBytes,
            MultipartBodyLengthLimit = MaxFormBytes,
            MultipartHeadersLengthLimit = MaxFormBytes,
        });
        try
        {
            return await reader.ReadFormAsync(context.RequestAborted).ConfigureAwait(false);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await PageAsync(context, StatusCodes.Status413PayloadTooLarge, "Form too large", "<p>The form is too large.</p>").ConfigureAwait(false);
        }
        catch (Exception e) when (e is InvalidDataException or BadHttpRequestException or IOException or FormatException)
        {
            await PageAsync(context, StatusCodes.Status400BadRequest, "Malformed form", "<p>The form could not be read.</p>").ConfigureAwait(false);
        }
        return null;
    }

    /// <summary>
    /// A page with the front door's common headers (<see cref="Pages.WriteAsync"/>: no-store, nosniff, CSP with
    /// frame-ancestors, referrer policy). <paramref name="hasOwnForm"/>: the page's form is checked for its Origin.
    /// <paramref name="formRedirectSources"/>: where the form's answer may redirect besides this origin.
    /// </summary>
    private static Task PageAsync(HttpContext context, int status, string title, string bodyHtml, bool hasOwnForm = false, string? formRedirectSources = null)
        => Pages.WriteAsync(context, status, title, bodyHtml, formRedirectSources, hasOwnForm);

    private static string E(string text) => Pages.E(text);

    [LoggerMessage(EventId = 4390, EventName = "signup.mail_failed", Level = LogLevel.Warning, Message = "signup.mail_failed reason={Reason}")]
    private static partial void MailFailed(ILogger logger, string reason);
}

/// <summary>The control host's login steps the sign-up pages end in (the front door's control-host pages).</summary>
public interface IControlHostLogin
{
    /// <summary>The <c>POST /auth</c> of a login link's confirmation page: its form (secret, form token, redirect) is read already.</summary>
    Task ConfirmLinkAsync(HttpContext context, IFormCollection form);

    /// <summary>Starts a control-host session for <paramref name="user"/> and redirects (303) to <paramref name="redirect"/>.</summary>
    Task SignInAsync(HttpContext context, WebUser user, string redirect);

    /// <summary>
    /// CSP <c>form-action</c> sources, besides 'self', for a page whose form ends in <see cref="SignInAsync"/>: its
    /// redirect may go on to a VM site (the control host's <c>/login</c> sends a signed-in browser back to one).
    /// </summary>
    string FormRedirectSources { get; }
}
