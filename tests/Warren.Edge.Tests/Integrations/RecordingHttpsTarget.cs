using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
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
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Warren integration test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(2));
        using var leafKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var leafRequest = new CertificateRequest("CN=" + HostName, leafKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(HostName);
        leafRequest.CertificateExtensions.Add(san.Build());
        leafRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var leafPublic = leafRequest.Create(ca, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1), RandomNumberGenerator.GetBytes(8));
        using var leafWithKey = leafPublic.CopyWithPrivateKey(leafKey);
        var leaf = X509CertificateLoader.LoadPkcs12(leafWithKey.Export(X509ContentType.Pfx), null);
        Directory.CreateDirectory(directory);
        target.CaPemPath = Path.Combine(directory, "integration-test-ca.pem");
        await File.WriteAllTextAsync(target.CaPemPath, ca.ExportCertificatePem());

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
