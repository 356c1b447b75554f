namespace Warren.Ssh.Connection;

/// <summary>
/// A channel the peer asked to open (SSH_MSG_CHANNEL_OPEN, RFC 4254 §5.1).
/// Answer exactly once with <see cref="AcceptAsync"/> or <see cref="RejectAsync"/>;
/// until then it counts against the connection's channel limit.
/// </summary>
public sealed class SshChannelOpenRequest
{
    private readonly ChannelMux _mux;
    private int _answered;

    internal SshChannelOpenRequest(ChannelMux mux, string channelType, uint senderChannel, uint initialWindowSize, uint maxPacketSize)
    {
        _mux = mux;
        ChannelType = channelType;
        SenderChannel = senderChannel;
        InitialWindowSize = initialWindowSize;
        MaxPacketSize = maxPacketSize;
    }

    /// <summary>"session", "direct-tcpip", "forwarded-tcpip", "auth-agent@openssh.com".</summary>
    public string ChannelType { get; }

    internal uint SenderChannel { get; }
    internal uint InitialWindowSize { get; }
    internal uint MaxPacketSize { get; }

    /// <summary>
    /// direct-tcpip: "host to connect"; forwarded-tcpip: "address that was connected"
    /// (RFC 4254 §7.2). Null for other channel types. Peer-controlled text.
    /// </summary>
    public string? Host { get; internal init; }

    /// <summary>direct-tcpip: "port to connect"; forwarded-tcpip: "port that was connected".</summary>
    public uint Port { get; internal init; }

    /// <summary>Originator IP address (RFC 4254 §7.2), as the peer claims it.</summary>
    public string? OriginatorAddress { get; internal init; }

    public uint OriginatorPort { get; internal init; }

    /// <summary>Sends SSH_MSG_CHANNEL_OPEN_CONFIRMATION and returns the open channel.</summary>
    public ValueTask<SshChannel> AcceptAsync(CancellationToken cancellationToken = default)
    {
        MarkAnswered();
        return ValueTask.FromResult(_mux.AcceptIncoming(this));
    }

    /// <summary>Sends SSH_MSG_CHANNEL_OPEN_FAILURE with an RFC 4254 §5.1 reason code.</summary>
    /// <param name="description">Sent to the peer: must not contain secrets.</param>
    public ValueTask RejectAsync(SshChannelOpenFailureReason reason, string description = "", CancellationToken cancellationToken = default)
    {
        MarkAnswered();
        _mux.RejectIncoming(this, reason, description);
        return ValueTask.CompletedTask;
    }

    private void MarkAnswered()
    {
        if (Interlocked.Exchange(ref _answered, 1) != 0)
            throw new InvalidOperationException("This channel open request was already answered.");
    }

    public override string ToString() => ChannelType;
}
