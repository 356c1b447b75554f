using System.Diagnostics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Warren;
using Warren.Platform.Accounts;
using Warren.Platform.Commands;
using Warren.Ssh.Keys;

// usage: Warren.Bench.ControlPlane DATA_DIRECTORY PUBLIC_KEY_FILE [N_LS=50] [N_WHOAMI=100] [CONCURRENCY=100] [--Warren:Key=value ...]
// (the --Warren:… overrides are those given to `warren serve`, e.g. --Warren:SshPort, which appears in ls output)
// The in-process counterpart of `ssh <control> ls --json` / `ssh <control> whoami`: the same service graph as
// `warren serve` (Composition.AddWarrenCore + the Docker runtime, no hosted services started) over the same
// data directory, and per command what the SSH front door does after authentication: account and key by
// fingerprint (AccountService), then CommandDispatcher.RunAsync with the output captured in memory.
var overrides = args.Where(a => a.StartsWith("--", StringComparison.Ordinal)).ToArray();
args = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
var dataDir = args[0];
var key = SshPublicKey.TryParseOpenSsh(File.ReadAllText(args[1]).Trim(), out var k, out _) ? k! : throw new ArgumentException("bad public key");
var nLs = args.Length > 2 ? int.Parse(args[2]) : 50;
var nWhoami = args.Length > 3 ? int.Parse(args[3]) : 100;
var concurrency = args.Length > 4 ? int.Parse(args[4]) : 100;

var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
{
    ["Warren:DataDirectory"] = dataDir,
}).AddCommandLine(overrides).Build();
var services = new ServiceCollection();
services.AddLogging(b => b.SetMinimumLevel(LogLevel.Warning).AddConsole());
services.AddSingleton<IConfiguration>(configuration);
services.AddWarrenCore(configuration);
services.AddWarrenDockerRuntime(configuration);
await using var sp = services.BuildServiceProvider();
var accounts = sp.GetRequiredService<AccountService>();
var dispatcher = sp.GetRequiredService<CommandDispatcher>();

async Task<(int Exit, int Bytes)> RunOnce(string[] argv)
{
    var account = await accounts.FindByKeyFingerprintAsync(key.Fingerprint);
    var accountKey = await accounts.FindKeyByFingerprintAsync(key.Fingerprint);
    var stdout = new StringWriter();
    var stderr = new StringWriter();
    var code = await dispatcher.RunAsync(new CommandContext
    {
        Account = account, CurrentKey = accountKey, Stdout = stdout, Stderr = stderr, Source = "bench in-process",
    }, argv);
    if (code != 0) throw new InvalidOperationException($"{string.Join(' ', argv)} exited {code}: {stderr}");
    return (code, stdout.GetStringBuilder().Length);
}

static string Stats(List<double> ms, double wallS) {
    ms.Sort();
    return $"ok={ms.Count} wall_s={wallS:F3} per_s={ms.Count / wallS:F1} p50_ms={ms[ms.Count / 2]:F2} p90_ms={ms[(int)(ms.Count * 0.9)]:F2} max_ms={ms[^1]:F2}";
}

async Task Sequential(string label, string[] argv, int n)
{
    for (var i = 0; i < 5; i++) await RunOnce(argv); // warm-up: JIT, connection pool
    var ms = new List<double>();
    var bytes = 0;
    var wall = Stopwatch.StartNew();
    for (var i = 0; i < n; i++)
    {
        var t = Stopwatch.StartNew();
        bytes = (await RunOnce(argv)).Bytes;
        ms.Add(t.Elapsed.TotalMilliseconds);
    }
    Console.WriteLine($"inproc case=\"{label}\" workers=1 n={n} output_chars={bytes} {Stats(ms, wall.Elapsed.TotalSeconds)}");
}

async Task Concurrent(string label, string[] argv, int n)
{
    var ms = new double[n];
    var wall = Stopwatch.StartNew();
    await Task.WhenAll(Enumerable.Range(0, n).Select(i => Task.Run(async () =>
    {
        var t = Stopwatch.StartNew();
        await RunOnce(argv);
        ms[i] = t.Elapsed.TotalMilliseconds;
    })));
    Console.WriteLine($"inproc case=\"{label}\" workers={n} n={n} {Stats(ms.ToList(), wall.Elapsed.TotalSeconds)}");
}

Console.WriteLine($"# date: {DateTime.UtcNow:yyyy-MM-ddTHH:mm:ssZ}  nproc: {Environment.ProcessorCount}  load: {string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3))}");
await Sequential("ls --json", ["ls", "--json"], nLs);
await Sequential("whoami", ["whoami"], nWhoami);
await Concurrent("whoami", ["whoami"], concurrency);
