using Docker.DotNet;
using Xunit;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// Whether QEMU, the VM kernel (scripts/build-vm-kernel.sh), the engine with warren/busybox:1 and the agent are there.
/// Outside CI a test needing them is skipped when one is missing; under CI=true it fails instead (never a silent skip).
/// </summary>
internal static class MicroVmTestEnvironment
{
    public const string BusyboxImage = "warren/busybox:1";

    private static readonly Lazy<string?> s_unavailableReason = new(Probe);

    public static bool IsCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static string? UnavailableReason => s_unavailableReason.Value;

    private static string? Probe()
    {
        try
        {
            if (!OnPath("qemu-system-x86_64") || !OnPath("qemu-img") || !OnPath("mke2fs"))
                return "qemu-system-x86_64, qemu-img or mke2fs missing (run scripts/prereqs.sh)";
            MicroVmRuntime.ResolveKernelDirectory(null);
            string? host = Environment.GetEnvironmentVariable("DOCKER_HOST");
            using var client = new DockerClientConfiguration(string.IsNullOrEmpty(host) ? new Uri("unix:///var/run/docker.sock") : new Uri(host)).CreateClient();
            client.Images.InspectImageAsync(BusyboxImage).Wait(TimeSpan.FromSeconds(10));
            using var docker = new Warren.Runtime.Docker.DockerVmRuntime();
            _ = docker.AgentPath;
            return null;
        }
        catch (Exception e)
        {
            return $"microVM prerequisites missing (scripts/prereqs.sh, scripts/build-images.sh): {e.GetBaseException().Message}";
        }
    }

    private static bool OnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(dir => File.Exists(Path.Combine(dir, tool)));

    /// <summary>
    /// The test process's installation: its own packet-filter table and tap prefix (removed when the process ends), and
    /// its own VM subnet pool, so parallel test processes and a daemon on the same host never share either.
    /// </summary>
    public static string Instance => "mvtest-" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);

    public static string Pool => $"10.236.{Environment.ProcessId % 256}.0/24";

    public static MicroVmRuntimeOptions Options(string dataDirectory, TimeSpan? bootTimeout = null)
    {
        _ = s_cleanup.Value;
        var options = new MicroVmRuntimeOptions
        {
            DataDirectory = dataDirectory,
            ConsoleLog = true,
            StopTimeout = TimeSpan.FromSeconds(20),
            BootTimeout = bootTimeout ?? TimeSpan.FromSeconds(60),
        };
        options.Docker.Instance = Instance;
        options.Docker.VmNetwork.Pool = Pool;
        // Short: tests make and remove VMs quickly; the quarantine itself is the Docker runtime tests' subject.
        options.Docker.VmNetwork.AddressQuarantineSeconds = 5;
        return options;
    }

    private static readonly Lazy<bool> s_cleanup = new(() =>
    {
        var network = new Warren.Runtime.HostNetwork.HostNetworkOptions { Pool = Pool };
        var firewall = new Warren.Runtime.HostNetwork.VmFirewall(network, Instance);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var tap in Warren.Runtime.HostNetwork.VmTap.List(firewall.InterfacePrefix))
                try { Warren.Runtime.HostNetwork.VmTap.DeleteAsync(tap, CancellationToken.None).Wait(TimeSpan.FromSeconds(10)); }
                catch (AggregateException) { }
            try
            {
                string cgroups = Path.Combine("/sys/fs/cgroup/cpu", firewall.TableName);
                if (Directory.Exists(cgroups))
                {
                    foreach (var dir in Directory.EnumerateDirectories(cgroups)) { try { Directory.Delete(dir); } catch (IOException) { } }
                    try { Directory.Delete(cgroups); } catch (IOException) { }
                }
                firewall.RemoveAsync(CancellationToken.None).Wait(TimeSpan.FromSeconds(10));
                Warren.Runtime.HostNetwork.VmForwarding.RemoveAsync(firewall.InterfacePrefix).Wait(TimeSpan.FromSeconds(10));
            }
            catch (AggregateException) { }
        };
        return true;
    });

    public static void Require()
    {
        if (UnavailableReason != null) Assert.Fail(UnavailableReason);
        SweepOrphans();
    }

    /// <summary>An image scripts/build-images.sh builds (besides busybox): fails when missing, like the rest of the environment.</summary>
    public static void RequireImage(string image)
    {
        string? host = Environment.GetEnvironmentVariable("DOCKER_HOST");
        using var client = new DockerClientConfiguration(string.IsNullOrEmpty(host) ? new Uri("unix:///var/run/docker.sock") : new Uri(host)).CreateClient();
        try { client.Images.InspectImageAsync(image).Wait(TimeSpan.FromSeconds(10)); }
        catch (Exception e) { Assert.Fail($"{image} missing (run scripts/build-images.sh): {e.GetBaseException().Message}"); }
    }

    /// <summary>Prefix of the tests' temporary data directories (<see cref="NewDataDirectory"/>).</summary>
    private static readonly string s_dataPrefix = Path.Combine(Path.GetTempPath(), "wmv-");

    public static string NewDataDirectory() => s_dataPrefix + Guid.NewGuid().ToString("N")[..8];

    private static int s_swept;

    /// <summary>
    /// QEMU is daemonized, so a test run that crashed leaves its VMs running: once per run, kill the test VMs
    /// (<c>-name warren-wt-…</c>) whose data directory is gone. Only processes of this suite match both.
    /// </summary>
    private static void SweepOrphans()
    {
        if (Interlocked.Exchange(ref s_swept, 1) != 0) return;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string[] argv;
            try { argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0'); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            int name = Array.IndexOf(argv, "-name"), pidFile = Array.IndexOf(argv, "-pidfile");
            if (name < 0 || pidFile < 0 || name + 1 >= argv.Length || pidFile + 1 >= argv.Length) continue;
            if (!argv[name + 1].StartsWith("warren-wt-", StringComparison.Ordinal) || !argv[pidFile + 1].StartsWith(s_dataPrefix, StringComparison.Ordinal)) continue;
            if (Directory.Exists(Path.GetDirectoryName(argv[pidFile + 1]))) continue;
            try { System.Diagnostics.Process.GetProcessById(pid).Kill(); }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException) { }
        }
    }
}

/// <summary>A test that boots real microVMs: skipped without QEMU/kernel/engine, except under CI=true, where it fails.</summary>
public sealed class MicroVmFactAttribute : FactAttribute
{
    public MicroVmFactAttribute()
    {
        if (!MicroVmTestEnvironment.IsCi && MicroVmTestEnvironment.UnavailableReason is { } reason) Skip = reason;
    }
}
