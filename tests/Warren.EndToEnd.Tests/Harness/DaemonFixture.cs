using Xunit;

namespace Warren.EndToEnd.Tests.Harness;

/// <summary>One daemon per test class (xunit class fixture); removes the VMs it made when done.</summary>
public class DaemonFixture : IAsyncLifetime
{
    public WarrenDaemon Daemon { get; private set; } = null!;

    /// <summary>Extra configuration for subclasses (e.g. a single-slot pool).</summary>
    protected virtual Dictionary<string, string> Config => new();

    public async Task InitializeAsync()
    {
        Daemon = new WarrenDaemon(extraConfig: Config);
        await Daemon.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await Daemon.StopAsync();
        // Containers carry the VM id label; remove whatever this daemon's VMs left behind.
        await CleanupContainersAsync(Daemon.DataDirectory);
        await Daemon.DisposeAsync();
    }

    internal static async Task CleanupContainersAsync(string dataDirectory)
    {
        var db = Path.Combine(dataDirectory, "warren.db");
        if (!File.Exists(db)) return;
        var ids = new List<string>();
        using (var c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={db};Mode=ReadOnly;Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT id FROM vms";
            try { using var r = cmd.ExecuteReader(); while (r.Read()) ids.Add(r.GetString(0)); }
            catch (Microsoft.Data.Sqlite.SqliteException) { }
        }
        foreach (var id in ids)
        {
            await ProcessRunner.RunAsync("docker", ["rm", "-f", "-v", "warren-" + id]);
            await ProcessRunner.RunAsync("docker", ["volume", "rm", "-f", "warren-data-" + id, "warren-run-" + id]);
        }
        // Snapshots made by cp and rename (warren-vm/<id>:…) carry the instance's label from the container they were
        // committed from; without this they outlive every test run.
        var instanceFile = Path.Combine(dataDirectory, "instance-id");
        if (File.Exists(instanceFile))
        {
            string instance = File.ReadAllText(instanceFile).Trim();
            var images = await ProcessRunner.RunAsync("docker", ["images", "-q", "--filter", "label=warren.instance=" + instance]);
            var imageIds = images.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToList();
            if (imageIds.Count > 0)
                await ProcessRunner.RunAsync("docker", ["rmi", "-f", .. imageIds]);
            // Each VM's own network, and the instance's packet-filter table (the daemon keeps both while VMs exist).
            var networks = await ProcessRunner.RunAsync("docker", ["network", "ls", "-q", "--filter", "label=warren.instance=" + instance]);
            var networkIds = networks.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
            if (networkIds.Count > 0)
                await ProcessRunner.RunAsync("docker", ["network", "rm", .. networkIds]);
            var firewall = new Warren.Runtime.HostNetwork.VmFirewall(new Warren.Runtime.HostNetwork.HostNetworkOptions(), instance);
            await firewall.RemoveAsync(CancellationToken.None);
        }
        // VM disk images stay loop-mounted under <data>/disks while their VMs exist.
        var disks = Path.Combine(dataDirectory, "disks");
        if (Directory.Exists(disks))
        {
            foreach (var mount in Directory.EnumerateDirectories(disks, "*.mnt"))
            {
                await ProcessRunner.RunAsync("umount", ["-l", mount]);
                await ProcessRunner.RunAsync("chattr", ["-i", mount]);
            }
        }
    }
}

/// <summary>A pool of one shared address, so every account's VM lands on the same IP.</summary>
public sealed class SingleSlotDaemonFixture : DaemonFixture
{
    protected override Dictionary<string, string> Config => new()
    {
        ["Warren:Slots:0:Name"] = "s001",
        ["Warren:Slots:0:PublicIp"] = "127.0.1.1",
        ["Warren:Slots:0:LocalIp"] = "127.0.1.1",
    };
}
