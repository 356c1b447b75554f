using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon with <c>Warren:Runtime=microvm</c> (QEMU microVMs; emulated CPU where there is no usable KVM), one slot, and
/// VMs of 1 vCPU and 1 GiB so that a Docker engine under emulation fits a 2-core machine.
/// </summary>
public sealed class MicroVmDaemonFixture : DaemonFixture, IAsyncLifetime
{
    public const string Slot = "127.0.1.1";

    protected override Dictionary<string, string> Config => DaemonConfig(Slot, defaultMemoryBytes: 1L << 30, defaultDiskBytes: 8L << 30);

    /// <summary>
    /// A microVM daemon's settings: the runtime's default networking (a tap per VM behind the installation's packet
    /// filter, isolation on), 1 vCPU VMs of the given default size, one slot on <paramref name="slot"/>.
    /// </summary>
    internal static Dictionary<string, string> DaemonConfig(string slot, long defaultMemoryBytes = 256L << 20, long defaultDiskBytes = 1L << 30) => new()
    {
        ["Warren:Runtime"] = "microvm",
        ["Warren:Resources:DefaultCpus"] = "1",
        ["Warren:Resources:MinCpus"] = "1",
        ["Warren:Resources:MinMemoryBytes"] = (256L << 20).ToString(),
        ["Warren:Resources:DefaultMemoryBytes"] = defaultMemoryBytes.ToString(),
        ["Warren:Resources:MinDiskBytes"] = (1L << 30).ToString(),
        ["Warren:Resources:DefaultDiskBytes"] = defaultDiskBytes.ToString(),
        ["Warren:Slots:0:Name"] = "s001",
        ["Warren:Slots:0:PublicIp"] = slot,
        ["Warren:Slots:0:LocalIp"] = slot,
    };

    /// <summary>
    /// QEMU daemonizes, so it outlives the daemon: after the usual teardown, every QEMU whose pid file lies under this
    /// daemon's data directory is killed by pid (the VMs a failed test left behind).
    /// </summary>
    async Task IAsyncLifetime.DisposeAsync()
    {
        string data = Daemon.DataDirectory;
        await DisposeAsync();
        foreach (int pid in QemuUnder(data))
            await ProcessRunner.RunAsync("kill", ["-KILL", pid.ToString()]);
    }

    internal static IEnumerable<int> QemuUnder(string dataDirectory)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string[] argv;
            try { argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0'); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            int pidFile = Array.IndexOf(argv, "-pidfile");
            if (pidFile >= 0 && pidFile + 1 < argv.Length && argv[pidFile + 1].StartsWith(dataDirectory + "/", StringComparison.Ordinal))
                yield return pid;
        }
    }
}

/// <summary>
/// exe.dev's "Pattern B" deployment, end to end under the microVM runtime with real clients only: a VM from the default
/// image (Docker Engine and Compose v2, warren/dind:1), then over real <c>ssh</c> into it: <c>sudo docker login</c> to a
/// private registry with basic auth (password on stdin), a compose file under /data, <c>docker compose pull</c> and
/// <c>up -d</c>, the app answering through Warren's HTTPS proxy, <c>docker ps/logs</c>, <c>docker compose ps/logs</c>;
/// then <c>restart</c> and the app is back with its /data. The only test that runs an engine inside a VM: it takes
/// minutes under emulation.
/// <para>
/// The registry is Debian's docker-registry with TLS (a CA made here, installed in the VM under /etc/docker/certs.d as a
/// person would for a private registry). The image is pushed to it on the host's 127.0.0.1; the VM, on its tap behind
/// the packet filter, pulls from a second server of the same content in a network namespace the test makes
/// (<see cref="OutsideNetwork"/>: an address of TEST-NET-2, RFC 5737, routed through a veth pair), i.e. a destination
/// outside the host, reached the way a production registry is (forwarded, masqueraded), with no Warren configuration
/// and none of the isolation rules changed.
/// </para>
/// </summary>
public sealed class PatternBTests(MicroVmDaemonFixture fixture, ITestOutputHelper output) : IClassFixture<MicroVmDaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string Vm = "compose-app";
    private const string Slot = MicroVmDaemonFixture.Slot;
    private const string DefaultImage = "warren/dind:1";

    /// <summary>The port of the registry outside the host (in the test's network namespace).</summary>
    private const int OutsidePort = 5000;

    /// <summary>Bounds on waiting for the engine inside the VM (cold dockerd under emulation: about 20 s measured) and for the app.</summary>
    private const int EngineWaitSeconds = 300;
    private const int AppAttempts = 120;
    private static readonly TimeSpan AppPause = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan LongCommand = TimeSpan.FromMinutes(6);

    [Fact]
    public async Task ComposeApp_FromAPrivateRegistry_ServesThroughTheProxy_AndSurvivesRestart()
    {
        RequireMicroVmPrerequisites();
        string dir = Directory.CreateTempSubdirectory("warren-e2e-patternb-").FullName;
        await using var outside = await OutsideNetwork.CreateAsync();
        var (caPem, certPath, keyPath) = MakeRegistryCertificate(dir, outside.Address);
        await using var registry = await RegistryServer.StartAsync("deployer", (certPath, keyPath));
        string registryHost = $"{outside.Address}:{OutsidePort}";
        // Pushed on the host's loopback (the engine trusts 127.0.0.0/8), served to the VM from outside the host.
        string pushed = await registry.PushAsync("warren/busybox:1", "pattern-b/app", "1");
        await outside.ServeRegistryAsync(registry, OutsidePort);
        string image = $"{registryHost}/pattern-b/app:1";
        output.WriteLine($"pushed {pushed}; the VM pulls {image}");

        var owner = await Daemon.CreateUserAsync("compose-owner@example.com");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            var created = await owner.ControlAsync($"new --name={Vm} --json", timeout: LongCommand);
            Assert.True(created.ExitCode == 0, created.ToString());
            var listed = await owner.ControlAsync("ls --json");
            Assert.True(listed.ExitCode == 0 && listed.Stdout.Contains(DefaultImage), listed.ToString());
            output.WriteLine($"new: {clock.Elapsed.TotalSeconds:F0} s");

            // The engine is the image's own command (dockerd starts at boot): wait for it, bounded.
            await InVm($"for i in $(seq 1 {EngineWaitSeconds}); do sudo docker info >/dev/null 2>&1 && break; sleep 1; done; "
                + "sudo docker info --format '{{.Driver}} {{.CgroupVersion}}' && docker compose version", "overlay2 2", LongCommand);
            output.WriteLine($"engine ready: {clock.Elapsed.TotalSeconds:F0} s");

            // Trust the private CA for this registry only (Docker's docs: "Verify repository client with certificates").
            await InVm($"sudo mkdir -p /etc/docker/certs.d/{registryHost} && sudo tee /etc/docker/certs.d/{registryHost}/ca.crt >/dev/null && echo ca-ok",
                "ca-ok", stdin: caPem);
            // A wrong password is refused; the right one comes on stdin, as in exe.dev's deploy script.
            var wrong = await owner.VmAsync(Slot, $"sudo docker login {registryHost} -u deployer --password-stdin", stdin: "not-the-password\n", user: "vm+" + Vm);
            Assert.True(wrong.ExitCode != 0, wrong.ToString());
            await InVm($"sudo docker login {registryHost} -u deployer --password-stdin", "Login Succeeded", stdin: registry.Password + "\n");

            string compose = $$"""
                services:
                  app:
                    image: {{image}}
                    container_name: pattern-b-app
                    restart: always
                    ports:
                      - "8080:8080"
                    volumes:
                      - /data:/data
                    command: ["httpd", "-f", "-v", "-p", "8080", "-h", "/data/www"]
                """;
            await InVm("sudo mkdir -p /data/www && echo 'pattern-b-ok from /data' | sudo tee /data/www/index.html >/dev/null"
                + " && sudo tee /data/app.compose.yaml >/dev/null && echo written", "written", stdin: compose + "\n");
            await InVm("sudo docker compose -f /data/app.compose.yaml pull 2>&1 && echo pulled", "pulled", LongCommand);
            await InVm("sudo docker compose -f /data/app.compose.yaml up -d 2>&1 && echo up", "up", LongCommand);
            output.WriteLine($"compose up: {clock.Elapsed.TotalSeconds:F0} s");

            // Through Warren's HTTPS proxy on the VM's port 8080, as its owner (an API token for this VM).
            var port = await owner.ControlAsync($"share port {Vm} 8080 --json");
            Assert.True(port.ExitCode == 0, port.ToString());
            var key = await owner.ControlAsync($"ssh-key generate-api-key --vm={Vm} --label=pattern-b --json");
            Assert.True(key.ExitCode == 0, key.ToString());
            string token = JsonDocument.Parse(key.Stdout).RootElement.GetProperty("token").GetString()!;
            await AppAnswersAsync(token);

            var anonymous = await WebSupport.CurlAsync(Daemon, $"{Vm}.box.localhost", Daemon.ControlAddress, "/");
            Assert.True(anonymous.Status != 200 && !anonymous.Body.Contains("pattern-b-ok"), anonymous.Raw);

            // The login user is in the docker group: plain `docker` works too.
            await InVm("docker ps --format '{{.Names}} {{.Image}} {{.Status}}'", "pattern-b-app " + image);
            // busybox httpd -v logs each request as "[ADDRESS]:PORT: response:STATUS".
            await InVm("sudo docker logs pattern-b-app 2>&1", "response:200");
            await InVm("sudo docker compose -f /data/app.compose.yaml ps", "pattern-b-app");
            await InVm("sudo docker compose -f /data/app.compose.yaml logs --no-color 2>&1", "response:200");

            var restart = await owner.ControlAsync($"restart {Vm} --json", timeout: LongCommand);
            Assert.True(restart.ExitCode == 0, restart.ToString());
            output.WriteLine($"restarted: {clock.Elapsed.TotalSeconds:F0} s");
            await InVm($"for i in $(seq 1 {EngineWaitSeconds}); do sudo docker info >/dev/null 2>&1 && break; sleep 1; done; cat /data/www/index.html",
                "pattern-b-ok", LongCommand);
            // restart: always brings the container back when dockerd starts; its content is still /data's.
            await AppAnswersAsync(token);
            await InVm("docker ps --format '{{.Names}}'", "pattern-b-app");
            output.WriteLine($"back after restart: {clock.Elapsed.TotalSeconds:F0} s");

            // The registry password went over stdin only: never into the daemon's log.
            Assert.DoesNotContain(registry.Password, Daemon.Log);
        }
        catch
        {
            output.WriteLine(Daemon.Log.Length > 8000 ? Daemon.Log[^8000..] : Daemon.Log);
            throw;
        }
        finally
        {
            var removed = await owner.ControlAsync($"rm {Vm} --json", timeout: LongCommand);
            output.WriteLine($"rm: exit {removed.ExitCode}; total {clock.Elapsed.TotalSeconds:F0} s");
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }

        async Task InVm(string command, string expected, TimeSpan? timeout = null, string? stdin = null)
        {
            var r = await owner.VmAsync(Slot, command, stdin, user: "vm+" + Vm, timeout: timeout);
            Assert.True(r.ExitCode == 0 && r.Stdout.Contains(expected), $"{command}\nexpected '{expected}'\n{r}");
            // The VM's own name resolves (sudo would warn on every call otherwise).
            Assert.DoesNotContain("unable to resolve host", r.Stdout + r.Stderr);
        }
    }

    private async Task AppAnswersAsync(string token)
    {
        WebSupport.HttpResult? last = null;
        for (int i = 0; i < AppAttempts; i++)
        {
            last = await WebSupport.CurlAsync(Daemon, $"{Vm}.box.localhost", Daemon.ControlAddress, "/",
                "-H", "X-Exedev-Authorization: Bearer " + token);
            if (last.Status == 200 && last.Body.Contains("pattern-b-ok from /data")) return;
            await Task.Delay(AppPause);
        }
        Assert.Fail("the app never answered through the proxy; last response:\n" + last?.Raw);
    }

    /// <summary>What the test needs besides the daemon; missing pieces fail the test (never a skip, with or without CI).</summary>
    private static void RequireMicroVmPrerequisites()
    {
        ProcessRunner.Require("qemu-system-x86_64");
        ProcessRunner.Require("qemu-img");
        string kernel = Path.Combine(WarrenDaemon.RepoRoot, "var", "vm-kernel", "current", "vmlinuz");
        Assert.True(File.Exists(kernel), $"{kernel} missing: run scripts/build-images.sh (scripts/build-vm-kernel.sh)");
        var inspect = ProcessRunner.RunAsync("docker", ["image", "inspect", "-f", "{{.Id}}", DefaultImage]).GetAwaiter().GetResult();
        Assert.True(inspect.ExitCode == 0, $"{DefaultImage} missing: run scripts/build-images.sh\n{inspect}");
    }

    /// <summary>
    /// A CA and a registry certificate it signs, for the registry's address as the VM and the host see it (IP SANs).
    /// Returns the CA's PEM (for the VM) and the paths of the registry's certificate chain and key.
    /// </summary>
    private static (string CaPem, string CertificatePath, string KeyPath) MakeRegistryCertificate(string dir, string outsideAddress)
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Pattern B test registry CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        var now = DateTimeOffset.UtcNow;
        using var ca = caRequest.CreateSelfSigned(now.AddMinutes(-5), now.AddDays(1));

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=registry", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(System.Net.IPAddress.Parse(outsideAddress));
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var leaf = request.Create(ca, now.AddMinutes(-5), now.AddHours(23), RandomNumberGenerator.GetBytes(12));

        string certPath = Path.Combine(dir, "registry.crt"), keyPath = Path.Combine(dir, "registry.key");
        File.WriteAllText(certPath, leaf.ExportCertificatePem() + "\n" + ca.ExportCertificatePem() + "\n");
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem() + "\n");
        File.SetUnixFileMode(keyPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return (ca.ExportCertificatePem() + "\n", certPath, keyPath);
    }
}

/// <summary>
/// A destination outside the host for VMs to reach: a network namespace joined to the host by a veth pair on a random
/// /30 of TEST-NET-2 (198.51.100.0/24, RFC 5737: documentation addresses, routed nowhere, in none of the VM firewall's
/// deny ranges), with its default route back through the host. What VMs send there is forwarded and masqueraded by the
/// host like traffic to the internet. Removed (namespace, both veth ends, processes in it) on dispose.
/// </summary>
public sealed class OutsideNetwork : IAsyncDisposable
{
    private readonly string _namespace;
    private readonly List<System.Diagnostics.Process> _processes = [];

    /// <summary>The namespace's address (the host's end is one below it).</summary>
    public string Address { get; }

    private OutsideNetwork(string ns, string address)
    {
        _namespace = ns;
        Address = address;
    }

    public static async Task<OutsideNetwork> CreateAsync()
    {
        ProcessRunner.Require("ip");
        string id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
        int block = RandomNumberGenerator.GetInt32(0, 64) * 4;
        string ns = "wpb-" + id, hostEnd = "wpbh" + id, nsEnd = "wpbn" + id;
        var outside = new OutsideNetwork(ns, $"198.51.100.{block + 2}");
        try
        {
            foreach (var args in new[]
            {
                new[] { "netns", "add", ns },
                ["link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd],
                ["link", "set", nsEnd, "netns", ns],
                ["addr", "add", $"198.51.100.{block + 1}/30", "dev", hostEnd],
                ["link", "set", hostEnd, "up"],
                ["-n", ns, "addr", "add", $"{outside.Address}/30", "dev", nsEnd],
                ["-n", ns, "link", "set", nsEnd, "up"],
                ["-n", ns, "link", "set", "lo", "up"],
                ["-n", ns, "route", "add", "default", "via", $"198.51.100.{block + 1}"],
            })
            {
                var r = await ProcessRunner.RunAsync("ip", args);
                if (r.ExitCode != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)}: {r}");
            }
            return outside;
        }
        catch
        {
            await outside.DisposeAsync();
            throw;
        }
    }

    /// <summary>A second docker-registry of <paramref name="registry"/>'s content (same storage, users, TLS) on <see cref="Address"/>:<paramref name="port"/> in the namespace.</summary>
    public async Task ServeRegistryAsync(RegistryServer registry, int port)
    {
        string config = registry.ConfigPath + ".outside.yml";
        var lines = File.ReadAllLines(registry.ConfigPath)
            .Select(l => l.TrimStart().StartsWith("addr:", StringComparison.Ordinal) ? l[..l.IndexOf("addr:", StringComparison.Ordinal)] + $"addr: {Address}:{port}" : l);
        File.WriteAllLines(config, lines);
        var psi = new System.Diagnostics.ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "netns", "exec", _namespace, RegistryServer.RegistryBinary, "serve", config }) psi.ArgumentList.Add(a);
        var process = System.Diagnostics.Process.Start(psi)!;
        _processes.Add(process);
        var stderr = process.StandardError.ReadToEndAsync();
        for (int i = 0; i < 150; i++)
        {
            if (process.HasExited) throw new InvalidOperationException("the outside registry exited: " + await stderr);
            try
            {
                using var probe = new System.Net.Sockets.TcpClient();
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                await probe.ConnectAsync(System.Net.IPAddress.Parse(Address), port, cts.Token);
                return;
            }
            catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException)
            {
                await Task.Delay(100);
            }
        }
        throw new InvalidOperationException($"the outside registry did not listen on {Address}:{port}");
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var p in _processes)
        {
            try { if (!p.HasExited) { p.Kill(entireProcessTree: true); await p.WaitForExitAsync(); } }
            catch (InvalidOperationException) { }
            p.Dispose();
        }
        // Deleting the namespace removes its veth end, and with it the host's.
        await ProcessRunner.RunAsync("ip", ["netns", "del", _namespace]);
    }
}
