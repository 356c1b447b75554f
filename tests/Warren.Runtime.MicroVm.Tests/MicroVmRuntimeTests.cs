using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Warren.Platform.Runtime;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// One runtime over a temporary data directory, and one booted busybox VM (QEMU TCG here, KVM where /dev/kvm is usable)
/// serving HTTP on 8080 from its own command, shared by the session tests: a boot costs seconds under emulation.
/// </summary>
public sealed class BusyboxMicroVm : IAsyncLifetime
{
    public const int HttpPort = 8080;
    public const string Page = "microvm-httpd-ok";

    private readonly string _dataDirectory = MicroVmTestEnvironment.NewDataDirectory();

    public MicroVmRuntime Runtime { get; private set; } = null!;
    public string VmId { get; } = "wt-" + Guid.NewGuid().ToString("N")[..12];
    public string Name { get; } = "box-" + Guid.NewGuid().ToString("N")[..6];

    /// <summary>QEMU start to the first command's answer (boot, agent, first channel).</summary>
    public TimeSpan BootToAgent { get; private set; }
    public TimeSpan Create { get; private set; }

    public static MicroVmRuntime NewRuntime(string dataDirectory, TimeSpan? bootTimeout = null) =>
        new(MicroVmTestEnvironment.Options(dataDirectory, bootTimeout));

    public static VmSpec Spec(string vmId, string name, IReadOnlyList<string>? command = null, string? setup = null) =>
        new(vmId, name, MicroVmTestEnvironment.BusyboxImage, new VmResources(1, 256L * 1024 * 1024, 512L * 1024 * 1024),
            new Dictionary<string, string> { ["WARREN_TEST"] = "1" }, command == null ? CommandMode.None : CommandMode.Custom, command, setup, null);

    public async Task InitializeAsync()
    {
        if (MicroVmTestEnvironment.UnavailableReason != null) return;
        MicroVmTestEnvironment.Require();
        Runtime = NewRuntime(_dataDirectory);
        var clock = Stopwatch.StartNew();
        try
        {
            await Runtime.CreateAsync(Spec(VmId, Name, ["httpd", "-f", "-p", HttpPort.ToString(), "-h", "/www"],
                $"mkdir -p /www && echo {Page} > /www/index.html"), MicroVmRuntimeTests.Timeout());
            Create = clock.Elapsed;
            clock.Restart();
            await MicroVmRuntimeTests.RunAsync(Runtime, VmId, "true");
            BootToAgent = clock.Elapsed;
        }
        catch (Exception e)
        {
            // The guest's console is the only account of a boot that went wrong.
            string log = ConsoleLog;
            throw new InvalidOperationException($"{e.Message}\n--- guest console (tail) ---\n{(log.Length > 4000 ? log[^4000..] : log)}", e);
        }
    }

    public async Task DisposeAsync()
    {
        if (Runtime == null) return;
        try { await Runtime.RemoveAsync(VmId, CancellationToken.None); }
        finally
        {
            await Runtime.DisposeAsync();
            Directory.Delete(_dataDirectory, recursive: true);
        }
    }

    public string ConsoleLog => File.Exists(Path.Combine(_dataDirectory, "vms", VmId, "console.log"))
        ? File.ReadAllText(Path.Combine(_dataDirectory, "vms", VmId, "console.log")) : "";
}

/// <summary>Sessions into a real microVM: exec, streams, exit codes, connect, the forwarded address, concurrency.</summary>
public sealed class MicroVmRuntimeTests(BusyboxMicroVm vm, ITestOutputHelper output) : IClassFixture<BusyboxMicroVm>
{
    /// <summary>Bound on any single wait (never asserted on: keeps a hung VM from hanging CI).</summary>
    private static readonly TimeSpan OperationTimeout = TimeSpan.FromMinutes(3);

    internal static CancellationToken Timeout() => new CancellationTokenSource(OperationTimeout).Token;

    internal static async Task<(ExitResult Exit, string Stdout, string Stderr)> RunAsync(IVmRuntime runtime, string vmId, params string[] command)
    {
        await using var p = await runtime.ExecAsync(vmId, new ExecSpec(command), Timeout());
        await p.CloseStandardInputAsync();
        var stdout = new StreamReader(p.StandardOutput).ReadToEndAsync();
        var stderr = p.StandardError is { } e ? new StreamReader(e).ReadToEndAsync() : Task.FromResult("");
        var exit = await p.Completion.WaitAsync(OperationTimeout);
        return (exit, await stdout, await stderr);
    }

    [MicroVmFact]
    public async Task Exec_ReportsOutputStreamsAndExitCode()
    {
        MicroVmTestEnvironment.Require();
        output.WriteLine($"create {vm.Create.TotalSeconds:F2} s, then first exec answered after {vm.BootToAgent.TotalSeconds:F2} s");
        var (exit, stdout, stderr) = await RunAsync(vm.Runtime, vm.VmId, "sh", "-c", "echo hello; echo oops >&2; exit 3");
        Assert.Equal(3, exit.ExitCode);
        Assert.Equal("hello\n", stdout);
        Assert.Equal("oops\n", stderr);
    }

    [MicroVmFact]
    public async Task Exec_SeesTheVmsKernelHostnameEnvAndDisks()
    {
        MicroVmTestEnvironment.Require();
        var (exit, stdout, _) = await RunAsync(vm.Runtime, vm.VmId, "sh", "-c",
            "uname -r; hostname; echo $WARREN_TEST; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep -c ' /data ' /proc/mounts; " +
            "modprobe overlay && grep -c overlay /proc/filesystems");
        Assert.Equal(0, exit.ExitCode);
        var lines = stdout.Split('\n');
        output.WriteLine(stdout);
        Assert.EndsWith("-cloud-amd64", lines[0]);           // its own kernel, not the host's
        Assert.Equal(vm.Name, lines[1]);
        Assert.Equal("1", lines[2]);
        Assert.StartsWith("/.warren/agent init --vm", lines[3]);
        Assert.Equal("1", lines[4]);
        Assert.Equal("1", lines[5]);                          // modules come from the shared kmods disk (dockerd needs overlay, bridge, nf_*)
    }

    [MicroVmFact]
    public async Task Exec_StdinReachesTheProcess_AndLargeTransfersKeepEveryByte()
    {
        MicroVmTestEnvironment.Require();
        // 1 MiB each way: several windows' worth on one channel, both directions at once.
        var input = new byte[1024 * 1024];
        new Random(7).NextBytes(input);
        await using var p = await vm.Runtime.ExecAsync(vm.VmId, new ExecSpec(["cat"]), Timeout());
        var reading = Task.Run(async () =>
        {
            var copy = new MemoryStream();
            await p.StandardOutput.CopyToAsync(copy);
            return copy.ToArray();
        });
        await p.StandardInput.WriteAsync(input);
        await p.CloseStandardInputAsync();
        var echoed = await reading.WaitAsync(OperationTimeout);
        var exit = await p.Completion.WaitAsync(OperationTimeout);
        Assert.Equal(0, exit.ExitCode);
        Assert.Equal(input.Length, echoed.Length);
        Assert.True(input.AsSpan().SequenceEqual(echoed));
    }

    [MicroVmFact]
    public async Task Exec_ManyAtOnce_OverOneChannelMultiplexer()
    {
        MicroVmTestEnvironment.Require();
        var runs = Enumerable.Range(0, 8).Select(i => RunAsync(vm.Runtime, vm.VmId, "sh", "-c", $"echo run-{i}; exit {i}")).ToList();
        var results = await Task.WhenAll(runs);
        for (int i = 0; i < results.Length; i++)
        {
            Assert.Equal(i, results[i].Exit.ExitCode);
            Assert.Equal($"run-{i}\n", results[i].Stdout);
        }
    }

    [MicroVmFact]
    public async Task Exec_Signal_EndsTheProcessWithExitSignal()
    {
        MicroVmTestEnvironment.Require();
        await using var p = await vm.Runtime.ExecAsync(vm.VmId, new ExecSpec(["sleep", "600"]), Timeout());
        await p.SignalAsync("TERM", Timeout());
        var exit = await p.Completion.WaitAsync(OperationTimeout);
        Assert.Equal("TERM", exit.Signal);
    }

    [MicroVmFact]
    public async Task Connect_ReachesAPortServedInsideTheVm()
    {
        MicroVmTestEnvironment.Require();
        var body = await PollAsync(async () =>
        {
            await using var stream = await vm.Runtime.ConnectAsync(vm.VmId, "127.0.0.1", BusyboxMicroVm.HttpPort, Timeout());
            return await GetPageAsync(stream);
        });
        Assert.Contains(BusyboxMicroVm.Page, body);
    }

    [MicroVmFact]
    public async Task Address_IsTheGuestsOwnOnItsTap_AndTheHostReachesItsPorts()
    {
        MicroVmTestEnvironment.Require();
        var address = await vm.Runtime.GetAddressAsync(vm.VmId, Timeout());
        Assert.NotNull(address);
        Assert.True(System.Net.IPNetwork.Parse(MicroVmTestEnvironment.Pool).Contains(address!), $"address {address}");
        // The guest configured that address itself (kernel command line → initramfs), on its own eth0.
        var (_, ip, _) = await RunAsync(vm.Runtime, vm.VmId, "ip", "-4", "addr", "show", "dev", "eth0");
        Assert.Contains(address + "/30", ip);
        var body = await PollAsync(async () =>
        {
            using var client = new TcpClient();
            await client.ConnectAsync(address!, BusyboxMicroVm.HttpPort, Timeout());
            return await GetPageAsync(client.GetStream());
        });
        Assert.Contains(BusyboxMicroVm.Page, body);
    }

    [MicroVmFact]
    public async Task Disk_IsTheSpecsSize_AndGrowsLive()
    {
        MicroVmTestEnvironment.Require();
        // df -k: 1 KiB blocks; ext4's own metadata takes a few percent.
        async Task<(long Root, long Data)> SizesAsync()
        {
            var (_, stdout, _) = await RunAsync(vm.Runtime, vm.VmId, "sh", "-c", "df -k / | tail -1 | awk '{print $2}'; df -k /data | tail -1 | awk '{print $2}'");
            var sizes = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
            return (sizes[0] * 1024, sizes[1] * 1024);
        }
        var before = await SizesAsync();
        // / is grown at first boot from the image's small filesystem, in the background once the agent answers
        // (VmGuest.PrepareInBackground): it may still be growing at the first exec.
        for (int i = 0; i < 300 && before.Root < 400L << 20; i++)
        {
            await Task.Delay(200);
            before = await SizesAsync();
        }
        Assert.InRange(before.Root, 400L << 20, 512L << 20);
        Assert.InRange(before.Data, 400L << 20, 512L << 20);
        var outcome = await vm.Runtime.ResizeAsync(vm.VmId, new VmResources(1, 256L << 20, 768L << 20), Timeout());
        Assert.True(outcome.DiskEnforced);
        var after = await SizesAsync();
        Assert.InRange(after.Root, 700L << 20, 768L << 20);
        Assert.InRange(after.Data, 700L << 20, 768L << 20);
        await Assert.ThrowsAsync<MicroVmException>(() => vm.Runtime.ResizeAsync(vm.VmId, new VmResources(1, 256L << 20, 512L << 20), Timeout()));
    }

    [MicroVmFact]
    public async Task Stats_ComeFromTheQemuProcess()
    {
        MicroVmTestEnvironment.Require();
        var sample = await vm.Runtime.SampleStatsAsync(vm.VmId, Timeout());
        Assert.NotNull(sample);
        output.WriteLine($"QEMU RSS {sample!.MemoryUsedBytes / (1024 * 1024)} MiB, disks {sample.DiskUsedBytes / 1024} KiB");
        Assert.True(sample.MemoryUsedBytes > 0);
        Assert.Equal(256L * 1024 * 1024, sample.MemoryLimitBytes);
    }

    [MicroVmFact]
    public async Task Stats_CountTheTapsTraffic_AndTheGuestsMemory()
    {
        MicroVmTestEnvironment.Require();
        var address = await vm.Runtime.GetAddressAsync(vm.VmId, Timeout());
        var body = await PollAsync(async () =>
        {
            using var client = new TcpClient();
            await client.ConnectAsync(address!, BusyboxMicroVm.HttpPort, Timeout());
            return await GetPageAsync(client.GetStream());
        });
        Assert.Contains(BusyboxMicroVm.Page, body);
        // The guest's balloon driver reports every 2 s; its figure is within the VM's memory, unlike QEMU's own RSS.
        VmStatsSample? sample = null;
        for (int i = 0; i < 100; i++)
        {
            sample = await vm.Runtime.SampleStatsAsync(vm.VmId, Timeout());
            if (sample is { MemoryUsedBytes: > 0 } s && s.MemoryUsedBytes < s.MemoryLimitBytes) break;
            await Task.Delay(100);
        }
        Assert.NotNull(sample);
        output.WriteLine($"guest memory in use {sample!.MemoryUsedBytes >> 20} MiB of {sample.MemoryLimitBytes >> 20}, rx {sample.NetworkRxBytes} B, tx {sample.NetworkTxBytes} B");
        Assert.InRange(sample.MemoryUsedBytes, 1, sample.MemoryLimitBytes - 1);
        Assert.True(sample.NetworkRxBytes > 0);
        Assert.True(sample.NetworkTxBytes > 0);
    }

    /// <summary>An HTTP/1.0 GET of / over <paramref name="stream"/>: the whole answer, head and body.</summary>
    private static async Task<string> GetPageAsync(Stream stream)
    {
        await stream.WriteAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.0\r\n\r\n"));
        return await new StreamReader(stream).ReadToEndAsync();
    }

    /// <summary>Retries until the server in the VM answers (bounded; httpd starts after the setup script).</summary>
    private static async Task<string> PollAsync(Func<Task<string>> attempt)
    {
        for (int i = 0; ; i++)
        {
            try
            {
                var result = await attempt();
                if (result.Length > 0) return result;
            }
            catch (Exception) when (i < 100) { }
            if (i >= 100) throw new TimeoutException("the server in the VM never answered");
            await Task.Delay(100);
        }
    }
}
