using System.Net;
using System.Text;
using System.Text.Json;
using CsCheck;
using Microsoft.AspNetCore.Http;
using Warren.Edge.Metadata;
using Warren.Platform.Interactive;
using Warren.Platform.Mail;
using Warren.Platform.Storage;

namespace Warren.Edge.Tests.Metadata;

/// <summary>
/// The metadata request handler on its own (one layer: the caller source is a table, the database a real SQLite file
/// with no accounts, the mail sender a recorder): routing, JSON errors, limits, and that no input throws.
/// </summary>
public sealed class MetadataRequestHandlerTests : IDisposable
{
    private static readonly IPAddress HostSideA = IPAddress.Parse("10.231.0.1");
    private static readonly IPAddress HostSideB = IPAddress.Parse("10.231.0.5");
    private readonly string _dir = Directory.CreateTempSubdirectory("warren-meta-").FullName;
    private readonly WarrenDatabase _db;
    private readonly RecordingSender _sender = new();

    public MetadataRequestHandlerTests() => _db = new WarrenDatabase(Path.Combine(_dir, "warren.db"));

    public void Dispose()
    {
        _db.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private sealed class TableCallers : IMetadataCallerSource
    {
        public ValueTask<MetadataCaller?> ResolveAsync(IPAddress? local, IPAddress? source, CancellationToken ct) =>
            ValueTask.FromResult<MetadataCaller?>(
                HostSideA.Equals(local) ? new MetadataCaller("vm-a", "alpha", "acct-a", source ?? IPAddress.None)
                : HostSideB.Equals(local) ? new MetadataCaller("vm-b", "bravo", "acct-b", source ?? IPAddress.None)
                : null);
    }

    private sealed class RecordingSender : IEmailSender
    {
        public int Sent;
        public Task SendAsync(string to, string subject, string textBody, CancellationToken ct)
        {
            Interlocked.Increment(ref Sent);
            return Task.CompletedTask;
        }
    }

    private MetadataRequestHandler Handler(MetadataOptions? options = null, bool email = true) =>
        new(new TableCallers(), options ?? new MetadataOptions(), "box.localhost", TimeProvider.System,
            email ? new VmEmailGateway(_db, _sender) : null);

    private static async Task<(int Status, string Body)> SendAsync(MetadataRequestHandler handler, IPAddress? local, string method, string path,
        string? host = null, byte[]? body = null, string source = "10.231.0.2")
    {
        var context = new DefaultHttpContext();
        context.Connection.LocalIpAddress = local;
        context.Connection.RemoteIpAddress = IPAddress.Parse(source);
        context.Request.Method = method;
        // As Kestrel hands it over: already decoded (the implicit conversion would decode again and throw on "%00").
        context.Request.Path = new PathString(path);
        // The raw header, as Kestrel hands it over (the Host property would IDN-decode it).
        if (host is not null) context.Request.Headers.Host = host;
        context.Request.Body = new MemoryStream(body ?? []);
        var response = new MemoryStream();
        context.Response.Body = response;
        await handler.HandleAsync(context);
        return (context.Response.StatusCode, Encoding.UTF8.GetString(response.ToArray()));
    }

    private static string Error(string body) => JsonDocument.Parse(body).RootElement.GetProperty("error").GetString()!;

    [Fact]
    public async Task Root_NamesTheCallerByTheHostSideAddress_AndReportsTheSource()
    {
        var handler = Handler();
        var (status, body) = await SendAsync(handler, HostSideA, "GET", "/", source: "10.231.0.6");
        Assert.Equal(200, status);
        var json = JsonDocument.Parse(body).RootElement;
        // The source claims to be B's VM; the host-side address says A.
        Assert.Equal("alpha", json.GetProperty("name").GetString());
        Assert.Equal("10.231.0.6", json.GetProperty("source_ip").GetString());
        var b = await SendAsync(handler, HostSideB, "GET", "/");
        Assert.Equal("bravo", JsonDocument.Parse(b.Body).RootElement.GetProperty("name").GetString());
    }

    [Fact]
    public async Task NotAVm_UnknownPaths_WrongMethods_AndIntegrations_GetJsonErrors()
    {
        var handler = Handler();
        var stranger = await SendAsync(handler, IPAddress.Parse("192.0.2.1"), "GET", "/");
        Assert.Equal(403, stranger.Status);
        Assert.Equal("the metadata service answers VMs only", Error(stranger.Body));
        var missing = await SendAsync(handler, HostSideA, "GET", "/latest/meta-data/");
        Assert.Equal((404, "not found"), (missing.Status, Error(missing.Body)));
        Assert.Equal(405, (await SendAsync(handler, HostSideA, "DELETE", "/")).Status);
        Assert.Equal(405, (await SendAsync(handler, HostSideA, "GET", MetadataRequestHandler.EmailSendPath)).Status);
        var integration = await SendAsync(handler, HostSideA, "GET", "/", host: "GitHub.INT.box.localhost.:80");
        Assert.Equal((404, "no such integration"), (integration.Status, Error(integration.Body)));
    }

    [Fact]
    public async Task RegisteredIntegration_GetsTheCallerAndTheLowerCasedName()
    {
        var integrations = new RecordingIntegrations();
        var handler = new MetadataRequestHandler(new TableCallers(), new MetadataOptions(), "box.localhost", TimeProvider.System, null, integrations);
        var r = await SendAsync(handler, HostSideB, "GET", "/x", host: "Peer.int.box.localhost");
        Assert.Equal(204, r.Status);
        Assert.Equal(("vm-b", "peer"), integrations.Last);
    }

    private sealed class RecordingIntegrations : IIntegrationRequestHandler
    {
        public (string VmId, string Name) Last;
        public Task HandleAsync(HttpContext context, MetadataCaller caller, string integrationName, CancellationToken ct)
        {
            Last = (caller.VmId, integrationName);
            context.Response.StatusCode = 204;
            return Task.CompletedTask;
        }
    }

    [Fact]
    public async Task EmailGateway_RefusesBadBodies_Strangers_AndFloods_WithoutSending()
    {
        var handler = Handler(new MetadataOptions { MaxRequestBodyBytes = 1024, EmailBurstPerVm = 2, EmailsPerHourPerVm = 1 });
        string path = MetadataRequestHandler.EmailSendPath;
        var broken = await SendAsync(handler, HostSideA, "POST", path, body: "{\"to\":"u8.ToArray());
        Assert.Equal(400, broken.Status);
        var wrongType = await SendAsync(handler, HostSideA, "POST", path, body: "{\"to\":1,\"subject\":\"s\",\"body\":\"b\"}"u8.ToArray());
        Assert.Equal(400, wrongType.Status);
        var missing = await SendAsync(handler, HostSideA, "POST", path, body: "{\"to\":\"a@example.com\",\"body\":\"b\"}"u8.ToArray());
        Assert.Equal((400, "subject is required"), (missing.Status, Error(missing.Body)));
        var big = await SendAsync(handler, HostSideA, "POST", path, body: new byte[2048]);
        Assert.Equal(413, big.Status);
        var ok = "{\"to\":\"someone@example.com\",\"subject\":\"s\",\"body\":\"b\",\"in_reply_to\":\"<x@y>\",\"references\":[\"<x@y>\"]}"u8.ToArray();
        // No account holds the address: not the owner, not shared.
        var stranger = await SendAsync(handler, HostSideA, "POST", path, body: ok);
        Assert.Equal(403, stranger.Status);
        Assert.StartsWith("recipient not allowed", Error(stranger.Body));
        // The burst (2) is used up by the two attempts that reached the gateway's check; the next is rate-limited.
        await SendAsync(handler, HostSideA, "POST", path, body: ok);
        var limited = await SendAsync(handler, HostSideA, "POST", path, body: ok);
        Assert.Equal(429, limited.Status);
        // Another VM has its own budget.
        Assert.Equal(403, (await SendAsync(handler, HostSideB, "POST", path, body: ok)).Status);
        Assert.Equal(0, _sender.Sent);
        var off = await SendAsync(Handler(email: false), HostSideA, "POST", path, body: ok);
        Assert.Equal(503, off.Status);
    }

    [Fact]
    public async Task RequestRate_IsLimitedPerVm()
    {
        var handler = Handler(new MetadataOptions { RequestBurstPerVm = 3, RequestsPerSecondPerVm = 0.001 });
        for (int i = 0; i < 3; i++) Assert.Equal(200, (await SendAsync(handler, HostSideA, "GET", "/")).Status);
        var limited = await SendAsync(handler, HostSideA, "GET", "/");
        Assert.Equal(429, limited.Status);
        Assert.Equal("too many requests", Error(limited.Body));
        Assert.Equal(200, (await SendAsync(handler, HostSideB, "GET", "/")).Status);
    }

    private static Gen<T> Pick<T>(params T[] values) => Gen.Int[0, values.Length - 1].Select(i => values[i]);

    [Fact]
    public void AnyRequest_GetsAJsonAnswer_NeverAnException()
    {
        var handler = Handler(new MetadataOptions { RequestBurstPerVm = 1_000_000, EmailBurstPerVm = 1_000_000 });
        var methods = Pick("GET", "POST", "HEAD", "PUT", "OPTIONS", "X");
        var paths = Gen.OneOf(Pick("/", MetadataRequestHandler.EmailSendPath, "", "//", "/gateway/email/send/"), Gen.String.Select(s => "/" + s));
        var hosts = Gen.OneOf(Pick<string?>(null, "169.254.169.254", "x.int.box.localhost", "-.int.box.localhost", "[::1]:80"), Gen.String.Select(s => (string?)s));
        var bodies = Gen.OneOf(Gen.Byte.Array[0, 300], Gen.String.Select(s => Encoding.UTF8.GetBytes("{\"to\":\"" + s + "\",\"subject\":\"" + s + "\",\"body\":1}")));
        Gen.Select(methods, paths, hosts, bodies).Sample(t =>
        {
            var (status, body) = SendAsync(handler, HostSideA, t.Item1, t.Item2, t.Item3, t.Item4).GetAwaiter().GetResult();
            Assert.Contains(status, new[] { 200, 400, 403, 404, 405, 413, 429 });
            if (t.Item1 != "HEAD") JsonDocument.Parse(body);
        }, iter: 2000);
    }
}
