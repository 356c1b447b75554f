using Warren.Platform.Runtime;

namespace Warren.Runtime.Agent;

/// <summary>Makes a runtime's own exception (same codes in every runtime) for a session that broke or was refused.</summary>
internal delegate VmRuntimeException AgentFailure(string code, string message, Exception? inner = null);

/// <summary>The stable codes of agent-session failures, shared by every runtime that talks to the guest agent.</summary>
internal static class AgentErrors
{
    /// <summary>
    /// The VM's agent refused a session (an ERROR frame: bad token, unknown user, busy), broke the session protocol,
    /// or its socket failed.
    /// </summary>
    public const string AgentSessionFailed = "runtime.agent-session-failed";

    /// <summary>A connection inside the VM was refused or could not be made.</summary>
    public const string ConnectFailed = "runtime.connect-failed";
}
