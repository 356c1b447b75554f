// Runs the HTTPS front door with one public site "bench" whose upstream is 127.0.0.1:UPSTREAM_PORT.
// Usage: BenchHost UPSTREAM_PORT HTTPS_PORT DATA_DIR
// Threads as `warren serve` has them (inline socket completions, one engine thread per core,
// inline request processing) unless BENCH_THREADPOOL=1. BENCH_MODE=static answers a fixed 600-byte page
// instead of forwarding: the ceiling of Kestrel + TLS on this machine, for comparison.
using System.Net;
using Warren.Edge.Http;
using Warren.Edge.Http.FrontDoor;

bool threadPool = Environment.GetEnvironmentVariable("BENCH_THREADPOOL") == "1";
if (!threadPool)
{
    // Before the first socket: the runtime reads these once (see src/Warren/InlineSocketIo.cs).
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT", Environment.ProcessorCount.ToString());
}
int upstreamPort = int.Parse(args[0]);
int httpsPort = int.Parse(args[1]);
string dataDir = args[2];

var builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
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
    o.InlineRequestProcessing = !threadPool;
});
var app = builder.Build();
if (Environment.GetEnvironmentVariable("BENCH_MODE") == "static")
{
    var body = new byte[600]; Array.Fill(body, (byte)'x');
    app.Run(ctx => { ctx.Response.ContentLength = body.Length; ctx.Response.ContentType = "text/html"; return ctx.Response.Body.WriteAsync(body).AsTask(); });
}
app.UseWarrenHttpFrontDoor();
if (Environment.GetEnvironmentVariable("BENCH_GCSTATS") == "1")
{
    // Allocation and GC counts every 5 s, to compare with the request count of a wrk run.
    _ = Task.Run(async () =>
    {
        long bytes = GC.GetTotalAllocatedBytes(), gen0 = GC.CollectionCount(0);
        while (true)
        {
            await Task.Delay(5000);
            long b = GC.GetTotalAllocatedBytes(), g = GC.CollectionCount(0);
            Console.WriteLine($"gc: allocated {(b - bytes) / 1024} KiB, gen0 {g - gen0}, pause total {GC.GetTotalPauseDuration().TotalMilliseconds:F0} ms");
            bytes = b; gen0 = g;
        }
    });
}
if (Environment.GetEnvironmentVariable("BENCH_ALLOCTYPES") == "1")
    _ = new AllocationSampler(); // prints the types behind allocations (one sample per ~100 KB) every 5 s

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

/// <summary>GCAllocationTick events (one per ~100 KB allocated) grouped by type: what a request allocates.</summary>
sealed class AllocationSampler : System.Diagnostics.Tracing.EventListener
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> _counts = new();

    public AllocationSampler() => _ = Task.Run(async () =>
    {
        while (true)
        {
            await Task.Delay(5000);
            var top = _counts.OrderByDescending(kv => kv.Value).Take(12).ToList();
            _counts.Clear();
            Console.WriteLine("alloc samples: " + string.Join(", ", top.Select(kv => $"{kv.Key}={kv.Value}")));
        }
    });

    protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
            EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
    }

    protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
    {
        if (e.EventName == "GCAllocationTick_V4" || e.EventName?.StartsWith("GCAllocationTick") == true)
        {
            int i = e.PayloadNames?.IndexOf("TypeName") ?? -1;
            if (i >= 0 && e.Payload?[i] is string type)
                _counts.AddOrUpdate(type, 1, (_, n) => n + 1);
        }
    }
}
