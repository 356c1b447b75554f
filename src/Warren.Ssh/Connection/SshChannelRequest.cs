using Warren.Ssh.Wire;

namespace Warren.Ssh.Connection;

/// <summary>Channel request type names (RFC 4254 §6; OpenSSH PROTOCOL §2).</summary>
public static class SshChannelRequestTypes
{
    public const string PtyReq = "pty-req";
    public const string X11Req = "x11-req";
    public const string Env = "env";
    public const string Shell = "shell";
    public const string Exec = "exec";
    public const string Subsystem = "subsystem";
    public const string WindowChange = "window-change";
    public const string XonXoff = "xon-xoff";
    public const string Signal = "signal";
    public const string ExitStatus = "exit-status";
    public const string ExitSignal = "exit-signal";
    public const string Break = "break";
    public const string AuthAgentReq = "auth-agent-req@openssh.com";
    public const string Eow = "eow@openssh.com";
    public const string Keepalive = "keepalive@openssh.com";
}

/// <summary>
/// A channel request the peer sent (SSH_MSG_CHANNEL_REQUEST, RFC 4254 §5.4).
/// When <see cref="WantReply"/> is set, answer it exactly once with
/// <see cref="AcceptAsync"/> or <see cref="RejectAsync"/>; replies go out in
/// request order (RFC 4254 §5.4), so an unanswered request holds back the
/// replies to later ones. Answers to requests without want-reply are no-ops.
/// </summary>
public abstract class SshChannelRequest
{
    private SshChannel? _channel;
    private long _replySequence = -1;
    private int _answered;

    private protected SshChannelRequest(string requestType, bool wantReply)
    {
        RequestType = requestType;
        WantReply = wantReply;
    }

    /// <summary>The request type as sent, e.g. "pty-req".</summary>
    public string RequestType { get; }

    public bool WantReply { get; }

    internal long ReplySequence => _replySequence;

    /// <summary>Ties the request to its channel; <paramref name="replySequence"/> is its place in the reply order, -1 without want-reply.</summary>
    internal void Bind(SshChannel channel, long replySequence)
    {
        _channel = channel;
        _replySequence = replySequence;
    }

    /// <summary>Sends SSH_MSG_CHANNEL_SUCCESS if a reply was asked for.</summary>
    public ValueTask AcceptAsync(CancellationToken cancellationToken = default) => AnswerAsync(true, cancellationToken);

    /// <summary>Sends SSH_MSG_CHANNEL_FAILURE if a reply was asked for.</summary>
    public ValueTask RejectAsync(CancellationToken cancellationToken = default) => AnswerAsync(false, cancellationToken);

    private ValueTask AnswerAsync(bool success, CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _answered, 1) != 0)
            throw new InvalidOperationException("This channel request was already answered.");
        // The decision takes effect before the reply is queued: a client that sees SUCCESS may act on it at once.
        if (_channel is not null) OnAnswered(_channel, success);
        if (!WantReply || _channel is null) return ValueTask.CompletedTask;
        return _channel.AnswerRequestAsync(_replySequence, success, cancellationToken);
    }

    /// <summary>What accepting or refusing means to the library, for requests where it means more than the reply.</summary>
    private protected virtual void OnAnswered(SshChannel channel, bool success) { }

    public override string ToString() => RequestType;
}

/// <summary>"pty-req" (RFC 4254 §6.2).</summary>
public sealed class SshPtyRequest : SshChannelRequest
{
    internal SshPtyRequest(bool wantReply, string term, uint widthChars, uint heightRows, uint widthPixels, uint heightPixels, IReadOnlyList<SshTerminalMode> modes)
        : base(SshChannelRequestTypes.PtyReq, wantReply)
    {
        Term = term;
        WidthChars = widthChars;
        HeightRows = heightRows;
        WidthPixels = widthPixels;
        HeightPixels = heightPixels;
        Modes = modes;
    }

    /// <summary>TERM environment variable value, e.g. "xterm-256color".</summary>
    public string Term { get; }
    public uint WidthChars { get; }
    public uint HeightRows { get; }
    public uint WidthPixels { get; }
    public uint HeightPixels { get; }

    /// <summary>The encoded terminal modes, parsed (RFC 4254 §8).</summary>
    public IReadOnlyList<SshTerminalMode> Modes { get; }
}

/// <summary>"env" (RFC 4254 §6.4).</summary>
public sealed class SshEnvRequest : SshChannelRequest
{
    internal SshEnvRequest(bool wantReply, string name, string value) : base(SshChannelRequestTypes.Env, wantReply)
    {
        Name = name;
        Value = value;
    }

    public string Name { get; }
    public string Value { get; }
}

/// <summary>"shell" (RFC 4254 §6.5).</summary>
public sealed class SshShellRequest : SshChannelRequest
{
    internal SshShellRequest(bool wantReply) : base(SshChannelRequestTypes.Shell, wantReply) { }
}

/// <summary>"exec" (RFC 4254 §6.5).</summary>
public sealed class SshExecRequest : SshChannelRequest
{
    internal SshExecRequest(bool wantReply, string command) : base(SshChannelRequestTypes.Exec, wantReply) => Command = command;

    /// <summary>The command line, decoded as UTF-8.</summary>
    public string Command { get; }
}

/// <summary>"subsystem" (RFC 4254 §6.5).</summary>
public sealed class SshSubsystemRequest : SshChannelRequest
{
    internal SshSubsystemRequest(bool wantReply, string name) : base(SshChannelRequestTypes.Subsystem, wantReply) => Name = name;

    public string Name { get; }
}

/// <summary>
/// "auth-agent-req@openssh.com" (OpenSSH PROTOCOL.agent): the client offers to forward its
/// authentication agent. No type-specific data. Whether to take it is the application's call:
/// accepting is what lets the server open "auth-agent@openssh.com" channels
/// (<see cref="Server.SshServerConnection.OpenAgentChannelAsync"/>); refusing sends
/// SSH_MSG_CHANNEL_FAILURE when a reply was asked for (RFC 4254 §5.4). OpenSSH's client sends it
/// without want-reply, so the answer matters even when nothing goes on the wire.
/// </summary>
public sealed class SshAuthAgentRequest : SshChannelRequest
{
    internal SshAuthAgentRequest(bool wantReply) : base(SshChannelRequestTypes.AuthAgentReq, wantReply) { }

    private protected override void OnAnswered(SshChannel channel, bool success)
    {
        if (success) channel.OnAgentForwardingAccepted();
    }
}

/// <summary>"window-change" (RFC 4254 §6.7); never wants a reply.</summary>
public sealed class SshWindowChangeRequest : SshChannelRequest
{
    internal SshWindowChangeRequest(bool wantReply, uint widthChars, uint heightRows, uint widthPixels, uint heightPixels)
        : base(SshChannelRequestTypes.WindowChange, wantReply)
    {
        WidthChars = widthChars;
        HeightRows = heightRows;
        WidthPixels = widthPixels;
        HeightPixels = heightPixels;
    }

    public uint WidthChars { get; }
    public uint HeightRows { get; }
    public uint WidthPixels { get; }
    public uint HeightPixels { get; }
}

/// <summary>"signal" (RFC 4254 §6.9): signal name without the "SIG" prefix, e.g. "INT".</summary>
public sealed class SshSignalRequest : SshChannelRequest
{
    internal SshSignalRequest(bool wantReply, string signalName) : base(SshChannelRequestTypes.Signal, wantReply) => SignalName = signalName;

    public string SignalName { get; }
}

/// <summary>"break" (RFC 4335 §3).</summary>
public sealed class SshBreakRequest : SshChannelRequest
{
    internal SshBreakRequest(bool wantReply, uint breakLengthMilliseconds) : base(SshChannelRequestTypes.Break, wantReply)
        => BreakLengthMilliseconds = breakLengthMilliseconds;

    public uint BreakLengthMilliseconds { get; }
}

/// <summary>One encoded terminal mode (RFC 4254 §8): opcode and its uint32 argument.</summary>
public readonly record struct SshTerminalMode(SshTerminalModeOpcode Opcode, uint Value);

/// <summary>Terminal mode opcodes, RFC 4254 §8 (and RFC 8160 for IUTF8).</summary>
public enum SshTerminalModeOpcode : byte
{
    TtyOpEnd = 0,
    VINTR = 1, VQUIT = 2, VERASE = 3, VKILL = 4, VEOF = 5, VEOL = 6, VEOL2 = 7, VSTART = 8, VSTOP = 9,
    VSUSP = 10, VDSUSP = 11, VREPRINT = 12, VWERASE = 13, VLNEXT = 14, VFLUSH = 15, VSWTCH = 16,
    VSTATUS = 17, VDISCARD = 18,
    IGNPAR = 30, PARMRK = 31, INPCK = 32, ISTRIP = 33, INLCR = 34, IGNCR = 35, ICRNL = 36, IUCLC = 37,
    IXON = 38, IXANY = 39, IXOFF = 40, IMAXBEL = 41, IUTF8 = 42,
    ISIG = 50, ICANON = 51, XCASE = 52, ECHO = 53, ECHOE = 54, ECHOK = 55, ECHONL = 56, NOFLSH = 57,
    TOSTOP = 58, IEXTEN = 59, ECHOCTL = 60, ECHOKE = 61, PENDIN = 62,
    OPOST = 70, OLCUC = 71, ONLCR = 72, OCRNL = 73, ONOCR = 74, ONLRET = 75,
    CS7 = 90, CS8 = 91, PARENB = 92, PARODD = 93,
    TtyOpIspeed = 128, TtyOpOspeed = 129,
}

/// <summary>Codec for the "encoded terminal modes" string (RFC 4254 §8).</summary>
public static class SshTerminalModes
{
    /// <summary>RFC 4254 §8: opcodes 1 to 159 take a uint32 argument; 160 to 255 are undefined and stop parsing.</summary>
    public const byte FirstUndefinedOpcode = 160;

    /// <summary>
    /// Bound on the number of modes kept: every defined opcode once, generously
    /// rounded; a longer list is a peer padding the request, and the rest is ignored.
    /// </summary>
    public const int MaxModes = 256;

    /// <summary>
    /// Parses encoded modes. Parsing stops at TTY_OP_END, at an undefined opcode
    /// (as §8 requires) or at <see cref="MaxModes"/>; false if an argument is truncated.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> encoded, out IReadOnlyList<SshTerminalMode> modes)
    {
        var list = new List<SshTerminalMode>();
        modes = list;
        var r = new SshReader(encoded);
        while (list.Count < MaxModes && r.TryReadByte(out var opcode))
        {
            if (opcode == (byte)SshTerminalModeOpcode.TtyOpEnd || opcode >= FirstUndefinedOpcode) return true;
            if (!r.TryReadUInt32(out var value)) return false;
            list.Add(new SshTerminalMode((SshTerminalModeOpcode)opcode, value));
        }
        return true;
    }

    /// <summary>Encodes modes followed by TTY_OP_END.</summary>
    public static byte[] Encode(IEnumerable<SshTerminalMode> modes)
    {
        var w = new SshWriter();
        foreach (var m in modes)
        {
            if (m.Opcode == SshTerminalModeOpcode.TtyOpEnd || (byte)m.Opcode >= FirstUndefinedOpcode)
                throw new ArgumentException("Terminal mode opcode must be 1..159.", nameof(modes));
            w.WriteByte((byte)m.Opcode).WriteUInt32(m.Value);
        }
        w.WriteByte((byte)SshTerminalModeOpcode.TtyOpEnd);
        return w.ToArray();
    }
}

/// <summary>How the peer's program ended (RFC 4254 §6.10).</summary>
public sealed record SshExitResult(uint? ExitStatus, string? ExitSignal, bool CoreDumped, string? ErrorMessage)
{
    public static readonly SshExitResult None = new(null, null, false, null);
}

/// <summary>Terminal wanted for an interactive session (the client side of "pty-req").</summary>
public sealed record SshTtySpec(string Term = "xterm", uint WidthChars = 80, uint HeightRows = 24, uint WidthPixels = 0, uint HeightPixels = 0)
{
    public IReadOnlyList<SshTerminalMode> Modes { get; init; } = [];
}
