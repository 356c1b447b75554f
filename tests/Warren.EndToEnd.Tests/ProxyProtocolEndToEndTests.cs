using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon behind a real haproxy speaking PROXY protocol v2 (issue 5, "Routing").
/// Two slots, s001 on 127.0.1.1 and s003 on 127.0.1.3, so one account's two VMs sit on different
/// addresses. haproxy connects from <see cref="ProxySource"/>, the only trusted proxy source; every
/// other client (OpenSSH from 127.0.0.1, raw sockets from 127.0.0.5) is untrusted.
/// </summary>
public sealed class ProxyProtocolEndToEndTests(ProxyProtocolEndToEndTests.TrustedProxyDaemonFixture fixture)
    : IClassFixture<ProxyProtocolEndToEndTests.TrustedProxyDaemonFixture>
{
    /// <summary>haproxy's outgoing source address (its backend "source" setting); the trusted CIDR is exactly this /32.</summary>
    public const string ProxySource = "127.0.0.9";

    /// <summary>An untrusted loopback source for spoofing attempts.</summary>
    private const string UntrustedSource = "127.0.0.5";

    private const string SlotOne = "127.0.1.1", SlotThree = "127.0.1.3";

    /// <summary>Upper bound on waiting for haproxy's listeners and for the daemon to drop a refused connection.</summary>
    private static readonly TimeSpan WaitBound = TimeSpan.FromSeconds(20);

    private WarrenDaemon Daemon => fixture.Daemon;

    public sealed class TrustedProxyDaemonFixture : DaemonFixture
    {
        protected override Dictionary<string, string> Config => new()
        {
            ["Warren:Slots:0:Name"] = "s001",
            ["Warren:Slots:0:PublicIp"] = SlotOne,
            ["Warren:Slots:0:LocalIp"] = SlotOne,
            ["Warren:Slots:1:Name"] = "s003",
            ["Warren:Slots:1:PublicIp"] = SlotThree,
            ["Warren:Slots:1:LocalIp"] = SlotThree,
            ["Warren:Ssh:TrustedProxies:0"] = ProxySource + "/32",
        };
    }

    [Fact]
    public async Task Haproxy_SendProxyV2_RoutesByTheHeadersDestination()
    {
        ProcessRunner.Require("haproxy");
        var u = await Daemon.CreateUserAsync("pp-route@example.com");
        foreach (var vm in new[] { "pp-one", "pp-two" })
        {
            var r = await u.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Equal($"{vm}.box.localhost", JsonDocument.Parse(r.Stdout).RootElement.GetProperty("ssh_dest").GetString());
        }

        // Direct OpenSSH (from 127.0.0.1: untrusted, no header) still works and tells which VM sits on which slot.
        var onOne = await u.VmAsync(SlotOne, "hostname");
        var onThree = await u.VmAsync(SlotThree, "hostname");
        Assert.True(onOne.ExitCode == 0, onOne.ToString());
        Assert.True(onThree.ExitCode == 0, onThree.ToString());
        var vmOnOne = onOne.Stdout.Trim();
        var vmOnThree = onThree.Stdout.Trim();
        Assert.Equal(new[] { "pp-one", "pp-two" }, new[] { vmOnOne, vmOnThree }.Order());

        // haproxy frontends on the slot addresses (other ports), both sending to the CONTROL address.
        // Only the PROXY header's destination (the frontend's local address) can route to a VM.
        int portOne = FreePort(SlotOne), portThree = FreePort(SlotThree);
        await using var haproxy = await Haproxy.StartAsync(
            [(SlotOne, portOne), (SlotThree, portThree)],
            backend: (Daemon.ControlAddress, Daemon.SshPort), source: ProxySource);

        var viaThree = await SshThroughAsync(u, SlotThree, portThree, "hostname");
        Assert.True(viaThree.ExitCode == 0, viaThree + "\n--- haproxy\n" + haproxy.Log + "\n--- daemon\n" + Daemon.Log);
        Assert.Equal(vmOnThree, viaThree.Stdout.Trim());

        var viaOne = await SshThroughAsync(u, SlotOne, portOne, "hostname");
        Assert.True(viaOne.ExitCode == 0, viaOne.ToString());
        Assert.Equal(vmOnOne, viaOne.Stdout.Trim());

        // Data flows through the proxied connection both ways.
        var echo = await SshThroughAsync(u, SlotThree, portThree, "cat", stdin: "through haproxy\n");
        Assert.Equal("through haproxy\n", echo.Stdout);
    }

    [Fact]
    public async Task Haproxy_HeaderDestinationOutsideThePool_GetsTheNoVmMessage()
    {
        ProcessRunner.Require("haproxy");
        var u = await Daemon.CreateUserAsync("pp-control@example.com");
        // A frontend on a non-slot, non-control address: the header names it, so the daemon finds no VM there.
        int port = FreePort("127.0.1.7");
        await using var haproxy = await Haproxy.StartAsync([("127.0.1.7", port)],
            backend: (SlotOne, Daemon.SshPort), source: ProxySource);
        var r = await SshThroughAsync(u, "127.0.1.7", port, "hostname");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("no VM on 127.0.1.7", r.Stderr);
    }

    [Theory]
    [InlineData("v1")]
    [InlineData("v2")]
    public async Task SpoofedHeader_FromAnUntrustedSource_IsDisconnected(string version)
    {
        // An attacker claims to be the proxy, naming the slot it wants to land on.
        byte[] header = version == "v1"
            ? Encoding.ASCII.GetBytes($"PROXY TCP4 203.0.113.7 {SlotThree} 40000 22\r\n")
            : ProxyV2Header(IPAddress.Parse("203.0.113.7"), IPAddress.Parse(SlotThree), 40000, 22);
        var closed = await SendAndAwaitCloseAsync(UntrustedSource, Daemon.ControlAddress, Daemon.SshPort,
            [.. header, .. "SSH-2.0-spoofer\r\n"u8.ToArray()]);
        Assert.True(closed.Closed, "the daemon kept a spoofed PROXY connection open; received: " + closed.Received);

        // The daemon says why (the header was refused, not parsed as SSH).
        await WaitForLogAsync("PROXY protocol from " + UntrustedSource);
    }

    [Fact]
    public async Task TrustedSource_WithoutAHeader_IsDisconnected()
    {
        // The trusted proxy must send the header first (Require mode): SSH bytes instead are refused.
        var closed = await SendAndAwaitCloseAsync(ProxySource, SlotOne, Daemon.SshPort, "SSH-2.0-OpenSSH_9.2\r\n"u8.ToArray());
        Assert.True(closed.Closed, "a trusted source without a PROXY header was served; received: " + closed.Received);
        Assert.DoesNotContain("SSH-2.0-", closed.Received);
    }

    [Fact]
    public async Task DirectSsh_FromAnotherUntrustedSource_StillWorks()
    {
        var u = await Daemon.CreateUserAsync("pp-direct@example.com");
        var args = u.SshOptions(Daemon.SshPort);
        args.AddRange(["-b", UntrustedSource, Daemon.ControlAddress, "whoami"]);
        var r = await ProcessRunner.RunAsync("ssh", args);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("pp-direct@example.com", r.Stdout);
    }

    // ------------------------------------------------------------------ helpers

    private Task<ProcessResult> SshThroughAsync(SshUser u, string address, int port, string command, string? stdin = null)
    {
        var args = u.SshOptions(port);
        args.Add(address);
        args.Add(command);
        return ProcessRunner.RunAsync("ssh", args, stdin);
    }

    private async Task WaitForLogAsync(string text)
    {
        var deadline = DateTime.UtcNow + WaitBound;
        while (!Daemon.Log.Contains(text, StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, $"daemon log never said \"{text}\":\n{Daemon.Log}");
            await Task.Delay(100);
        }
    }

    /// <summary>Connects from <paramref name="source"/>, sends <paramref name="payload"/>, and reads until the daemon closes (bounded).</summary>
    private static async Task<(bool Closed, string Received)> SendAndAwaitCloseAsync(string source, string host, int port, byte[] payload)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Parse(source), 0));
        using var cts = new CancellationTokenSource(WaitBound);
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(host), port), cts.Token);
        await socket.SendAsync(payload, SocketFlags.None, cts.Token);
        var received = new StringBuilder();
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                if (n == 0) return (true, received.ToString());
                received.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
        }
        catch (SocketException) { return (true, received.ToString()); } // reset counts as closed
        catch (OperationCanceledException) { return (false, received.ToString()); }
    }

    /// <summary>A PROXY v2 PROXY/TCP over IPv4 header (proxy-protocol.txt §2.2), built by hand.</summary>
    private static byte[] ProxyV2Header(IPAddress src, IPAddress dst, ushort srcPort, ushort dstPort)
    {
        byte[] signature = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
        var h = new List<byte>(signature) { 0x21 /* v2, PROXY */, 0x11 /* TCP over IPv4 */, 0x00, 12 };
        h.AddRange(src.GetAddressBytes());
        h.AddRange(dst.GetAddressBytes());
        h.Add((byte)(srcPort >> 8)); h.Add((byte)srcPort);
        h.Add((byte)(dstPort >> 8)); h.Add((byte)dstPort);
        return [.. h];
    }

    private static int FreePort(string address)
    {
        var l = new TcpListener(IPAddress.Parse(address), 0);
        l.Start();
        int p = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return p;
    }

    /// <summary>A real haproxy in TCP mode with a temporary config, run in the foreground and killed on dispose.</summary>
    private sealed class Haproxy : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _log = new();
        private readonly string _dir;
        public string Log { get { lock (_log) return _log.ToString(); } }

        private Haproxy(Process process, string dir) { _process = process; _dir = dir; }

        public static async Task<Haproxy> StartAsync(IReadOnlyList<(string Address, int Port)> frontends, (string Address, int Port) backend, string source)
        {
            var exe = ProcessRunner.Require("haproxy");
            var dir = Directory.CreateTempSubdirectory("warren-haproxy-").FullName;
            var cfg = new StringBuilder();
            cfg.Append("global\n  maxconn 64\n");
            cfg.Append("defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n");
            for (int i = 0; i < frontends.Count; i++)
                cfg.Append($"frontend fe{i}\n  bind {frontends[i].Address}:{frontends[i].Port}\n  default_backend warren\n");
            cfg.Append($"backend warren\n  server warren {backend.Address}:{backend.Port} send-proxy-v2 source {source}\n");
            var path = Path.Combine(dir, "haproxy.cfg");
            File.WriteAllText(path, cfg.ToString());

            var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "-db", "-f", path }) psi.ArgumentList.Add(a);
            var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start haproxy");
            var h = new Haproxy(p, dir);
            p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (h._log) h._log.AppendLine(e.Data); };
            p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (h._log) h._log.AppendLine(e.Data); };
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();

            var deadline = DateTime.UtcNow + WaitBound;
            foreach (var (address, port) in frontends)
            {
                while (!await CanConnectAsync(address, port))
                {
                    if (p.HasExited || DateTime.UtcNow > deadline)
                    {
                        await h.DisposeAsync();
                        throw new InvalidOperationException($"haproxy did not listen on {address}:{port}:\n{cfg}\n{h.Log}");
                    }
                    await Task.Delay(100);
                }
            }
            return h;
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
            catch (Exception e) when (e is SocketException or OperationCanceledException) { return false; }
        }

        public ValueTask DisposeAsync()
        {
            try { if (!_process.HasExited) { _process.Kill(); _process.WaitForExit(10_000); } } catch (InvalidOperationException) { }
            _process.Dispose();
            try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
            return ValueTask.CompletedTask;
        }
    }
}
