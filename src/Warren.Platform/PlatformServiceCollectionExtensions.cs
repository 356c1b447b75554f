using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Audit;
using Warren.Platform.Sharing;
using Warren.Platform.Stats;
using Warren.Platform.Storage;
using Warren.Platform.Vms;

namespace Warren.Platform;

public static class PlatformServiceCollectionExtensions
{
    /// <summary>
    /// Registers the platform's services as singletons: <see cref="PlatformOptions"/> (bound from "Warren"),
    /// <see cref="WarrenDatabase"/> (with every registered <see cref="SchemaMigration"/>), <see cref="AddressSlotTable"/>,
    /// <see cref="AddressSlotAllocator"/>, <see cref="PlatformIndex"/>, <see cref="SshRouteTable"/>, <see cref="IVmDirectory"/>,
    /// <see cref="AccountService"/>, <see cref="VmService"/>, <see cref="ShareService"/>, <see cref="StatsStore"/>,
    /// <see cref="AuditLog"/>, and <see cref="StatsSampler"/> as a hosted service. The caller registers an <c>IVmRuntime</c>.
    /// </summary>
    public static IServiceCollection AddWarrenPlatform(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(sp =>
        {
            var o = new PlatformOptions();
            configuration.GetSection(PlatformOptions.SectionName).Bind(o);
            var problems = o.Validate();
            if (problems.Count > 0) throw new OptionsValidationException(PlatformOptions.SectionName, typeof(PlatformOptions), problems);
            return o;
        });
        services.TryAddSingleton(sp => new WarrenDatabase(sp.GetRequiredService<PlatformOptions>(), sp.GetServices<SchemaMigration>()));
        services.TryAddSingleton(sp => new AddressSlotTable(sp.GetRequiredService<PlatformOptions>()));
        services.TryAddSingleton<AddressSlotAllocator>();
        services.TryAddSingleton<PlatformIndex>();
        services.TryAddSingleton<SshRouteTable>();
        services.TryAddSingleton<IVmDirectory, VmDirectory>();
        services.TryAddSingleton<AccountService>();
        services.TryAddSingleton<VmService>();
        services.TryAddSingleton<ShareService>();
        services.TryAddSingleton<StatsStore>();
        services.TryAddSingleton<AuditLog>();
        services.AddHostedService<StatsSampler>();
        return services;
    }
}
