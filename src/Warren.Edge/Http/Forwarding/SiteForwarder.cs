using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace Warren.Edge.Http.Forwarding;

/// <summary>
/// The last stage of the full path: the admitted request to the VM's bridge address — plain HTTP/1.1 and HTTP/2
/// requests through <see cref="Http1Forwarder"/>, upgrades (WebSockets, extended CONNECT) through YARP's tunnel with
/// the same header rules (<see cref="FrontDoorTransformer"/>) — and the page for a VM that does not answer: 502
/// <c>Port N unbound.</c> for the owner, else 503 (exe.dev's proxy).
/// </summary>
public sealed class SiteForwarder : IDisposable
{
    private readonly IHttpForwarder _forwarder;
    private readonly IWebUpstreamLocator _locator;
    private readonly HttpMessageInvoker _invoker;
    private readonly Http1Forwarder _http1;
    private readonly ForwarderRequestConfig _requestConfig;
    private readonly ILogger _logger;

    public SiteForwarder(IHttpForwarder forwarder, IWebUpstreamLocator locator, ILogger<SiteForwarder> logger, TimeProvider? time = null)
    {
        _forwarder = forwarder;
        _locator = locator;
        _logger = logger;
        // One handler for all VMs' upgrades: settings follow YARP's direct-forwarding guidance (no proxy, redirects,
        // decompression or cookies).
        _invoker = new HttpMessageInvoker(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            ActivityHeadersPropagator = null,
            ConnectTimeout = HttpFrontDoorLimits.UpstreamConnectTimeout,
        });
        _http1 = new Http1Forwarder(HttpFrontDoorLimits.UpstreamConnectTimeout, HttpFrontDoorLimits.UpstreamActivityTimeout, time);
        _requestConfig = new ForwarderRequestConfig
        {
            ActivityTimeout = HttpFrontDoorLimits.UpstreamActivityTimeout,
            Version = HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        };
    }

    /// <summary>The HTTP/1.1 forwarder (the lane takes its limits from it).</summary>
    internal Http1Forwarder Http1 => _http1;

    public void Dispose()
    {
        _invoker.Dispose();
        _http1.Dispose();
    }

    /// <param name="owner">The person is the site's owner (an unreachable VM then says which port is unbound).</param>
    internal async Task ForwardAsync(HttpContext context, WebSite site, int targetPort, bool owner, ForwardState state, CancellationToken ct)
    {
        IPAddress? address;
        try
        {
            address = await _locator.GetAddressAsync(site.VmId, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            FrontDoorLog.DirectoryFailed(_logger, ex);
            address = null;
        }
        if (address is null)
        {
            await UnreachableAsync(context, owner, targetPort).ConfigureAwait(false);
            return;
        }

        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodyLimit)
            bodyLimit.MaxRequestBodySize = HttpFrontDoorLimits.MaxProxiedRequestBodyBytes;

        if (IsUpgrade(context))
        {
            await ForwardUpgradeAsync(context, state, address, targetPort, owner, site.Name).ConfigureAwait(false);
            return;
        }

        var result = await _http1.ForwardAsync(context, new UpstreamEndpoint(address, targetPort), state).ConfigureAwait(false);
        switch (result.Outcome)
        {
            case ForwardOutcome.Completed:
            case ForwardOutcome.Aborted:
                return;
            case ForwardOutcome.BadResponse:
                FrontDoorLog.ForwardFailed(_logger, result.Outcome.ToString(), site.Name, targetPort, result.Detail);
                await Pages.WriteAsync(context, StatusCodes.Status502BadGateway, Pages.BadGatewayTitle, Pages.BadGatewayBody).ConfigureAwait(false);
                return;
            case ForwardOutcome.RequestBodyRejected:
                await Pages.WriteTextAsync(context, result.StatusCode, result.Detail ?? "bad request body").ConfigureAwait(false);
                return;
            default:
                FrontDoorLog.ForwardFailed(_logger, result.Outcome.ToString(), site.Name, targetPort, result.Error?.Message);
                _locator.Forget(site.VmId); // the next request asks the engine again rather than trust this address
                await UnreachableAsync(context, owner, targetPort).ConfigureAwait(false);
                return;
        }
    }

    /// <summary>WebSocket and other upgrades (HTTP/1.1 Upgrade, HTTP/2 extended CONNECT) keep YARP's tunnel.</summary>
    private static bool IsUpgrade(HttpContext context) =>
        context.Features.Get<IHttpUpgradeFeature>()?.IsUpgradableRequest == true
        || context.Features.Get<IHttpExtendedConnectFeature>()?.IsExtendedConnect == true;

    private async Task ForwardUpgradeAsync(HttpContext context, ForwardState state, IPAddress address, int targetPort, bool owner, string siteName)
    {
        context.Features.Set(state);
        string destination = address.AddressFamily == AddressFamily.InterNetworkV6
            ? $"http://[{address}]:{targetPort}/"
            : $"http://{address}:{targetPort}/";
        var error = await _forwarder.SendAsync(context, destination, _invoker, _requestConfig, FrontDoorTransformer.Instance).ConfigureAwait(false);
        if (error != ForwarderError.None)
        {
            var feature = context.GetForwarderErrorFeature();
            FrontDoorLog.ForwardFailed(_logger, error.ToString(), siteName, targetPort, feature?.Exception?.Message);
            if (!context.Response.HasStarted && error is ForwarderError.Request or ForwarderError.RequestTimedOut or ForwarderError.NoAvailableDestinations)
            {
                context.Response.Clear();
                await UnreachableAsync(context, owner, targetPort).ConfigureAwait(false);
            }
        }
    }

    internal static Task UnreachableAsync(HttpContext context, bool owner, int port) =>
        owner ? Pages.PortUnboundAsync(context, port) : Pages.ServiceUnavailableAsync(context);
}
