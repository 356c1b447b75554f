using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Warren.Edge.Metadata;

/// <summary>
/// The metadata service's HTTP listener: a Kestrel of its own (HTTP/1.1 only, tight limits) on the socket
/// <see cref="MetadataSockets"/> bound, kept apart from the HTTPS front door's pipeline so nothing of one leaks
/// into the other. Every request goes to <see cref="MetadataRequestHandler"/>.
/// </summary>
public sealed partial class MetadataServer(MetadataSockets sockets, MetadataRequestHandler handler, MetadataOptions options,
    ILoggerFactory loggers) : IHostedService, IAsyncDisposable
{
    private readonly ILogger _log = loggers.CreateLogger<MetadataServer>();
    private WebApplication? _app;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(loggers);
        ulong handle = sockets.TakeMetadataHandle();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            k.Limits.MaxRequestHeaderCount = options.MaxRequestHeaderCount;
            k.Limits.MaxRequestHeadersTotalSize = options.MaxRequestHeadersTotalBytes;
            k.Limits.MaxRequestLineSize = options.MaxRequestLineBytes;
            k.Limits.MaxConcurrentConnections = options.MaxConnections;
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            k.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(30);
            k.ListenHandle(handle, l => l.Protocols = HttpProtocols.Http1);
        });
        var app = builder.Build();
        app.Run(handler.HandleAsync);
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        _app = app;
        LogStarted(sockets.MetadataPort);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_app is { } app) await app.StopAsync(cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is { } app) await app.DisposeAsync().ConfigureAwait(false);
        _app = null;
    }

    [LoggerMessage(EventId = 4600, Level = LogLevel.Information,
        Message = "metadata service listening on port {Port} (VMs reach it at 169.254.169.254:80 through the packet filter's redirect)")]
    private partial void LogStarted(int port);
}
