using System.Text;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Tests.Server;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Ssh.Tests.Connection;

/// <summary>
/// "auth-agent-req@openssh.com" (OpenSSH PROTOCOL.agent) is the application's decision: the library hands
/// it over as <see cref="SshAuthAgentRequest"/>, replies per RFC 4254 §5.4 only when asked, and lets the
/// server open "auth-agent@openssh.com" channels only after an acceptance.
/// </summary>
public sealed class AgentForwardingRequestTests
{
    private const byte ChannelOpen = 90, ChannelOpenConfirmation = 91, ChannelData = 94, ChannelRequest = 98;
    private const byte ChannelSuccess = 99, ChannelFailure = 100, GlobalRequest = 80, RequestFailure = 82;
    private const string AgentReq = "auth-agent-req@openssh.com";

    /// <summary>Serves sessions, answering the agent request with <paramref name="acceptAgent"/> and every env request with success.</summary>
    private static TestServerApplication DecidingApp(bool acceptAgent) => new()
    {
        Run = async conn =>
        {
            var sessions = new List<Task>();
            await foreach (var open in conn.AcceptChannelsAsync())
            {
                var ch = await open.AcceptAsync();
                sessions.Add(Task.Run(async () =>
                {
                    while (await ch.ReadRequestAsync() is { } request)
                    {
                        switch (request)
                        {
                            case SshAuthAgentRequest agent when acceptAgent: await agent.AcceptAsync(); break;
                            case SshEnvRequest env: await env.AcceptAsync(); break;
                            default: await request.RejectAsync(); break;
                        }
                    }
                }));
            }
            await Task.WhenAll(sessions);
        },
    };

    private static Task SendAgentRequestAsync(ServerHarness h, uint channel, bool wantReply)
        => h.SendAsync(ChannelRequest, w => w.WriteUInt32(channel).WriteString(AgentReq).WriteBoolean(wantReply));

    private static Task SendEnvRequestAsync(ServerHarness h, uint channel)
        => h.SendAsync(ChannelRequest, w => w.WriteUInt32(channel).WriteString("env").WriteBoolean(true).WriteString("LANG").WriteString("C"));

    /// <summary>The server opens an agent channel; the raw client confirms it and reads what the server writes on it.</summary>
    private static async Task AssertAgentChannelOpensAsync(ServerHarness h, SshServerConnection conn)
    {
        var opening = conn.OpenAgentChannelAsync();
        var open = await Msg.ExpectAsync(h.Client, ChannelOpen);
        var r = new SshReader(open.AsSpan(1));
        Assert.True(r.TryReadUtf8(out var type));
        Assert.Equal(SshChannelTypes.AuthAgent, type);
        Assert.True(r.TryReadUInt32(out var serverId));
        const uint ClientId = 7;
        await h.SendAsync(ChannelOpenConfirmation, w => w.WriteUInt32(serverId).WriteUInt32(ClientId).WriteUInt32(1 << 20).WriteUInt32(32768));
        var agentChannel = await opening.WaitAsync(Msg.Timeout);
        Assert.Equal(SshChannelTypes.AuthAgent, agentChannel.ChannelType);

        await agentChannel.WriteAsync("agent bytes"u8.ToArray());
        var data = await Msg.ExpectAsync(h.Client, ChannelData);
        var d = new SshReader(data.AsSpan(1));
        Assert.True(d.TryReadUInt32(out var recipient));
        Assert.Equal(ClientId, recipient);
        Assert.True(d.TryReadString(out var bytes));
        Assert.Equal("agent bytes", Encoding.ASCII.GetString(bytes));
    }

    [Fact]
    public async Task WantReply_Accepted_RepliesSuccess_AndAnAgentChannelCanBeOpened()
    {
        var app = DecidingApp(acceptAgent: true);
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.False(conn.AgentForwardingAccepted);

        await SendAgentRequestAsync(h, id, wantReply: true);
        await Msg.ExpectAsync(h.Client, ChannelSuccess);
        Assert.True(conn.AgentForwardingAccepted);
        await AssertAgentChannelOpensAsync(h, conn);
    }

    [Fact]
    public async Task WantReply_Refused_RepliesFailure_AndNoAgentChannelMayBeOpened()
    {
        var app = DecidingApp(acceptAgent: false);
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();

        await SendAgentRequestAsync(h, id, wantReply: true);
        await Msg.ExpectAsync(h.Client, ChannelFailure);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.False(conn.AgentForwardingAccepted);
        Assert.Throws<InvalidOperationException>(() => { _ = conn.OpenAgentChannelAsync(); });
    }

    [Fact]
    public async Task NoWantReply_Accepted_SendsNothing_AndAnAgentChannelCanBeOpened()
    {
        // OpenSSH's client sends the request without want-reply.
        var app = DecidingApp(acceptAgent: true);
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();

        await SendAgentRequestAsync(h, id, wantReply: false);
        // The next reply on the wire answers the env request: the agent request got none.
        await SendEnvRequestAsync(h, id);
        await Msg.ExpectAsync(h.Client, ChannelSuccess);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.True(conn.AgentForwardingAccepted);
        await AssertAgentChannelOpensAsync(h, conn);
    }

    [Fact]
    public async Task NoWantReply_Refused_SendsNothing_AndNoAgentChannelMayBeOpened()
    {
        var app = DecidingApp(acceptAgent: false);
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();

        await SendAgentRequestAsync(h, id, wantReply: false);
        await SendEnvRequestAsync(h, id);
        await Msg.ExpectAsync(h.Client, ChannelSuccess);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.False(conn.AgentForwardingAccepted);
        Assert.Throws<InvalidOperationException>(() => { _ = conn.OpenAgentChannelAsync(); });
    }

    [Fact]
    public async Task Unanswered_IsNotAcceptedByTheLibrary()
    {
        // An application that never reads the session's requests has not accepted anything.
        var opened = new TaskCompletionSource<SshChannel>(TaskCreationOptions.RunContinuationsAsynchronously);
        var app = new TestServerApplication
        {
            Run = async conn =>
            {
                await foreach (var open in conn.AcceptChannelsAsync()) opened.TrySetResult(await open.AcceptAsync());
            },
        };
        await using var h = new ServerHarness(app);
        await h.AuthenticateRawAsync(Ed25519PrivateKey.Generate());
        var id = await h.OpenSessionRawAsync();

        await SendAgentRequestAsync(h, id, wantReply: true);
        // A global request's answer proves the channel request was dispatched before it (one read loop, in order).
        await h.SendAsync(GlobalRequest, w => w.WriteString("keepalive@openssh.com").WriteBoolean(true));
        await Msg.ExpectAsync(h.Client, RequestFailure);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.False(conn.AgentForwardingAccepted);

        // Answered late, the reply still goes out (RFC 4254 §5.4) and the acceptance takes effect.
        var channel = await opened.Task.WaitAsync(Msg.Timeout);
        var request = Assert.IsType<SshAuthAgentRequest>(await channel.ReadRequestAsync().AsTask().WaitAsync(Msg.Timeout));
        Assert.True(request.WantReply);
        await request.AcceptAsync();
        await Msg.ExpectAsync(h.Client, ChannelSuccess);
        Assert.True(conn.AgentForwardingAccepted);
    }
}
