namespace Warren.Edge.Smtp;

/// <summary>
/// One SMTP reply: a code (RFC 5321 §4.2), an enhanced status code (RFC 3463, advertised with
/// ENHANCEDSTATUSCODES, RFC 2034) and text. Text never carries CR or LF.
/// </summary>
public readonly record struct SmtpReply(int Code, string? Enhanced, string Text)
{
    public bool IsPositive => Code is >= 200 and < 400;

    public override string ToString() => Enhanced is null ? $"{Code} {Text}" : $"{Code} {Enhanced} {Text}";

    public static readonly SmtpReply Ok = new(250, "2.0.0", "OK");
    public static readonly SmtpReply SyntaxError = new(500, "5.5.2", "syntax error, command unrecognized");
    public static readonly SmtpReply LineTooLong = new(500, "5.5.6", "line too long");
    public static readonly SmtpReply BareLineFeed = new(500, "5.5.2", "bare LF: SMTP lines end with CRLF (RFC 5321 §2.3.8)");
    public static readonly SmtpReply NonAscii = new(500, "5.5.2", "command contains octets outside ASCII (no SMTPUTF8 here)");
    public static readonly SmtpReply BadSequence = new(503, "5.5.1", "bad sequence of commands");
    public static readonly SmtpReply NotImplemented = new(502, "5.5.1", "command not implemented");
    public static readonly SmtpReply TooManyErrors = new(421, "4.7.0", "too many errors, closing connection");
    public static readonly SmtpReply TooManyCommands = new(421, "4.7.0", "too many commands in one connection");
    public static readonly SmtpReply Timeout = new(421, "4.4.2", "timeout, closing connection");
    public static readonly SmtpReply TooManyConnections = new(421, "4.7.0", "too many connections from your network, try again later");
    public static readonly SmtpReply ServerBusy = new(421, "4.3.2", "too many connections, try again later");
    public static readonly SmtpReply ShuttingDown = new(421, "4.3.2", "shutting down");
    public static readonly SmtpReply MessageTooBig = new(552, "5.3.4", "message exceeds fixed maximum message size");
    public static readonly SmtpReply TextLineTooLong = new(500, "5.5.6", "message has a line over 998 octets (RFC 5321 §4.5.3.1.6)");
    public static readonly SmtpReply TooManyRecipients = new(452, "4.5.3", "too many recipients");
    public static readonly SmtpReply NoValidRecipients = new(554, "5.5.1", "no valid recipients");
    public static readonly SmtpReply NotOurDomain = new(550, "5.7.1", "relay access denied");
    public static readonly SmtpReply NoSuchMailbox = new(550, "5.1.1", "mailbox unavailable");
    public static readonly SmtpReply VmNotRunning = new(450, "4.2.1", "mailbox temporarily unavailable, try again later");
    public static readonly SmtpReply MailboxFull = new(452, "4.2.2", "mailbox full; receiving has been turned off for this address");
    public static readonly SmtpReply DeliveryFailed = new(451, "4.3.0", "local error in processing, try again later");
    public static readonly SmtpReply Delivered = new(250, "2.0.0", "delivered");
}
