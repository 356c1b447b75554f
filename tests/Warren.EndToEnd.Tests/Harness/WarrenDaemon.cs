using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Warren.EndToEnd.Tests.Harness;

/// <summary>
/// Runs the built `warren serve` as a child process with its own data directory
/// and ports, so a test drives the real daemon exactly as a person would.
/// </summary>
public sealed class WarrenDaemon : IAsyncDisposable
{
    /// <summary>How long the daemon may take to open its listeners (first start creates host keys and a CA).</summary>
    private static readonly TimeSpan StartupTimeout = TimeSpan.FromSeconds(180);

    public string DataDirectory { get; }
    public int SshPort { get; }
    public int HttpPort { get; }
    public int HttpsPort { get; }
    public int DnsPort { get; }
    public int SmtpPort { get; }
    public string ControlAddress { get; } = "127.0.0.1";
    public IReadOnlyList<string> SlotAddresses { get; } = ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"];
    public string Log => _log.ToString();

    private Process? _process;
    private readonly StringBuilder _log = new();
    private readonly Dictionary<string, string> _extraConfig;

    public WarrenDaemon(string? dataDirectory = null, Dictionary<string, string>? extraConfig = null, int? basePort = null)
    {
        DataDirectory = dataDirectory ?? Directory.CreateTempSubdirectory("warren-e2e-").FullName;
        int b = basePort ?? PortAllocator.NextBlock();
        SshPort = b; HttpPort = b + 1; HttpsPort = b + 2; DnsPort = b + 3; SmtpPort = b + 4;
        _extraConfig = extraConfig ?? new();
    }

    public static string WarrenDll
    {
        get
        {
            // The most recently built configuration: a stale Release build must not shadow a fresh Debug one.
            var root = RepoRoot;
            var newest = new[] { "Release", "Debug" }
                .Select(cfg => new FileInfo(Path.Combine(root, "src", "Warren", "bin", cfg, "net10.0", "warren.dll")))
                .Where(f => f.Exists)
                .OrderByDescending(f => f.LastWriteTimeUtc)
                .FirstOrDefault();
            return newest?.FullName ?? throw new InvalidOperationException("warren is not built; run ./test.sh");
        }
    }

    public static string RepoRoot
    {
        get
        {
            var dir = AppContext.BaseDirectory;
            while (dir is not null && !File.Exists(Path.Combine(dir, "Warren.sln"))) dir = Path.GetDirectoryName(dir);
            return dir ?? throw new InvalidOperationException("repository root not found");
        }
    }

    public IEnumerable<string> ConfigArgs()
    {
        var cfg = new Dictionary<string, string>
        {
            ["Warren:DataDirectory"] = DataDirectory,
            ["Warren:SshPort"] = SshPort.ToString(),
            ["Warren:HttpPort"] = HttpPort.ToString(),
            ["Warren:HttpsPort"] = HttpsPort.ToString(),
            ["Warren:DnsPort"] = DnsPort.ToString(),
            ["Warren:SmtpPort"] = SmtpPort.ToString(),
            // ./run.sh's dev default (every listener here is on loopback); tests of mailed codes set it to false.
            ["Warren:Signup:AutoVerify"] = "true",
        };
        foreach (var (k, v) in _extraConfig) cfg[k] = v;
        foreach (var (k, v) in cfg) yield return $"--{k}={v}";
    }

    public async Task StartAsync()
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(WarrenDll);
        psi.ArgumentList.Add("serve");
        foreach (var a in ConfigArgs()) psi.ArgumentList.Add(a);
        // The banner is printed once every front door (SSH, HTTP(S), DNS, SMTP) has bound; a restart appends a new one.
        int bannersBefore = CountBanners();
        _process = Process.Start(psi)!;
        // Kept in memory for assertions and on disk for post-mortems (the data directory survives the test).
        var logFile = Path.Combine(DataDirectory, "daemon.log");
        void Append(string? line)
        {
            if (line is null) return;
            lock (_log) { _log.AppendLine(line); File.AppendAllText(logFile, line + "\n"); }
        }
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var deadline = DateTime.UtcNow + StartupTimeout;
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited) throw new InvalidOperationException("warren exited at start:\n" + Log);
            if (CountBanners() > bannersBefore
                && await CanConnectAsync(ControlAddress, SshPort) && await CanConnectAsync(SlotAddresses[0], SshPort)) return;
            await Task.Delay(200);
        }
        throw new TimeoutException("warren did not report that it is running in time:\n" + Log);
    }

    private const string RunningBanner = "Warren is running.";

    private int CountBanners()
    {
        lock (_log)
        {
            var text = _log.ToString();
            int n = 0;
            for (int i = text.IndexOf(RunningBanner, StringComparison.Ordinal); i >= 0; i = text.IndexOf(RunningBanner, i + 1, StringComparison.Ordinal)) n++;
            return n;
        }
    }

    /// <summary>Offline admin command: `warren user add …` against the same data directory.</summary>
    public Task<ProcessResult> CliAsync(params string[] args)
    {
        var all = new List<string> { WarrenDll };
        all.AddRange(args);
        all.AddRange(ConfigArgs());
        return ProcessRunner.RunAsync("dotnet", all);
    }

    public async Task<SshUser> CreateUserAsync(string email)
    {
        var u = await SshUser.CreateKeyAsync(this, email);
        var r = await CliAsync("user", "add", "--email", email, "--ssh-key-file", u.KeyPath + ".pub");
        if (r.ExitCode != 0) throw new InvalidOperationException("user add failed: " + r);
        return u;
    }

    /// <summary>SIGKILL, as a crash would.</summary>
    public void Kill()
    {
        if (_process is { HasExited: false }) { _process.Kill(entireProcessTree: true); _process.WaitForExit(10_000); }
    }

    public async Task StopAsync()
    {
        if (_process is null || _process.HasExited) return;
        Process.Start("kill", ["-TERM", _process.Id.ToString()])?.WaitForExit();
        if (!_process.WaitForExit(15_000)) Kill();
        await Task.CompletedTask;
    }

    private static async Task<bool> CanConnectAsync(string host, int port)
    {
        try
        {
            using var c = new TcpClient();
            using var cts = new CancellationTokenSource(1000);
            await c.ConnectAsync(host, port, cts.Token);
            return true;
        }
        catch { return false; }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _process?.Dispose();
    }
}

/// <summary>
/// Blocks of five consecutive ports per daemon, checked free on every address the daemon binds
/// (control and slots, TCP and UDP) — several test processes may run at once on one machine.
/// </summary>
public static class PortAllocator
{
    private static readonly string[] s_addresses = ["127.0.0.1", "127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"];
    private const int BlockSize = 5, LowestPort = 20000, HighestPort = 60000, MaxAttempts = 200;
    private static readonly object s_gate = new();
    private static readonly HashSet<int> s_handedOut = [];

    public static int NextBlock()
    {
        lock (s_gate)
        {
            for (int attempt = 0; attempt < MaxAttempts; attempt++)
            {
                int b = Random.Shared.Next(LowestPort / BlockSize, HighestPort / BlockSize) * BlockSize;
                if (s_handedOut.Contains(b) || !BlockIsFree(b)) continue;
                s_handedOut.Add(b);
                return b;
            }
            throw new InvalidOperationException("no free block of ports found");
        }
    }

    private static bool BlockIsFree(int basePort)
    {
        var held = new List<System.Net.Sockets.Socket>();
        try
        {
            foreach (var a in s_addresses)
                for (int p = basePort; p < basePort + BlockSize; p++)
                    foreach (var type in new[] { System.Net.Sockets.SocketType.Stream, System.Net.Sockets.SocketType.Dgram })
                    {
                        var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, type,
                            type == System.Net.Sockets.SocketType.Stream ? System.Net.Sockets.ProtocolType.Tcp : System.Net.Sockets.ProtocolType.Udp);
                        held.Add(s);
                        s.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Parse(a), p));
                    }
            return true;
        }
        catch (System.Net.Sockets.SocketException) { return false; }
        finally { foreach (var s in held) s.Dispose(); }
    }
}
