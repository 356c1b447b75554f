using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Warren.Edge.Metadata;

namespace Warren.Edge.Integrations;

public static class IntegrationRequestRegistration
{
    /// <summary>
    /// Registers <see cref="IIntegrationRequestHandler"/> (what the metadata server calls for <c>NAME.int.&lt;vm-domain&gt;</c>)
    /// and its parts. Needs the platform's integrations (<c>AddWarrenIntegrations</c>) and an <c>IWebUpstreamLocator</c>.
    /// </summary>
    public static IServiceCollection AddWarrenIntegrationRequests(this IServiceCollection services)
    {
        services.TryAddSingleton<IntegrationHttpClients>();
        services.TryAddSingleton<ReflectionResponder>();
        services.TryAddSingleton<PeerAccessCheck>();
        services.TryAddSingleton<IntegrationForwarder>();
        services.TryAddSingleton<IIntegrationRequestHandler, IntegrationRequestHandler>();
        services.TryAddSingleton<Warren.Platform.Mail.SiteVisitorLog>();
        services.TryAddSingleton<SiteLoginRecorder>();
        return services;
    }
}
