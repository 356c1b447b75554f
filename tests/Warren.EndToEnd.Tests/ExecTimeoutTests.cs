using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>A daemon whose /exec commands may run for 3 seconds.</summary>
public sealed class ExecTimeoutFixture : DaemonFixture
{
    public const int TimeoutSeconds = 3;

    protected override Dictionary<string, string> Config => new() { ["Warren:Http:ExecTimeoutSeconds"] = TimeoutSeconds.ToString() };
}

/// <summary>
/// <c>POST /exec</c>'s time limit through the real daemon and curl: <c>new</c> with an image from a
/// "registry" that accepts connections and never answers makes the engine's pull hang; at the limit the
/// answer is 504, the command is cancelled (the engine drops its registry connections) and cleaned up
/// (no VM is left behind).
/// </summary>
public sealed class ExecTimeoutTests(ExecTimeoutFixture fixture) : IClassFixture<ExecTimeoutFixture>
{
    /// <summary>How long the engine may take to give up its connections to the silent registry after the 504.</summary>
    private static readonly TimeSpan AbandonWait = TimeSpan.FromSeconds(60);

    private WarrenDaemon Daemon => fixture.Daemon;
    private const string ControlHost = "warren.localhost";

    [Fact]
    public async Task SlowCommand_Gets504_AndIsCancelled()
    {
        await using var registry = new SilentRegistry();
        var owner = await Daemon.CreateUserAsync("slow-owner@example.com");
        var key = await owner.ControlAsync("ssh-key generate-api-key --label=slow --cmds=new,ls --json");
        Assert.True(key.ExitCode == 0, key.ToString());
        string token = JsonDocument.Parse(key.Stdout).RootElement.GetProperty("token").GetString()!;

        var body = Path.Combine(Directory.CreateTempSubdirectory("warren-exec-timeout-").FullName, "body");
        await File.WriteAllTextAsync(body, $"new --name=slowpull --image=127.0.0.1:{registry.Port}/never/arrives:1");
        var r = await WebSupport.CurlAsync(Daemon, ControlHost, Daemon.ControlAddress, "/exec",
            "-H", "Authorization: Bearer " + token, "--data-binary", "@" + body);
        Assert.True(r.Status == 504, r.Raw + "\n" + Daemon.Log);
        Assert.Equal("command timed out", JsonDocument.Parse(r.Body).RootElement.GetProperty("error").GetString());

        // The pull really started, and was really stopped: the engine opened connections to the
        // registry and has closed every one of them (bounded wait; the registry never answers).
        Assert.True(registry.Accepted > 0, "the engine never contacted the registry");
        var deadline = DateTime.UtcNow + AbandonWait;
        while (registry.Open > 0 && DateTime.UtcNow < deadline) await Task.Delay(200);
        Assert.True(registry.Open == 0, $"{registry.Open} of {registry.Accepted} registry connections are still open");

        // The half-made VM is gone.
        var ls = await owner.ControlAsync("ls --json");
        Assert.True(ls.ExitCode == 0, ls.ToString());
        Assert.DoesNotContain("slowpull", ls.Stdout);
        var containers = await ProcessRunner.RunAsync("docker", ["ps", "-a", "--filter", "name=warren-", "--format", "{{.Names}} {{.Labels}}"]);
        Assert.DoesNotContain("slowpull", containers.Stdout);
    }

    /// <summary>Accepts TCP connections on loopback, never sends a byte, and counts them until the peer closes.</summary>
    private sealed class SilentRegistry : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;
        private readonly List<TcpClient> _clients = [];
        private int _accepted;
        private int _open;

        public int Port { get; }
        public int Accepted => Volatile.Read(ref _accepted);
        public int Open => Volatile.Read(ref _open);

        public SilentRegistry()
        {
            _listener.Start();
            Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
            _loop = AcceptAsync();
        }

        private async Task AcceptAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                TcpClient client;
                try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
                catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { return; }
                lock (_clients) _clients.Add(client);
                Interlocked.Increment(ref _accepted);
                Interlocked.Increment(ref _open);
                _ = DrainAsync(client);
            }
        }

        /// <summary>Reads (and drops) whatever arrives until the peer closes or resets.</summary>
        private async Task DrainAsync(TcpClient client)
        {
            var buffer = new byte[4096];
            try
            {
                var stream = client.GetStream();
                while (await stream.ReadAsync(buffer, _stop.Token) > 0) { }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or SocketException) { }
            finally { Interlocked.Decrement(ref _open); }
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            _listener.Stop();
            lock (_clients) foreach (var c in _clients) c.Dispose();
            try { await _loop; } catch { }
        }
    }
}
