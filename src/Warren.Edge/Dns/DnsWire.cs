namespace Warren.Edge.Dns;

/// <summary>Sizes, limits and code points of the DNS wire format.</summary>
/// <remarks>RFC 1035 §2.3.4 (size limits), §4.1 (message format), §4.2 (transport); RFC 6891 (EDNS).</remarks>
internal static class DnsWire
{
    /// <summary>Fixed header size. RFC 1035 §4.1.1.</summary>
    public const int HeaderSize = 12;

    /// <summary>Largest label, in octets. RFC 1035 §2.3.4.</summary>
    public const int MaxLabelLength = 63;

    /// <summary>Largest name in wire form, length octets and root included. RFC 1035 §2.3.4.</summary>
    public const int MaxNameLength = 255;

    /// <summary>Largest UDP reply to a query without EDNS. RFC 1035 §2.3.4 / §4.2.1.</summary>
    public const int MaxUdpPayloadWithoutEdns = 512;

    /// <summary>
    /// Our advertised and honoured EDNS UDP payload size: 1232 avoids IP fragmentation on
    /// any IPv6 path (DNS Flag Day 2020 recommendation, followed by BIND, Unbound and Knot).
    /// </summary>
    public const int EdnsUdpPayloadSize = 1232;

    /// <summary>Largest message over TCP: the two-octet length prefix. RFC 1035 §4.2.2.</summary>
    public const int MaxTcpMessageSize = ushort.MaxValue;

    /// <summary>Largest UDP datagram we read (IPv4/IPv6 UDP payload limit).</summary>
    public const int MaxUdpDatagramSize = ushort.MaxValue;

    /// <summary>
    /// A name can hold at most 127 labels (255 octets / 2), so a legitimate name never needs
    /// more compression jumps than that; more means a loop. RFC 1035 §4.1.4.
    /// </summary>
    public const int MaxCompressionJumps = 127;

    /// <summary>The two high bits of a label-length octet that mark a compression pointer. RFC 1035 §4.1.4.</summary>
    public const byte PointerMask = 0xC0;

    /// <summary>Largest offset a compression pointer can hold (14 bits). RFC 1035 §4.1.4.</summary>
    public const int MaxPointerOffset = 0x3FFF;

    /// <summary>Fixed part of a resource record after its name: TYPE, CLASS, TTL, RDLENGTH. RFC 1035 §4.1.3.</summary>
    public const int RecordFixedSize = 10;

    /// <summary>Fixed part of a question after its name: QTYPE, QCLASS. RFC 1035 §4.1.2.</summary>
    public const int QuestionFixedSize = 4;

    // TYPE values, RFC 1035 §3.2.2, RFC 3596 (AAAA), RFC 6891 (OPT), RFC 1995/5936 (IXFR/AXFR).
    public const ushort TypeA = 1;
    public const ushort TypeNs = 2;
    public const ushort TypeCname = 5;
    public const ushort TypeSoa = 6;
    public const ushort TypeMx = 15;
    public const ushort TypeAaaa = 28;
    public const ushort TypeOpt = 41;
    public const ushort TypeIxfr = 251;
    public const ushort TypeAxfr = 252;
    public const ushort TypeAny = 255;

    // CLASS values, RFC 1035 §3.2.4.
    public const ushort ClassIn = 1;
    public const ushort ClassAny = 255;

    // Header flag bits, RFC 1035 §4.1.1.
    public const ushort FlagQr = 0x8000;
    public const int OpcodeShift = 11;
    public const ushort OpcodeMask = 0xF;
    public const ushort FlagAa = 0x0400;
    public const ushort FlagTc = 0x0200;
    public const ushort FlagRd = 0x0100;
    public const ushort RcodeMask = 0xF;

    /// <summary>OPCODE QUERY. RFC 1035 §4.1.1.</summary>
    public const int OpcodeQuery = 0;

    /// <summary>The only EDNS version we speak. RFC 6891 §6.1.3.</summary>
    public const byte EdnsVersion = 0;

    /// <summary>Extended RCODE BADVERS (16): its upper 8 bits go in the OPT TTL. RFC 6891 §6.1.3.</summary>
    public const int RcodeBadVers = 16;
}

/// <summary>Response codes. RFC 1035 §4.1.1, RFC 6891 §9.</summary>
public enum DnsRcode
{
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}
