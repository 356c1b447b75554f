namespace Warren.Ssh.Connection;

/// <summary>Connection protocol message numbers.</summary>
/// <remarks>RFC 4254 §9 (summary of message numbers) and RFC 4250 §4.1.2.</remarks>
internal static class SshConnectionMessage
{
    public const byte GlobalRequest = 80;
    public const byte RequestSuccess = 81;
    public const byte RequestFailure = 82;
    public const byte ChannelOpen = 90;
    public const byte ChannelOpenConfirmation = 91;
    public const byte ChannelOpenFailure = 92;
    public const byte ChannelWindowAdjust = 93;
    public const byte ChannelData = 94;
    public const byte ChannelExtendedData = 95;
    public const byte ChannelEof = 96;
    public const byte ChannelClose = 97;
    public const byte ChannelRequest = 98;
    public const byte ChannelSuccess = 99;
    public const byte ChannelFailure = 100;

    /// <summary>Message numbers below this belong to the transport and authentication layers (RFC 4250 §4.1.1).</summary>
    public const byte FirstConnectionMessage = 80;
}

/// <summary>Reason codes of SSH_MSG_CHANNEL_OPEN_FAILURE.</summary>
/// <remarks>RFC 4254 §5.1; RFC 4250 §4.3.</remarks>
public enum SshChannelOpenFailureReason : uint
{
    AdministrativelyProhibited = 1,
    ConnectFailed = 2,
    UnknownChannelType = 3,
    ResourceShortage = 4,
}

/// <summary>Channel type names (RFC 4254 §6.1, §7.2; OpenSSH PROTOCOL.agent).</summary>
public static class SshChannelTypes
{
    public const string Session = "session";
    public const string DirectTcpIp = "direct-tcpip";
    public const string ForwardedTcpIp = "forwarded-tcpip";
    public const string X11 = "x11";
    public const string AuthAgent = "auth-agent@openssh.com";
}

/// <summary>The peer refused a channel we asked to open (SSH_MSG_CHANNEL_OPEN_FAILURE, RFC 4254 §5.1).</summary>
public sealed class SshChannelOpenFailedException(SshChannelOpenFailureReason reason, string description)
    : Exception("ssh: channel open refused: " + reason)
{
    public SshChannelOpenFailureReason Reason { get; } = reason;

    /// <summary>The peer's description, as sent (peer-controlled text: escape before logging).</summary>
    public string Description { get; } = description;
}

/// <summary>The channel was closed (by the peer, by us, or because the connection ended).</summary>
public sealed class SshChannelClosedException(string message, Exception? inner = null) : IOException("ssh: " + message, inner);
