using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Warren.Edge.Tls;
using Warren.Platform.Mail;

namespace Warren.Edge.Smtp;

public static class InboundSmtpServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="InboundSmtpServer"/> as a singleton and hosted service, delivering through the platform
    /// (<see cref="PlatformInboundMailSink"/>) unless an <see cref="IInboundMailSink"/> is registered. STARTTLS is
    /// offered when a <see cref="TlsCertificateProvider"/> is registered (the HTTPS front door's).
    /// </summary>
    public static IServiceCollection AddWarrenInboundSmtp(this IServiceCollection services, Action<InboundSmtpOptions> configure)
    {
        var options = new InboundSmtpOptions();
        configure(options);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<InboundMailPolicy>();
        services.TryAddSingleton<IInboundMailSink, PlatformInboundMailSink>();
        services.AddSingleton(sp => new InboundSmtpServer(options, sp.GetRequiredService<IInboundMailSink>(),
            sp.GetService<TlsCertificateProvider>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<InboundSmtpServer>>()));
        services.AddHostedService(sp => sp.GetRequiredService<InboundSmtpServer>());
        return services;
    }
}
