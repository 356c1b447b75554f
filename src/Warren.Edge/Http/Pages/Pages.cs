using System.Globalization;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace Warren.Edge.Http;

/// <summary>The small HTML pages the front door answers itself (exe.dev failure pages, login, logout).</summary>
internal static class Pages
{
    /// <param name="formRedirectSources">
    /// For a page whose form's answer redirects off this origin: the CSP sources it may lead to (the control host's
    /// origin after a site's logout; the VM sites after a login that returns to one). CSP's form-action also governs
    /// the redirects after a form is sent (CSP Level 3, "form-action"), so 'self' alone would stop them.
    /// </param>
    /// <param name="hasOwnForm">
    /// The page posts a form of this door that checks <c>Origin</c>: its referrer policy is <c>same-origin</c>, because
    /// under <c>no-referrer</c> browsers send such a POST with <c>Origin: null</c> (Fetch standard, "serializing a
    /// request origin"); other sites still get no referrer.
    /// </param>
    public static Task WriteAsync(HttpContext context, int status, string title, string bodyHtml, string? formRedirectSources = null, bool hasOwnForm = false)
    {
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = "text/html; charset=utf-8";
        foreach (var (name, value) in HeaderFields)
            response.Headers[name] = value;
        if (formRedirectSources is not null)
            response.Headers.ContentSecurityPolicy = ContentSecurityPolicy + " " + formRedirectSources;
        if (hasOwnForm)
            response.Headers["Referrer-Policy"] = "same-origin";
        if (HttpMethods.IsHead(context.Request.Method))
            return Task.CompletedTask;
        return response.WriteAsync(Render(title, bodyHtml), context.RequestAborted);
    }

    /// <summary>
    /// Nothing loaded, inline style only, never framed (the buttons of login and logout must not be clicked through
    /// another site's frame; frame-ancestors is not covered by default-src, CSP Level 3), forms sent to this origin
    /// only. form-action stays last: <see cref="WriteAsync"/> appends sources to it.
    /// </summary>
    private const string ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'";

    /// <summary>The headers every page carries besides its type (not cached, not sniffed, no referrer, nothing loaded).</summary>
    public static readonly (string Name, string Value)[] HeaderFields =
    [
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy", ContentSecurityPolicy),
        // For browsers without CSP's frame-ancestors (RFC 7034).
        ("X-Frame-Options", "DENY"),
    ];

    /// <summary>A whole page's HTML.</summary>
    public static string Render(string title, string bodyHtml) =>
        new StringBuilder()
            .Append("<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>")
            .Append(E(title))
            .Append("</title><style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}code{background:#f3f3f3;padding:.1em .3em}</style></head><body><h1>")
            .Append(E(title)).Append("</h1>").Append(bodyHtml).Append("</body></html>").ToString();

    public const string BadGatewayTitle = "Bad Gateway";
    public const string BadGatewayBody = "<p>Bad Gateway. The VM's answer was not valid HTTP/1.1.</p>";
    public const string ServiceUnavailableTitle = "Service Unavailable";
    public const string ServiceUnavailableBody = "<p>Service Unavailable. This site is not answering right now.</p>";

    public static string E(string text) => WebUtility.HtmlEncode(text);

    public static Task PortUnboundAsync(HttpContext c, int port) =>
        WriteAsync(c, StatusCodes.Status502BadGateway, $"Port {port} unbound.", $"<p>Port {port} unbound. Nothing in the VM answers on port {port}, or the VM is stopped.</p>");

    public static Task ServiceUnavailableAsync(HttpContext c) =>
        WriteAsync(c, StatusCodes.Status503ServiceUnavailable, ServiceUnavailableTitle, ServiceUnavailableBody);

    public static Task AccessDeniedAsync(HttpContext c) =>
        WriteAsync(c, StatusCodes.Status401Unauthorized, "Access Denied", "<p>Access Denied. (find someone you know that can let you in)</p>");

    /// <summary>
    /// "You need access" (exe.dev), with the request-access form when <paramref name="requestAccessToken"/>
    /// (the session's anti-CSRF token) is given.
    /// </summary>
    public static Task NeedAccessAsync(HttpContext c, int status, string email, string controlHost, string vmName, string? requestAccessToken, string controlOrigin)
    {
        var body = new StringBuilder()
            .Append("<p>You need access — Ask the owner to let you in.</p><p>You are logged in as <b>").Append(E(email))
            .Append("</b>. The owner can run <code>ssh ").Append(E(controlHost)).Append(" share add ").Append(E(vmName)).Append(' ').Append(E(email))
            .Append("</code>.</p>");
        if (requestAccessToken is not null)
        {
            body.Append("<form method=\"post\" action=\"").Append(RequestAccessPage.Path).Append("\"><p>Or ask the owner by email:</p>")
                .Append("<input type=\"hidden\" name=\"").Append(RequestAccessPage.FormTokenField).Append("\" value=\"").Append(E(requestAccessToken)).Append("\">")
                .Append("<p><label>Message (optional)<br><textarea name=\"").Append(RequestAccessPage.MessageField)
                .Append("\" rows=\"4\" cols=\"50\" maxlength=\"").Append(HttpFrontDoorLimits.MaxAccessRequestMessageChars).Append("\"></textarea></label></p>")
                .Append("<button>Request access</button></form>");
        }
        body.Append("<form method=\"post\" action=\"/__exe.dev/logout\"><button>Log out</button></form>");
        return WriteAsync(c, status, "You need access", body.ToString(), controlOrigin, hasOwnForm: requestAccessToken is not null);
    }

    /// <summary>After a request-access form was sent. Says nothing about who the owner is.</summary>
    public static Task AccessRequestedAsync(HttpContext c, string vmName) =>
        WriteAsync(c, StatusCodes.Status200OK, "Access requested",
            $"<p>Your request was sent to the owner of <b>{E(vmName)}</b>. Once they let you in, <a href=\"/\">reload the site</a>.</p>");

    public static Task AccessRequestLimitedAsync(HttpContext c, TimeSpan retryAfter)
    {
        SetRetryAfter(c, retryAfter);
        int minutes = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalMinutes));
        return WriteAsync(c, StatusCodes.Status429TooManyRequests, "Already requested",
            $"<p>You asked for access recently. You can ask again in about {minutes} minute{(minutes == 1 ? "" : "s")}.</p>");
    }

    /// <summary><c>Retry-After</c> in whole seconds, at least 1 (RFC 9110 §10.2.3).</summary>
    public static void SetRetryAfter(HttpContext c, TimeSpan retryAfter) =>
        c.Response.Headers.RetryAfter = Math.Max(1, (long)Math.Ceiling(retryAfter.TotalSeconds)).ToString(CultureInfo.InvariantCulture);

    /// <summary>The logout confirmation (its POST answers 307 to <paramref name="controlOrigin"/>'s logged-out page).</summary>
    public static Task LogoutFormAsync(HttpContext c, string controlOrigin) =>
        WriteAsync(c, StatusCodes.Status200OK, "Log out",
            "<form method=\"post\" action=\"/__exe.dev/logout\"><p>Log out of this site?</p><button>Log out</button></form><p><a href=\"/\">Cancel</a></p>",
            controlOrigin);

    /// <summary>The title of the sign-in pages (the control host's, and a site's own form pages).</summary>
    public const string SignInTitle = "Sign in to continue";

    /// <summary>401 on a site page that needs a signed-in person, with a link to the site's login (<paramref name="loginUrl"/>).</summary>
    public static Task SignInToSiteAsync(HttpContext c, string loginUrl) =>
        WriteAsync(c, StatusCodes.Status401Unauthorized, SignInTitle, $"<p><a href=\"{E(loginUrl)}\">Sign in</a> to continue.</p>");

    public static Task InvalidAuthenticationAsync(HttpContext c) =>
        WriteAsync(c, StatusCodes.Status401Unauthorized, "Unauthorized", $"<p>invalid or missing authentication (trace {E(c.TraceIdentifier)})</p>");

    /// <summary>414 (RFC 9110 §15.5.15): the address is longer than <see cref="HttpFrontDoorLimits.MaxRequestTargetBytes"/>.</summary>
    public static Task UriTooLongAsync(HttpContext c) =>
        WriteAsync(c, StatusCodes.Status414UriTooLong, "URI Too Long",
            $"<p>This address is longer than the {HttpFrontDoorLimits.MaxRequestTargetBytes / 1024} KiB this server accepts.</p>");

    public static Task NotFoundAsync(HttpContext c) =>
        WriteAsync(c, StatusCodes.Status404NotFound, "Not Found", "<p>404 page not found</p>");

    /// <summary>A one-line plain-text answer (the front door's own errors: 400, 413, 415, 429).</summary>
    public static Task WriteTextAsync(HttpContext context, int status, string text)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync(text + "\n", context.RequestAborted);
    }

    public static Task MethodNotAllowedAsync(HttpContext c, string allow)
    {
        c.Response.Headers.Allow = allow;
        return WriteAsync(c, StatusCodes.Status405MethodNotAllowed, "Method Not Allowed", "<p>method not allowed</p>");
    }
}
