using Warren.Ssh.Connection;

namespace Warren.Edge.Ssh;

/// <summary>What a session channel asked for before its program started (RFC 4254 §6.2–6.5).</summary>
public sealed class SessionStart
{
    /// <summary>Environment names passed into VMs (OpenSSH's AcceptEnv default on Debian: LANG LC_*).</summary>
    public static bool IsAllowedEnv(string name) =>
        name == "LANG" || (name.StartsWith("LC_", StringComparison.Ordinal) && name.Length <= MaxEnvNameLength);

    /// <summary>Longest environment variable name and value accepted from a client.</summary>
    public const int MaxEnvNameLength = 64, MaxEnvValueLength = 1024;

    /// <summary>Environment requests accepted per session; more are refused (a client sends a handful).</summary>
    public const int MaxEnvRequests = 64;

    public SshPtyRequest? Pty { get; private set; }
    public Dictionary<string, string> Env { get; } = new(StringComparer.Ordinal);
    /// <summary>The client asked to forward its agent (ssh -A) and the request was accepted.</summary>
    public bool AgentForwarding { get; private set; }

    /// <summary>"shell", "exec" or "subsystem".</summary>
    public string Kind { get; private set; } = "";
    /// <summary>The exec command or subsystem name.</summary>
    public string Argument { get; private set; } = "";
    /// <summary>The start request, answered by the caller once the program runs (or fails to).</summary>
    public SshChannelRequest? Request { get; private set; }

    /// <summary>
    /// The same session re-aimed at another program (the control plane's <c>ssh VM [command]</c> hop):
    /// pty and environment are kept, the original start request is answered by whoever runs it.
    /// </summary>
    public SessionStart Redirect(string kind, string argument)
    {
        var copy = new SessionStart { Pty = Pty, AgentForwarding = AgentForwarding, Kind = kind, Argument = argument, Request = Request };
        foreach (var (k, v) in Env) copy.Env[k] = v;
        return copy;
    }

    /// <summary>
    /// Reads requests until shell, exec or subsystem; answers the preparatory ones.
    /// <paramref name="acceptAgentForwarding"/> answers "auth-agent-req@openssh.com": true where the
    /// session can use the client's agent (VM sessions get SSH_AUTH_SOCK), false where nothing would
    /// (the control plane), so the client is told no instead of believing its agent is reachable.
    /// Returns null when the channel closed first.
    /// </summary>
    public static async Task<SessionStart?> ReadAsync(SshChannel channel, bool acceptAgentForwarding, CancellationToken ct)
    {
        var start = new SessionStart();
        int envCount = 0;
        while (await channel.ReadRequestAsync(ct).ConfigureAwait(false) is { } request)
        {
            switch (request)
            {
                case SshPtyRequest pty:
                    start.Pty = pty;
                    await pty.AcceptAsync(ct).ConfigureAwait(false);
                    break;
                case SshEnvRequest env:
                    if (++envCount <= MaxEnvRequests && IsAllowedEnv(env.Name) && env.Value.Length <= MaxEnvValueLength)
                    {
                        start.Env[env.Name] = env.Value;
                        await env.AcceptAsync(ct).ConfigureAwait(false);
                    }
                    else await env.RejectAsync(ct).ConfigureAwait(false);
                    break;
                case SshShellRequest:
                    start.Kind = "shell"; start.Request = request;
                    return start;
                case SshExecRequest exec:
                    start.Kind = "exec"; start.Argument = exec.Command; start.Request = request;
                    return start;
                case SshSubsystemRequest sub:
                    start.Kind = "subsystem"; start.Argument = sub.Name; start.Request = request;
                    return start;
                case SshAuthAgentRequest agent:
                    // OpenSSH PROTOCOL.agent; with want-reply, RFC 4254 §5.4 SUCCESS or FAILURE.
                    if (acceptAgentForwarding)
                    {
                        start.AgentForwarding = true;
                        await agent.AcceptAsync(ct).ConfigureAwait(false);
                    }
                    else await agent.RejectAsync(ct).ConfigureAwait(false);
                    break;
                default:
                    // window-change before start, signal, break: RFC 4254 §5.4 failure.
                    await request.RejectAsync(ct).ConfigureAwait(false);
                    break;
            }
        }
        return null;
    }
}
