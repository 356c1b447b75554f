using System.Diagnostics;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Issue 3: SIGKILL in the middle of new, cp and rm, then a restart, leaves no orphan container,
/// no lost VM and no record stuck in a transient state.
/// </summary>
public sealed class CrashRecoveryTests
{
    /// <summary>Kill points after the command started, spread over image preparation and container creation.</summary>
    private static readonly int[] KillAfterMilliseconds = [150, 600, 1500];

    [Fact]
    public async Task SigkillDuringNewCpRm_RestartReconciles()
    {
        var daemon = new WarrenDaemon();
        try
        {
            await daemon.StartAsync();
            var u = await daemon.CreateUserAsync("crash@example.com");
            var seed = await u.ControlAsync("new --name=crash-src --image=warren/busybox:1 --json");
            Assert.True(seed.ExitCode == 0, seed.ToString());
            await u.VmAsync("127.0.1.1", "true", user: "vm+crash-src"); // warm

            int round = 0;
            foreach (var delay in KillAfterMilliseconds)
            {
                round++;
                foreach (var command in new[] { $"new --name=crash-new{round} --image=warren/busybox:1", $"cp crash-src crash-cp{round}", $"rm crash-new{round - 1}" })
                {
                    using var client = StartSsh(u, daemon, command);
                    await Task.Delay(delay);
                    daemon.Kill();
                    try { client.Kill(); } catch { }
                    await daemon.StartAsync();
                    await AssertConsistentAsync(u, daemon);
                }
            }
        }
        finally
        {
            await daemon.StopAsync();
            await DaemonFixture.CleanupContainersAsync(daemon.DataDirectory);
            await daemon.DisposeAsync();
        }
    }

    private static Process StartSsh(SshUser u, WarrenDaemon d, string command)
    {
        var psi = new ProcessStartInfo("ssh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in u.SshOptions(d.SshPort)) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(d.ControlAddress);
        psi.ArgumentList.Add(command);
        return Process.Start(psi)!;
    }

    private static async Task AssertConsistentAsync(SshUser u, WarrenDaemon d)
    {
        var ls = await u.ControlAsync("ls --json");
        Assert.True(ls.ExitCode == 0, ls.ToString() + d.Log);
        var vms = JsonDocument.Parse(ls.Stdout).RootElement.GetProperty("vms").EnumerateArray().ToList();
        foreach (var vm in vms)
        {
            var status = vm.GetProperty("status").GetString();
            Assert.True(status is "running" or "stopped" or "failed", $"{vm.GetProperty("vm_name")} is {status} after restart");
        }
        // Every container this daemon owns has a record, and every running record has a container.
        var ids = new HashSet<string>();
        var running = new HashSet<string>();
        using (var c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(d.DataDirectory, "warren.db")};Mode=ReadOnly;Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT id, state FROM vms";
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                ids.Add(r.GetString(0));
                if (r.GetString(1) == "running") running.Add(r.GetString(0));
            }
        }
        var ps = await ProcessRunner.RunAsync("docker", ["ps", "-a", "--filter", "label=warren.managed=true", "--format", "{{.Label \"warren.vm-id\"}}"]);
        var containers = ps.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet();
        foreach (var id in running) Assert.Contains(id, containers);
        Assert.Equal(vms.Count, ids.Count);
        Assert.Contains(vms, v => v.GetProperty("vm_name").GetString() == "crash-src");
    }
}
