using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Warren.Platform.Integrations;

namespace Warren.Edge.Integrations;

/// <summary>
/// The two outbound clients of integrations. <see cref="External"/> dials http-proxy targets over TLS and refuses
/// every address a tenant could use to reach the host or its neighbours (loopback, private, link-local — the
/// metadata address among them — unique-local, multicast, unspecified), whatever a target's DNS answers, unless the
/// operator pinned that host in <see cref="IntegrationOptions.ResolveOverrides"/>. <see cref="Peer"/> dials a VM's
/// own address (known to Warren, never from DNS) for VM-to-VM integrations. Neither follows redirects, keeps
/// cookies or decompresses: the VM sees the target's answer as sent.
/// </summary>
public sealed class IntegrationHttpClients : IDisposable
{
    /// <summary>Connect deadline per address (a dead target fails fast, as 502).</summary>
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    private readonly IntegrationOptions _options;
    private readonly X509Certificate2Collection? _extraRoots;

    public IntegrationHttpClients(IntegrationOptions options)
    {
        _options = options;
        if (options.TrustedCaFile is { Length: > 0 } caFile)
        {
            _extraRoots = new X509Certificate2Collection();
            _extraRoots.ImportFromPemFile(caFile);
        }
        External = new HttpClient(CreateHandler(ConnectExternalAsync, tls: true), disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
        Peer = new HttpClient(CreateHandler(ConnectPeerAsync, tls: false), disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public HttpClient External { get; }
    public HttpClient Peer { get; }

    private SocketsHttpHandler CreateHandler(Func<SocketsHttpConnectionContext, CancellationToken, ValueTask<Stream>> connect, bool tls)
    {
        var h = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            UseProxy = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = ConnectTimeout,
            PooledConnectionLifetime = TimeSpan.FromMinutes(2),
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
            MaxResponseHeadersLength = 64, // KiB
            ConnectCallback = connect,
        };
        if (tls && _extraRoots is not null)
            h.SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = ValidateWithExtraRoots };
        return h;
    }

    /// <summary>The system's verdict, or a chain to one of the operator's extra roots for the same host name.</summary>
    private bool ValidateWithExtraRoots(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (errors == SslPolicyErrors.None) return true;
        if (certificate is null || (errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0) return false;
        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.AddRange(_extraRoots!);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (chain is not null)
            foreach (var element in chain.ChainElements) custom.ChainPolicy.ExtraStore.Add(element.Certificate);
        return custom.Build(certificate as X509Certificate2 ?? new X509Certificate2(certificate));
    }

    private async ValueTask<Stream> ConnectExternalAsync(SocketsHttpConnectionContext context, CancellationToken ct)
    {
        string host = context.DnsEndPoint.Host;
        int port = context.DnsEndPoint.Port;
        IPAddress[] addresses;
        if (_options.ResolveOverrides.TryGetValue(host, out var pinned))
        {
            addresses = [IPAddress.Parse(pinned)];
        }
        else
        {
            addresses = (await System.Net.Dns.GetHostAddressesAsync(host, ct).ConfigureAwait(false)).Where(IsPublic).ToArray();
            if (addresses.Length == 0) throw new HttpRequestException("the target resolves to no public address");
        }
        return await ConnectAnyAsync(addresses, port, ct).ConfigureAwait(false);
    }

    private static async ValueTask<Stream> ConnectPeerAsync(SocketsHttpConnectionContext context, CancellationToken ct)
    {
        // The request URI carries the VM's address Warren looked up; never a name a tenant chose.
        if (!IPAddress.TryParse(context.DnsEndPoint.Host, out var address)) throw new HttpRequestException("peer address missing");
        return await ConnectAnyAsync([address], context.DnsEndPoint.Port, ct).ConfigureAwait(false);
    }

    private static async ValueTask<Stream> ConnectAnyAsync(IPAddress[] addresses, int port, CancellationToken ct)
    {
        Exception? last = null;
        foreach (var address in addresses)
        {
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, port), ct).ConfigureAwait(false);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch (SocketException e)
            {
                socket.Dispose();
                last = e;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }
        throw new HttpRequestException("could not connect", last);
    }

    /// <summary>A globally routable unicast address (RFC 6890 special-purpose ranges excluded).</summary>
    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)) return false;
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            Span<byte> b = stackalloc byte[4];
            address.TryWriteBytes(b, out _);
            return !(b[0] == 0 || b[0] == 10 || b[0] == 127
                || (b[0] == 100 && (b[1] & 0xC0) == 64)        // 100.64/10 carrier-grade NAT (RFC 6598)
                || (b[0] == 169 && b[1] == 254)                 // link-local, the metadata address (RFC 3927)
                || (b[0] == 172 && (b[1] & 0xF0) == 16)         // RFC 1918
                || (b[0] == 192 && b[1] == 168)                 // RFC 1918
                || (b[0] == 192 && b[1] == 0 && b[2] == 0)      // IETF protocol assignments (RFC 6890)
                || (b[0] == 198 && (b[1] & 0xFE) == 18)         // benchmarking (RFC 2544)
                || b[0] >= 224);                                // multicast and reserved
        }
        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            if (address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6Multicast || address.IsIPv6UniqueLocal) return false;
            Span<byte> b = stackalloc byte[16];
            address.TryWriteBytes(b, out _);
            return (b[0] & 0xE0) == 0x20; // 2000::/3 global unicast
        }
        return false;
    }

    public void Dispose()
    {
        External.Dispose();
        Peer.Dispose();
    }
}
