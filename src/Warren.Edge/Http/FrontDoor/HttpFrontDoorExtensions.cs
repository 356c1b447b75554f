using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Warren.Edge.Http.EventLoop;
using Warren.Edge.Http.Access;
using Warren.Edge.Http.Forwarding;
using Warren.Edge.Http.Identity;
using Warren.Edge.Http.Routing;
using Microsoft.Extensions.Hosting;
using Warren.Edge.Tls;

namespace Warren.Edge.Http.FrontDoor;

/// <summary>Wiring of the HTTP(S) front door into an ASP.NET Core application.</summary>
/// <example>
/// <code>
/// var builder = WebApplication.CreateSlimBuilder();
/// builder.AddWarrenHttpFrontDoor(o => { o.VmDomain = "box.localhost"; o.Tls.DataDirectory = "var"; });
/// builder.Services.AddSingleton&lt;IWebSiteDirectory, MyDirectory&gt;();   // + the other ports
/// var app = builder.Build();
/// app.UseWarrenHttpFrontDoor();
/// await app.RunAsync();
/// </code>
/// </example>
public static class HttpFrontDoorExtensions
{
    /// <summary>
    /// Registers the front door and its Kestrel listeners (HTTP → redirect, HTTPS with HTTP/1.1 and
    /// HTTP/2, per-handshake SNI certificate selection from <see cref="TlsCertificateProvider"/>, whose files
    /// <see cref="TlsCertificateReloader"/> re-reads when they change). Throws <see cref="OptionsValidationException"/>
    /// for invalid options. The ports <see cref="IWebSiteDirectory"/>,
    /// <see cref="IWebAccessService"/>, <see cref="IWebUpstreamLocator"/>, <see cref="IWebTokenValidator"/>
    /// and <see cref="IExecCommandRunner"/> must be registered by the caller;
    /// <see cref="IWebSessionStore"/> and <see cref="ILoginLinkService"/> default to in-memory ones.
    /// </summary>
    public static WebApplicationBuilder AddWarrenHttpFrontDoor(this WebApplicationBuilder builder, Action<HttpFrontDoorOptions>? configure = null)
    {
        var options = new HttpFrontDoorOptions();
        configure?.Invoke(options);
        if (options.Validate() is { Count: > 0 } errors)
            throw new OptionsValidationException("Warren:Http", typeof(HttpFrontDoorOptions), errors);
        options.Tls.VmDomain = options.VmDomain;
        options.Tls.ControlHost = options.ControlHost;

        var services = builder.Services;
        services.AddSingleton(options);
        services.TryAddSingleton(TimeProvider.System);
        services.AddHttpForwarder();
        services.TryAddSingleton<IWebSessionStore, InMemoryWebSessionStore>();
        services.TryAddSingleton<ILoginLinkService, InMemoryLoginLinkService>();
        services.TryAddSingleton(sp => TlsCertificateProvider.Create(
            options.Tls, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILoggerFactory>().CreateLogger("Warren.Edge.Tls")));
        // Renewed certificate files are served without a restart.
        services.AddHostedService(sp => new TlsCertificateReloader(sp.GetRequiredService<TlsCertificateProvider>(), options.Tls,
            sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILoggerFactory>().CreateLogger("Warren.Edge.Tls")));
        services.AddSingleton<FrontDoorListeners>();
        services.AddSingleton(sp => new SourceConnectionLimit(options.MaxConnectionsPerSource,
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("Warren.Edge.Http"), sp.GetRequiredService<TimeProvider>()));
        // The stages, in the order a request crosses them (HttpFrontDoor chains them).
        services.AddSingleton(sp => new ControlUrls(options, sp.GetRequiredService<FrontDoorListeners>().BoundMainHttpsPorts));
        services.AddSingleton<SiteRouter>();
        services.AddSingleton<SourceRequestLimit>();
        services.AddSingleton<RequestIdentityReader>();
        services.AddSingleton<SiteAccessPolicy>();
        services.AddSingleton<SiteForwarder>();
        services.AddSingleton<LaneSites>();
        services.AddSingleton<LoginSessions>();
        services.AddSingleton<OwnForms>();
        services.AddSingleton<RequestAccessPage>();
        services.AddSingleton<SitePages>();
        services.AddSingleton<ExecEndpoint>();
        services.AddSingleton<ControlApi>();
        services.AddSingleton<ControlHostPages>();
        services.AddSingleton(sp => new HttpFrontDoor(sp.GetRequiredService<SiteRouter>(), sp.GetRequiredService<SourceRequestLimit>(),
            sp.GetRequiredService<RequestIdentityReader>(), sp.GetRequiredService<IWebSiteDirectory>(), sp.GetRequiredService<SiteAccessPolicy>(),
            sp.GetRequiredService<SiteForwarder>(), sp.GetRequiredService<ControlHostPages>(), sp.GetRequiredService<SitePages>(),
            sp.GetRequiredService<RequestAccessPage>(), sp.GetRequiredService<OwnForms>(), sp.GetRequiredService<LaneSites>(),
            sp.GetRequiredService<ILogger<HttpFrontDoor>>()));
        if (options.Transport == HttpsTransport.Native)
            HandOffConnectionListenerFactory.AddHandOffTransport(services);

        if (options.InlineRequestProcessing)
            builder.WebHost.UseSockets(sockets => sockets.UnsafePreferInlineScheduling = true);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = HttpFrontDoorLimits.MaxProxiedRequestBodyBytes;
            kestrel.Limits.MaxRequestLineSize = HttpFrontDoorLimits.KestrelMaxRequestLineBytes;
            kestrel.Limits.Http2.MaxRequestHeaderFieldSize = HttpFrontDoorLimits.KestrelMaxRequestLineBytes;
            var sp = kestrel.ApplicationServices;
            var certificates = sp.GetRequiredService<TlsCertificateProvider>();
            var listeners = sp.GetRequiredService<FrontDoorListeners>();
            // The server-certificate selector: asked per handshake, so it always sees the provider's current
            // certificates (swapped atomically when the files are reloaded).
            var tls = new TlsHandshakeCallbackOptions
            {
                OnConnection = context => ValueTask.FromResult(certificates.CreateServerOptions(context.ClientHelloInfo.ServerName, http2: true)),
            };
            // Per-source connection caps first on every listener (before TLS), then, after the handshake, the
            // first-request deadline.
            var connectionLimit = sp.GetRequiredService<SourceConnectionLimit>();
            // Checked on Kestrel's heartbeat, so on Kestrel's clock (the system's), as the native loops' limits are.
            var firstRequest = new FirstRequestDeadline(options.FirstRequestTimeout, TimeProvider.System);
            foreach (var endpoint in options.HttpEndpoints)
            {
                kestrel.Listen(endpoint, listen =>
                {
                    listen.Protocols = HttpProtocols.Http1;
                    listen.Use(next => connection => connectionLimit.OnConnectionAsync(connection, next));
                    listen.Use(next => connection => firstRequest.OnConnectionAsync(connection, next));
                });
            }
            if (options.Transport == HttpsTransport.Native)
            {
                // The main HTTPS endpoints are the event loops' sockets, bound now so their ports are known when
                // the server starts; Kestrel listens only for the connections they hand over.
                var native = new NativeHttpsFrontDoor(options, certificates, sp.GetRequiredService<LaneSites>,
                    sp.GetRequiredService<HandOffConnectionListenerFactory>(), kestrel.Limits, connectionLimit,
                    sp.GetRequiredService<ILoggerFactory>().CreateLogger("Warren.Edge.Http.EventLoop"),
                    // Kestrel's limits on Kestrel's clock (the system's), so both transports time out alike.
                    TimeProvider.System);
                native.Bind(options.EventLoopThreads);
                listeners.Native = native;
                // A handed-over connection left the loop's count and enters this listener's (the same table).
                // A connection handed over right after its handshake (HTTP/2) gets its first-request deadline here.
                kestrel.Listen(native.HandOffEndPoint, listen =>
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    listen.Use(next => connection => connectionLimit.OnConnectionAsync(connection, next));
                    listen.Use(next => connection => firstRequest.OnConnectionAsync(connection, next));
                });
                var lifetime = sp.GetRequiredService<IHostApplicationLifetime>();
                lifetime.ApplicationStarted.Register(native.Start);
                lifetime.ApplicationStopping.Register(() => native.Stop(TimeSpan.FromSeconds(5)));
                lifetime.ApplicationStopped.Register(native.Dispose);
            }
            foreach (var endpoint in options.Transport == HttpsTransport.Native ? [] : options.HttpsEndpoints)
            {
                kestrel.Listen(endpoint, listen =>
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    listen.Use(next => connection => connectionLimit.OnConnectionAsync(connection, next));
                    listen.UseHttps(tls);
                    listen.Use(next => connection => firstRequest.OnConnectionAsync(connection, next));
                    listeners.MainHttps.Add(listen);
                });
            }
            foreach (var endpoint in options.AlternatePortEndpoints)
            {
                kestrel.Listen(endpoint, listen =>
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    listen.Use(next => connection => connectionLimit.OnConnectionAsync(connection, next));
                    listen.UseHttps(tls);
                    listen.Use(next => connection => firstRequest.OnConnectionAsync(connection, next));
                });
            }
        });
        return builder;
    }

    /// <summary>
    /// Adds the front door middleware: requests for the VM domain are answered (never passed on);
    /// the control host's <c>/exec</c> is answered; everything else goes to the next middleware.
    /// </summary>
    public static IApplicationBuilder UseWarrenHttpFrontDoor(this IApplicationBuilder app)
    {
        var frontDoor = app.ApplicationServices.GetRequiredService<HttpFrontDoor>();
        return app.Use(next => context => frontDoor.InvokeAsync(context, next));
    }
}

/// <summary>The main HTTPS listeners, to learn their bound ports (port 0 in tests) after Kestrel binds.</summary>
internal sealed class FrontDoorListeners
{
    public List<ListenOptions> MainHttps { get; } = new();

    /// <summary>The native event loops, when they serve the main HTTPS endpoints.</summary>
    public NativeHttpsFrontDoor? Native { get; set; }

    public int[] BoundMainHttpsPorts() => MainHttps.Select(l => l.IPEndPoint?.Port ?? 0)
        .Concat(Native?.BoundEndPoints.Select(e => e.Port) ?? []).Where(p => p != 0).Distinct().ToArray();
}
