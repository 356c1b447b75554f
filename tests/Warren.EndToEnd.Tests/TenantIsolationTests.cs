using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Two accounts on one daemon: "owner" runs a private site in its VM, "intruder" has a VM of its own. Every attack
/// is made the way a tenant would make it: with the real OpenSSH client into the intruder's own VM, and busybox's
/// wget/nc from there. Small PID and disk limits keep the resource attacks short.
/// </summary>
public sealed class TenantIsolationFixture : DaemonFixture, IAsyncLifetime
{
    public const string OwnerVm = "owner-site";
    public const string IntruderVm = "intruder-box";
    public const string Secret = "owner-private-content";
    public const int SitePort = 8080;
    public const int PidsLimit = 256;
    public const long MinDiskBytes = 64L << 20;

    public SshUser Owner { get; private set; } = null!;
    public SshUser Intruder { get; private set; } = null!;

    protected override Dictionary<string, string> Config => new()
    {
        ["Warren:Docker:PidsLimit"] = PidsLimit.ToString(),
        ["Warren:Resources:MinDiskBytes"] = MinDiskBytes.ToString(),
    };

    public new async Task InitializeAsync()
    {
        await base.InitializeAsync();
        Owner = await Daemon.CreateUserAsync("owner@example.com");
        Intruder = await Daemon.CreateUserAsync("intruder@example.com");
        foreach (var (user, vm) in new[] { (Owner, OwnerVm), (Intruder, IntruderVm) })
        {
            var r = await user.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
            Assert.True(r.ExitCode == 0, r.ToString());
        }
        await WebSupport.StartHttpdAsync(Owner, OwnerVm, SitePort, "/data/www", Secret);
    }
}

public sealed class TenantIsolationTests(TenantIsolationFixture fixture) : IClassFixture<TenantIsolationFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private SshUser Owner => fixture.Owner;
    private SshUser Intruder => fixture.Intruder;
    private const string Slot = "127.0.1.1";

    private Task<ProcessResult> InOwnerVm(string command) => Owner.VmAsync(Slot, command, user: "vm+" + TenantIsolationFixture.OwnerVm);
    private Task<ProcessResult> InIntruderVm(string command) => Intruder.VmAsync(Slot, command, user: "vm+" + TenantIsolationFixture.IntruderVm);

    /// <summary>The VM's address on the host side, as an attacker scanning its subnet would find it.</summary>
    private async Task<string> VmAddressAsync(string vm)
    {
        var id = await VmIdAsync(vm);
        var r = await ProcessRunner.RunAsync("docker", ["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "warren-" + id]);
        Assert.True(r.ExitCode == 0, r.ToString());
        var ip = r.Stdout.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault();
        Assert.False(string.IsNullOrEmpty(ip), "no address for " + vm + ": " + r);
        return ip!;
    }

    private async Task<string> GatewayAsync(string vm)
    {
        var id = await VmIdAsync(vm);
        var r = await ProcessRunner.RunAsync("docker", ["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.Gateway}} {{end}}", "warren-" + id]);
        Assert.True(r.ExitCode == 0, r.ToString());
        return r.Stdout.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).First();
    }

    private async Task<string> VmIdAsync(string vm)
    {
        var user = vm == TenantIsolationFixture.OwnerVm ? Owner : Intruder;
        var ls = await user.ControlAsync("ls --json");
        Assert.True(ls.ExitCode == 0, ls.ToString());
        var db = Path.Combine(Daemon.DataDirectory, "warren.db");
        using var c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={db};Mode=ReadOnly;Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT id FROM vms WHERE name = $n";
        cmd.Parameters.AddWithValue("$n", vm);
        return (string)cmd.ExecuteScalar()!;
    }

    /// <summary>
    /// busybox wget bounded by timeout(1) (static busybox's own <c>wget -T</c> crashes); prints the body and FETCHED on
    /// success, BLOCKED otherwise.
    /// </summary>
    private static string Fetch(string ip, int port) =>
        $"if timeout 5 wget -qO- http://{ip}:{port}/ 2>/dev/null; then echo FETCHED; else echo BLOCKED; fi";

    [Fact]
    public async Task OwnVm_StillReachesItsOwnSite()
    {
        // The same probe the attacks use succeeds here, so a BLOCKED below means the network said no.
        var r = await InOwnerVm(Fetch("127.0.0.1", TenantIsolationFixture.SitePort));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains(TenantIsolationFixture.Secret, r.Stdout);
        Assert.Contains("FETCHED", r.Stdout);
    }

    [Fact]
    public async Task VmToVm_AnotherAccountsPrivateSite_IsUnreachable()
    {
        string ownerIp = await VmAddressAsync(TenantIsolationFixture.OwnerVm);
        var r = await InIntruderVm(Fetch(ownerIp, TenantIsolationFixture.SitePort));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.DoesNotContain(TenantIsolationFixture.Secret, r.Stdout);
        Assert.Contains("BLOCKED", r.Stdout);

        // The other direction too: the owner's VM cannot reach a listener in the intruder's VM.
        var listen = await InIntruderVm("(nc -l -p 9099 -e echo intruder-listener >/dev/null 2>&1 &) ; sleep 0.3; echo started");
        Assert.True(listen.ExitCode == 0, listen.ToString());
        string intruderIp = await VmAddressAsync(TenantIsolationFixture.IntruderVm);
        var back = await InOwnerVm($"if nc -w 3 {intruderIp} 9099 </dev/null | grep -q intruder-listener; then echo FETCHED; else echo BLOCKED; fi");
        Assert.Contains("BLOCKED", back.Stdout);
    }

    [Fact]
    public async Task VmToVm_RemoteForwardOnAllAddresses_IsUnreachableFromAnotherVm()
    {
        using var web = new OneLineServer("forwarded-secret");
        using var ssh = ForwardingTests.StartBackgroundSsh(Daemon, Owner,
            ["-N", "-o", "ExitOnForwardFailure=yes", "-R", $"0.0.0.0:9000:127.0.0.1:{web.Port}", "vm+" + TenantIsolationFixture.OwnerVm + "@" + Slot]);
        try
        {
            // The forward works for its owner (bounded wait for the listener to appear).
            bool up = false;
            for (int i = 0; i < 60 && !up; i++)
            {
                var probe = await InOwnerVm("nc -w 3 127.0.0.1 9000 </dev/null");
                up = probe.Stdout.Contains("forwarded-secret");
                if (!up) await Task.Delay(250);
            }
            Assert.True(up, "the owner's -R listener never answered inside its own VM");

            string ownerIp = await VmAddressAsync(TenantIsolationFixture.OwnerVm);
            var r = await InIntruderVm($"if nc -w 3 {ownerIp} 9000 </dev/null | grep -q forwarded-secret; then echo FETCHED; else echo BLOCKED; fi");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Contains("BLOCKED", r.Stdout);
        }
        finally
        {
            ssh.Kill();
            await ssh.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task VmToHost_ListenersOnTheGatewayAndHostAddresses_AreUnreachable()
    {
        // A host service listening on every address (as many daemons do) must not be reachable from a VM.
        using var host = new OneLineServer("host-service-secret", IPAddress.Any);
        string gateway = await GatewayAsync(TenantIsolationFixture.IntruderVm);
        foreach (var target in new[] { gateway }.Concat(HostAddresses()).Distinct())
        {
            var r = await InIntruderVm($"if nc -w 3 {target} {host.Port} </dev/null | grep -q host-service-secret; then echo FETCHED; else echo BLOCKED; fi");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.True(r.Stdout.Contains("BLOCKED"), $"host listener reachable from a VM at {target}: {r}");
        }
        // The owner's site is still served by the front door: the host reaches VM ports.
        string ownerIp = await VmAddressAsync(TenantIsolationFixture.OwnerVm);
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Parse(ownerIp), TenantIsolationFixture.SitePort);
        Assert.True(client.Connected);
    }

    /// <summary>The host's non-loopback IPv4 addresses (those a VM could aim at).</summary>
    private static IEnumerable<string> HostAddresses() =>
        System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(n => n.GetIPProperties().UnicastAddresses)
            .Select(a => a.Address)
            .Where(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a))
            .Select(a => a.ToString())
            .Take(8);

    [Fact]
    public async Task ForkBomb_IsBoundedByThePidLimit_AndOthersAreUnaffected()
    {
        // The bomb runs for at most 15 s inside the intruder's VM; the pid limit stops it growing.
        var bomb = await InIntruderVm("timeout -s KILL 15 sh -c 'b(){ b|b& }; b' >/dev/null 2>&1; echo done");
        Assert.True(bomb.ExitCode is 0 or 137 or 255, bomb.ToString());

        // The host, the daemon and the other account are fine meanwhile and afterwards.
        var ls = await Owner.ControlAsync("ls --json");
        Assert.True(ls.ExitCode == 0, ls.ToString());
        var site = await InOwnerVm(Fetch("127.0.0.1", TenantIsolationFixture.SitePort));
        Assert.Contains(TenantIsolationFixture.Secret, site.Stdout);

        // The intruder's VM never held more processes than its limit.
        var id = await VmIdAsync(TenantIsolationFixture.IntruderVm);
        var pids = await ProcessRunner.RunAsync("docker", ["inspect", "-f", "{{.HostConfig.PidsLimit}}", "warren-" + id]);
        Assert.Equal(TenantIsolationFixture.PidsLimit.ToString(), pids.Stdout.Trim());

        // A restart clears whatever the bomb left.
        var restart = await Intruder.ControlAsync("restart " + TenantIsolationFixture.IntruderVm);
        Assert.True(restart.ExitCode == 0, restart.ToString());
        var after = await WaitForVmAsync(() => InIntruderVm("echo alive"));
        Assert.Contains("alive", after.Stdout);
    }

    [Fact]
    public async Task RawSocketsAndDeviceNodes_AreOutsideTheBoundingSet_SoNotEvenRootGetsThem()
    {
        // CapBnd bounds what any process in the VM, root or setuid, can ever hold (capabilities(7)).
        var r = await InIntruderVm("grep CapBnd /proc/self/status; ping -c 1 -W 2 127.0.0.1 >/dev/null 2>&1 && echo RAW || echo NORAW");
        Assert.True(r.ExitCode == 0, r.ToString());
        var hex = r.Stdout.Split('\n')[0].Split('\t', ' ').Last(t => t.Length > 0);
        ulong bounding = ulong.Parse(hex, System.Globalization.NumberStyles.HexNumber);
        const int CapMknod = 27, CapNetRaw = 13;
        Assert.Equal(0UL, bounding & (1UL << CapNetRaw));
        Assert.Equal(0UL, bounding & (1UL << CapMknod));
        Assert.Contains("NORAW", r.Stdout);
    }

    [Fact]
    public async Task Disk_IsEnforcedAtTheSizeGiven_AndGrows()
    {
        const string vm = "disk-box";
        var created = await Intruder.ControlAsync($"new --name={vm} --image=warren/busybox:1 --disk=64MB --json");
        Assert.True(created.ExitCode == 0, created.ToString());
        try
        {
            Task<ProcessResult> InVm(string c) => Intruder.VmAsync(Slot, c, user: "vm+" + vm);
            var fill = await InVm("dd if=/dev/zero of=/data/fill bs=1M count=200 2>&1; echo rc=$?");
            Assert.Contains("No space left on device", fill.Stdout);
            var df = await InVm("df -k /data | tail -1");
            Assert.True(df.ExitCode == 0, df.ToString());
            long sizeKb = long.Parse(df.Stdout.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            Assert.InRange(sizeKb, 40 * 1024, 70 * 1024);

            var grow = await Intruder.ControlAsync($"resize {vm} --disk=128MB");
            Assert.True(grow.ExitCode == 0, grow.ToString());
            var more = await InVm("dd if=/dev/zero of=/data/more bs=1M count=40 2>&1; echo rc=$?");
            Assert.Contains("rc=0", more.Stdout);
        }
        finally
        {
            await Intruder.ControlAsync($"rm {vm}");
        }
    }

    private static async Task<ProcessResult> WaitForVmAsync(Func<Task<ProcessResult>> probe)
    {
        ProcessResult last = null!;
        for (int i = 0; i < 60; i++)
        {
            last = await probe();
            if (last.ExitCode == 0) return last;
            await Task.Delay(500);
        }
        return last;
    }

    /// <summary>A TCP server that writes one line to every connection and closes it.</summary>
    private sealed class OneLineServer : IDisposable
    {
        private readonly TcpListener _listener;
        private readonly CancellationTokenSource _stop = new();
        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public OneLineServer(string line, IPAddress? address = null)
        {
            _listener = new TcpListener(address ?? IPAddress.Loopback, 0);
            _listener.Start();
            var bytes = Encoding.ASCII.GetBytes(line + "\n");
            _ = Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    TcpClient c;
                    try { c = await _listener.AcceptTcpClientAsync(_stop.Token); }
                    catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { return; }
                    using (c)
                    {
                        try { await c.GetStream().WriteAsync(bytes); } catch (IOException) { }
                    }
                }
            });
        }

        public void Dispose()
        {
            _stop.Cancel();
            _listener.Stop();
        }
    }
}
