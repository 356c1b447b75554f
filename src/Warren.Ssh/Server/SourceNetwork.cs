using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Warren.Ssh.Server;

/// <summary>
/// What a per-source limit counts as one client: an IPv4 address, or an IPv6 /64 (one subscriber
/// or host usually holds a whole /64, so counting single IPv6 addresses would let it rotate freely).
/// IPv4-mapped IPv6 addresses count as their IPv4 address. A value type: no allocation per request.
/// Shared by every front door's per-source limit (SSH pre-auth, HTTPS connections and requests).
/// </summary>
public readonly record struct SourceNetwork(ulong High, ulong Low)
{
    /// <summary>Prefix length that counts as one IPv6 source.</summary>
    public const int Ipv6PrefixLength = 64;

    public static SourceNetwork Of(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        Span<byte> bytes = stackalloc byte[16];
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            address.TryWriteBytes(bytes, out _);
            // The ::ffff:a.b.c.d layout, so IPv4 sources never collide with IPv6 /64s.
            return new SourceNetwork(0, 0x0000_FFFF_0000_0000UL | BinaryPrimitives.ReadUInt32BigEndian(bytes));
        }
        address.TryWriteBytes(bytes, out _);
        return new SourceNetwork(BinaryPrimitives.ReadUInt64BigEndian(bytes), 0);
    }

    /// <summary>The source of a remote end point; a non-IP end point (a test pipe) counts as the unspecified address.</summary>
    public static SourceNetwork Of(System.Net.EndPoint? remote) => Of(remote is IPEndPoint ip ? ip.Address : IPAddress.IPv6None);

    public override string ToString()
    {
        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, High);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[8..], Low);
        var address = new IPAddress(bytes);
        return High == 0 && (Low >> 32) == 0xFFFF ? address.MapToIPv4().ToString() : $"{address}/{Ipv6PrefixLength}";
    }
}
