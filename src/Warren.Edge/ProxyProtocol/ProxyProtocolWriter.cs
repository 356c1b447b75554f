using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Warren.Edge.ProxyProtocol;

/// <summary>Builds PROXY protocol headers (haproxy proxy-protocol.txt §2.1, §2.2), e.g. for forwarding to a backend.</summary>
public static class ProxyProtocolWriter
{
    /// <summary>
    /// v1 line: "PROXY TCP4|TCP6 src dst sport dport\r\n", or "PROXY UNKNOWN\r\n" for null.
    /// Mixed families are written as TCP6 with IPv4-mapped addresses (the spec requires one family).
    /// </summary>
    public static byte[] WriteV1(ProxyHeader? header)
    {
        if (header is null) return "PROXY UNKNOWN\r\n"u8.ToArray();
        var (src, dst) = SameFamily(header);
        var proto = src.AddressFamily == AddressFamily.InterNetwork ? "TCP4" : "TCP6";
        var line = $"PROXY {proto} {src} {dst} {header.Source.Port} {header.Destination.Port}\r\n";
        return Encoding.ASCII.GetBytes(line);
    }

    /// <summary>
    /// v2 header: PROXY command with TCP over IPv4/IPv6, or the LOCAL command for null.
    /// <paramref name="tlvs"/> are appended verbatim after the address block.
    /// </summary>
    public static byte[] WriteV2(ProxyHeader? header, ReadOnlySpan<byte> tlvs = default)
    {
        const byte VersionLocal = 0x20, VersionProxy = 0x21, FamilyUnspec = 0x00, FamilyTcp4 = 0x11, FamilyTcp6 = 0x21;
        int addressBytes = 0;
        IPAddress? src = null, dst = null;
        if (header is not null)
        {
            (src, dst) = SameFamily(header);
            addressBytes = src.GetAddressBytes().Length;
        }
        int blockLength = header is null ? 0 : 2 * addressBytes + 2 * sizeof(ushort);
        int length = blockLength + tlvs.Length;
        if (length > ushort.MaxValue) throw new ArgumentException("PROXY v2 payload cannot exceed 65535 bytes.", nameof(tlvs));
        var result = new byte[ProxyProtocolReader.V2FixedLength + length];
        ProxyProtocolReader.V2Signature.CopyTo(result);
        result[ProxyProtocolReader.V2VerCmdOffset] = header is null ? VersionLocal : VersionProxy;
        result[ProxyProtocolReader.V2FamilyOffset] = header is null ? FamilyUnspec : src!.AddressFamily == AddressFamily.InterNetwork ? FamilyTcp4 : FamilyTcp6;
        BinaryPrimitives.WriteUInt16BigEndian(result.AsSpan(ProxyProtocolReader.V2LengthOffset), (ushort)length);
        var block = result.AsSpan(ProxyProtocolReader.V2FixedLength);
        if (header is not null)
        {
            src!.TryWriteBytes(block, out _);
            dst!.TryWriteBytes(block[addressBytes..], out _);
            BinaryPrimitives.WriteUInt16BigEndian(block[(2 * addressBytes)..], (ushort)header.Source.Port);
            BinaryPrimitives.WriteUInt16BigEndian(block[(2 * addressBytes + sizeof(ushort))..], (ushort)header.Destination.Port);
        }
        tlvs.CopyTo(block[blockLength..]);
        return result;
    }

    private static (IPAddress Src, IPAddress Dst) SameFamily(ProxyHeader h)
    {
        bool v6 = h.Source.AddressFamily == AddressFamily.InterNetworkV6 || h.Destination.AddressFamily == AddressFamily.InterNetworkV6;
        return (Normalize(h.Source.Address, v6), Normalize(h.Destination.Address, v6));
    }

    /// <summary>IPv4 mapped into IPv6 when the other side is IPv6; IPv6 scope ids dropped (they have no wire form).</summary>
    private static IPAddress Normalize(IPAddress a, bool v6)
    {
        if (a.AddressFamily == AddressFamily.InterNetwork) return v6 ? a.MapToIPv6() : a;
        return a.ScopeId == 0 ? a : new IPAddress(a.GetAddressBytes());
    }
}
