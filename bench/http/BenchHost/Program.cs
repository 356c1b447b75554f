// Runs the HTTPS front door with one public site "bench" whose upstream is 127.0.0.1:UPSTREAM_PORT.
// Usage: BenchHost UPSTREAM_PORT HTTPS_PORT DATA_DIR
using System.Net;
using Warren.Edge.Http;

int upstreamPort = int.Parse(args[0]);
int httpsPort = int.Parse(args[1]);
string dataDir = args[2];

var builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
if (Environment.GetEnvironmentVariable("BENCH_INLINE") == "1")
    builder.WebHost.UseSockets(o => { o.UnsafePreferInlineScheduling = true; o.WaitForDataBeforeAllocatingBuffer = Environment.GetEnvironmentVariable("BENCH_NOWAIT") != "1"; });
var site = new WebSite("vm-bench", "bench", "u-bench", upstreamPort, IsPublic: true);
builder.Services.AddSingleton<IWebSiteDirectory>(new OneSite(site));
builder.Services.AddSingleton<IWebAccessService>(new NoShares());
builder.Services.AddSingleton<IWebUpstreamLocator>(new Loopback());
builder.Services.AddSingleton<IWebTokenValidator>(new NoTokens());
builder.Services.AddSingleton<IExecCommandRunner>(new NoCommands());
builder.AddWarrenHttpFrontDoor(o =>
{
    o.HttpEndpoints = new();
    o.HttpsEndpoints = new() { new IPEndPoint(IPAddress.Loopback, httpsPort) };
    o.Tls.DataDirectory = dataDir;
    // The per-source limiter stays on the path (its cost is part of the figure) but never refuses:
    // every wrk connection comes from 127.0.0.1.
    o.RequestsPerSecondPerSource = 1e9;
    o.RequestBurstPerSource = int.MaxValue;
});
var app = builder.Build();
if (Environment.GetEnvironmentVariable("BENCH_MODE") == "static")
{
    var body = new byte[600]; Array.Fill(body, (byte)'x');
    app.Run(ctx => { ctx.Response.ContentLength = body.Length; ctx.Response.ContentType = "text/html"; return ctx.Response.Body.WriteAsync(body).AsTask(); });
}
if (Environment.GetEnvironmentVariable("BENCH_MODE") == "lean")
    app.Run(ctx => Lean.Handle(ctx, upstreamPort));
app.UseWarrenHttpFrontDoor();
Console.WriteLine($"bench front door on https://127.0.0.1:{httpsPort} → 127.0.0.1:{upstreamPort}");
app.Run();

sealed class OneSite(WebSite site) : IWebSiteDirectory
{
    public ValueTask<WebSite?> FindAsync(string vmName, CancellationToken ct) => ValueTask.FromResult(vmName == site.Name ? site : null);
}

sealed class NoShares : IWebAccessService
{
    public ValueTask<bool> HasAccessAsync(WebSite site, WebUser user, CancellationToken ct) => ValueTask.FromResult(false);
    public ValueTask<bool> RedeemShareLinkAsync(WebSite site, WebUser user, string shareToken, CancellationToken ct) => ValueTask.FromResult(false);
}

sealed class Loopback : IWebUpstreamLocator
{
    public ValueTask<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct) => ValueTask.FromResult<IPAddress?>(IPAddress.Loopback);
}

sealed class NoTokens : IWebTokenValidator
{
    public ValueTask<TokenValidation> ValidateAsync(string token, string @namespace, CancellationToken ct) => ValueTask.FromResult(TokenValidation.Invalid());
}

sealed class NoCommands : IExecCommandRunner
{
    public bool TrySplit(string commandLine, out IReadOnlyList<string> argv) { argv = Array.Empty<string>(); return false; }
    public string? Resolve(IReadOnlyList<string> argv) => null;
    public bool IsAllowed(IReadOnlyCollection<string> allowedCommands, IReadOnlyList<string> argv) => false;
    public Task<ExecOutcome> RunAsync(ExecInvocation invocation, CancellationToken ct) => throw new NotSupportedException();
}
