using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>A daemon with the microVM runtime on its default networking: each VM on a tap behind the packet filter.</summary>
public sealed class MicroVmTapDaemonFixture : DaemonFixture, IAsyncLifetime
{
    public const string Slot = "127.0.1.1";

    protected override Dictionary<string, string> Config => new(MicroVmDaemonFixture.DaemonConfig(Slot))
    {
        ["Warren:DefaultImage"] = "warren/busybox:1",
    };

    /// <summary>
    /// VMs outlive the daemon (QEMU daemonizes, taps stay): kill this daemon's QEMUs, then remove its taps, named by the
    /// installation's prefix ("wv" + SHA-256 of the instance id), so no stale route to a VM subnet outlives the test.
    /// </summary>
    async Task IAsyncLifetime.DisposeAsync()
    {
        string data = Daemon.DataDirectory;
        string instance = File.ReadAllText(Path.Combine(data, "instance-id")).Trim();
        string prefix = "wv" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(instance)))[..5];
        await DisposeAsync();
        foreach (int pid in MicroVmDaemonFixture.QemuUnder(data))
            await ProcessRunner.RunAsync("kill", ["-KILL", pid.ToString()]);
        var links = await ProcessRunner.RunAsync("ip", ["-o", "link", "show", "type", "tun"]);
        foreach (var line in links.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "12: wv1234500000000: <BROADCAST,...>"
            var parts = line.Split(':', 3);
            if (parts.Length > 1 && parts[1].Trim() is { } name && name.StartsWith(prefix, StringComparison.Ordinal))
                await ProcessRunner.RunAsync("ip", ["link", "del", name]);
        }
    }
}

/// <summary>
/// The metadata service and VM DNS reach microVMs the way they reach containers: the packet filter redirects
/// 169.254.169.254 on the VM's tap to the host's end of that tap, so each VM is told its own name, and a second
/// account's VM its own, never the first one's (exe.dev's docs: metadata).
/// </summary>
public sealed class MicroVmMetadataTests(MicroVmTapDaemonFixture fixture) : IClassFixture<MicroVmTapDaemonFixture>
{
    private static readonly TimeSpan Boot = TimeSpan.FromMinutes(4);
    private WarrenDaemon Daemon => fixture.Daemon;

    [Fact]
    public async Task EachMicroVm_IsToldItsOwnName_AndResolvesIntegrationNames()
    {
        ProcessRunner.Require("qemu-system-x86_64");
        var owner = await Daemon.CreateUserAsync("mv-meta-owner@example.com");
        var stranger = await Daemon.CreateUserAsync("mv-meta-stranger@example.com");
        try
        {
            foreach (var (user, name) in new[] { (owner, "mv-meta-a"), (stranger, "mv-meta-b") })
            {
                var created = await user.ControlAsync($"new --name={name} --json", timeout: Boot);
                Assert.True(created.ExitCode == 0, created.ToString());
            }

            foreach (var (user, name) in new[] { (owner, "mv-meta-a"), (stranger, "mv-meta-b") })
            {
                // busybox wget: bounded by timeout(1) (its own -T is unreliable in the static build).
                var answer = await user.VmAsync(MicroVmTapDaemonFixture.Slot, "timeout 20 wget -qO- http://169.254.169.254/", user: "vm+" + name, timeout: Boot);
                Assert.True(answer.ExitCode == 0, answer.ToString());
                Assert.Contains($"\"name\":\"{name}\"", answer.Stdout);
            }

            var resolved = await owner.VmAsync(MicroVmTapDaemonFixture.Slot, "timeout 20 nslookup anything.int.box.localhost", user: "vm+mv-meta-a", timeout: Boot);
            Assert.True(resolved.ExitCode == 0, resolved.ToString());
            Assert.Contains("169.254.169.254", resolved.Stdout);
        }
        finally
        {
            await owner.ControlAsync("rm mv-meta-a", timeout: Boot);
            await stranger.ControlAsync("rm mv-meta-b", timeout: Boot);
        }
    }
}
