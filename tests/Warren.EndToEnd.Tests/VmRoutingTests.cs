using System.Diagnostics;
using System.Net.Sockets;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Issue 5 end to end: one shared address, three accounts, each lands in its own VM, with the
/// real OpenSSH client, scp, sftp and port forwarding.
/// </summary>
public sealed class VmRoutingTests(SingleSlotDaemonFixture fixture) : IClassFixture<SingleSlotDaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string Slot = "127.0.1.1";

    private async Task<SshUser> UserWithVmAsync(string email, string vm)
    {
        var u = await Daemon.CreateUserAsync(email);
        var r = await u.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
        Assert.True(r.ExitCode == 0, r.ToString());
        var j = JsonDocument.Parse(r.Stdout).RootElement;
        Assert.Equal($"{vm}.box.localhost", j.GetProperty("ssh_dest").GetString());
        return u;
    }

    [Fact]
    public async Task ThreeAccounts_OneAddress_EachLandsInItsOwnVm()
    {
        var users = new List<(SshUser User, string Vm)>();
        foreach (var (email, vm) in new[] { ("r1@example.com", "route-one"), ("r2@example.com", "route-two"), ("r3@example.com", "route-three") })
            users.Add((await UserWithVmAsync(email, vm), vm));

        foreach (var (user, vm) in users)
        {
            var r = await user.VmAsync(Slot, "hostname");
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Equal(vm, r.Stdout.Trim());
        }

        // An account with no VM on this address gets a message naming the control host, and fails.
        var lonely = await Daemon.CreateUserAsync("novm@example.com");
        var refused = await lonely.VmAsync(Slot, "hostname");
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("no VM", refused.Stderr);

        // A key no account holds is refused at authentication.
        var stranger = await SshUser.CreateKeyAsync(Daemon, "nobody@example.com");
        var denied = await stranger.VmAsync(Slot, "hostname");
        Assert.Equal(255, denied.ExitCode);
        Assert.Contains("Permission denied", denied.Stderr);

        // vm+NAME@ reaches only VMs the account may SSH into.
        var viaName = await users[0].User.VmAsync(Slot, "hostname", user: "vm+route-one");
        Assert.Equal("route-one", viaName.Stdout.Trim());
        var notTheirs = await users[0].User.VmAsync(Slot, "hostname", user: "vm+route-two");
        Assert.NotEqual(0, notTheirs.ExitCode);
        Assert.DoesNotContain("route-two\n", notTheirs.Stdout);
    }

    [Fact]
    public async Task Exec_ExitCode_Stdin_Stderr_AndDataPersistsUnderData()
    {
        var u = await UserWithVmAsync("exec@example.com", "exec-vm");
        var r = await u.VmAsync(Slot, "cat > /data/in.txt; echo to-stderr >&2; exit 7", stdin: "hello through ssh\n");
        Assert.Equal(7, r.ExitCode);
        Assert.Contains("to-stderr", r.Stderr);
        var back = await u.VmAsync(Slot, "cat /data/in.txt");
        Assert.Equal("hello through ssh\n", back.Stdout);

        // The seed's tar pipe.
        var dir = Directory.CreateTempSubdirectory("warren-tar-").FullName;
        File.WriteAllText(Path.Combine(dir, "a.txt"), "alpha");
        var tar = await ProcessRunner.RunAsync("bash", ["-c",
            $"tar cf - -C {dir} a.txt | ssh {string.Join(' ', u.SshOptions(Daemon.SshPort))} {Slot} 'mkdir -p /data/target && tar xf - -C /data/target && cat /data/target/a.txt'"]);
        Assert.True(tar.ExitCode == 0, tar.ToString());
        Assert.Equal("alpha", tar.Stdout);

        // Control-plane hop: ssh <control> ssh VM command.
        var hop = await u.ControlAsync("ssh exec-vm cat /data/in.txt");
        Assert.Equal("hello through ssh\n", hop.Stdout);
    }

    [Fact]
    public async Task Scp_And_Sftp_ThroughTheAgentsSftpServer()
    {
        var u = await UserWithVmAsync("files@example.com", "files-vm");
        var dir = Directory.CreateTempSubdirectory("warren-scp-").FullName;
        var local = Path.Combine(dir, "up.bin");
        var payload = new byte[3 * 1024 * 1024 + 17];
        new Random(42).NextBytes(payload);
        File.WriteAllBytes(local, payload);

        var opts = u.SshOptions(Daemon.SshPort);
        var scpOpts = opts.Select(o => o == "-p" ? "-P" : o).ToList();
        var up = await ProcessRunner.RunAsync("scp", [.. scpOpts, local, $"{Slot}:/data/up.bin"]);
        Assert.True(up.ExitCode == 0, up.ToString());
        var down = Path.Combine(dir, "down.bin");
        var get = await ProcessRunner.RunAsync("scp", [.. scpOpts, $"{Slot}:/data/up.bin", down]);
        Assert.True(get.ExitCode == 0, get.ToString());
        Assert.Equal(payload, File.ReadAllBytes(down));

        // Legacy protocol (scp -O): the remote `scp -t`/`scp -f` is served by the agent, so it works
        // in this busybox image, which has no scp binary; a relative target lands in the home directory.
        var legacyUp = await ProcessRunner.RunAsync("scp", [.. scpOpts, "-O", local, $"{Slot}:legacy.bin"]);
        Assert.True(legacyUp.ExitCode == 0, legacyUp.ToString());
        var legacyDown = Path.Combine(dir, "legacy-down.bin");
        var legacyGet = await ProcessRunner.RunAsync("scp", [.. scpOpts, "-O", $"{Slot}:legacy.bin", legacyDown]);
        Assert.True(legacyGet.ExitCode == 0, legacyGet.ToString());
        Assert.Equal(payload, File.ReadAllBytes(legacyDown));
        var tree = Directory.CreateDirectory(Path.Combine(dir, "tree", "nested")).FullName;
        File.WriteAllText(Path.Combine(tree, "leaf.txt"), "leaf");
        var legacyTree = await ProcessRunner.RunAsync("scp", [.. scpOpts, "-O", "-r", Path.Combine(dir, "tree"), $"{Slot}:/data/"]);
        Assert.True(legacyTree.ExitCode == 0, legacyTree.ToString());
        Assert.Equal("leaf", (await u.VmAsync(Slot, "cat /data/tree/nested/leaf.txt")).Stdout);

        var batch = Path.Combine(dir, "batch");
        File.WriteAllText(batch, $"mkdir /data/sf\ncd /data/sf\nput {local} copy.bin\nls -l\nrename copy.bin moved.bin\nget moved.bin {Path.Combine(dir, "moved.bin")}\nrm moved.bin\nrmdir /data/sf\n");
        var sftpOpts = opts.Select(o => o == "-p" ? "-P" : o).ToList();
        var sftp = await ProcessRunner.RunAsync("sftp", [.. sftpOpts, "-b", batch, Slot]);
        Assert.True(sftp.ExitCode == 0, sftp.ToString());
        Assert.Equal(payload, File.ReadAllBytes(Path.Combine(dir, "moved.bin")));
    }

    [Fact]
    public async Task LocalForward_ReachesAPortInsideTheVm()
    {
        var u = await UserWithVmAsync("fwd@example.com", "fwd-vm");
        var start = await u.VmAsync(Slot, "mkdir -p /data/www && echo forwarded-ok > /data/www/index.html && (httpd -p 8000 -h /data/www &) ; sleep 0.5");
        Assert.True(start.ExitCode == 0, start.ToString());

        int localPort = FreePort();
        var args = u.SshOptions(Daemon.SshPort);
        args.AddRange(["-N", "-o", "ExitOnForwardFailure=yes", "-L", $"127.0.0.1:{localPort}:127.0.0.1:8000", Slot]);
        var psi = new ProcessStartInfo("ssh") { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var ssh = Process.Start(psi)!;
        try
        {
            string? body = null;
            for (int i = 0; i < 50 && body is null; i++)
            {
                var r = await ProcessRunner.RunAsync("curl", ["-s", "--max-time", "5", $"http://127.0.0.1:{localPort}/"]);
                if (r.ExitCode == 0 && r.Stdout.Length > 0) body = r.Stdout;
                else await Task.Delay(200);
            }
            Assert.Equal("forwarded-ok\n", body);
        }
        finally { ssh.Kill(); }
    }

    private static int FreePort()
    {
        var l = new TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        int p = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return p;
    }
}
