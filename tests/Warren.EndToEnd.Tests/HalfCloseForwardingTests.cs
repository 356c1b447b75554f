using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// TCP half-close through port forwarding, with the real OpenSSH client: one side's shutdown(SHUT_WR) must
/// reach the other side as EOF (CHANNEL_EOF on the SSH leg, RFC 4254 §5.3) while the opposite direction
/// keeps flowing. <c>ssh -L</c> (host client, server inside the VM) and <c>ssh -R</c> (server on the host,
/// client inside the VM), each in both directions: the client half-closes and the server answers only after
/// EOF; and the server half-closes first and the client still sends.
/// </summary>
/// <remarks>
/// The VM side is perl (perl-base is in warren/default:1, and IO::Socket can shutdown(); busybox's nc cannot
/// half-close on demand, and its small build has no -k: <c>nc -lk</c> only prints usage). The host side is
/// plain sockets in the test.
/// </remarks>
public sealed class HalfCloseForwardingTests(SingleSlotDaemonFixture fixture) : IClassFixture<SingleSlotDaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string Slot = "127.0.1.1";
    private const string Image = "warren/default:1";
    private const string ScriptPath = "/tmp/halfclose.pl";

    /// <summary>Tries while a forwarding or a server in the VM comes up (each try is one connection or one ssh round trip).</summary>
    private const int MaxAttempts = 60;
    private static readonly TimeSpan AttemptPause = TimeSpan.FromMilliseconds(250);

    /// <summary>Bound on one exchange, so a lost EOF fails the try instead of hanging the test.</summary>
    private static readonly TimeSpan ExchangeTimeout = TimeSpan.FromSeconds(20);
    private const int ExchangeTimeoutSeconds = 20;

    /// <summary>Longest reply read to EOF (bounds every read loop).</summary>
    private const int MaxReplyBytes = 64 * 1024;

    private const string Request = "request", Banner = "banner", LateData = "late data";

    /// <summary>
    /// The VM side, by mode. Servers loop over connections on 127.0.0.1:PORT; clients connect once.
    /// answer-server: read to EOF, then answer. banner-server: send a banner, half-close, then read to EOF
    /// into /tmp/got-PORT. request-client: send a request, half-close, print the answer. banner-client: read
    /// the banner to EOF, print it, then send more and half-close.
    /// </summary>
    private const string Script = """
        use strict; use IO::Socket::INET;
        my ($mode, $port) = @ARGV;
        sub slurp { my $s = shift; local $/; my $d = <$s>; return defined $d ? $d : ""; }
        if ($mode =~ /server$/) {
            my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 8, ReuseAddr => 1) or die "listen: $!";
            while (my $c = $l->accept) {
                if ($mode eq "answer-server") { my $req = slurp($c); print $c "answer to: $req"; }
                else {
                    print $c "banner"; $c->flush; shutdown($c, 1);
                    my $got = slurp($c);
                    open(my $f, ">", "/tmp/got-$port.tmp") or die; print $f $got; close $f;
                    rename("/tmp/got-$port.tmp", "/tmp/got-$port");
                }
                close $c;
            }
        } else {
            my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port) or die "connect: $!";
            if ($mode eq "request-client") { print $s "request"; $s->flush; shutdown($s, 1); print slurp($s); }
            else { my $b = slurp($s); print $b; print $s "late data"; $s->flush; shutdown($s, 1); slurp($s); }
        }
        """;

    private async Task<SshUser> UserWithScriptAsync(string email, string vm)
    {
        var u = await ForwardingTests.UserWithVmAsync(Daemon, email, vm, Image);
        var r = await u.VmAsync(Slot, $"cat > {ScriptPath}", stdin: Script);
        Assert.True(r.ExitCode == 0, r.ToString());
        return u;
    }

    [Fact]
    public async Task LocalForward_HalfCloseReachesTheOtherSide_BothWays()
    {
        var u = await UserWithScriptAsync("halfclose-l@example.com", "halfclose-l");
        int answerPort = FreeLoopbackPort(), bannerPort = FreeLoopbackPort();
        // The servers live as long as this session; killing it ends them.
        using var servers = ForwardingTests.StartBackgroundSsh(Daemon, u,
            [Slot, $"perl {ScriptPath} answer-server 8100 & perl {ScriptPath} banner-server 8101 & wait"]);
        using var ssh = ForwardingTests.StartBackgroundSsh(Daemon, u,
            ["-N", "-o", "ExitOnForwardFailure=yes",
             "-L", $"127.0.0.1:{answerPort}:127.0.0.1:8100", "-L", $"127.0.0.1:{bannerPort}:127.0.0.1:8101", Slot]);
        try
        {
            // Client half-closes after its request; the server reads to EOF before it answers.
            string answer = "";
            for (int i = 0; i < MaxAttempts && answer.Length == 0; i++)
            {
                AssertRunning(ssh, "ssh -L");
                answer = await TryExchangeAsync(answerPort, async s =>
                {
                    await s.SendAsync(Encoding.ASCII.GetBytes(Request));
                    s.Shutdown(SocketShutdown.Send);
                    return await ReadToEofAsync(s);
                });
                if (answer.Length == 0) await Task.Delay(AttemptPause);
            }
            Assert.True(answer == $"answer to: {Request}", $"got \"{answer}\"\n--- daemon\n{Daemon.Log}");

            // The server half-closes first; the client reads that EOF and still sends.
            string banner = "";
            for (int i = 0; i < MaxAttempts && banner.Length == 0; i++)
            {
                AssertRunning(ssh, "ssh -L");
                banner = await TryExchangeAsync(bannerPort, async s =>
                {
                    var b = await ReadToEofAsync(s);
                    if (b.Length == 0) return b;
                    await s.SendAsync(Encoding.ASCII.GetBytes(LateData));
                    s.Shutdown(SocketShutdown.Send);
                    await ReadToEofAsync(s); // the server closes once it has read to EOF
                    return b;
                });
                if (banner.Length == 0) await Task.Delay(AttemptPause);
            }
            Assert.Equal(Banner, banner);
            string got = "";
            for (int i = 0; i < MaxAttempts && got != LateData; i++)
            {
                var r = await u.VmAsync(Slot, "cat /tmp/got-8101 2>/dev/null || true");
                got = r.Stdout;
                if (got != LateData) await Task.Delay(AttemptPause);
            }
            Assert.True(got == LateData, $"the VM-side server got \"{got}\" after its half-close\n--- daemon\n{Daemon.Log}");
        }
        finally
        {
            await StopAsync(ssh);
            await StopAsync(servers);
        }
    }

    [Fact]
    public async Task RemoteForward_HalfCloseReachesTheOtherSide_BothWays()
    {
        var u = await UserWithScriptAsync("halfclose-r@example.com", "halfclose-r");
        var lateData = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        // Reads the request to EOF, then answers.
        await using var answerServer = HostServer.Start(async s =>
        {
            var request = await ReadToEofAsync(s);
            await s.SendAsync(Encoding.ASCII.GetBytes($"answer to: {request}"));
        });
        // Sends a banner and half-closes, then reads what the VM-side client still sends.
        await using var bannerServer = HostServer.Start(async s =>
        {
            await s.SendAsync(Encoding.ASCII.GetBytes(Banner));
            s.Shutdown(SocketShutdown.Send);
            lateData.TrySetResult(await ReadToEofAsync(s));
        });
        using var ssh = ForwardingTests.StartBackgroundSsh(Daemon, u,
            ["-N", "-o", "ExitOnForwardFailure=yes",
             "-R", $"127.0.0.1:9100:127.0.0.1:{answerServer.Port}", "-R", $"127.0.0.1:9101:127.0.0.1:{bannerServer.Port}", Slot]);
        try
        {
            // The VM-side client half-closes after its request (tries fail until the listener is up).
            ProcessResult? last = null;
            for (int i = 0; i < MaxAttempts && NotListeningYet(last); i++)
            {
                AssertRunning(ssh, "ssh -R");
                if (last is not null) await Task.Delay(AttemptPause);
                last = await u.VmAsync(Slot, $"timeout {ExchangeTimeoutSeconds} perl {ScriptPath} request-client 9100");
            }
            Assert.True(last?.Stdout == $"answer to: {Request}", $"{last}\n--- daemon\n{Daemon.Log}");

            // The host-side server half-closes first; the VM-side client reads that EOF and still sends.
            last = null;
            for (int i = 0; i < MaxAttempts && NotListeningYet(last); i++)
            {
                AssertRunning(ssh, "ssh -R");
                if (last is not null) await Task.Delay(AttemptPause);
                last = await u.VmAsync(Slot, $"timeout {ExchangeTimeoutSeconds} perl {ScriptPath} banner-client 9101");
            }
            Assert.True(last?.Stdout == Banner, $"{last}\n--- daemon\n{Daemon.Log}");
            var got = await lateData.Task.WaitAsync(ExchangeTimeout);
            Assert.Equal(LateData, got);
        }
        finally
        {
            await StopAsync(ssh);
        }
    }

    // ------------------------------------------------------------------ helpers

    private static void AssertRunning(Process ssh, string what)
    {
        if (ssh.HasExited) Assert.Fail($"{what} exited: {ssh.StandardError.ReadToEnd()}");
    }

    private static async Task StopAsync(Process p)
    {
        if (!p.HasExited) p.Kill();
        await p.WaitForExitAsync();
    }

    /// <summary>A loopback port free right now (ssh -L binds it moments later).</summary>
    private static int FreeLoopbackPort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    /// <summary>
    /// One connection to 127.0.0.1:<paramref name="port"/>; "" when refused or reset (ssh not listening yet, or
    /// the server inside the VM not up: ssh closes the connection at once), for the caller to retry. A timeout
    /// is a lost EOF, and fails the test.
    /// </summary>
    private static async Task<string> TryExchangeAsync(int port, Func<Socket, Task<string>> exchange)
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await s.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
            return await exchange(s);
        }
        catch (SocketException) { return ""; }
        catch (OperationCanceledException) { throw new TimeoutException($"no EOF within {ExchangeTimeout.TotalSeconds:0} s on the -L connection"); }
    }

    /// <summary>The VM-side client could not connect (the -R listener is not up yet): worth another try.</summary>
    private static bool NotListeningYet(ProcessResult? r) => r is null || (r.ExitCode != 0 && r.Stderr.Contains("connect:"));

    private static async Task<string> ReadToEofAsync(Socket s)
    {
        var text = new StringBuilder();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(ExchangeTimeout);
        int n;
        while (text.Length < MaxReplyBytes && (n = await s.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        return text.ToString();
    }

    /// <summary>A loopback server on the host running <c>serve</c> once per accepted connection.</summary>
    private sealed class HostServer : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private readonly Func<Socket, Task> _serve;
        private readonly Task _loop;

        private HostServer(Func<Socket, Task> serve)
        {
            _serve = serve;
            _listener.Start();
            _loop = AcceptLoopAsync();
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public static HostServer Start(Func<Socket, Task> serve) => new(serve);

        private async Task AcceptLoopAsync()
        {
            while (!_stop.IsCancellationRequested)
            {
                Socket s;
                try { s = await _listener.AcceptSocketAsync(_stop.Token); }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { return; }
                _ = ServeOneAsync(s);
            }
        }

        private async Task ServeOneAsync(Socket s)
        {
            using (s)
            {
                try { await _serve(s).WaitAsync(ExchangeTimeout); }
                catch (Exception e) when (e is SocketException or OperationCanceledException or TimeoutException) { }
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
