using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A VM powered off from inside stops as a real machine does, through the real daemon, the real engine and OpenSSH:
/// the guest's <c>shutdown now</c>, <c>poweroff</c> or <c>halt</c> (run with sudo in the default Debian image, as root
/// in the BusyBox image) stops the VM; the engine does not restart it; <c>ls</c> shows it stopped; <c>restart</c>
/// brings it back with /data intact.
/// </summary>
public sealed class CompatShutdownTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    /// <summary>How many times <c>ls</c> is asked before giving up on a state (every <see cref="StatePoll"/>).</summary>
    private const int StatePollAttempts = 60;
    private static readonly TimeSpan StatePoll = TimeSpan.FromSeconds(1);

    private WarrenDaemon Daemon => fixture.Daemon;
    private string Slot => Daemon.SlotAddresses[0];
    private string Instance => File.ReadAllText(Path.Combine(Daemon.DataDirectory, "instance-id")).Trim();

    [Theory]
    [InlineData("sdshutdown", "", "sudo shutdown now")]
    [InlineData("sdpoweroff", "", "sudo poweroff")]
    [InlineData("sdhalt", "", "sudo halt")]
    [InlineData("sdbusybox", "--image=warren/busybox:1", "poweroff")]
    public async Task PoweringOffFromInside_StopsTheVm_UntilRestart_WithDataKept(string name, string imageFlag, string command)
    {
        ProcessRunner.Require("docker");
        var u = await Daemon.CreateUserAsync($"{name}@example.com");
        var created = await u.ControlAsync($"new --name={name} {imageFlag} --json");
        Assert.True(created.ExitCode == 0, created.ToString() + Daemon.Log);
        string id = await VmIdAsync(name);
        // The BusyBox image has no sudo: its root is reached with docker exec (BusyBox's own poweroff applet runs).
        bool busybox = imageFlag.Length > 0;
        Task<ProcessResult> AsRootAsync(string script) => busybox
            ? ProcessRunner.RunAsync("docker", ["exec", "warren-" + id, "sh", "-c", script])
            : u.VmAsync(Slot, $"sudo sh -c '{script}'", user: "vm+" + name);
        string marker = "kept-" + Guid.NewGuid().ToString("N");
        var write = await AsRootAsync($"echo {marker} > /data/marker");
        Assert.True(write.ExitCode == 0, write.ToString());

        // The session may end with the VM (the client then reports a closed connection): its status says nothing.
        if (busybox) await AsRootAsync(command);
        else await u.VmAsync(Slot, command, user: "vm+" + name);

        Assert.Equal("stopped", await WaitForStatusAsync(u, name, "stopped"));
        // The engine saw a clean exit and left the container alone: no restart fights the guest's wish.
        var state = await ProcessRunner.RunAsync("docker", ["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}", "warren-" + id]);
        Assert.True(state.ExitCode == 0, state.ToString());
        Assert.Equal("exited 0 0", state.Stdout.Trim());
        Assert.Equal("stopped", await StatusAsync(u, name));

        var restarted = await u.ControlAsync($"restart {name} --json");
        Assert.True(restarted.ExitCode == 0, restarted.ToString() + Daemon.Log);
        Assert.Equal("running", await WaitForStatusAsync(u, name, "running"));
        var read = await AsRootAsync("cat /data/marker");
        Assert.True(read.ExitCode == 0, read.ToString());
        Assert.Equal(marker, read.Stdout.Trim());
    }

    [Fact]
    public async Task AnotherAccount_CannotPowerOffSomeoneElsesVm()
    {
        var owner = await Daemon.CreateUserAsync("sd-owner@example.com");
        var created = await owner.ControlAsync("new --name=sdowned --json");
        Assert.True(created.ExitCode == 0, created.ToString() + Daemon.Log);
        var mallory = await Daemon.CreateUserAsync("sd-mallory@example.com");
        var attempt = await mallory.VmAsync(Slot, "sudo poweroff", user: "vm+sdowned");
        Assert.NotEqual(0, attempt.ExitCode);
        Assert.Equal("running", await StatusAsync(owner, "sdowned"));
        // Unprivileged inside the VM: the agent's poweroff needs root, as the real one does.
        var unprivileged = await owner.VmAsync(Slot, "poweroff", user: "vm+sdowned");
        Assert.NotEqual(0, unprivileged.ExitCode);
        Assert.Contains("must be superuser", unprivileged.Stderr);
        Assert.Equal("running", await StatusAsync(owner, "sdowned"));
    }

    private static async Task<string?> StatusAsync(SshUser u, string name)
    {
        var ls = await u.ControlAsync("ls --json");
        Assert.True(ls.ExitCode == 0, ls.ToString());
        foreach (var vm in JsonDocument.Parse(ls.Stdout).RootElement.GetProperty("vms").EnumerateArray())
            if (vm.GetProperty("vm_name").GetString() == name) return vm.GetProperty("status").GetString();
        return null;
    }

    private static async Task<string?> WaitForStatusAsync(SshUser u, string name, string wanted)
    {
        string? status = null;
        for (int i = 0; i < StatePollAttempts && status != wanted; i++)
        {
            if (i > 0) await Task.Delay(StatePoll);
            status = await StatusAsync(u, name);
        }
        return status;
    }

    private async Task<string> VmIdAsync(string name)
    {
        var r = await ProcessRunner.RunAsync("docker", ["ps", "-a", "--filter", $"label=warren.instance={Instance}", "--filter", $"label=warren.vm-name={name}",
            "--format", "{{.Label \"warren.vm-id\"}}"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        return Assert.Single(r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
