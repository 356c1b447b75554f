using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// The VM's own name resolves inside every image (so <c>sudo</c> and tools that look their host up do not stall on
/// DNS): the agent, as PID 1, makes <c>/etc/hosts</c> map the host name when the image's file does not, keeping the
/// image's lines. Through the real daemon (Docker runtime) and OpenSSH, on a BusyBox and a Debian image. On Warren's
/// Docker networks the engine's own line (the VM's address) already names it, so the agent adds nothing there; the
/// agent's own line is exercised where the engine writes none (HostsFileTests, a container without a network) and in
/// microVMs, whose images bring their own /etc/hosts.
/// </summary>
public sealed class CompatVmHostnameTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;

    [Theory]
    [InlineData("hnbusy", "warren/busybox:1", "ping -c1 -W2 \"$(hostname)\" 2>&1; true")]
    [InlineData("hndebian", "warren/default:1", "getent hosts \"$(hostname)\"")]
    public async Task TheVmsOwnName_Resolves(string vm, string image, string lookup)
    {
        ProcessRunner.Require("docker");
        var owner = await Daemon.CreateUserAsync($"{vm}-owner@example.com");
        var made = await owner.ControlAsync($"new --name={vm} --image={image} --json", timeout: TimeSpan.FromMinutes(4));
        Assert.True(made.ExitCode == 0, made.ToString() + Daemon.Log);
        try
        {
            var hosts = await owner.VmAsync("127.0.1.1", "hostname; cat /etc/hosts", user: "vm+" + vm);
            Assert.True(hosts.ExitCode == 0, hosts.ToString());
            var lines = hosts.Stdout.Split('\n');
            Assert.Equal(vm, lines[0].Trim());
            // The image's localhost line is still there, and some line (the engine's or the agent's) names the VM.
            Assert.Contains(lines, l => l.StartsWith("127.0.0.1", StringComparison.Ordinal) && l.Contains("localhost"));
            Assert.Contains(lines.Skip(1), l => l.Split('#')[0].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries).Skip(1).Contains(vm));

            var resolved = await owner.VmAsync("127.0.1.1", lookup, user: "vm+" + vm);
            Assert.True(resolved.ExitCode == 0, resolved.ToString());
            Assert.DoesNotContain("bad address", resolved.Stdout);
            Assert.Contains(vm, resolved.Stdout);

            // A second boot (restart) adds nothing twice.
            var restarted = await owner.ControlAsync($"restart {vm} --json", timeout: TimeSpan.FromMinutes(3));
            Assert.True(restarted.ExitCode == 0, restarted.ToString());
            var again = await WaitForSshAsync(owner, vm, $"grep -c '{vm}' /etc/hosts");
            Assert.Equal("1", again.Stdout.Trim());
        }
        finally
        {
            await owner.ControlAsync($"rm {vm}");
        }
    }

    /// <summary>The command in the VM once it answers again after a restart (bounded: 30 tries).</summary>
    private static async Task<ProcessResult> WaitForSshAsync(SshUser owner, string vm, string command)
    {
        ProcessResult last = null!;
        for (int i = 0; i < 30; i++)
        {
            last = await owner.VmAsync("127.0.1.1", command, user: "vm+" + vm);
            if (last.ExitCode == 0) return last;
            await Task.Delay(1000);
        }
        Assert.Fail("the VM did not answer after its restart: " + last);
        return last;
    }
}
