namespace Warren.Edge.Http.Routing;

/// <summary>
/// The front door's public names and port, as one value built from the options and the bound listeners: the
/// control host, the VM domain, the public HTTPS port, and the absolute URLs built from them (the control host's
/// pages, a site, the <c>browser</c> command's login link). Anything that prints a URL takes this, never the front
/// door itself.
/// </summary>
public sealed class ControlUrls
{
    private readonly int? _configuredPublicPort;
    private readonly Func<int[]>? _boundMainPorts;
    private int[]? _mainPorts;

    /// <param name="boundMainPorts">The main HTTPS listeners' ports once bound (port 0 in tests), asked at first use.</param>
    public ControlUrls(HttpFrontDoorOptions options, Func<int[]>? boundMainPorts = null)
    {
        ControlHost = options.ControlHost.Trim().TrimEnd('.').ToLowerInvariant();
        VmDomainSuffix = "." + options.VmDomain.Trim().TrimEnd('.').ToLowerInvariant();
        _configuredPublicPort = options.PublicHttpsPort;
        _boundMainPorts = boundMainPorts;
    }

    /// <summary>The control host's name, lower case, no trailing dot.</summary>
    public string ControlHost { get; }

    /// <summary><c>.</c> + the VM domain, lower case: a site's host name ends with it.</summary>
    public string VmDomainSuffix { get; }

    private int[] MainPorts()
    {
        if (_mainPorts is not null)
            return _mainPorts;
        var ports = _boundMainPorts?.Invoke() ?? [];
        // Kept once known: before the listeners are bound there is nothing to keep.
        if (ports.Length > 0)
            _mainPorts = ports;
        return ports;
    }

    /// <summary>443, the configured public port, or a port a main HTTPS listener is bound to: a site's default route.</summary>
    public bool IsDefaultRoutePort(int port) =>
        port == 443 || port == _configuredPublicPort || Array.IndexOf(MainPorts(), port) >= 0;

    /// <summary>The HTTPS port people see: the configured one, else the first main listener's, else 443.</summary>
    public int PublicHttpsPort()
    {
        if (_configuredPublicPort is int configured)
            return configured;
        var ports = MainPorts();
        return ports.Length > 0 ? ports[0] : 443;
    }

    /// <summary><c>NAME[:port]</c> with the public HTTPS port when it is not 443.</summary>
    public string Authority(string hostName)
    {
        int port = PublicHttpsPort();
        return port == 443 ? hostName : $"{hostName}:{port}";
    }

    /// <summary>An absolute URL on the control host's public HTTPS port.</summary>
    public string ControlUrl(string pathAndQuery) => "https://" + Authority(ControlHost) + pathAndQuery;

    /// <summary><c>https://NAME.&lt;vm-domain&gt;</c>, with the public HTTPS port when it is not 443 (as <c>ls --json</c>).</summary>
    public string SiteUrl(string vmName) => "https://" + Authority(vmName + VmDomainSuffix);

    /// <summary>
    /// The login link for a secret issued with host = the control host: opening it logs the browser in
    /// on the control host, and from then on every site it may see logs it in with one redirect.
    /// </summary>
    public string ControlLoginLink(string secret) => ControlUrl(ControlPaths.Auth + "?secret=" + Uri.EscapeDataString(secret));
}

/// <summary>The control host's own paths (exe.dev's names).</summary>
public static class ControlPaths
{
    /// <summary>Consumes a login link and sets the control host's own session cookie.</summary>
    public const string Auth = "/auth";

    /// <summary>A VM site's login page sends the browser here with <c>redirect</c> and <c>return_host</c>.</summary>
    public const string Login = "/login";

    /// <summary>Where a site's logout ends (exe.dev's <c>/logged-out</c>).</summary>
    public const string LoggedOut = "/logged-out";

    /// <summary>Ends the control host's own session in this browser (GET asks, POST does).</summary>
    public const string Logout = "/logout";

    /// <summary>Runs one command over HTTPS with a token (exe.dev's docs: HTTPS API; <see cref="ExecEndpoint"/>).</summary>
    public const string Exec = "/exec";

    public const string ProfileApi = "/api/profile";
    public const string DashboardApi = "/api/dashboard";

    /// <summary>The control host's session cookie (exe.dev: the main site's cookie is <c>exe-auth</c>).</summary>
    public const string CookieName = "exe-auth";
}
