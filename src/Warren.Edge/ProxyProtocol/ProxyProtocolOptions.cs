namespace Warren.Edge.ProxyProtocol;

/// <summary>Limits for reading PROXY protocol headers.</summary>
public sealed class ProxyProtocolOptions
{
    /// <summary>
    /// Default time allowed for the whole header. A proxy sends it immediately after
    /// connecting (proxy-protocol.txt §2: "in a single write"); nginx's proxy_protocol_timeout
    /// defaults to 30 s, and we are stricter because the header is tiny.
    /// </summary>
    public static readonly TimeSpan DefaultHeaderTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Default cap on the v2 length field (address block + TLVs). The spec allows 65535;
    /// the largest address block is 216 bytes (AF_UNIX), and real proxies add well under
    /// 1 KiB of TLVs (AWS NLB's VPC endpoint id, PP2_TYPE_SSL details).
    /// </summary>
    public const int DefaultMaxV2PayloadBytes = 4096;

    public static ProxyProtocolOptions Default { get; } = new();

    public TimeSpan HeaderTimeout { get; init; } = DefaultHeaderTimeout;

    /// <summary>Largest v2 length field accepted; beyond it the connection is dropped before reading the payload.</summary>
    public int MaxV2PayloadBytes { get; init; } = DefaultMaxV2PayloadBytes;

    public bool AllowV1 { get; init; } = true;
    public bool AllowV2 { get; init; } = true;

    /// <summary>Clock for <see cref="HeaderTimeout"/>.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
}
