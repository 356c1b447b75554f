using Docker.DotNet;
using Xunit;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// Whether the engine and the locally built test images are there. Outside CI a test needing Docker is
/// skipped when the engine is missing; under CI=true it fails instead (never a silent skip).
/// </summary>
internal static class DockerTestEnvironment
{
    /// <summary>Label on everything the tests create, so leftovers of a crashed run can be found and removed.</summary>
    public const string TestLabel = "warren.test";
    public const string BusyboxImage = "warren/busybox:1";

    private static readonly Lazy<string?> s_unavailableReason = new(Probe);

    public static bool IsCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    /// <summary>Null when usable; otherwise why not.</summary>
    public static string? UnavailableReason => s_unavailableReason.Value;

    private static string? Probe()
    {
        try
        {
            using var client = new DockerClientConfiguration(EngineUri()).CreateClient();
            client.System.PingAsync().Wait(TimeSpan.FromSeconds(10));
            client.Images.InspectImageAsync(BusyboxImage).Wait(TimeSpan.FromSeconds(10));
            DockerVmRuntime.ResolveAgentPath(null);
            return null;
        }
        catch (Exception e)
        {
            return $"Docker engine, {BusyboxImage} or the agent missing (run scripts/prereqs.sh and scripts/build-images.sh): {e.GetBaseException().Message}";
        }
    }

    public static Uri EngineUri()
    {
        string? host = Environment.GetEnvironmentVariable("DOCKER_HOST");
        return string.IsNullOrEmpty(host) ? new Uri("unix:///var/run/docker.sock") : new Uri(host);
    }

    /// <summary>Call first in every Docker test: fails under CI when Docker is missing.</summary>
    public static void Require()
    {
        if (UnavailableReason != null) Assert.Fail(UnavailableReason);
    }

    public static DockerRuntimeOptions Options()
    {
        _ = s_cleanup.Value;
        return new()
        {
            ExtraLabels = new Dictionary<string, string> { [TestLabel] = "1" },
            // Test VMs are invisible to a Warren daemon reconciling on the same engine (and vice versa).
            Instance = Instance,
            StopTimeoutSeconds = 5,
        };
    }

    private static string Instance => "test-" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// The test process's VM packet-filter table (one per instance) goes when the process ends; the daemon leaves
    /// its own in place while it has VMs.
    /// </summary>
    private static readonly Lazy<bool> s_cleanup = new(() =>
    {
        var firewall = new Warren.Runtime.HostNetwork.VmFirewall(new Warren.Runtime.HostNetwork.HostNetworkOptions(), Instance);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { firewall.RemoveAsync(CancellationToken.None).Wait(TimeSpan.FromSeconds(10)); }
            catch (AggregateException) { }
        };
        return true;
    });

    /// <summary>Runs a host command (argv, no shell) with bounded time (2 min unless told); returns exit code and output.</summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string file, IEnumerable<string> args,
        string? stdin = null, TimeSpan? timeout = null)
    {
        var result = await Warren.Runtime.HostNetwork.HostCommand.RunAsync(file, args, stdin, timeout ?? TimeSpan.FromMinutes(2));
        return (result.ExitCode, result.Stdout, result.Stderr);
    }
}

/// <summary>A fact needing Docker: skipped (outside CI only) when the engine or test image is missing.</summary>
public sealed class DockerFactAttribute : FactAttribute
{
    public DockerFactAttribute()
    {
        if (!DockerTestEnvironment.IsCi && DockerTestEnvironment.UnavailableReason is { } reason) Skip = reason;
    }
}

/// <summary>IProgress that reports synchronously (Progress&lt;T&gt; posts to the thread pool and can report late).</summary>
internal sealed class SyncProgress<T>(Action<T> action) : IProgress<T>
{
    public void Report(T value) => action(value);
}
