using System.Net;

namespace Warren.Edge.ProxyProtocol;

/// <summary>What a listener does about PROXY headers from one connecting address.</summary>
public enum ProxyProtocolMode
{
    /// <summary>Not a trusted proxy: its addresses are the real ones, and a PROXY header it sends gets it disconnected.</summary>
    Refuse = 0,
    /// <summary>Trusted proxy that may or may not send a header (waits for the peer's first bytes).</summary>
    Optional = 1,
    /// <summary>Trusted proxy that must send a header before anything else.</summary>
    Require = 2,
}

/// <summary>A connection after PROXY protocol handling: the stream to continue on and the endpoints to believe.</summary>
/// <param name="Stream">Continue the protocol (SSH, TLS) on this stream, not the original one.</param>
/// <param name="RemoteEndPoint">The client: the header's source when a trusted proxy sent one, else the socket peer.</param>
/// <param name="LocalEndPoint">The address the client connected to: the header's destination when present, else the socket's local end.
/// Warren routes SSH by this address.</param>
/// <param name="Header">The header, when one carried addresses.</param>
public sealed record ProxiedConnection(Stream Stream, IPEndPoint RemoteEndPoint, IPEndPoint LocalEndPoint, ProxyHeader? Header);

/// <summary>
/// Decides, by the connecting socket's address, whether PROXY protocol headers are believed.
/// Only peers inside a trusted CIDR may speak it; from anyone else a header is refused and the
/// connection dropped, so a client cannot spoof its source or the address it "arrived on"
/// (the lesson of sshpiper's GHSA-4w53-6jvp-gg52, which believed headers from anyone).
/// </summary>
public sealed class ProxyProtocolPolicy
{
    private readonly IPNetwork[] _trusted;

    /// <param name="trustedProxies">Networks whose connections come from our own load balancers.</param>
    /// <param name="trustedMode">What trusted peers must do: <see cref="ProxyProtocolMode.Require"/> (default) or <see cref="ProxyProtocolMode.Optional"/>.</param>
    public ProxyProtocolPolicy(IEnumerable<IPNetwork> trustedProxies, ProxyProtocolMode trustedMode = ProxyProtocolMode.Require)
    {
        ArgumentNullException.ThrowIfNull(trustedProxies);
        if (trustedMode == ProxyProtocolMode.Refuse) throw new ArgumentException("Trusted peers must be Require or Optional.", nameof(trustedMode));
        _trusted = trustedProxies.ToArray();
        TrustedMode = trustedMode;
    }

    /// <summary>No trusted proxies: every header is refused. The default for a listener facing the internet directly.</summary>
    public static ProxyProtocolPolicy Disabled { get; } = new([]);

    /// <summary>Builds a policy from CIDR strings ("10.0.0.0/8", "fd00::/8"; a bare address means /32 or /128).</summary>
    /// <exception cref="FormatException">A CIDR is invalid.</exception>
    public static ProxyProtocolPolicy Parse(IEnumerable<string> trustedCidrs, ProxyProtocolMode trustedMode = ProxyProtocolMode.Require)
    {
        ArgumentNullException.ThrowIfNull(trustedCidrs);
        var nets = new List<IPNetwork>();
        foreach (var raw in trustedCidrs)
        {
            var s = raw.Trim();
            if (IPNetwork.TryParse(s, out var net)) { nets.Add(net); continue; }
            if (IPAddress.TryParse(s, out var ip)) { nets.Add(new IPNetwork(ip, ip.GetAddressBytes().Length * 8)); continue; }
            throw new FormatException($"Invalid trusted proxy network '{s}'.");
        }
        return new ProxyProtocolPolicy(nets, trustedMode);
    }

    public IReadOnlyList<IPNetwork> TrustedProxies => _trusted;
    public ProxyProtocolMode TrustedMode { get; }

    /// <summary>The mode for a connection from <paramref name="remote"/> (IPv4-mapped IPv6 is compared as IPv4).</summary>
    public ProxyProtocolMode ModeFor(IPAddress remote)
    {
        ArgumentNullException.ThrowIfNull(remote);
        var a = remote.IsIPv4MappedToIPv6 ? remote.MapToIPv4() : remote;
        foreach (var net in _trusted)
            if (net.Contains(a)) return TrustedMode;
        return ProxyProtocolMode.Refuse;
    }

    /// <summary>
    /// Applies the policy to a freshly accepted connection. Trusted + Require: reads the header
    /// (exactly its bytes) or throws. Trusted + Optional: reads one if present. Untrusted: returns
    /// at once with a stream that fails with <see cref="ProxyProtocolError.Untrusted"/> if the
    /// peer's first bytes are a PROXY header. A LOCAL/UNKNOWN header keeps the socket's endpoints.
    /// </summary>
    /// <exception cref="ProxyProtocolException">Missing, malformed, slow or (later, on read) untrusted header: drop the connection.</exception>
    public async Task<ProxiedConnection> AcceptAsync(Stream stream, IPEndPoint remote, IPEndPoint local, ProxyProtocolOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(remote);
        ArgumentNullException.ThrowIfNull(local);
        ArgumentNullException.ThrowIfNull(options);
        switch (ModeFor(remote.Address))
        {
            case ProxyProtocolMode.Require:
            {
                var header = await ProxyProtocolReader.ReadAsync(stream, options, cancellationToken).ConfigureAwait(false);
                return new ProxiedConnection(stream, header?.Source ?? remote, header?.Destination ?? local, header);
            }
            case ProxyProtocolMode.Optional:
            {
                var (header, _, s) = await ProxyProtocolReader.ReadOptionalAsync(stream, options, cancellationToken).ConfigureAwait(false);
                return new ProxiedConnection(s, header?.Source ?? remote, header?.Destination ?? local, header);
            }
            default:
                return new ProxiedConnection(new UntrustedProxyHeaderGuardStream(stream), remote, local, null);
        }
    }
}
