using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http;
using Warren.Edge.Integrations;
using Warren.Edge.Metadata;
using Warren.Platform.Integrations;
using Warren.Platform.Storage;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Tokens;

namespace Warren.Edge.Tests.Integrations;

/// <summary>
/// <see cref="IntegrationRequestHandler"/> behind a Kestrel host that plays the metadata server: it takes the
/// integration name from <c>Host: NAME.int.&lt;vm-domain&gt;</c> and the caller from <see cref="Caller"/> (the real
/// server decides it by the network path). The platform is real (SQLite); the runtime is a fake; targets are real
/// servers on loopback, reached through <c>ResolveOverrides</c> and a test CA.
/// </summary>
internal sealed class IntegrationHandlerFixture : IAsyncDisposable
{
    private WebApplication _host = null!;

    public TestPlatform P { get; private set; } = null!;
    public WarrenDatabase Db { get; private set; } = null!;
    public ApiKeyService ApiKeys { get; private set; } = null!;
    public IntegrationService Integrations { get; private set; } = null!;
    public RecordingHttpsTarget Target { get; private set; } = null!;
    public IntegrationHttpClients Clients { get; private set; } = null!;
    public Dictionary<string, IPAddress> VmAddresses { get; } = new();
    public MetadataCaller? Caller { get; set; }
    public int Port { get; private set; }
    public string TargetUrl => $"https://{RecordingHttpsTarget.HostName}:{Target.Port}";

    public static async Task<IntegrationHandlerFixture> StartAsync()
    {
        var f = new IntegrationHandlerFixture();
        f.P = new TestPlatform();
        f.Db = new WarrenDatabase(f.P.Options, [Exe1Store.Migration, IntegrationService.Migration, IntegrationService.GitHubMigration]);
        var exe1 = new Exe1Store(f.Db, f.P.Time);
        f.ApiKeys = new ApiKeyService(f.P.Accounts, exe1, new TokenAuthenticator(f.P.Accounts, exe1, f.P.Time), f.P.Options, f.P.Time);
        f.Integrations = new IntegrationService(f.Db, f.P.Vms, f.P.Accounts, IntegrationSecretBox.Open(f.P.Options, _ => null), f.P.Options, f.P.Time, f.ApiKeys);
        f.Target = await RecordingHttpsTarget.StartAsync(f.P.Directory_);
        var options = new IntegrationOptions
        {
            ResolveOverrides = { [RecordingHttpsTarget.HostName] = "127.0.0.1" },
            TrustedCaFile = f.Target.CaPemPath,
            UpstreamTimeout = TimeSpan.FromSeconds(20),
        };
        f.Clients = new IntegrationHttpClients(options);
        var handler = new IntegrationRequestHandler(f.Integrations, f.P.Vms, new ReflectionResponder(f.Integrations, f.P.Accounts),
            new IntegrationForwarder(f.Integrations, f.P.Vms, new MapLocator(f.VmAddresses), f.Clients, options, f.P.Options,
                new PeerAccessCheck(new Warren.Edge.Adapters.PlatformTokenValidator(new TokenAuthenticator(f.P.Accounts, exe1, f.P.Time)),
                    new Warren.Edge.Adapters.PlatformWebSiteDirectory(f.P.Index),
                    new Warren.Edge.Http.Access.SiteAccessPolicy(new Warren.Edge.Adapters.PlatformWebAccessService(f.P.Shares, f.P.Index)), f.P.Options)));

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        f._host = builder.Build();
        string suffix = ".int." + f.P.Options.VmDomain;
        f._host.Run(async context =>
        {
            string host = context.Request.Host.Host;
            if (f.Caller is not { } caller || !host.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                context.Response.StatusCode = 404;
                return;
            }
            await handler.HandleAsync(context, caller, host[..^suffix.Length], context.RequestAborted);
        });
        await f._host.StartAsync();
        f.Port = new Uri(f._host.Urls.First()).Port;
        return f;
    }

    /// <summary>curl's arguments to reach <c>NAME.int.&lt;vm-domain&gt;</c> on this host (as a VM's resolver would answer).</summary>
    public string[] CurlTo(string integration, string pathAndQuery)
    {
        string host = $"{integration}.int.{P.Options.VmDomain}";
        return ["-sS", "--max-time", "30", "--resolve", $"{host}:{Port}:127.0.0.1", $"http://{host}:{Port}{pathAndQuery}"];
    }

    public MetadataCaller CallerFor(Warren.Platform.Vms.VmRecord vm) => new(vm.Id, vm.Name, vm.AccountId, IPAddress.Parse("10.99.0.2"));

    private sealed class MapLocator(Dictionary<string, IPAddress> map) : IWebUpstreamLocator
    {
        public ValueTask<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct) => ValueTask.FromResult(map.GetValueOrDefault(vmId));
    }

    public async ValueTask DisposeAsync()
    {
        if (_host is not null) { try { await _host.StopAsync(); } catch (Exception) { } await _host.DisposeAsync(); }
        if (Target is not null) await Target.DisposeAsync();
        Clients?.Dispose();
        Db?.Dispose();
        P?.Dispose();
    }
}
