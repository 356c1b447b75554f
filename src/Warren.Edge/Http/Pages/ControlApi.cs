using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http.Identity;
using Warren.Edge.Http.Routing;

namespace Warren.Edge.Http;

/// <summary>
/// The control host's read-only JSON for scripts and a dashboard, authenticated by its own login cookie
/// (<see cref="ControlPaths.CookieName"/>) and nothing else:
/// <list type="bullet">
/// <item><c>GET /api/profile</c> → <c>{"email","user_id","sites":[{"host","vm_name","url","expires_at"}]}</c>: the sites
/// the person is signed in to (a session whose VM was removed or renamed away is not listed).</item>
/// <item><c>GET /api/dashboard</c> → <c>{"email","vms":[…],"shared_vms":[…]}</c>: their VMs and the VMs shared with them,
/// each <c>{"vm_name","status","https_url","owner_email","public","port"}</c>.</item>
/// </list>
/// Not signed in → 401 <c>{"error":"not signed in"}</c>; other methods → 405. Both lists are keyed by the session's
/// account, so nothing of another account can be asked for.
/// </summary>
internal sealed class ControlApi
{
    /// <summary>Sessions <c>/api/profile</c> lists at most (a browser holds one per site it visited).</summary>
    internal const int MaxProfileSessions = 500;

    private readonly ControlUrls _urls;
    private readonly SiteRouter _router;
    private readonly RequestIdentityReader _identity;
    private readonly IWebSessionStore _sessions;
    private readonly IWebSiteDirectory _directory;
    private readonly ILogger _logger;
    private readonly IWebDashboardSource? _dashboard;

    public ControlApi(ControlUrls urls, SiteRouter router, RequestIdentityReader identity, IWebSessionStore sessions, IWebSiteDirectory directory,
        ILogger<ControlApi> logger, IWebDashboardSource? dashboard = null)
    {
        _urls = urls;
        _router = router;
        _identity = identity;
        _sessions = sessions;
        _directory = directory;
        _logger = logger;
        _dashboard = dashboard;
    }

    public async Task HandleAsync(HttpContext context, bool dashboard)
    {
        var request = context.Request;
        var ct = context.RequestAborted;
        if (!(HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method)))
        {
            context.Response.Headers.Allow = "GET, HEAD";
            await WriteJsonErrorAsync(context, StatusCodes.Status405MethodNotAllowed, "method not allowed").ConfigureAwait(false);
            return;
        }
        var session = await _identity.FindSessionAsync(context, ControlPaths.CookieName, ct).ConfigureAwait(false);
        if (session is null)
        {
            await WriteJsonErrorAsync(context, StatusCodes.Status401Unauthorized, "not signed in").ConfigureAwait(false);
            return;
        }
        try
        {
            if (dashboard)
                await DashboardAsync(context, session.User, ct).ConfigureAwait(false);
            else
                await ProfileAsync(context, session.User, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested && !context.Response.HasStarted)
        {
            FrontDoorLog.DirectoryFailed(_logger, ex);
            await WriteJsonErrorAsync(context, StatusCodes.Status503ServiceUnavailable, "try again later").ConfigureAwait(false);
        }
    }

    private async Task ProfileAsync(HttpContext context, WebUser user, CancellationToken ct)
    {
        var sessions = await _sessions.ListForUserAsync(user.UserId, MaxProfileSessions, ct).ConfigureAwait(false);
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("email", user.Email);
            json.WriteString("user_id", user.UserId);
            json.WriteStartArray("sites");
            foreach (var session in sessions)
            {
                if (!seen.Add(session.Host)
                    || !HeaderParsing.TryParseHost(session.Host, out string name, out _)
                    || !_router.TrySiteName(name, out string? vmName))
                    continue;
                // The VM the session was made for must still be there under that name: removed or renamed, it is gone.
                if (await _directory.FindAsync(vmName, ct).ConfigureAwait(false) is null)
                    continue;
                json.WriteStartObject();
                json.WriteString("host", session.Host);
                json.WriteString("vm_name", vmName);
                json.WriteString("url", "https://" + session.Host + "/");
                json.WriteString("expires_at", session.ExpiresAt.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture));
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        await WriteJsonAsync(context, StatusCodes.Status200OK, buffer.WrittenMemory).ConfigureAwait(false);
    }

    private async Task DashboardAsync(HttpContext context, WebUser user, CancellationToken ct)
    {
        var source = _dashboard;
        if (source is null)
        {
            await WriteJsonErrorAsync(context, StatusCodes.Status404NotFound, "not found").ConfigureAwait(false);
            return;
        }
        var dashboard = await source.GetDashboardAsync(user, ct).ConfigureAwait(false);
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("email", user.Email);
            WriteVms(json, "vms", dashboard.Vms);
            WriteVms(json, "shared_vms", dashboard.SharedVms);
            json.WriteEndObject();
        }
        await WriteJsonAsync(context, StatusCodes.Status200OK, buffer.WrittenMemory).ConfigureAwait(false);
    }

    private void WriteVms(Utf8JsonWriter json, string property, IReadOnlyList<WebDashboardVm> vms)
    {
        json.WriteStartArray(property);
        foreach (var vm in vms)
        {
            json.WriteStartObject();
            json.WriteString("vm_name", vm.Name);
            json.WriteString("status", vm.Status);
            json.WriteString("https_url", _urls.SiteUrl(vm.Name));
            json.WriteString("owner_email", vm.OwnerEmail);
            json.WriteBoolean("public", vm.IsPublic);
            json.WriteNumber("port", vm.Port);
            json.WriteEndObject();
        }
        json.WriteEndArray();
    }

    private static Task WriteJsonErrorAsync(HttpContext context, int status, string message) =>
        ExecEndpoint.ErrorAsync(context, status, message);

    private static Task WriteJsonAsync(HttpContext context, int status, ReadOnlyMemory<byte> body) =>
        ExecEndpoint.WriteAsync(context, status, System.Text.Encoding.UTF8.GetString(body.Span) + "\n");
}
