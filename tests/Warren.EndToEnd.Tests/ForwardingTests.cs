using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Issue 5 "Sessions inside the VM": <c>ssh -R</c> (a listener inside the VM whose connections come
/// back to the client as forwarded-tcpip channels) and <c>ssh -A</c> (a private agent socket inside
/// the VM, SSH_AUTH_SOCK pointing at it), with the real OpenSSH client and ssh-agent.
/// </summary>
public sealed class ForwardingTests(SingleSlotDaemonFixture fixture) : IClassFixture<SingleSlotDaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string Slot = "127.0.1.1";

    /// <summary>Tries while waiting for a forwarding to come up or go away (each try is one ssh round trip).</summary>
    private const int MaxAttempts = 60;
    private static readonly TimeSpan AttemptPause = TimeSpan.FromMilliseconds(250);

    /// <summary>Bound on one HTTP fetch inside the VM, so a broken forwarding fails the try instead of hanging it.</summary>
    private const int FetchTimeoutSeconds = 20;

    /// <summary>
    /// An HTTP/1.0 GET from inside the VM with busybox nc (the static busybox's wget crashes resolving
    /// even numeric hosts in an image without libc). nc half-closes after the request, as many clients do.
    /// </summary>
    private static string Fetch(int port, string path) =>
        $"printf \"GET {path} HTTP/1.0\\r\\n\\r\\n\" | timeout {FetchTimeoutSeconds} nc 127.0.0.1 {port} | sed -n '$p'";

    private Task<SshUser> UserWithVmAsync(string email, string vm, string image = "warren/busybox:1") => UserWithVmAsync(Daemon, email, vm, image);

    /// <summary>A new user with one VM named <paramref name="vm"/> (also used by <see cref="HalfCloseForwardingTests"/>).</summary>
    internal static async Task<SshUser> UserWithVmAsync(WarrenDaemon daemon, string email, string vm, string image = "warren/busybox:1")
    {
        var u = await daemon.CreateUserAsync(email);
        var r = await u.ControlAsync($"new --name={vm} --image={image} --json");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal($"{vm}.box.localhost", JsonDocument.Parse(r.Stdout).RootElement.GetProperty("ssh_dest").GetString());
        return u;
    }

    [Fact]
    public async Task RemoteForward_ConnectionsInsideTheVm_ReachTheClientsListener()
    {
        var u = await UserWithVmAsync("rfwd@example.com", "rfwd-vm");
        await using var web = TinyHttpServer.Start();

        using var ssh = StartBackgroundSsh(u, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", $"127.0.0.1:9000:127.0.0.1:{web.Port}", Slot]);
        try
        {
            string? body = null;
            for (int i = 0; i < MaxAttempts && body is null; i++)
            {
                if (ssh.HasExited) Assert.Fail("ssh -R exited: " + await ssh.StandardError.ReadToEndAsync());
                var r = await u.VmAsync(Slot, Fetch(9000, "/first"));
                if (r.ExitCode == 0 && r.Stdout.Length > 0) body = r.Stdout; else await Task.Delay(AttemptPause);
            }
            Assert.Equal("hello from the client: /first\n", body);

            // Several connections at once, each its own forwarded channel.
            var many = await u.VmAsync(Slot,
                $"for i in 1 2 3 4 5 6; do ({Fetch(9000, "/n$i")} > /tmp/r$i) & done; wait; cat /tmp/r1 /tmp/r2 /tmp/r3 /tmp/r4 /tmp/r5 /tmp/r6");
            Assert.True(many.ExitCode == 0, many.ToString());
            for (int i = 1; i <= 6; i++) Assert.Contains($"hello from the client: /n{i}\n", many.Stdout);
        }
        finally
        {
            // The client going away must remove the listener inside the VM.
            ssh.Kill();
            await ssh.WaitForExitAsync();
        }
        bool gone = false;
        for (int i = 0; i < MaxAttempts && !gone; i++)
        {
            var r = await u.VmAsync(Slot, "netstat -ltn | grep -c ':9000 ' || true");
            if (r.Stdout.Trim() == "0") gone = true; else await Task.Delay(AttemptPause);
        }
        Assert.True(gone, "the -R listener stayed up inside the VM after the client left");
    }

    [Fact]
    public async Task RemoteForward_PortZero_ReportsTheAllocatedPort()
    {
        var u = await UserWithVmAsync("rfwd0@example.com", "rfwd0-vm");
        await using var web = TinyHttpServer.Start();
        // LogLevel=INFO makes ssh print "Allocated port N for remote forward"; options given first win.
        using var ssh = StartBackgroundSsh(u, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", $"127.0.0.1:0:127.0.0.1:{web.Port}", Slot], first: ["-o", "LogLevel=INFO"]);
        try
        {
            int port = 0;
            var stderr = new StringBuilder();
            using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
            {
                while (port == 0)
                {
                    var line = await ssh.StandardError.ReadLineAsync(cts.Token);
                    Assert.True(line is not null, "ssh ended without allocating a port: " + stderr);
                    stderr.AppendLine(line);
                    var m = Regex.Match(line!, @"Allocated port (\d+) for remote forward");
                    if (m.Success) port = int.Parse(m.Groups[1].Value);
                }
            }
            var r = await u.VmAsync(Slot, Fetch(port, "/zero"));
            Assert.True(r.ExitCode == 0, r.ToString());
            Assert.Equal("hello from the client: /zero\n", r.Stdout);
        }
        finally
        {
            ssh.Kill();
            await ssh.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task RemoteForward_OnTheControlPlane_IsRefused()
    {
        var u = await Daemon.CreateUserAsync("rfwd-control@example.com");
        var args = u.SshOptions(Daemon.SshPort);
        args.AddRange(["-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:9001:127.0.0.1:9", Daemon.ControlAddress]);
        var r = await ProcessRunner.RunAsync("ssh", args);
        Assert.Equal(255, r.ExitCode);
        Assert.Contains("remote port forwarding failed", r.Stderr);
    }

    [Fact]
    public async Task AgentForwarding_SshAddInsideTheVm_ListsTheClientsKeys()
    {
        ProcessRunner.Require("ssh-agent");
        var u = await UserWithVmAsync("agent@example.com", "agent-vm", image: "warren/default:1");
        var dir = Directory.CreateTempSubdirectory("warren-agent-test-").FullName;
        var sock = Path.Combine(dir, "agent.sock");
        // A key that only the agent holds: finding it inside the VM proves the forwarding.
        var agentOnly = await SshUser.CreateKeyAsync(Daemon, "agent-only@example.com");
        var fp = await ProcessRunner.RunAsync("ssh-keygen", ["-lf", agentOnly.KeyPath + ".pub"]);
        var fingerprint = fp.Stdout.Split(' ')[1];
        Assert.StartsWith("SHA256:", fingerprint);

        var psi = new ProcessStartInfo("ssh-agent") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-D", "-a", sock }) psi.ArgumentList.Add(a);
        using var agent = Process.Start(psi)!;
        try
        {
            for (int i = 0; i < MaxAttempts && !File.Exists(sock); i++) await Task.Delay(AttemptPause);
            var env = new Dictionary<string, string> { ["SSH_AUTH_SOCK"] = sock };
            var add = await ProcessRunner.RunAsync("ssh-add", [agentOnly.KeyPath], env: env);
            Assert.True(add.ExitCode == 0, add.ToString());

            // IdentityAgent=none would also turn forwarding off: keep the agent, but offer only our -i key.
            var args = WithoutAgentOff(u.SshOptions(Daemon.SshPort));
            args.AddRange(["-A", Slot]);
            args.Add("echo \"sock=$SSH_AUTH_SOCK\"; stat -c '%a %U' \"$(dirname \"$SSH_AUTH_SOCK\")\"; ssh-add -l");
            var r = await ProcessRunner.RunAsync("ssh", args, env: env);
            Assert.True(r.ExitCode == 0, r + "\n--- daemon\n" + Daemon.Log);
            Assert.Matches(@"sock=/tmp/warren-agent\.[0-9a-f]+/agent\.sock", r.Stdout);
            var whoami = await u.VmAsync(Slot, "id -un");
            Assert.Contains($"700 {whoami.Stdout.Trim()}", r.Stdout);
            Assert.Contains(fingerprint, r.Stdout);

            // Two sessions on one connection share the socket; concurrent agent connections each get a channel.
            var twice = await ProcessRunner.RunAsync("ssh", [.. args.Take(args.Count - 1), "ssh-add -l & ssh-add -l; wait"], env: env);
            Assert.True(twice.ExitCode == 0, twice.ToString());
            Assert.Equal(2, Regex.Matches(twice.Stdout, Regex.Escape(fingerprint)).Count);

            // Without -A there is no socket.
            var plain = await u.VmAsync(Slot, "echo \"[$SSH_AUTH_SOCK]\"");
            Assert.Equal("[]\n", plain.Stdout);
        }
        finally
        {
            agent.Kill();
            await agent.WaitForExitAsync();
        }
    }

    // ------------------------------------------------------------------ helpers

    private static List<string> WithoutAgentOff(List<string> options)
    {
        int i = options.IndexOf("IdentityAgent=none");
        if (i > 0) options.RemoveRange(i - 1, 2);
        return options;
    }

    private Process StartBackgroundSsh(SshUser u, IEnumerable<string> extra, IEnumerable<string>? first = null) => StartBackgroundSsh(Daemon, u, extra, first);

    /// <summary>ssh in the background; <paramref name="first"/> goes before the common options (the first value of an option wins).</summary>
    internal static Process StartBackgroundSsh(WarrenDaemon daemon, SshUser u, IEnumerable<string> extra, IEnumerable<string>? first = null)
    {
        var args = (first ?? []).Concat(u.SshOptions(daemon.SshPort)).Concat(extra);
        var psi = new ProcessStartInfo("ssh") { RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return Process.Start(psi)!;
    }

    /// <summary>Answers every HTTP request with "hello from the client: PATH\n" and closes (HTTP/1.0).</summary>
    private sealed class TinyHttpServer : IAsyncDisposable
    {
        private readonly TcpListener _listener;
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;
        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        private TinyHttpServer()
        {
            _listener = new TcpListener(IPAddress.Loopback, 0);
            _listener.Start();
            _loop = AcceptLoopAsync();
        }

        public static TinyHttpServer Start() => new();

        private async Task AcceptLoopAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                TcpClient c;
                try { c = await _listener.AcceptTcpClientAsync(_stop.Token); }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { return; }
                _ = ServeAsync(c);
            }
        }

        private static async Task ServeAsync(TcpClient c)
        {
            using (c)
            {
                try
                {
                    var s = c.GetStream();
                    var request = new StringBuilder();
                    var buffer = new byte[1024];
                    using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                    while (!request.ToString().Contains("\r\n\r\n") && request.Length < 16 * 1024)
                    {
                        int n = await s.ReadAsync(buffer, cts.Token);
                        if (n == 0) return;
                        request.Append(Encoding.ASCII.GetString(buffer, 0, n));
                    }
                    var path = request.ToString().Split(' ')[1];
                    var body = $"hello from the client: {path}\n";
                    var response = $"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}";
                    await s.WriteAsync(Encoding.ASCII.GetBytes(response), cts.Token);
                }
                catch (Exception e) when (e is IOException or OperationCanceledException or SocketException) { }
            }
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            _listener.Stop();
            try { await _loop; } catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { }
            _stop.Dispose();
        }
    }
}
