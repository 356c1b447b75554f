using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Warren.Edge.Dns;
using Warren.Edge.Http;
using Warren.Platform.Commands;

namespace Warren.Edge.Adapters;

public static class EdgeAdapterRegistration
{
    /// <summary>
    /// Registers the adapters from the Edge ports to the platform services: <see cref="IDnsZoneSource"/>,
    /// <see cref="IWebSiteDirectory"/>, <see cref="IWebAccessService"/>, <see cref="IWebUpstreamLocator"/>,
    /// <see cref="IWebTokenValidator"/>, <see cref="IExecCommandRunner"/>, <see cref="IWebDashboardSource"/> and the platform's
    /// <see cref="ILoginLinkIssuer"/>, and wraps the registered <see cref="ILoginLinkService"/> in
    /// <see cref="MailVerifiedLoginLinks"/> (call it after AddWarrenHttpFrontDoor). The caller registers the platform services they use
    /// (PlatformIndex, AddressSlotTable, ShareService, TokenAuthenticator, CommandDispatcher, IVmRuntime, VmService, AccountService).
    /// </summary>
    public static IServiceCollection AddWarrenEdgePlatformAdapters(this IServiceCollection services)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<IDnsZoneSource, PlatformDnsZoneSource>();
        services.TryAddSingleton<IWebSiteDirectory, PlatformWebSiteDirectory>();
        services.TryAddSingleton<IWebAccessService, PlatformWebAccessService>();
        services.TryAddSingleton<IWebUpstreamLocator, RuntimeWebUpstreamLocator>();
        services.TryAddSingleton<IWebTokenValidator, PlatformTokenValidator>();
        services.TryAddSingleton<IExecCommandRunner, PlatformExecCommandRunner>();
        services.TryAddSingleton<ILoginLinkIssuer, FrontDoorLoginLinkIssuer>();
        services.TryAddSingleton<IWebDashboardSource, PlatformWebDashboardSource>();
        MailVerifiedLoginLinks.Register(services);
        return services;
    }
}
