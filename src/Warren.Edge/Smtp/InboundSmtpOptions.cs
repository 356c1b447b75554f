using System.Net;

namespace Warren.Edge.Smtp;

/// <summary>The inbound SMTP front door: where it listens and how much one client may ask of it.</summary>
public sealed class InboundSmtpOptions
{
    /// <summary>Where to listen (the control address and the slot addresses, port <c>Warren:SmtpPort</c>).</summary>
    public IReadOnlyList<IPEndPoint> Endpoints { get; set; } = [new(IPAddress.Loopback, 2525)];

    /// <summary>Our name in the greeting, the EHLO reply and <c>Received: by</c>: the MX host name.</summary>
    public string ServerName { get; set; } = "warren.localhost";

    /// <summary>Largest message accepted, advertised with SIZE (RFC 1870) and enforced while DATA is read.</summary>
    public int MaxMessageBytes { get; set; } = 1_048_576;

    /// <summary>
    /// Recipients per message. RFC 5321 §4.5.3.1.8 asks a server to buffer at least 100; beyond that the
    /// client gets 452 4.5.3 and sends the rest in another transaction (§4.5.3.1.10).
    /// </summary>
    public int MaxRecipients { get; set; } = 100;

    /// <summary>Open connections from one source (an IPv4 address or an IPv6 /64); more get 421 and are closed.</summary>
    public int MaxConnectionsPerSource { get; set; } = 10;

    /// <summary>
    /// Open connections in all. Each may hold one message of up to <see cref="MaxMessageBytes"/> (twice that while
    /// its buffer grows), so this also bounds the memory DATA can take.
    /// </summary>
    public int MaxConnections { get; set; } = 100;

    /// <summary>Messages in one connection; then 421 and close, so one client cannot hold a session forever.</summary>
    public int MaxMessagesPerConnection { get; set; } = 100;

    /// <summary>Commands in one connection (NOOP loops included).</summary>
    public int MaxCommandsPerConnection { get; set; } = 1000;

    /// <summary>Rejected commands in one connection before 421 and close (a client that does not speak SMTP).</summary>
    public int MaxErrorsPerConnection { get; set; } = 10;

    /// <summary>Wait for the next command line: RFC 5321 §4.5.3.2.7 has the server wait at least 5 minutes.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>The whole DATA transfer (RFC 5321 §4.5.3.2 gives clients 3 minutes per block, 10 for the end).</summary>
    public TimeSpan DataTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>The TLS handshake after STARTTLS.</summary>
    public TimeSpan TlsHandshakeTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Delivering one accepted message into its VMs.</summary>
    public TimeSpan DeliveryTimeout { get; set; } = TimeSpan.FromSeconds(60);
}

/// <summary>Protocol limits that are not settings.</summary>
public static class SmtpLimits
{
    /// <summary>
    /// A command line, CRLF included. RFC 5321 §4.5.3.1.4 says 512; SIZE and BODY parameters may add more
    /// (RFC 1870 §3, RFC 6152 §2), so we allow the text-line length of §4.5.3.1.6.
    /// </summary>
    public const int MaxCommandLineBytes = 1000;

    /// <summary>A line of message text, CRLF included (RFC 5321 §4.5.3.1.6).</summary>
    public const int MaxTextLineBytes = 1000;

    /// <summary>Local part of a mailbox (RFC 5321 §4.5.3.1.1).</summary>
    public const int MaxLocalPartLength = 64;

    /// <summary>Domain (RFC 5321 §4.5.3.1.2).</summary>
    public const int MaxDomainLength = 255;

    /// <summary>A reverse- or forward-path, brackets included (RFC 5321 §4.5.3.1.3).</summary>
    public const int MaxPathLength = 256;
}
