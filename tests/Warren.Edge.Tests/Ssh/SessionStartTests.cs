using Warren.Edge.Ssh;
using Warren.Ssh.Connection;
using Warren.Ssh.Server;
using Warren.Ssh.Wire;

namespace Warren.Edge.Tests.Ssh;

/// <summary>
/// <see cref="SessionStart.ReadAsync"/>'s answer to "auth-agent-req@openssh.com" (OpenSSH PROTOCOL.agent):
/// accepted where the front door forwards the agent (VM sessions), refused where it does not (the control
/// plane), with the RFC 4254 §5.4 reply the client asked for.
/// </summary>
public sealed class SessionStartTests
{
    private static readonly TimeSpan Timeout = LoopbackSsh.Timeout;

    /// <summary>
    /// Serves one session with <see cref="SessionStart.ReadAsync"/>, then reports what it read and whether
    /// the connection may open agent channels.
    /// </summary>
    private static Func<SshServerConnection, Task> ServeOneSession(bool acceptAgentForwarding, TaskCompletionSource<(SessionStart? Start, bool ConnectionAccepted)> result) => async connection =>
    {
        var open = await connection.AcceptChannelAsync(connection.Closing);
        var channel = await open.AcceptAsync(connection.Closing);
        var start = await SessionStart.ReadAsync(channel, acceptAgentForwarding, connection.Closing);
        result.TrySetResult((start, connection.AgentForwardingAccepted));
        if (start is null) return;
        await start.Request!.AcceptAsync(connection.Closing);
        await channel.ExitAsync(0, connection.Closing);
        await connection.Completion;
    };

    private static async Task<(bool AgentReply, SessionStart Start, bool ConnectionAccepted)> RequestAgentThenExecAsync(bool acceptAgentForwarding)
    {
        var result = new TaskCompletionSource<(SessionStart?, bool)>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var ssh = await LoopbackSsh.StartAsync(ServeOneSession(acceptAgentForwarding, result));
        var channel = await ssh.Client.OpenSessionAsync().WaitAsync(Timeout);
        bool agentReply = await channel.SendRequestAsync(SshChannelRequestTypes.AuthAgentReq, wantReply: true, default).WaitAsync(Timeout);
        var exec = new SshWriter();
        exec.WriteString("true");
        Assert.True(await channel.SendRequestAsync(SshChannelRequestTypes.Exec, wantReply: true, exec.WrittenMemory).WaitAsync(Timeout));
        var (start, accepted) = await result.Task.WaitAsync(Timeout);
        Assert.NotNull(start);
        await channel.WaitForExitAsync().WaitAsync(Timeout);
        return (agentReply, start, accepted);
    }

    [Fact]
    public async Task AgentRequest_WhereForwardingIsOffered_IsAccepted()
    {
        var (reply, start, accepted) = await RequestAgentThenExecAsync(acceptAgentForwarding: true);
        Assert.True(reply);
        Assert.True(start.AgentForwarding);
        Assert.True(accepted);
        Assert.Equal("exec", start.Kind);
    }

    [Fact]
    public async Task AgentRequest_OnTheControlPlane_IsRefused()
    {
        var (reply, start, accepted) = await RequestAgentThenExecAsync(acceptAgentForwarding: false);
        Assert.False(reply);
        Assert.False(start.AgentForwarding);
        Assert.False(accepted);
        Assert.Equal("exec", start.Kind);
    }
}
