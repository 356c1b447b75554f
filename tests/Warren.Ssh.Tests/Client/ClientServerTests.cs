using System.Net;
using System.Security.Cryptography;
using System.Text;
using Warren.Ssh.Client;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Tests.Connection;
using Warren.Ssh.Tests.Server;
using Xunit;

namespace Warren.Ssh.Tests.Client;

/// <summary>SshClient against SshServer over the in-memory pair.</summary>
public sealed class ClientServerTests
{
    private static async Task<(SshClient Client, TestServerApplication App)> ConnectAsync(TestServerApplication app, SshConnectionLimits? limits = null)
    {
        var hostKey = Ed25519PrivateKey.Generate();
        var userKey = Ed25519PrivateKey.Generate();
        app.AcceptedKeys.Add(userKey.PublicKey);
        var server = new SshServer(new SshServerOptions { HostKeys = [hostKey], ConnectionLimits = limits ?? new() }, app);
        var (c, s) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        _ = Task.Run(() => server.HandleConnectionAsync(s, new IPEndPoint(IPAddress.Loopback, 22), new IPEndPoint(IPAddress.Loopback, 40000)));
        var client = await SshClient.ConnectAsync(c, new SshClientOptions
        {
            User = "alice", Keys = [userKey], HostKeyValidator = k => ValueTask.FromResult(k.Equals(hostKey.PublicKey)),
            ConnectionLimits = limits ?? new(),
        }).WaitAsync(Msg.Timeout);
        return (client, app);
    }

    private static async Task<byte[]> ReadAllAsync(SshChannel ch, bool stderr = false)
    {
        var ms = new MemoryStream();
        var buf = new byte[64 * 1024];
        for (int i = 0; i < 1_000_000; i++)
        {
            int n = stderr ? await ch.ReadStderrAsync(buf).AsTask().WaitAsync(Msg.Timeout) : await ch.ReadAsync(buf).AsTask().WaitAsync(Msg.Timeout);
            if (n == 0) break;
            ms.Write(buf, 0, n);
        }
        return ms.ToArray();
    }

    [Fact]
    public async Task Exec_ReturnsOutputStderrAndExitStatus()
    {
        var app = new TestServerApplication
        {
            Run = TestServerApplication.ServeSessions(async (ch, exec) =>
            {
                await ch.WriteAsync(Encoding.UTF8.GetBytes("ran " + exec.Command));
                await ch.WriteExtendedAsync("oops"u8.ToArray());
                await ch.ExitAsync(3);
            }),
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        var ch = await client.ExecAsync("hello world").WaitAsync(Msg.Timeout);
        var stdoutTask = ReadAllAsync(ch);
        var stderr = await ReadAllAsync(ch, stderr: true);
        Assert.Equal("ran hello world", Encoding.UTF8.GetString(await stdoutTask));
        Assert.Equal("oops", Encoding.UTF8.GetString(stderr));
        var exit = await ch.WaitForExitAsync().WaitAsync(Msg.Timeout);
        Assert.Equal(3u, exit.ExitStatus);
    }

    [Fact]
    public async Task ExitSignal_IsReported()
    {
        var app = new TestServerApplication
        {
            Run = TestServerApplication.ServeSessions(async (ch, exec) =>
            {
                await ch.SendExitSignalAsync("KILL", true, "killed");
                await ch.SendEofAsync();
                await ch.CloseAsync();
            }),
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        var ch = await client.ExecAsync("x").WaitAsync(Msg.Timeout);
        var exit = await ch.WaitForExitAsync().WaitAsync(Msg.Timeout);
        Assert.Null(exit.ExitStatus);
        Assert.Equal("KILL", exit.ExitSignal);
        Assert.True(exit.CoreDumped);
        Assert.Equal("killed", exit.ErrorMessage);
    }

    [Fact]
    public async Task Exec_Refused_Throws()
    {
        var app = new TestServerApplication
        {
            Run = async conn =>
            {
                await foreach (var open in conn.AcceptChannelsAsync())
                {
                    var ch = await open.AcceptAsync();
                    _ = Task.Run(async () => { while (await ch.ReadRequestAsync() is { } r) await r.RejectAsync(); });
                }
            },
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        await Assert.ThrowsAsync<SshRequestFailedException>(() => client.ExecAsync("x").WaitAsync(Msg.Timeout));
    }

    [Fact]
    public async Task BulkTransfer_BothWays_IsIntactWithSmallWindows()
    {
        // Echo server: everything the client sends comes back. Small windows force many adjusts.
        var app = new TestServerApplication
        {
            Run = TestServerApplication.ServeSessions(async (ch, exec) =>
            {
                var buf = new byte[10_000];
                int n;
                while ((n = await ch.ReadAsync(buf)) > 0) await ch.WriteAsync(buf.AsMemory(0, n));
                await ch.ExitAsync(0);
            }),
        };
        var limits = new SshConnectionLimits { InitialWindowSize = 64 * 1024, MaxPacketSize = 8 * 1024 };
        var (client, _) = await ConnectAsync(app, limits);
        await using var _c = client;
        var ch = await client.ExecAsync("cat").WaitAsync(Msg.Timeout);
        var data = RandomNumberGenerator.GetBytes(4 * 1024 * 1024);
        var reader = ReadAllAsync(ch);
        for (int off = 0; off < data.Length; off += 100_000)
            await ch.WriteAsync(data.AsMemory(off, Math.Min(100_000, data.Length - off))).AsTask().WaitAsync(Msg.Timeout);
        await ch.SendEofAsync();
        var back = await reader.WaitAsync(Msg.Timeout);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(back));
        Assert.Equal(0u, (await ch.WaitForExitAsync().WaitAsync(Msg.Timeout)).ExitStatus);
    }

    [Fact]
    public async Task Shell_WithPty_ServerSeesTerminal()
    {
        var seen = new TaskCompletionSource<SshPtyRequest>();
        var app = new TestServerApplication
        {
            Run = async conn =>
            {
                await foreach (var open in conn.AcceptChannelsAsync())
                {
                    var ch = await open.AcceptAsync();
                    _ = Task.Run(async () =>
                    {
                        while (await ch.ReadRequestAsync() is { } r)
                        {
                            if (r is SshPtyRequest p) { seen.TrySetResult(p); await r.AcceptAsync(); }
                            else if (r is SshShellRequest) { await r.AcceptAsync(); await ch.WriteAsync("$ "u8.ToArray()); await ch.ExitAsync(0); }
                            else await r.RejectAsync();
                        }
                    });
                }
            },
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        var ch = await client.OpenShellAsync(new SshTtySpec("vt100", 100, 30) { Modes = [new(SshTerminalModeOpcode.ECHO, 0)] }).WaitAsync(Msg.Timeout);
        var pty = await seen.Task.WaitAsync(Msg.Timeout);
        Assert.Equal("vt100", pty.Term);
        Assert.Equal(100u, pty.WidthChars);
        Assert.Equal([new SshTerminalMode(SshTerminalModeOpcode.ECHO, 0)], pty.Modes);
        Assert.Equal("$ ", Encoding.UTF8.GetString(await ReadAllAsync(ch)));
    }

    [Fact]
    public async Task DirectTcpIp_CarriesDestinationAndData()
    {
        var app = new TestServerApplication
        {
            Run = async conn =>
            {
                await foreach (var open in conn.AcceptChannelsAsync())
                {
                    Assert.Equal("direct-tcpip", open.ChannelType);
                    var ch = await open.AcceptAsync();
                    var text = $"{open.Host}:{open.Port} from {open.OriginatorAddress}:{open.OriginatorPort}";
                    await ch.WriteAsync(Encoding.UTF8.GetBytes(text));
                    await ch.SendEofAsync();
                    await ch.CloseAsync();
                }
            },
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        var ch = await client.OpenDirectTcpIpAsync("db.internal", 5432, "10.0.0.1", 1234).WaitAsync(Msg.Timeout);
        Assert.Equal("db.internal:5432 from 10.0.0.1:1234", Encoding.UTF8.GetString(await ReadAllAsync(ch)));
    }

    [Fact]
    public async Task DirectTcpIp_Rejected_ThrowsWithReason()
    {
        var app = new TestServerApplication
        {
            Run = async conn =>
            {
                await foreach (var open in conn.AcceptChannelsAsync())
                    await open.RejectAsync(SshChannelOpenFailureReason.ConnectFailed, "refused");
            },
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        var ex = await Assert.ThrowsAsync<SshChannelOpenFailedException>(() => client.OpenDirectTcpIpAsync("x", 1).WaitAsync(Msg.Timeout));
        Assert.Equal(SshChannelOpenFailureReason.ConnectFailed, ex.Reason);
        Assert.Equal("refused", ex.Description);
    }

    [Fact]
    public async Task RemoteForward_DeliversForwardedChannels()
    {
        var connected = new TaskCompletionSource<SshServerConnection>();
        var app = new TestServerApplication
        {
            Forward = (conn, addr, port) => { connected.TrySetResult(conn); return port == 0 ? 6000u : port; },
            Run = conn => conn.Completion,
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        var got = new TaskCompletionSource<(SshForwardedConnection, string)>();
        var forward = await client.RequestRemoteForwardAsync("localhost", 0, async fc =>
        {
            var buf = new byte[100];
            int n = await fc.Channel.ReadAsync(buf);
            got.TrySetResult((fc, Encoding.UTF8.GetString(buf, 0, n)));
        }).WaitAsync(Msg.Timeout);
        Assert.Equal(6000u, forward.Port);
        var conn = await connected.Task.WaitAsync(Msg.Timeout);
        var ch = await conn.OpenForwardedTcpIpChannelAsync("localhost", 6000, "192.0.2.1", 777).WaitAsync(Msg.Timeout);
        await ch.WriteAsync("ping"u8.ToArray());
        var (fc, text) = await got.Task.WaitAsync(Msg.Timeout);
        Assert.Equal("ping", text);
        Assert.Equal("192.0.2.1", fc.OriginatorAddress);
        Assert.Equal(777u, fc.OriginatorPort);
    }

    [Fact]
    public async Task AgentChannel_FromServer_IsRefusedByClient()
    {
        var result = new TaskCompletionSource<Exception?>();
        var app = new TestServerApplication
        {
            Run = async conn =>
            {
                // Past the server's own guard (no auth-agent-req was accepted): the client must refuse by itself.
                try { await conn.Mux.OpenChannelAsync(SshChannelTypes.AuthAgent, default, default); result.TrySetResult(null); }
                catch (Exception ex) { result.TrySetResult(ex); }
                await conn.Completion;
            },
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        var ex = Assert.IsType<SshChannelOpenFailedException>(await result.Task.WaitAsync(Msg.Timeout));
        Assert.Equal(SshChannelOpenFailureReason.AdministrativelyProhibited, ex.Reason);
    }

    [Fact]
    public async Task ChannelStream_RoundTrips()
    {
        var app = new TestServerApplication
        {
            Run = TestServerApplication.ServeSessions(async (ch, exec) =>
            {
                var s = ch.AsStream();
                using var reader = new StreamReader(s, leaveOpen: true);
                var line = await reader.ReadLineAsync();
                await s.WriteAsync(Encoding.UTF8.GetBytes(line!.ToUpperInvariant()));
                await ch.ExitAsync(0);
            }),
        };
        var (client, _) = await ConnectAsync(app);
        await using var _c = client;
        var ch = await client.ExecAsync("upper").WaitAsync(Msg.Timeout);
        await ch.AsStream().WriteAsync("shout\n"u8.ToArray());
        Assert.Equal("SHOUT", Encoding.UTF8.GetString(await ReadAllAsync(ch)));
    }
}
