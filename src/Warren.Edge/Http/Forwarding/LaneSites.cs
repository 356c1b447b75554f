using System.Net;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http.Access;
using Warren.Edge.Http.Routing;

namespace Warren.Edge.Http.Forwarding;

/// <summary>
/// What the connection-level lane (the native event loops) asks the earlier stages, and what it reports: the site a
/// Host names on its default route (<see cref="SiteRouter"/>), whether an anonymous request to it needs nothing
/// but forwarding (<see cref="SiteAccessPolicy.AdmitsAnonymous"/>, a running VM, the source within its rate), and
/// the requests it answered. Whether a request is anonymous is <see cref="Identity.CredentialFields"/>' question.
/// </summary>
public sealed class LaneSites
{
    private readonly SiteRouter _router;
    private readonly IWebSiteDirectory _directory;
    private readonly IWebUpstreamLocator _locator;
    private readonly SourceRequestLimit _sourceLimit;
    private readonly ILogger _logger;
    private long _requests;

    public LaneSites(SiteRouter router, IWebSiteDirectory directory, IWebUpstreamLocator locator, SourceRequestLimit sourceLimit,
        SiteForwarder forwarder, ILogger<LaneSites> logger)
    {
        _router = router;
        _directory = directory;
        _locator = locator;
        _sourceLimit = sourceLimit;
        _logger = logger;
        Http1 = forwarder.Http1;
    }

    /// <summary>The full path's HTTP/1.1 forwarder: the lane keeps its limits (the activity timeout).</summary>
    internal Http1Forwarder Http1 { get; }

    /// <summary>Requests answered by the lane since start.</summary>
    public long Requests => Volatile.Read(ref _requests);

    internal void CountRequest() => Interlocked.Increment(ref _requests);

    /// <summary>The log line the full path writes when forwarding fails.</summary>
    internal void LogForwardFailed(ForwardResult result, string vmName, int port) =>
        FrontDoorLog.ForwardFailed(_logger, result.Outcome.ToString(), vmName, port, result.Detail ?? result.Error?.Message);

    /// <summary>Asked once per Host value on a connection: the VM name when <paramref name="host"/> is a site on its default route, else null.</summary>
    public string? DefaultRouteVmName(string host) => _router.DefaultRouteVmName(host);

    /// <summary>
    /// Asked per request (a site made private stops here at once): the VM endpoint when an anonymous request to
    /// <paramref name="vmName"/> needs nothing but forwarding, else null, and the request takes the full path
    /// (which also answers every refusal).
    /// </summary>
    internal async ValueTask<UpstreamEndpoint?> RoutePublicSiteAsync(string vmName, IPAddress? remote)
    {
        try
        {
            var site = await _directory.FindAsync(vmName, CancellationToken.None).ConfigureAwait(false);
            if (site is null || !SiteAccessPolicy.AdmitsAnonymous(site))
                return null;
            var address = await _locator.GetAddressAsync(site.VmId, CancellationToken.None).ConfigureAwait(false);
            if (address is null)
                return null;
            // Last, so a request the full path answers is counted there once, not here too.
            if (!_sourceLimit.TryAcquire(remote, out _))
                return null;
            return new UpstreamEndpoint(address, site.DefaultPort);
        }
        catch (Exception ex)
        {
            FrontDoorLog.DirectoryFailed(_logger, ex);
            return null;
        }
    }
}
