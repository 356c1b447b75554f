using System.Net;
using System.Net.Sockets;

namespace Warren.Edge.Dns;

/// <summary>A resource record the server emits. RFC 1035 §3.2.1, §4.1.3. Owner names are lower-case, dot-separated, without trailing dot.</summary>
internal abstract record DnsRecord(string Owner, ushort Type, uint Ttl);

/// <summary>A (RFC 1035 §3.4.1) or AAAA (RFC 3596 §2.2), by the address family.</summary>
internal sealed record DnsAddressRecord(string Owner, uint Ttl, IPAddress Address)
    : DnsRecord(Owner, Address.AddressFamily == AddressFamily.InterNetworkV6 ? DnsWire.TypeAaaa : DnsWire.TypeA, Ttl);

/// <summary>CNAME (RFC 1035 §3.3.1) or NS (§3.3.11): RDATA is one domain name.</summary>
internal sealed record DnsNameRecord(string Owner, ushort Type, uint Ttl, string Target) : DnsRecord(Owner, Type, Ttl);

/// <summary>MX (RFC 1035 §3.3.9): PREFERENCE, then the exchange's domain name.</summary>
internal sealed record DnsMxRecord(string Owner, uint Ttl, ushort Preference, string Exchange) : DnsRecord(Owner, DnsWire.TypeMx, Ttl);

/// <summary>SOA. RFC 1035 §3.3.13; MINIMUM is the negative-caching TTL (RFC 2308 §4).</summary>
internal sealed record DnsSoaRecord(
    string Owner, uint Ttl, string MName, string RName, uint Serial, uint Refresh, uint Retry, uint Expire, uint Minimum)
    : DnsRecord(Owner, DnsWire.TypeSoa, Ttl);

/// <summary>The authority's decision for one question.</summary>
internal sealed class DnsAnswer
{
    public DnsRcode Rcode { get; init; }
    /// <summary>AA: set for names inside our zones, clear for REFUSED. RFC 1035 §4.1.1.</summary>
    public bool Authoritative { get; init; }
    public List<DnsRecord> Answer { get; } = new();
    public List<DnsRecord> Authority { get; } = new();
    public List<DnsRecord> Additional { get; } = new();
}
