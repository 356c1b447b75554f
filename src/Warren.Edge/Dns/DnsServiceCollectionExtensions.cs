using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;

namespace Warren.Edge.Dns;

public static class DnsServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="DnsServer"/> as a singleton and hosted service. The caller registers an
    /// <see cref="IDnsZoneSource"/>.
    /// </summary>
    public static IServiceCollection AddWarrenDns(this IServiceCollection services, Action<DnsServerOptions>? configure = null)
    {
        var options = new DnsServerOptions();
        configure?.Invoke(options);
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(sp => new DnsServer(options, sp.GetRequiredService<IDnsZoneSource>(),
            sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<DnsServer>>()));
        services.AddHostedService(sp => sp.GetRequiredService<DnsServer>());
        return services;
    }
}
