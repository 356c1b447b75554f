using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Tests.Server;
using Warren.Ssh.Transport;
using Xunit;

namespace Warren.Ssh.Tests.Interop;

/// <summary>
/// Past the unauthenticated-connection limits the server spends no key exchange, yet the client learns why:
/// a version line and a cleartext DISCONNECT with reason 12 (RFC 4253 §11.1), which the real OpenSSH client prints.
/// </summary>
public sealed class EarlyRefusalInteropTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public void Refusal_IsAVersionLineThenOneWellFormedPlainPacket()
    {
        var bytes = SshEarlyRefusal.Build(SshTransportServerOptions.DefaultVersion, SshDisconnectReason.TooManyConnections, SshServer.TooManyConnectionsMessage);
        string line = SshTransportServerOptions.DefaultVersion + "\r\n";
        Assert.Equal(line, Encoding.ASCII.GetString(bytes, 0, line.Length));
        var packet = bytes.AsSpan(line.Length);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(packet);
        Assert.Equal(packet.Length - 4, (int)length);
        Assert.Equal(0, packet.Length % 8);
        int padding = packet[4];
        Assert.InRange(padding, 4, 255);
        var payload = packet[5..^padding];
        Assert.Equal(SshMessageNumbers.Disconnect, payload[0]);
        Assert.Equal((uint)SshDisconnectReason.TooManyConnections, BinaryPrimitives.ReadUInt32BigEndian(payload[1..]));
        int textLength = (int)BinaryPrimitives.ReadUInt32BigEndian(payload[5..]);
        Assert.Equal(SshServer.TooManyConnectionsMessage, Encoding.UTF8.GetString(payload.Slice(9, textLength)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(payload[(9 + textLength)..]));
        Assert.Equal(9 + textLength + 4, payload.Length);
    }

    [Fact]
    public async Task OpenSshClient_PastThePerSourceLimit_IsToldTooManyConnections()
    {
        var server = new SshServer(new SshServerOptions { HostKeys = [Ed25519PrivateKey.Generate()], MaxUnauthenticatedConnectionsPerSource = 1 },
            new TestServerApplication());
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(SshServer.ListenBacklog);
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        using var stop = new CancellationTokenSource();
        var serving = Task.Run(() => server.ServeAsync(listener, stop.Token));
        try
        {
            // The first connection says nothing and holds the source's only unauthenticated slot.
            using var holder = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await holder.ConnectAsync(IPAddress.Loopback, port);
            var deadline = DateTime.UtcNow + Bound;
            while (server.UnauthenticatedConnectionCount == 0 && DateTime.UtcNow < deadline)
                await Task.Delay(10);
            Assert.Equal(1, server.UnauthenticatedConnectionCount);

            var result = await ExternalProcess.RunAsync("ssh",
            [
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-F", "/dev/null",
                "-o", "ConnectTimeout=20", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-l", "tester", "127.0.0.1", "true",
            ], null, Bound);
            Assert.NotEqual(0, result.ExitCode);
            Assert.True(result.Stderr.Contains(SshServer.TooManyConnectionsMessage, StringComparison.Ordinal), result.Stderr);
            Assert.Equal(1, server.UnauthenticatedConnectionCount);
        }
        finally
        {
            stop.Cancel();
            listener.Dispose();
            await serving.WaitAsync(Bound);
        }
    }
}
