using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Warren.Platform.Runtime;
using Warren.Runtime.HostNetwork;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// Tenant isolation with the real engine and the kernel's packet filter: a VM reaches neither another VM nor the
/// host, the host still reaches VM ports, addresses are not reused at once, a fork bomb stops at the pids limit,
/// raw sockets and device nodes are gone, and /data cannot outgrow --disk.
/// </summary>
[Collection(DockerCollection.Name)]
public sealed class VmIsolationTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const long MiB = 1024 * 1024;
    /// <summary>Bound on one in-VM network probe (nc -w): a blocked connection is refused at once, this is only a cap.</summary>
    private const string ProbeTimeoutSeconds = "5";

    private readonly List<(DockerVmRuntime Runtime, string VmId)> _vms = [];
    private readonly List<DockerVmRuntime> _runtimes = [];
    private readonly string _diskDirectory = Path.Combine(Path.GetTempPath(), "warren-disk-test-" + Guid.NewGuid().ToString("N")[..8]);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var (runtime, id) in _vms)
        {
            try { await runtime.RemoveAsync(id, CancellationToken.None); }
            catch (DockerRuntimeException e) { output.WriteLine($"cleanup of {id}: {e.Message}"); }
        }
        foreach (var r in _runtimes) r.Dispose();
        try { if (Directory.Exists(_diskDirectory)) Directory.Delete(_diskDirectory, recursive: true); }
        catch (IOException) { }
    }

    private DockerVmRuntime NewRuntime(Action<DockerRuntimeOptions>? configure = null)
    {
        DockerTestEnvironment.Require();
        var options = DockerTestEnvironment.Options();
        options.DiskDirectory = _diskDirectory;
        configure?.Invoke(options);
        var runtime = new DockerVmRuntime(options);
        _runtimes.Add(runtime);
        return runtime;
    }

    private static CancellationToken Timeout() => new CancellationTokenSource(TimeSpan.FromMinutes(2)).Token;

    private async Task<string> CreateVmAsync(DockerVmRuntime runtime, string image = DockerTestEnvironment.BusyboxImage, long diskBytes = 0)
    {
        string id = "wt-" + Guid.NewGuid().ToString("N")[..12];
        _vms.Add((runtime, id));
        await runtime.CreateAsync(new VmSpec(id, "iso-" + id[3..9], image, new VmResources(1, 256 * MiB, diskBytes),
            new Dictionary<string, string>(), CommandMode.Auto, null, null, null), Timeout());
        return id;
    }

    private static async Task<(int? Code, string Stdout, string Stderr)> ShAsync(DockerVmRuntime runtime, string vmId, string script, string? user = null)
    {
        await using var p = await runtime.ExecAsync(vmId, new ExecSpec(["sh", "-c", script], User: user), Timeout());
        await p.CloseStandardInputAsync();
        var stdout = new StreamReader(p.StandardOutput, Encoding.UTF8).ReadToEndAsync();
        var stderr = p.StandardError is { } e ? new StreamReader(e, Encoding.UTF8).ReadToEndAsync() : Task.FromResult("");
        var exit = await p.Completion.WaitAsync(TimeSpan.FromMinutes(2));
        return (exit.ExitCode, await stdout.WaitAsync(TimeSpan.FromMinutes(2)), await stderr.WaitAsync(TimeSpan.FromMinutes(2)));
    }

    /// <summary>Serves "hello-&lt;tag&gt;" on 0.0.0.0:8080 inside the VM (every address), and waits until it answers locally.</summary>
    private static async Task ServeAsync(DockerVmRuntime runtime, string vmId, string tag)
    {
        var (code, _, err) = await ShAsync(runtime, vmId, $"mkdir -p /www && echo hello-{tag} > /www/index.html && httpd -p 0.0.0.0:8080 -h /www");
        Assert.True(code == 0, err);
        for (int i = 0; i < 100; i++)
        {
            if ((await ShAsync(runtime, vmId, HttpGet("127.0.0.1", 8080))).Stdout.Contains($"hello-{tag}")) return;
            await Task.Delay(100);
        }
        Assert.Fail($"httpd in {vmId} never answered");
    }

    /// <summary>An HTTP GET from inside a VM with busybox nc (the static busybox's wget crashes), bounded by -w.</summary>
    private static string HttpGet(string host, int port) =>
        $"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {ProbeTimeoutSeconds} {host} {port}";

    private static async Task<string> HostGetAsync(IPAddress address, int port)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(address, port).WaitAsync(TimeSpan.FromSeconds(30));
        var stream = client.GetStream();
        await stream.WriteAsync("GET / HTTP/1.0\r\n\r\n"u8.ToArray());
        using var reader = new StreamReader(stream, Encoding.ASCII);
        return await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(30));
    }

    [DockerFact]
    public async Task VmToVm_IsBlockedBothWays_EvenToAnAnyAddressListener_WhileTheHostStillReachesBoth()
    {
        var runtime = NewRuntime();
        string a = await CreateVmAsync(runtime);
        string b = await CreateVmAsync(runtime);
        await ServeAsync(runtime, a, "a");
        await ServeAsync(runtime, b, "b");
        var addressA = await runtime.GetAddressAsync(a, Timeout());
        var addressB = await runtime.GetAddressAsync(b, Timeout());
        Assert.NotNull(addressA);
        Assert.NotNull(addressB);

        // The front doors run on the host: they reach both.
        Assert.Contains("hello-a", await HostGetAsync(addressA, 8080));
        Assert.Contains("hello-b", await HostGetAsync(addressB, 8080));

        // The engine's embedded DNS in each VM knows only that VM: no other VM's name or address leaks through it.
        var forward = await ShAsync(runtime, b, $"nslookup {DockerVmRuntime.ContainerName(a)}");
        Assert.DoesNotContain(addressA.ToString(), forward.Stdout);
        var reverse = await ShAsync(runtime, b, $"nslookup {addressA}");
        output.WriteLine($"PTR {addressA} from B: {reverse.Stdout.Trim()} {reverse.Stderr.Trim()}");
        Assert.DoesNotContain(DockerVmRuntime.ContainerName(a), reverse.Stdout);

        foreach (var (from, to, tag) in new[] { (b, addressA, "a"), (a, addressB, "b") })
        {
            var (code, stdout, stderr) = await ShAsync(runtime, from, HttpGet(to.ToString(), 8080));
            output.WriteLine($"{from} -> {to}:8080: exit {code}, {stderr.Trim()}");
            Assert.NotEqual(0, code);
            Assert.DoesNotContain($"hello-{tag}", stdout);
        }
    }

    [DockerFact]
    public async Task VmToHost_IsBlocked_OnTheGatewayAndOnAnotherHostAddress()
    {
        var runtime = NewRuntime();
        string vm = await CreateVmAsync(runtime);
        var address = await runtime.GetAddressAsync(vm, Timeout());
        Assert.NotNull(address);
        var gateway = GatewayOf(address);
        var other = OtherHostAddress(runtime);

        foreach (var target in new[] { gateway, other })
        {
            var listener = new TcpListener(target, 0);
            listener.Start();
            try
            {
                int port = ((IPEndPoint)listener.LocalEndpoint).Port;
                var (code, _, stderr) = await ShAsync(runtime, vm, HttpGet(target.ToString(), port));
                output.WriteLine($"VM -> host {target}:{port}: exit {code}, {stderr.Trim()}");
                Assert.NotEqual(0, code);
                Assert.False(listener.Pending(), $"a connection from the VM reached the host listener on {target}");
                // The listener itself works: the host can connect to it.
                using var local = new TcpClient();
                await local.ConnectAsync(target, port).WaitAsync(TimeSpan.FromSeconds(30));
            }
            finally
            {
                listener.Stop();
            }
        }
    }

    [DockerFact]
    public async Task HostServiceHooks_OpenExactlyThePortsConfigured()
    {
        var gatewayOnly = new TcpListener(IPAddress.Any, 0);
        var anyAddress = new TcpListener(IPAddress.Any, 0);
        gatewayOnly.Start();
        anyAddress.Start();
        // Accept and close at once, so a VM's nc that got through ends instead of waiting for data.
        var acceptors = new[] { gatewayOnly, anyAddress }.Select(l => Task.Run(async () =>
        {
            try { while (true) (await l.AcceptTcpClientAsync()).Dispose(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        })).ToList();
        try
        {
            int servicePort = ((IPEndPoint)gatewayOnly.LocalEndpoint).Port, publicPort = ((IPEndPoint)anyAddress.LocalEndpoint).Port;
            var runtime = NewRuntime(o =>
            {
                o.VmNetwork.HostServices = [$"tcp/{servicePort}"];
                o.VmNetwork.PublicServices = [$"tcp/{publicPort}"];
            });
            string vm = await CreateVmAsync(runtime);
            var gateway = GatewayOf((await runtime.GetAddressAsync(vm, Timeout()))!);
            var other = OtherHostAddress(runtime);
            async Task<int?> ConnectAsync(IPAddress to, int port) =>
                (await ShAsync(runtime, vm, $"nc -w {ProbeTimeoutSeconds} {to} {port} </dev/null")).Code;
            Assert.Equal(0, await ConnectAsync(gateway, servicePort));
            Assert.NotEqual(0, await ConnectAsync(other, servicePort));
            Assert.Equal(0, await ConnectAsync(other, publicPort));
            Assert.Equal(0, await ConnectAsync(gateway, publicPort));
        }
        finally
        {
            gatewayOnly.Stop();
            anyAddress.Stop();
            await Task.WhenAll(acceptors).WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    private static IPAddress GatewayOf(IPAddress vmAddress) => VmSubnetPool.FromUInt32(VmSubnetPool.ToUInt32(vmAddress) - 1);

    /// <summary>A host address that is not loopback and not on a VM bridge (the host's own network interface).</summary>
    private static IPAddress OtherHostAddress(DockerVmRuntime runtime)
    {
        var other = NetworkInterface.GetAllNetworkInterfaces()
            .Where(i => i.OperationalStatus == OperationalStatus.Up && i.NetworkInterfaceType != NetworkInterfaceType.Loopback
                        && !i.Name.StartsWith(runtime.Firewall.InterfacePrefix, StringComparison.Ordinal))
            .SelectMany(i => i.GetIPProperties().UnicastAddresses)
            .Select(u => u.Address)
            .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a));
        Assert.True(other != null, "the host has no non-loopback IPv4 address to test with");
        return other;
    }

    [DockerFact]
    public async Task Address_IsNotReusedRightAfterRemove()
    {
        // A pool of exactly two /30 subnets, distinct per test process: the quarantine, not the cycle, must refuse a third.
        int slot = Environment.ProcessId % 8192;
        string pool = $"10.233.{slot / 32}.{slot % 32 * 8}/29";
        var runtime = NewRuntime(o => { o.VmNetwork.Pool = pool; o.VmNetwork.AddressQuarantineSeconds = 600; });

        string first = await CreateVmAsync(runtime);
        var firstAddress = await runtime.GetAddressAsync(first, Timeout());
        await runtime.RemoveAsync(first, Timeout());
        string second = await CreateVmAsync(runtime);
        var secondAddress = await runtime.GetAddressAsync(second, Timeout());
        Assert.NotEqual(firstAddress, secondAddress);
        await runtime.RemoveAsync(second, Timeout());

        // Both subnets freed moments ago: nothing may be handed out.
        var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => CreateVmAsync(runtime));
        Assert.Equal(DockerRuntimeErrors.IsolationUnavailable, e.Code);
        Assert.Contains("no free VM subnet", e.Message);
    }

    [DockerFact]
    public async Task ForkBomb_StopsAtThePidsLimit_AndTheVmRecovers()
    {
        const int Limit = 200;
        var runtime = NewRuntime(o => o.PidsLimit = Limit);
        string vm = await CreateVmAsync(runtime);
        var c = await runtime.Client.Containers.InspectContainerAsync(DockerVmRuntime.ContainerName(vm));
        Assert.Equal(Limit, c.HostConfig.PidsLimit);

        // Bounded in time by timeout(1); the bomb's orphans live on until the VM restarts.
        var bomb = await ShAsync(runtime, vm, "timeout 10 sh -c 'f(){ f|f& }; f' 2>/dev/null; echo done");
        output.WriteLine($"fork bomb: exit {bomb.Code}");
        string pidsCurrent = $"/sys/fs/cgroup/pids/docker/{c.ID}/pids.current";
        if (File.Exists(pidsCurrent))
        {
            long current = long.Parse(File.ReadAllText(pidsCurrent).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            output.WriteLine($"pids in the VM after the bomb: {current}");
            Assert.True(current <= Limit, $"{current} processes, limit {Limit}");
        }
        // The host still forks.
        var host = await DockerTestEnvironment.RunAsync("true", [], timeout: TimeSpan.FromSeconds(30));
        Assert.Equal(0, host.ExitCode);

        await runtime.RestartAsync(vm, Timeout());
        Assert.Equal("ok\n", (await ShAsync(runtime, vm, "echo ok")).Stdout);
    }

    [DockerFact]
    public async Task RawSocketsAndDeviceNodes_AreGone_EvenForRoot()
    {
        var runtime = NewRuntime();
        string vm = await CreateVmAsync(runtime);
        // Capability bits (capability.h): CAP_MKNOD 27, CAP_NET_RAW 13; CAP_SETUID 7 stays (sudo, su).
        string capEff = (await ShAsync(runtime, vm, "grep CapEff /proc/self/status | cut -f2")).Stdout.Trim();
        ulong caps = Convert.ToUInt64(capEff, 16);
        output.WriteLine($"CapEff of root in the VM: {capEff}");
        Assert.Equal(0UL, caps & (1UL << 13));
        Assert.Equal(0UL, caps & (1UL << 27));
        Assert.NotEqual(0UL, caps & (1UL << 7));

        var ping = await ShAsync(runtime, vm, "ping -c 1 -W 2 127.0.0.1");
        output.WriteLine($"ping as root: exit {ping.Code}, {ping.Stderr.Trim()}");
        Assert.NotEqual(0, ping.Code);
        var mknod = await ShAsync(runtime, vm, "mknod /tmp/null2 c 1 3");
        Assert.NotEqual(0, mknod.Code);
        Assert.Equal("16384\n", (await ShAsync(runtime, vm, "ulimit -n")).Stdout);
    }

    [DockerFact]
    public async Task Sudo_StillWorks_InTheDefaultImage()
    {
        var runtime = NewRuntime();
        string vm = await CreateVmAsync(runtime, DefaultImageTests.DefaultImage);
        var (code, stdout, stderr) = await ShAsync(runtime, vm, "sudo -n id -u", user: "warren");
        Assert.True(code == 0, stderr);
        Assert.Equal("0\n", stdout);
    }

    [DockerFact]
    public async Task Disk_IsEnforced_GrowsOnline_IsCountedByStat_AndCopied()
    {
        var runtime = NewRuntime();
        string vm = await CreateVmAsync(runtime, diskBytes: 64 * MiB);

        var fill = await ShAsync(runtime, vm, "dd if=/dev/zero of=/data/fill bs=1M count=100");
        output.WriteLine($"dd 100 MiB into a 64 MiB disk: exit {fill.Code}, {fill.Stderr.Trim()}");
        Assert.NotEqual(0, fill.Code);
        Assert.Contains("No space left on device", fill.Stderr);

        var stats = await runtime.SampleStatsAsync(vm, Timeout());
        Assert.NotNull(stats);
        output.WriteLine($"stat DiskUsedBytes: {stats.DiskUsedBytes}");
        Assert.InRange(stats.DiskUsedBytes, 50 * MiB, 80 * MiB);

        var outcome = await runtime.ResizeAsync(vm, new VmResources(1, 256 * MiB, 128 * MiB), Timeout());
        Assert.True(outcome.DiskEnforced);
        var more = await ShAsync(runtime, vm, "dd if=/dev/zero of=/data/more bs=1M count=40 && echo written");
        Assert.True(more.Code == 0, more.Stderr);
        // Never shrinks.
        var shrink = await runtime.ResizeAsync(vm, new VmResources(1, 256 * MiB, 32 * MiB), Timeout());
        Assert.True(shrink.DiskEnforced);
        Assert.Contains("only grow", shrink.Note);

        // A copy gets its own disk with the data.
        await ShAsync(runtime, vm, "rm /data/fill /data/more; echo kept > /data/note");
        string copy = "wt-" + Guid.NewGuid().ToString("N")[..12];
        _vms.Add((runtime, copy));
        await runtime.CopyAsync(vm, new VmSpec(copy, "iso-copy", DockerTestEnvironment.BusyboxImage, new VmResources(1, 256 * MiB, 64 * MiB),
            new Dictionary<string, string>(), CommandMode.Auto, null, null, null), Timeout());
        Assert.Equal("kept\n", (await ShAsync(runtime, copy, "cat /data/note")).Stdout);
        Assert.NotEqual(0, (await ShAsync(runtime, copy, "dd if=/dev/zero of=/data/fill bs=1M count=100")).Code);

        await runtime.RemoveAsync(copy, Timeout());
        Assert.False(File.Exists(Path.Combine(_diskDirectory, copy + ".ext4")));
        Assert.False(Directory.Exists(Path.Combine(_diskDirectory, copy + ".mnt")));
    }

    [DockerFact]
    public async Task Disk_AfterADaemonRestart_IsRemounted_AndLeftoversAreRemoved()
    {
        var runtime = NewRuntime();
        string vm = await CreateVmAsync(runtime, diskBytes: 32 * MiB);
        await ShAsync(runtime, vm, "echo survives > /data/f");
        // As after a host reboot: nothing mounted, the engine restarts the VM on its own.
        string mount = Path.Combine(_diskDirectory, vm + ".mnt");
        Assert.Equal(0, (await DockerTestEnvironment.RunAsync("umount", ["-l", mount])).ExitCode);
        // While unmounted, /data is the immutable empty mount point: the VM cannot fill the host's disk through it.
        await runtime.RestartAsync(vm, Timeout());
        // A create killed half-way, and the disk of a VM that is gone.
        File.WriteAllText(Path.Combine(_diskDirectory, "wt-halfmade.ext4.partial"), "x");
        File.WriteAllText(Path.Combine(_diskDirectory, "wt-gone000000.ext4"), "x");

        var restarted = NewRuntime();
        var report = await restarted.PrepareHostAsync(Timeout());
        output.WriteLine(report.ToString());
        Assert.Equal("survives\n", (await ShAsync(restarted, vm, "cat /data/f")).Stdout);
        Assert.False(File.Exists(Path.Combine(_diskDirectory, "wt-halfmade.ext4.partial")));
        Assert.False(File.Exists(Path.Combine(_diskDirectory, "wt-gone000000.ext4")));
        Assert.NotEqual(0, (await ShAsync(restarted, vm, "dd if=/dev/zero of=/data/fill bs=1M count=64")).Code);
    }

    [DockerFact]
    public async Task Start_MovesAVmOffTheSharedDefaultBridge_OntoItsOwnNetwork()
    {
        var runtime = NewRuntime();
        string vm = await CreateVmAsync(runtime);
        // As a VM made before per-VM networks: on the engine's default bridge only, no pids limit.
        var c = await runtime.Client.Containers.InspectContainerAsync(DockerVmRuntime.ContainerName(vm));
        string own = Assert.Single(c.NetworkSettings.Networks.Keys);
        await runtime.Client.Networks.DisconnectNetworkAsync(own, new global::Docker.DotNet.Models.NetworkDisconnectParameters { Container = c.ID, Force = true });
        await runtime.Client.Networks.DeleteNetworkAsync(own);
        await runtime.Client.Networks.ConnectNetworkAsync("bridge", new global::Docker.DotNet.Models.NetworkConnectParameters { Container = c.ID });

        var report = await NewRuntime().PrepareHostAsync(Timeout());
        output.WriteLine(report.ToString());
        Assert.True(report.VmsMoved >= 1);
        c = await runtime.Client.Containers.InspectContainerAsync(DockerVmRuntime.ContainerName(vm));
        string now = Assert.Single(c.NetworkSettings.Networks.Keys);
        Assert.StartsWith(runtime.Firewall.InterfacePrefix, now);
        var address = await runtime.GetAddressAsync(vm, Timeout());
        Assert.True(address != null && IPNetwork.Parse(new HostNetworkOptions().Pool).Contains(address), $"address {address}");
    }

    [DockerFact]
    public async Task Start_GivesAnOlderVm_TheOnFailureRestartPolicy()
    {
        var runtime = NewRuntime();
        string vm = await CreateVmAsync(runtime);
        // As a VM made while the policy was unless-stopped (which would start a guest's power-off again).
        var name = DockerVmRuntime.ContainerName(vm);
        await runtime.Client.Containers.UpdateContainerAsync(name, new global::Docker.DotNet.Models.ContainerUpdateParameters
        {
            RestartPolicy = new global::Docker.DotNet.Models.RestartPolicy { Name = global::Docker.DotNet.Models.RestartPolicyKind.UnlessStopped },
        });
        await NewRuntime().PrepareHostAsync(Timeout());
        var c = await runtime.Client.Containers.InspectContainerAsync(name);
        Assert.Equal(global::Docker.DotNet.Models.RestartPolicyKind.OnFailure, c.HostConfig.RestartPolicy.Name);
    }

    [DockerFact]
    public async Task Start_IsRefused_WhenTheRulesCannotBeInstalled_UnlessIsolationIsOff()
    {
        var broken = NewRuntime(o => o.VmNetwork.NftCommand = "/nonexistent/nft");
        var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => broken.PrepareHostAsync(Timeout()));
        Assert.Equal(DockerRuntimeErrors.IsolationUnavailable, e.Code);
        Assert.Contains("Isolation=Off", e.Message);
        await Assert.ThrowsAsync<DockerRuntimeException>(() => CreateVmAsync(broken));

        var off = NewRuntime(o => { o.VmNetwork.NftCommand = "/nonexistent/nft"; o.VmNetwork.Isolation = IsolationMode.Off; });
        Assert.False((await off.PrepareHostAsync(Timeout())).IsolationEnforced);
    }

    [DockerFact]
    public async Task Rules_AreReinstalled_WhenSomeoneDeletesThem()
    {
        var runtime = NewRuntime();
        await runtime.PrepareHostAsync(Timeout());
        Assert.Null(await runtime.Firewall.VerifyAsync(Timeout()));
        await runtime.Firewall.RemoveAsync(Timeout());
        Assert.NotNull(await runtime.Firewall.VerifyAsync(Timeout()));
        string vm = await CreateVmAsync(runtime);
        Assert.Null(await runtime.Firewall.VerifyAsync(Timeout()));
        Assert.NotNull(await runtime.GetAddressAsync(vm, Timeout()));
    }
}
