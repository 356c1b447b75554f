using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Warren.Platform.Runtime;
using Warren.Runtime.HostNetwork;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// Two busybox microVMs on their taps, each serving "hello-&lt;tag&gt;" on 0.0.0.0:8080, plus two containers the
/// fixture made on the engine: one on the default bridge (an RFC 1918 address) and one on a network in 198.18.0.0/15
/// (RFC 2544's benchmarking range: routable here, outside the deny list), standing in for "the internet".
/// </summary>
public sealed class TwoMicroVms : IAsyncLifetime
{
    public const int Port = 8080;
    private readonly string _dataDirectory = MicroVmTestEnvironment.NewDataDirectory();
    private readonly string _network = "wt-outbound-" + Environment.ProcessId;
    private readonly List<string> _containers = [];

    public MicroVmRuntime Runtime { get; private set; } = null!;
    public string A { get; } = "wt-" + Guid.NewGuid().ToString("N")[..12];
    public string B { get; } = "wt-" + Guid.NewGuid().ToString("N")[..12];
    public IPAddress PrivateContainer { get; private set; } = IPAddress.None;
    public IPAddress PublicContainer { get; private set; } = IPAddress.None;

    public async Task InitializeAsync()
    {
        if (MicroVmTestEnvironment.UnavailableReason != null) return;
        MicroVmTestEnvironment.Require();
        Runtime = BusyboxMicroVm.NewRuntime(_dataDirectory);
        foreach (var (id, tag) in new[] { (A, "a"), (B, "b") })
            await Runtime.CreateAsync(BusyboxMicroVm.Spec(id, "iso-" + tag, ["httpd", "-f", "-p", "0.0.0.0:" + Port, "-h", "/www"],
                $"mkdir -p /www && echo hello-{tag} > /www/index.html"), MicroVmRuntimeTests.Timeout());

        int slot = Environment.ProcessId % 256;
        await DockerAsync("network", "create", "--subnet", $"198.18.{slot}.0/24", _network);
        PublicContainer = await RunContainerAsync("public", "--network", _network);
        PrivateContainer = await RunContainerAsync("private");
    }

    private async Task<IPAddress> RunContainerAsync(string tag, params string[] network)
    {
        string name = $"wt-{tag}-{Guid.NewGuid().ToString("N")[..8]}";
        _containers.Add(name);
        await DockerAsync(["run", "-d", "--rm", "--name", name, .. network, MicroVmTestEnvironment.BusyboxImage,
            "sh", "-c", $"mkdir -p /www && echo container-{tag} > /www/index.html && exec httpd -f -p 80 -h /www"]);
        string ip = (await DockerAsync("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)).Trim();
        return IPAddress.Parse(ip);
    }

    private static async Task<string> DockerAsync(params string[] args)
    {
        var result = await Warren.Runtime.HostNetwork.HostCommand.RunAsync("docker", args, timeout: TimeSpan.FromMinutes(2));
        if (!result.Ok) throw new InvalidOperationException($"docker {string.Join(' ', args)}: {result.Message}");
        return result.Stdout;
    }

    public async Task DisposeAsync()
    {
        foreach (var c in _containers) await Warren.Runtime.HostNetwork.HostCommand.RunAsync("docker", ["rm", "-f", c]);
        await Warren.Runtime.HostNetwork.HostCommand.RunAsync("docker", ["network", "rm", _network]);
        if (Runtime == null) return;
        try
        {
            foreach (var id in new[] { A, B }) await Runtime.RemoveAsync(id, CancellationToken.None);
        }
        finally
        {
            await Runtime.DisposeAsync();
            Directory.Delete(_dataDirectory, recursive: true);
        }
    }
}

/// <summary>
/// Tenant isolation of microVMs on taps, with the real kernel packet filter (the installation's <see cref="VmFirewall"/>
/// table, the same rules the Docker runtime's bridges get): a VM reaches neither another VM, nor the host (its gateway,
/// another host address), nor private ranges; it does reach the outside; and the host reaches the VMs' ports.
/// </summary>
public sealed class MicroVmIsolationTests(TwoMicroVms vms, ITestOutputHelper output) : IClassFixture<TwoMicroVms>
{
    /// <summary>Bound on one in-VM probe (nc -w): a blocked connection is refused at once, this is only a cap.</summary>
    private const string ProbeTimeoutSeconds = "5";

    private static string HttpGet(IPAddress host, int port) =>
        $"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {ProbeTimeoutSeconds} {host} {port}";

    private static Task<(ExitResult Exit, string Stdout, string Stderr)> ShAsync(MicroVmRuntime runtime, string vmId, string script) =>
        MicroVmRuntimeTests.RunAsync(runtime, vmId, "sh", "-c", script);

    private static async Task<string> HostGetAsync(IPAddress address, int port)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync(address, port).WaitAsync(TimeSpan.FromSeconds(30));
                var stream = client.GetStream();
                await stream.WriteAsync("GET / HTTP/1.0\r\n\r\n"u8.ToArray());
                using var reader = new StreamReader(stream, Encoding.ASCII);
                return await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(30));
            }
            catch (SocketException) when (attempt < 100)
            {
                // httpd starts after the setup script, a moment after the agent answers.
                await Task.Delay(100);
            }
        }
    }

    [MicroVmFact]
    public async Task VmToVm_IsBlockedBothWays_WhileTheHostReachesBoth()
    {
        MicroVmTestEnvironment.Require();
        var addressA = await vms.Runtime.GetAddressAsync(vms.A, MicroVmRuntimeTests.Timeout());
        var addressB = await vms.Runtime.GetAddressAsync(vms.B, MicroVmRuntimeTests.Timeout());
        Assert.NotNull(addressA);
        Assert.NotNull(addressB);
        Assert.NotEqual(addressA, addressB);
        Assert.Contains("hello-a", await HostGetAsync(addressA, TwoMicroVms.Port));
        Assert.Contains("hello-b", await HostGetAsync(addressB, TwoMicroVms.Port));

        foreach (var (from, to, tag) in new[] { (vms.B, addressA, "a"), (vms.A, addressB, "b") })
        {
            var (exit, stdout, stderr) = await ShAsync(vms.Runtime, from, HttpGet(to, TwoMicroVms.Port));
            output.WriteLine($"{from} -> {to}:{TwoMicroVms.Port}: exit {exit.ExitCode}, {stderr.Trim()}");
            Assert.NotEqual(0, exit.ExitCode);
            Assert.DoesNotContain($"hello-{tag}", stdout);
        }
    }

    [MicroVmFact]
    public async Task VmToHost_IsBlocked_OnTheGatewayAndOnAnotherHostAddress()
    {
        MicroVmTestEnvironment.Require();
        var address = await vms.Runtime.GetAddressAsync(vms.A, MicroVmRuntimeTests.Timeout());
        Assert.NotNull(address);
        var gateway = VmSubnetPool.FromUInt32(VmSubnetPool.ToUInt32(address) - 1);
        var other = NetworkInterface.GetAllNetworkInterfaces()
            .Where(i => i.OperationalStatus == OperationalStatus.Up && i.NetworkInterfaceType != NetworkInterfaceType.Loopback
                        && !i.Name.StartsWith(vms.Runtime.Firewall.InterfacePrefix, StringComparison.Ordinal))
            .SelectMany(i => i.GetIPProperties().UnicastAddresses).Select(u => u.Address)
            .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a));
        Assert.True(other != null, "the host has no non-loopback IPv4 address to test with");

        // Listening on every address: what a careless host service does (the user-networking hole: loopback-only
        // services were reachable through its gateway; here there is no path to the host's loopback at all).
        var listener = new TcpListener(IPAddress.Any, 0);
        listener.Start();
        try
        {
            int port = ((IPEndPoint)listener.LocalEndpoint).Port;
            foreach (var target in new[] { gateway, other })
            {
                var (exit, _, stderr) = await ShAsync(vms.Runtime, vms.A, $"nc -w {ProbeTimeoutSeconds} {target} {port} </dev/null");
                output.WriteLine($"VM -> host {target}:{port}: exit {exit.ExitCode}, {stderr.Trim()}");
                Assert.NotEqual(0, exit.ExitCode);
                Assert.False(listener.Pending(), $"a connection from the VM reached the host listener on {target}");
            }
            // The listener works: the host itself can connect.
            using var local = new TcpClient();
            await local.ConnectAsync(gateway, port).WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            listener.Stop();
        }
    }

    [MicroVmFact]
    public async Task VmToPrivateRange_IsRefused_WhileOutboundToAPublicAddressWorks()
    {
        MicroVmTestEnvironment.Require();
        var denied = await ShAsync(vms.Runtime, vms.A, HttpGet(vms.PrivateContainer, 80));
        output.WriteLine($"VM -> {vms.PrivateContainer}:80 (RFC 1918): exit {denied.Exit.ExitCode}, {denied.Stderr.Trim()}");
        Assert.NotEqual(0, denied.Exit.ExitCode);
        Assert.DoesNotContain("container-private", denied.Stdout);

        var allowed = await ShAsync(vms.Runtime, vms.A, HttpGet(vms.PublicContainer, 80));
        output.WriteLine($"VM -> {vms.PublicContainer}:80: exit {allowed.Exit.ExitCode}, {allowed.Stderr.Trim()}");
        Assert.Contains("container-public", allowed.Stdout);
    }

    [MicroVmFact]
    public async Task Remove_TakesTheTapAway()
    {
        MicroVmTestEnvironment.Require();
        string id = "wt-" + Guid.NewGuid().ToString("N")[..12];
        var before = VmTap.List(vms.Runtime.Firewall.InterfacePrefix);
        await vms.Runtime.CreateAsync(BusyboxMicroVm.Spec(id, "tap-gone"), MicroVmRuntimeTests.Timeout());
        string tap = Assert.Single(VmTap.List(vms.Runtime.Firewall.InterfacePrefix).Except(before));
        Assert.True(VmTap.IsTap(tap));
        await vms.Runtime.RemoveAsync(id, MicroVmRuntimeTests.Timeout());
        Assert.False(VmTap.Exists(tap));
    }
}
