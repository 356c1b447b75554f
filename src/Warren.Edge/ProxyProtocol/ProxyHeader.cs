using System.Net;

namespace Warren.Edge.ProxyProtocol;

/// <summary>
/// The addresses a PROXY protocol header carries: the original client (<see cref="Source"/>)
/// and the address it connected to on the proxy (<see cref="Destination"/>).
/// </summary>
/// <remarks>haproxy proxy-protocol.txt §2.1 (v1 "src_addr dst_addr src_port dst_port") and §2.2 (v2 address block).</remarks>
public sealed record ProxyHeader(IPEndPoint Source, IPEndPoint Destination, int Version)
{
    public override string ToString() => $"PROXY v{Version} {Source} -> {Destination}";
}

/// <summary>What went wrong while reading a PROXY protocol header; each maps to "drop the connection".</summary>
public enum ProxyProtocolError
{
    /// <summary>The header did not arrive within <see cref="ProxyProtocolOptions.HeaderTimeout"/>.</summary>
    Timeout = 1,
    /// <summary>The connection ended before the header was complete.</summary>
    Truncated = 2,
    /// <summary>The bytes are not a well-formed v1 or v2 header.</summary>
    Malformed = 3,
    /// <summary>The v1 line exceeds 107 bytes or the v2 length exceeds the configured cap.</summary>
    TooLong = 4,
    /// <summary>A well-formed header with a version, command or family we do not support (v2 UDP, unknown versions).</summary>
    Unsupported = 5,
    /// <summary>A header was required (trusted proxy) but the connection did not start with one.</summary>
    Missing = 6,
    /// <summary>A peer that is not a trusted proxy sent a PROXY header (GHSA-4w53-6jvp-gg52): never believed.</summary>
    Untrusted = 7,
    /// <summary>The underlying stream failed while reading the header.</summary>
    IoError = 8,
}

/// <summary>
/// The only exception the PROXY protocol code throws for peer behaviour (besides
/// <see cref="OperationCanceledException"/> when the caller's own token is cancelled).
/// Derives from <see cref="IOException"/> so stream consumers treat it as a broken connection.
/// </summary>
public sealed class ProxyProtocolException : IOException
{
    public ProxyProtocolException(ProxyProtocolError error, string message, Exception? inner = null)
        : base(message, inner) => Error = error;

    public ProxyProtocolError Error { get; }
}
