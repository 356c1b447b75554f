using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Warren.Ssh.Crypto;
using Warren.Ssh.Keys;
using Warren.Ssh.Transport;
using Xunit;

namespace Warren.Ssh.Tests.Interop;

/// <summary>The real OpenSSH client (ssh) against SshServer: the full stack, transport to channels.</summary>
[Collection("interop")]
public sealed class OpenSshClientInteropTests
{
    [Fact]
    public async Task Exec_EchoesAndReportsExitCodes()
    {
        await using var s = new InteropServer();
        var r = await s.SshAsync(s.SshArgs("127.0.0.1", "echo hello from warren"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal("hello from warren\n", r.StdoutText);

        r = await s.SshAsync(s.SshArgs("127.0.0.1", "exit 3"));
        Assert.Equal(3, r.ExitCode);

        r = await s.SshAsync(s.SshArgs("127.0.0.1", "stderr boom"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("boom", r.Stderr);

        var conn = Assert.Single(s.App.Connections.Take(1));
        Assert.Equal(s.UserKey, conn.AuthenticatedKey);
        Assert.StartsWith("SSH-2.0-OpenSSH", conn.ClientVersion);
    }

    [Fact]
    public async Task UnknownKey_IsRefused()
    {
        await using var s = new InteropServer();
        var other = new Keys.SshKeygen();
        other.RunOk("-q", "-t", "ed25519", "-N", "", "-f", other.PathOf("k"));
        var args = s.SshArgs("127.0.0.1", "echo no");
        args[args.IndexOf(s.KeyPath)] = other.PathOf("k");
        var r = await s.SshAsync(args);
        Assert.Equal(255, r.ExitCode);
        Assert.Contains("Permission denied", r.Stderr);
        other.Dispose();
    }

    [Fact]
    public async Task Shell_OverPty()
    {
        await using var s = new InteropServer();
        var r = await s.SshAsync(s.SshArgs("-tt", "127.0.0.1"), async stdin =>
        {
            await stdin.WriteAsync("hello\nexit\n"u8.ToArray());
            await stdin.FlushAsync();
            // Keep stdin open until the server ends the session, as an interactive user would.
            for (int i = 0; i < 600 && s.App.Connections.IsEmpty; i++) await Task.Delay(50);
            await Task.Delay(500);
        });
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("got: hello", r.StdoutText);
        var pty = Assert.Single(s.App.Ptys);
        Assert.False(string.IsNullOrEmpty(pty.Term));
    }

    [Fact]
    public async Task StdioForward_W_UsesDirectTcpIp()
    {
        await using var s = new InteropServer();
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var echo = Task.Run(async () =>
        {
            using var c = await listener.AcceptTcpClientAsync();
            var st = c.GetStream();
            var buf = new byte[1024];
            int n = await st.ReadAsync(buf);
            await st.WriteAsync(Encoding.UTF8.GetBytes("echo:" + Encoding.UTF8.GetString(buf, 0, n)));
            c.Client.Shutdown(SocketShutdown.Send);
        });
        var r = await s.SshAsync(s.SshArgs("-W", $"127.0.0.1:{port}", "127.0.0.1"), async stdin =>
        {
            await stdin.WriteAsync("ping"u8.ToArray());
            await stdin.FlushAsync();
            await echo.WaitAsync(TimeSpan.FromSeconds(60));
        });
        Assert.Equal("echo:ping", r.StdoutText);
    }

    [Fact]
    public async Task LocalForward_L_CarriesTcpTraffic()
    {
        await using var s = new InteropServer();
        using var target = new TcpListener(IPAddress.Loopback, 0);
        target.Start();
        int targetPort = ((IPEndPoint)target.LocalEndpoint).Port;
        int localPort = FreePort();
        var ssh = s.SshAsync(s.SshArgs("-o", "ExitOnForwardFailure=yes", "-L", $"127.0.0.1:{localPort}:127.0.0.1:{targetPort}", "127.0.0.1", "wait"));
        try
        {
            using var client = await ConnectWithRetryAsync(localPort, ssh);
            var accepted = await target.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(60));
            using (accepted)
            {
                await client.GetStream().WriteAsync("through -L"u8.ToArray());
                var buf = new byte[64];
                int n = await accepted.GetStream().ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
                Assert.Equal("through -L", Encoding.UTF8.GetString(buf, 0, n));
                await accepted.GetStream().WriteAsync("back"u8.ToArray());
                n = await client.GetStream().ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
                Assert.Equal("back", Encoding.UTF8.GetString(buf, 0, n));
            }
        }
        finally
        {
            s.App.Release.TrySetResult();
        }
        var r = await ssh;
        Assert.True(r.ExitCode == 0, r.Stderr);
    }

    [Fact]
    public async Task RemoteForward_R_OpensForwardedTcpIpToClient()
    {
        await using var s = new InteropServer();
        using var target = new TcpListener(IPAddress.Loopback, 0);
        target.Start();
        int targetPort = ((IPEndPoint)target.LocalEndpoint).Port;
        var ssh = s.SshAsync(s.SshArgs("-o", "ExitOnForwardFailure=yes", "-R", $"127.0.0.1:7777:127.0.0.1:{targetPort}", "127.0.0.1", "wait"));
        try
        {
            var (conn, address, port) = await s.App.Forwarded.Task.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(7777u, port);
            var ch = await conn.OpenForwardedTcpIpChannelAsync(address, port, "192.0.2.9", 5555).WaitAsync(TimeSpan.FromSeconds(60));
            using var accepted = await target.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(60));
            await ch.WriteAsync("through -R"u8.ToArray());
            var buf = new byte[64];
            int n = await accepted.GetStream().ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal("through -R", Encoding.UTF8.GetString(buf, 0, n));
            await accepted.GetStream().WriteAsync("back"u8.ToArray());
            n = await ch.ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal("back", Encoding.UTF8.GetString(buf, 0, n));
            await ch.CloseAsync();
        }
        finally
        {
            s.App.Release.TrySetResult();
        }
        var r = await ssh;
        Assert.True(r.ExitCode == 0, r.Stderr);
    }

    [Fact]
    public async Task Transfer_200MiB_WithRekeyEveryMiB()
    {
        const long size = 200L * 1024 * 1024;
        await using var s = new InteropServer();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var r = await s.SshAsync(s.SshArgs("-o", "RekeyLimit=1M", "127.0.0.1", "sha256"), async stdin =>
        {
            var rng = new Random(4254);
            var buf = new byte[256 * 1024];
            for (long sent = 0; sent < size; sent += buf.Length)
            {
                rng.NextBytes(buf);
                sha.AppendData(buf);
                await stdin.WriteAsync(buf);
            }
        });
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal($"{size} {Convert.ToHexStringLower(sha.GetHashAndReset())}\n", r.StdoutText);
    }

    [Fact]
    public async Task Download_32MiB_ServerToClient()
    {
        const long size = 32L * 1024 * 1024;
        await using var s = new InteropServer();
        var r = await s.SshAsync(s.SshArgs("-o", "RekeyLimit=1M", "127.0.0.1", $"source {size}"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(size, r.Stdout.LongLength);
    }

    public static TheoryData<string, string> Algorithms()
    {
        var data = new TheoryData<string, string>();
        var supported = new Dictionary<string, HashSet<string>>
        {
            ["KexAlgorithms"] = Query("kex"),
            ["Ciphers"] = Query("cipher"),
            ["MACs"] = Query("mac"),
        };
        foreach (var k in SshAlgorithms.DefaultKexAlgorithms) if (supported["KexAlgorithms"].Contains(k)) data.Add("KexAlgorithms", k);
        foreach (var c in SshAlgorithms.DefaultCiphers) if (supported["Ciphers"].Contains(c)) data.Add("Ciphers", c);
        foreach (var m in SshAlgorithms.DefaultMacs) if (supported["MACs"].Contains(m)) data.Add("MACs", m);
        foreach (var h in SshAlgorithms.DefaultHostKeyAlgorithms) data.Add("HostKeyAlgorithms", h);
        return data;
    }

    [Theory]
    [MemberData(nameof(Algorithms))]
    public async Task Exec_WithEachAlgorithmForced(string option, string algorithm)
    {
        IReadOnlyList<SshPrivateKey> hostKeys =
        [
            Ed25519PrivateKey.Generate(),
            SshPrivateKey.Generate("ecdsa-sha2-nistp256"),
            SshPrivateKey.Generate("ecdsa-sha2-nistp384"),
            SshPrivateKey.Generate("ecdsa-sha2-nistp521"),
            SshPrivateKey.Generate("ssh-rsa", 2048),
        ];
        await using var s = new InteropServer(hostKeys: hostKeys);
        var extra = new List<string> { "-o", $"{option}={algorithm}" };
        // With a non-AEAD cipher the MAC is negotiated; force one our side offers.
        if (option == "MACs") extra.AddRange(["-o", "Ciphers=aes128-ctr"]);
        extra.AddRange(["127.0.0.1", "echo " + algorithm]);
        var r = await s.SshAsync(s.SshArgs([.. extra]));
        Assert.True(r.ExitCode == 0, $"{option}={algorithm}: {r.Stderr}");
        Assert.Equal(algorithm + "\n", r.StdoutText);
    }

    private static HashSet<string> Query(string what)
    {
        try
        {
            var r = ExternalProcess.RunAsync("ssh", ["-Q", what], null, TimeSpan.FromSeconds(30)).GetAwaiter().GetResult();
            return [.. r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
        }
        catch (Xunit.Sdk.XunitException)
        {
            // No ssh: return the full list so every case runs and fails loudly.
            return [.. SshAlgorithms.DefaultKexAlgorithms, .. SshAlgorithms.DefaultCiphers, .. SshAlgorithms.DefaultMacs];
        }
    }

    internal static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    internal static async Task<TcpClient> ConnectWithRetryAsync(int port, Task running)
    {
        // Bounded: 600 tries x 100 ms; the forwarder appears once ssh has authenticated.
        for (int i = 0; i < 600; i++)
        {
            if (running.IsCompleted) throw new Xunit.Sdk.XunitException("ssh exited early: " + (await (Task<ExternalProcess.Result>)running).Stderr);
            var c = new TcpClient();
            try
            {
                await c.ConnectAsync(IPAddress.Loopback, port);
                return c;
            }
            catch (SocketException)
            {
                c.Dispose();
                await Task.Delay(100);
            }
        }
        throw new TimeoutException("forwarded port never opened");
    }
}
