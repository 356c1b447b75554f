using System.Collections.Concurrent;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Warren.Edge.Tests.Integrations;

/// <summary>
/// An HTTPS API standing in for an integration's target: a certificate for <see cref="HostName"/> from a throwaway CA
/// (written as PEM for <c>Warren:Integrations:TrustedCaFile</c>), on 127.0.0.1. Records every request it receives and
/// answers with it as JSON; <c>/status/N</c> answers N.
/// </summary>
public sealed class RecordingHttpsTarget : IAsyncDisposable
{
    public const string HostName = "api.integ-target.test";

    private WebApplication _app = null!;

    public sealed record Received(string Method, string PathAndQuery, Dictionary<string, string> Headers, string Body);

    public ConcurrentQueue<Received> Requests { get; } = new();
    public int Port { get; private set; }
    public string CaPemPath { get; private set; } = "";

    public static async Task<RecordingHttpsTarget> StartAsync(string directory)
    {
        var target = new RecordingHttpsTarget();
        (var leaf, target.CaPemPath) = await TestCertificateAuthority.IssueAsync(HostName, directory);

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.UseHttps(leaf)));
        target._app = builder.Build();
        target._app.Run(target.HandleAsync);
        await target._app.StartAsync();
        target.Port = new Uri(target._app.Urls.First()).Port;
        return target;
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        string body = await new StreamReader(request.Body).ReadToEndAsync();
        string raw = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()!.RawTarget;
        var received = new Received(request.Method, raw,
            request.Headers.ToDictionary(h => h.Key.ToLowerInvariant(), h => h.Value.ToString()), body);
        Requests.Enqueue(received);
        if (request.Path.StartsWithSegments("/status", out var rest) && int.TryParse(rest.Value?.TrimStart('/'), out int status))
            context.Response.StatusCode = status;
        context.Response.Headers["X-Target"] = "recording";
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(JsonSerializer.Serialize(received));
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            try { await _app.StopAsync(); } catch (Exception) { }
            await _app.DisposeAsync();
        }
    }
}
