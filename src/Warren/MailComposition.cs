using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Warren.Edge.Smtp;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Interactive;
using Warren.Platform.Mail;
using Warren.Platform.Runtime;
using Warren.Platform.Sharing;
using Warren.Platform.Vms;

namespace Warren;

/// <summary>Inbound mail: <c>share receive-email</c>'s delivery service and the SMTP front door on <c>Warren:SmtpPort</c>.</summary>
public static class MailComposition
{
    /// <summary>
    /// <c>Warren:Mail:MxHost</c>, the name MX records point at and the SMTP server calls itself; defaults to the
    /// control host, whose address the server listens on.
    /// </summary>
    public static string MailExchangeHost(IConfiguration configuration, PlatformOptions platform) =>
        configuration["Warren:Mail:MxHost"] is { Length: > 0 } host ? host : platform.ControlHost;

    /// <summary>Port 0 or less turns inbound SMTP off.</summary>
    public static int SmtpPort(IConfiguration configuration) => configuration.GetValue("Warren:SmtpPort", 2525);

    public static IServiceCollection AddWarrenInboundMail(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingleton(sp => new ReceiveEmailService(
            sp.GetRequiredService<VmService>(), sp.GetRequiredService<ShareService>(), sp.GetRequiredService<AccountService>(),
            sp.GetRequiredService<IVmRuntime>(), sp.GetRequiredService<PlatformOptions>(), sp.GetRequiredService<TimeProvider>(),
            sp.GetService<IEmailSender>(), sp.GetRequiredService<ILogger<ReceiveEmailService>>()));
        int port = SmtpPort(configuration);
        if (port <= 0) return services;

        var platform = new PlatformOptions();
        configuration.GetSection(PlatformOptions.SectionName).Bind(platform);
        services.AddWarrenInboundSmtp(o =>
        {
            // Limits (MaxConnectionsPerSource, MaxRecipients, CommandTimeout, ...) may be set under Warren:Mail.
            configuration.GetSection("Warren:Mail").Bind(o);
            // Like the other front doors: the control address (where the MX host points) and every slot address
            // (a sender without MX lookup falls back to NAME's own address, RFC 5321 §5.1).
            var addresses = new List<IPAddress> { IPAddress.Parse(platform.ControlLocalIp) };
            addresses.AddRange(platform.EffectiveSlots.Select(s => IPAddress.Parse(s.LocalIp)));
            o.Endpoints = addresses.Distinct().Select(a => new IPEndPoint(a, port)).ToList();
            o.ServerName = MailExchangeHost(configuration, platform);
        });
        return services;
    }
}
