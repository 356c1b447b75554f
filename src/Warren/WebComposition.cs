using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Warren.Edge.Adapters;
using Warren.Edge.Dns;
using Warren.Edge.Http;
using Warren.Platform;

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
        });

        // VM names resolve to slot addresses, so the web front door listens there too.
        var addresses = new List<IPAddress> { control };
        addresses.AddRange(platform.EffectiveSlots.Select(s => IPAddress.Parse(s.LocalIp)));
        var alternatePorts = configuration.GetSection("Warren:Http:AlternatePorts").Get<int[]>() ?? [];
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
        });
        // Sessions survive restarts; the login page can mail links when a relay is configured.
        builder.Services.AddSingleton(SqliteWebSessionStore.Migration);
        builder.Services.AddSingleton<IWebSessionStore, SqliteWebSessionStore>();
        if (!string.IsNullOrWhiteSpace(configuration["Warren:Smtp:Host"]))
            builder.Services.AddSingleton<ILoginEmailSender, MailedLoginLinkSender>();
        builder.Services.AddWarrenEdgePlatformAdapters();
        return builder;
    }

    public static WebApplication UseWarrenWeb(this WebApplication app)
    {
        app.UseWarrenHttpFrontDoor();
        return app;
    }
}
