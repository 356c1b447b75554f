using System.Net;

namespace Warren.Edge.Smtp;

/// <summary>Where the SMTP front door hands recipients and messages: the platform (<see cref="PlatformInboundMailSink"/>) or a test double.</summary>
public interface IInboundMailSink
{
    /// <summary>The answer to <c>RCPT TO</c> (250 to accept). Called once per recipient; must be cheap (no I/O).</summary>
    SmtpReply CheckRecipient(SmtpAddress recipient);

    /// <summary>Delivers one accepted message to each of its recipients; the reply is the answer to the end of DATA.</summary>
    Task<SmtpReply> DeliverAsync(InboundMessage message, CancellationToken ct);
}

/// <summary>
/// One accepted message: the envelope, what the session knows for the trace headers, and the content as received
/// (dot-unstuffed, CRLF line ends).
/// </summary>
public sealed record InboundMessage(
    SmtpAddress? Sender,
    IReadOnlyList<SmtpAddress> Recipients,
    string HeloName,
    IPAddress ClientAddress,
    string ServerName,
    string Protocol,
    string Id,
    DateTimeOffset ReceivedAt,
    ReadOnlyMemory<byte> Content)
{
    /// <summary>
    /// Return-Path (RFC 5321 §4.4: added at final delivery, with the reverse-path) and the Received line this
    /// server adds (§4.4 time stamp: FROM the EHLO name and the client's address, BY us, WITH the protocol
    /// (RFC 3848 names), ID, FOR the one recipient of this copy), folded and LF-free here; CRLF between lines.
    /// </summary>
    public string TraceHeaders(SmtpAddress recipient)
    {
        string date = Warren.Platform.Mail.ReceiveEmailService.RfcDate(ReceivedAt);
        string address = ClientAddress.IsIPv4MappedToIPv6 ? ClientAddress.MapToIPv4().ToString() : ClientAddress.ToString();
        string literal = ClientAddress.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 && !ClientAddress.IsIPv4MappedToIPv6
            ? "IPv6:" + address : address;
        return $"Return-Path: <{Sender?.ToString() ?? ""}>\r\n"
            + $"Received: from {HeloName} ([{literal}])\r\n"
            + $"\tby {ServerName} (Warren) with {Protocol} id {Id}\r\n"
            + $"\tfor <{recipient}>; {date}\r\n";
    }
}
