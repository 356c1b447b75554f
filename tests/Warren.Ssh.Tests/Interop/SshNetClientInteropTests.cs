using System.Net;
using System.Net.Sockets;
using System.Text;
using Renci.SshNet;
using Xunit;

namespace Warren.Ssh.Tests.Interop;

/// <summary>SSH.NET as a second, independent client implementation against SshServer.</summary>
[Collection("interop")]
public sealed class SshNetClientInteropTests
{
    private static Renci.SshNet.SshClient Connect(InteropServer s)
    {
        var info = new ConnectionInfo("127.0.0.1", s.Port, "tester",
            new PrivateKeyAuthenticationMethod("tester", new PrivateKeyFile(s.KeyPath)))
        {
            Timeout = TimeSpan.FromSeconds(60),
        };
        var client = new Renci.SshNet.SshClient(info);
        client.HostKeyReceived += (_, e) => e.CanTrust = true;
        client.Connect();
        return client;
    }

    [Fact]
    public async Task Exec_ReturnsOutputAndExitStatus()
    {
        await using var s = new InteropServer();
        using var client = Connect(s);
        using var ok = client.RunCommand("echo from ssh.net");
        Assert.Equal("from ssh.net\n", ok.Result);
        Assert.Equal(0, ok.ExitStatus);
        using var failing = client.RunCommand("exit 3");
        Assert.Equal(3, failing.ExitStatus);
        client.Disconnect();
        var conn = Assert.Single(s.App.Connections);
        Assert.Equal(s.UserKey, conn.AuthenticatedKey);
    }

    [Fact]
    public async Task LocalPortForward_CarriesTraffic()
    {
        await using var s = new InteropServer();
        using var target = new TcpListener(IPAddress.Loopback, 0);
        target.Start();
        int targetPort = ((IPEndPoint)target.LocalEndpoint).Port;
        using var client = Connect(s);
        using var forward = new ForwardedPortLocal("127.0.0.1", 0, "127.0.0.1", (uint)targetPort);
        client.AddForwardedPort(forward);
        forward.Start();
        using var local = new TcpClient();
        await local.ConnectAsync(IPAddress.Loopback, (int)forward.BoundPort);
        using var accepted = await target.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(60));
        await local.GetStream().WriteAsync("via ssh.net"u8.ToArray());
        var buf = new byte[64];
        int n = await accepted.GetStream().ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal("via ssh.net", Encoding.UTF8.GetString(buf, 0, n));
        await accepted.GetStream().WriteAsync("ack"u8.ToArray());
        n = await local.GetStream().ReadAsync(buf).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal("ack", Encoding.UTF8.GetString(buf, 0, n));
        forward.Stop();
        client.Disconnect();
    }
}
