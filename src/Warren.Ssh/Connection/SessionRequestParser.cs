using Warren.Ssh.Wire;

namespace Warren.Ssh.Connection;

/// <summary>Parses the session requests of RFC 4254 §6 that the server hands to the application.</summary>
internal static class SessionRequestParser
{
    /// <summary>
    /// TERM values are short names ("xterm-256color"); OpenSSH's session.c
    /// accepts any length, but nothing real exceeds a few dozen bytes.
    /// </summary>
    public const int MaxTermBytes = 256;

    /// <summary>Encoded terminal modes: every defined opcode (5 bytes each) fits in 1 KiB; OpenSSH sends ~300 bytes.</summary>
    public const int MaxTerminalModesBytes = 4 * 1024;

    /// <summary>Environment variable name; POSIX sets no limit, 1 KiB is far beyond real names.</summary>
    public const int MaxEnvNameBytes = 1024;

    /// <summary>
    /// exec command lines and env values are bounded by the transport packet
    /// itself (RFC 4253 §6.1: 35000 bytes); this only refuses what cannot be valid.
    /// </summary>
    public const int MaxCommandBytes = 64 * 1024;

    /// <summary>
    /// Returns the typed request, or null when the type is not one the
    /// application handles. Malformed data for a known type is a protocol error.
    /// </summary>
    public static SshChannelRequest? Parse(string type, bool wantReply, ReadOnlySpan<byte> data)
    {
        var r = new SshReader(data);
        switch (type)
        {
            case SshChannelRequestTypes.PtyReq:
                {
                    if (!r.TryReadUtf8(out var term, MaxTermBytes) || !r.TryReadUInt32(out var cols) || !r.TryReadUInt32(out var rows)
                        || !r.TryReadUInt32(out var wpx) || !r.TryReadUInt32(out var hpx) || !r.TryReadString(out var modes)
                        || modes.Length > MaxTerminalModesBytes || !SshTerminalModes.TryParse(modes, out var parsed))
                        throw Malformed(type);
                    return new SshPtyRequest(wantReply, term, cols, rows, wpx, hpx, parsed);
                }
            case SshChannelRequestTypes.Env:
                {
                    if (!r.TryReadUtf8(out var name, MaxEnvNameBytes) || !r.TryReadUtf8(out var value, MaxCommandBytes)) throw Malformed(type);
                    return new SshEnvRequest(wantReply, name, value);
                }
            case SshChannelRequestTypes.Shell:
                return new SshShellRequest(wantReply);
            case SshChannelRequestTypes.Exec:
                {
                    if (!r.TryReadUtf8(out var command, MaxCommandBytes)) throw Malformed(type);
                    return new SshExecRequest(wantReply, command);
                }
            case SshChannelRequestTypes.Subsystem:
                {
                    if (!r.TryReadUtf8(out var name, SshChannel.MaxRequestTypeBytes)) throw Malformed(type);
                    return new SshSubsystemRequest(wantReply, name);
                }
            case SshChannelRequestTypes.WindowChange:
                {
                    if (!r.TryReadUInt32(out var cols) || !r.TryReadUInt32(out var rows) || !r.TryReadUInt32(out var wpx) || !r.TryReadUInt32(out var hpx))
                        throw Malformed(type);
                    return new SshWindowChangeRequest(wantReply, cols, rows, wpx, hpx);
                }
            case SshChannelRequestTypes.Signal:
                {
                    if (!r.TryReadUtf8(out var sig, SshChannel.MaxRequestTypeBytes)) throw Malformed(type);
                    return new SshSignalRequest(wantReply, sig);
                }
            case SshChannelRequestTypes.AuthAgentReq:
                // OpenSSH PROTOCOL.agent: no type-specific data (anything after the header is ignored, as for "shell").
                return new SshAuthAgentRequest(wantReply);
            case SshChannelRequestTypes.Break:
                {
                    if (!r.TryReadUInt32(out var ms)) throw Malformed(type);
                    return new SshBreakRequest(wantReply, ms);
                }
            default:
                return null;
        }
    }

    private static Transport.SshProtocolException Malformed(string type) => ChannelMux.Protocol("malformed " + type + " request");
}
