using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Warren.Edge.Adapters;
using Warren.Edge.Dns;
using Warren.Edge.Http;
using Warren.Edge.Tls;
using Warren.Platform;
using Warren.Edge.Http.FrontDoor;

namespace Warren;

/// <summary>The HTTP(S) and DNS front doors, wired to the platform through the Edge adapters.</summary>
public static class WebComposition
{
    public static WebApplicationBuilder AddWarrenWebAndDns(this WebApplicationBuilder builder, IConfiguration configuration)
    {
        // The same binding AddWarrenPlatform does; needed here because Kestrel's listeners are fixed at build time.
        var platform = new PlatformOptions();
        configuration.GetSection(PlatformOptions.SectionName).Bind(platform);
        var control = IPAddress.Parse(platform.ControlLocalIp);
        var dnsPort = configuration.GetValue("Warren:DnsPort", 5353);

        builder.Services.AddWarrenDns(o =>
        {
            o.Endpoint = new IPEndPoint(control, dnsPort);
            o.VmDomain = platform.VmDomain;
            o.ControlHost = platform.ControlHost;
            o.ControlHostAddress = IPAddress.Parse(platform.ControlPublicIp ?? platform.ControlLocalIp);
            if (MailComposition.SmtpPort(configuration) > 0) o.MailExchangeHost = MailComposition.MailExchangeHost(configuration, platform);
        });

        // VM names resolve to slot addresses, so the web front door listens there too.
        var addresses = new List<IPAddress> { control };
        addresses.AddRange(platform.EffectiveSlots.Select(s => IPAddress.Parse(s.LocalIp)));
        var alternatePorts = configuration.GetSection("Warren:Http:AlternatePorts").Get<int[]>() ?? [];
        var http = configuration.GetSection("Warren:Http");
        var defaults = new HttpFrontDoorOptions();
        var certificates = ConfiguredCertificates(configuration);
        builder.AddWarrenHttpFrontDoor(o =>
        {
            o.VmDomain = platform.VmDomain;
            o.ControlHost = platform.ControlHost;
            o.HttpEndpoints = addresses.Select(a => new IPEndPoint(a, platform.HttpPort)).ToList();
            o.HttpsEndpoints = addresses.Select(a => new IPEndPoint(a, platform.HttpsPort)).ToList();
            o.AlternatePortEndpoints = alternatePorts
                .Where(p => p is >= HttpFrontDoorLimits.MinAlternatePort and <= HttpFrontDoorLimits.MaxAlternatePort)
                .SelectMany(p => addresses.Select(a => new IPEndPoint(a, p))).ToList();
            o.PublicHttpsPort = platform.HttpsPort;
            o.Tls.DataDirectory = platform.DataDirectory;
            o.Tls.Certificates = certificates;
            o.ExecTimeout = TimeSpan.FromSeconds(http.GetValue("ExecTimeoutSeconds", defaults.ExecTimeout.TotalSeconds));
            o.RequestsPerSecondPerSource = http.GetValue("RequestsPerSecondPerSource", defaults.RequestsPerSecondPerSource);
            o.RequestBurstPerSource = http.GetValue("RequestBurstPerSource", defaults.RequestBurstPerSource);
            o.MaxConnectionsPerSource = http.GetValue("MaxConnectionsPerSource", defaults.MaxConnectionsPerSource);
            o.FirstRequestTimeout = TimeSpan.FromSeconds(http.GetValue("FirstRequestTimeoutSeconds", defaults.FirstRequestTimeout.TotalSeconds));
            o.InlineRequestProcessing = InlineSocketIo.IsEnabled(configuration);
            o.ConnectionLevelForwarding = http.GetValue("ConnectionLevelForwarding", defaults.ConnectionLevelForwarding);
            o.Transport = http.GetValue("Transport", defaults.Transport);
            o.EventLoopThreads = http.GetValue("EventLoopThreads", defaults.EventLoopThreads);
        });
        // Sessions survive restarts; the login page can mail links when a relay is configured.
        builder.Services.AddSingleton(SqliteWebSessionStore.Migration);
        builder.Services.AddSingleton(SqliteWebSessionStore.UserIndexMigration);
        builder.Services.AddSingleton<IWebSessionStore, SqliteWebSessionStore>();
        // Login links too: one printed or mailed before a restart works once after it.
        builder.Services.AddSingleton(SqliteLoginLinks.Migration);
        builder.Services.AddSingleton<ILoginLinkService, SqliteLoginLinks>();
        builder.Services.AddSingleton<SignupPages>();
        if (!string.IsNullOrWhiteSpace(configuration["Warren:Smtp:Host"]))
        {
            builder.Services.AddSingleton<ILoginEmailSender, MailedLoginLinkSender>();
            builder.Services.AddSingleton<IAccessRequestSender, MailedAccessRequestSender>();
        }
        builder.Services.AddWarrenEdgePlatformAdapters();
        Warren.Edge.Integrations.IntegrationRequestRegistration.AddWarrenIntegrationRequests(builder.Services);
        return builder;
    }

    /// <summary>
    /// <c>Warren:Tls:Certificates:N:{CertificatePath,KeyPath}</c>: PEM files (leaf first, then intermediates)
    /// and their keys, re-read when they change. None: the dev CA's wildcard certificate.
    /// </summary>
    private static List<TlsCertificateFiles> ConfiguredCertificates(IConfiguration configuration)
    {
        var result = new List<TlsCertificateFiles>();
        var errors = new List<string>();
        foreach (var entry in configuration.GetSection("Warren:Tls:Certificates").GetChildren())
        {
            string? certificate = entry["CertificatePath"], key = entry["KeyPath"];
            if (string.IsNullOrWhiteSpace(certificate) || string.IsNullOrWhiteSpace(key))
            {
                errors.Add($"Tls:Certificates:{entry.Key} needs both CertificatePath and KeyPath");
                continue;
            }
            // Checked here so that a wrong path or a bad file is a clear start-up message, not a stack trace.
            try
            {
                using var _ = X509Certificate2.CreateFromPemFile(certificate, key);
                result.Add(new TlsCertificateFiles(certificate, key));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
            {
                errors.Add($"Tls:Certificates:{entry.Key}: cannot load {certificate} with {key}: {e.Message}");
            }
        }
        if (errors.Count > 0)
            throw new OptionsValidationException("Warren:Tls", typeof(TlsCertificateFiles), errors);
        return result;
    }

    public static WebApplication UseWarrenWeb(this WebApplication app)
    {
        app.UseWarrenHttpFrontDoor();
        return app;
    }
}
