using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Edge.Http;
using Warren.Platform.Mail;

namespace Warren.Edge.Integrations;

/// <summary>
/// Called by the front door when a person completes a verified login on a VM's site (<c>/__exe.dev/auth</c> with a
/// valid one-time link): remembers them as someone the VM may mail (exe.dev's docs: send email). Only a login that
/// admits the person counts — the site is public, or they own it or have access to it — so clicking "log in" on a
/// private site one may not see does not put one's address within the VM's reach.
/// </summary>
public sealed partial class SiteLoginRecorder
{
    private readonly IWebSiteDirectory _sites;
    private readonly IWebAccessService _access;
    private readonly SiteVisitorLog _visitors;
    private readonly ILogger _log;

    public SiteLoginRecorder(IWebSiteDirectory sites, IWebAccessService access, SiteVisitorLog visitors, ILogger<SiteLoginRecorder>? log = null)
    {
        _sites = sites;
        _access = access;
        _visitors = visitors;
        _log = (ILogger?)log ?? NullLogger.Instance;
    }

    /// <summary>Records <paramref name="user"/>'s login on site <paramref name="vmName"/>; never fails the login (errors are logged).</summary>
    public async Task RecordAsync(string vmName, WebUser user, CancellationToken ct)
    {
        try
        {
            var site = await _sites.FindAsync(vmName, ct).ConfigureAwait(false);
            if (site is null) return;
            bool admitted = site.IsPublic || site.OwnerUserId == user.UserId || await _access.HasAccessAsync(site, user, ct).ConfigureAwait(false);
            if (!admitted) return;
            await _visitors.RecordAsync(site.VmId, user.UserId, user.Email, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Log.RecordFailed(_log, vmName, e.GetType().Name);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 4611, Level = LogLevel.Warning, Message = "Site login on {Vm} not recorded as a mail recipient ({Error})")]
        public static partial void RecordFailed(ILogger logger, string vm, string error);
    }
}
