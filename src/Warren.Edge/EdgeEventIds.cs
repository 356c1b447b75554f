using Microsoft.Extensions.Logging;

namespace Warren.Edge;

/// <summary>
/// Stable log event codes of the Edge front doors (DNS 41xx, HTTP 42xx, TLS 43xx).
/// Codes never change meaning; add new ones at the end of their block.
/// </summary>
public static class EdgeEventIds
{
    public static readonly EventId DnsStarted = new(4101, nameof(DnsStarted));
    public static readonly EventId DnsUdpError = new(4102, nameof(DnsUdpError));
    public static readonly EventId DnsTcpError = new(4103, nameof(DnsTcpError));
    public static readonly EventId DnsSourceFailed = new(4104, nameof(DnsSourceFailed));

    public static readonly EventId HttpForwardFailed = new(4201, nameof(HttpForwardFailed));
    public static readonly EventId HttpDirectoryFailed = new(4202, nameof(HttpDirectoryFailed));
    public static readonly EventId HttpLoginSucceeded = new(4203, nameof(HttpLoginSucceeded));
    public static readonly EventId HttpLoginRejected = new(4204, nameof(HttpLoginRejected));
    public static readonly EventId ExecFailed = new(4205, nameof(ExecFailed));
    public static readonly EventId HttpAccessRequested = new(4206, nameof(HttpAccessRequested));
    public static readonly EventId HttpAccessRequestFailed = new(4207, nameof(HttpAccessRequestFailed));
    public const int HttpNativeStarted = 4208;
    public const int HttpNativeConnectionFailed = 4209;
    public const int HttpNativeAcceptExhausted = 4210;
    public static readonly EventId SourceRefused = new(4211, nameof(SourceRefused));

    public static readonly EventId TlsCaCreated = new(4301, nameof(TlsCaCreated));
    public static readonly EventId TlsCertificateCreated = new(4302, nameof(TlsCertificateCreated));
    public static readonly EventId TlsCertificateLoaded = new(4303, nameof(TlsCertificateLoaded));
    public static readonly EventId TlsCertificateReloaded = new(4304, nameof(TlsCertificateReloaded));
    public static readonly EventId TlsCertificateReloadFailed = new(4305, nameof(TlsCertificateReloadFailed));
}
