namespace Warren.Edge.Http.Routing;

/// <summary>What a request's Host names (<see cref="SiteRouter.Route"/>).</summary>
public enum HostRouteKind
{
    /// <summary>Neither the control host nor the VM domain: the next middleware's.</summary>
    NotOurs,
    /// <summary>The control host.</summary>
    Control,
    /// <summary>A site of the VM domain, on its default route or an alternate port.</summary>
    Site,
    /// <summary>The VM domain, but no site can be there (not a VM label, or a port outside the alternate range): 404.</summary>
    NotFound,
}

/// <param name="HostName">The Host's name, lower case, without its port.</param>
/// <param name="VmName">The site's VM name (<see cref="HostRouteKind.Site"/> only).</param>
/// <param name="AlternatePort">The VM port an alternate-port Host names, null on the default route.</param>
public readonly record struct HostRoute(HostRouteKind Kind, string HostName, string? VmName = null, int? AlternatePort = null);

/// <summary>
/// The first stage of the HTTPS front door: Host → the control host or a site (and which of its ports). The one
/// place a Host is read — the full path, the connection-level lane and the control host's own
/// <c>return_host</c> and profile all ask here.
/// </summary>
/// <remarks>
/// <c>NAME.&lt;vm-domain&gt;[:PORT]</c>: PORT absent, 443 or a front door HTTPS port → the default route; 3000–9999 →
/// that VM port (exe.dev's alternate ports); else not found. Custom domains would be one more lookup here.
/// </remarks>
public sealed class SiteRouter
{
    private readonly ControlUrls _urls;

    public SiteRouter(ControlUrls urls) => _urls = urls;

    public ControlUrls Urls => _urls;

    public HostRoute Route(string? host)
    {
        if (!HeaderParsing.TryParseHost(host, out string name, out int? port))
            return new HostRoute(HostRouteKind.NotOurs, "");
        if (name == _urls.ControlHost)
            return new HostRoute(HostRouteKind.Control, name);
        if (!name.EndsWith(_urls.VmDomainSuffix, StringComparison.Ordinal))
            return new HostRoute(HostRouteKind.NotOurs, name);
        if (!TrySiteName(name, out string? vmName))
            return new HostRoute(HostRouteKind.NotFound, name);
        bool alternate = port is int p && !_urls.IsDefaultRoutePort(p);
        if (alternate && port is not (>= HttpFrontDoorLimits.MinAlternatePort and <= HttpFrontDoorLimits.MaxAlternatePort))
            return new HostRoute(HostRouteKind.NotFound, name);
        return new HostRoute(HostRouteKind.Site, name, vmName, alternate ? port : null);
    }

    /// <summary>The VM name when <paramref name="host"/> is a site on its default route, else null.</summary>
    public string? DefaultRouteVmName(string host) =>
        Route(host) is { Kind: HostRouteKind.Site, AlternatePort: null } route ? route.VmName : null;

    /// <summary>The VM name of a site's host name (lower case, without port), or false when it names none.</summary>
    public bool TrySiteName(string hostName, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? vmName)
    {
        vmName = null;
        if (!hostName.EndsWith(_urls.VmDomainSuffix, StringComparison.Ordinal))
            return false;
        string label = hostName[..^_urls.VmDomainSuffix.Length];
        if (!HeaderParsing.IsVmLabel(label))
            return false;
        vmName = label;
        return true;
    }
}
