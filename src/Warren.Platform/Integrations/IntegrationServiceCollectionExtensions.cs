using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Warren.Platform.Accounts;
using Warren.Platform.Storage;
using Warren.Platform.Tokens;
using Warren.Platform.Vms;

namespace Warren.Platform.Integrations;

public static class IntegrationServiceCollectionExtensions
{
    /// <summary>
    /// Registers the integrations schema, <see cref="IntegrationOptions"/> (bound from <c>Warren:Integrations</c>), the
    /// <see cref="IntegrationSecretBox"/> (its key read or created when first needed) and <see cref="IntegrationService"/>.
    /// </summary>
    public static IServiceCollection AddWarrenIntegrations(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSingleton(IntegrationService.Migration);
        services.AddSingleton(IntegrationService.GitHubMigration);
        services.TryAddSingleton(_ =>
        {
            var o = new IntegrationOptions();
            configuration.GetSection(IntegrationOptions.SectionName).Bind(o);
            o.Validate();
            return o;
        });
        services.TryAddSingleton(sp => IntegrationSecretBox.Open(sp.GetRequiredService<PlatformOptions>()));
        services.TryAddSingleton(sp => new IntegrationService(
            sp.GetRequiredService<WarrenDatabase>(), sp.GetRequiredService<VmService>(), sp.GetRequiredService<AccountService>(),
            sp.GetRequiredService<IntegrationSecretBox>(), sp.GetRequiredService<PlatformOptions>(), sp.GetRequiredService<TimeProvider>(),
            sp.GetService<ApiKeyService>()));
        return services;
    }
}
