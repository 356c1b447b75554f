using System.Buffers.Binary;

namespace Warren.Edge.Dns;

/// <summary>A question: QNAME, QTYPE, QCLASS. RFC 1035 §4.1.2.</summary>
/// <param name="NameWire">QNAME in uncompressed wire form exactly as the client spelled it (case kept, for RFC 1035 §7.1 / 0x20 echo).</param>
/// <param name="Name">QNAME in lower case, dot-separated, no trailing dot; bytes other than letters, digits, '-' and '_' are written <c>\DDD</c>, so such names never match a zone name.</param>
internal sealed record DnsQuestion(byte[] NameWire, string Name, ushort QType, ushort QClass);

/// <summary>The parts of a query message the server acts on. RFC 1035 §4.1, RFC 6891 §6.1.</summary>
internal sealed class DnsQuery
{
    public ushort Id { get; init; }
    public int Opcode { get; init; }
    public bool RecursionDesired { get; init; }
    public DnsQuestion? Question { get; init; }

    /// <summary>The query carried an OPT pseudo-record. RFC 6891 §6.1.1.</summary>
    public bool HasEdns { get; init; }
    /// <summary>The requestor's UDP payload size from OPT CLASS. RFC 6891 §6.2.3.</summary>
    public ushort EdnsUdpPayloadSize { get; init; }
    public byte EdnsVersion { get; init; }
}

/// <summary>What the parser concluded about a datagram.</summary>
internal enum DnsParseStatus
{
    /// <summary>A well-formed query.</summary>
    Ok,
    /// <summary>Not worth an answer: shorter than a header, or a response (QR=1), which must never be answered (loops).</summary>
    Drop,
    /// <summary>The header is readable but the rest is malformed: answer FORMERR. <see cref="DnsQuery"/> holds the header fields.</summary>
    FormErr,
    /// <summary>An OPCODE other than QUERY: answer NOTIMP.</summary>
    NotImp,
}

/// <summary>
/// Parses query messages from the network. Every read checks the remaining length first; names
/// are bounded by RFC 1035 §2.3.4 and compression pointers must jump strictly backwards, so no input
/// can loop, allocate more than a few hundred bytes, or throw.
/// </summary>
internal static class DnsQueryParser
{
    public static DnsParseStatus Parse(ReadOnlySpan<byte> message, out DnsQuery query)
    {
        query = new DnsQuery();
        if (message.Length < DnsWire.HeaderSize)
            return DnsParseStatus.Drop;

        ushort id = BinaryPrimitives.ReadUInt16BigEndian(message);
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(message[2..]);
        ushort qdCount = BinaryPrimitives.ReadUInt16BigEndian(message[4..]);
        ushort anCount = BinaryPrimitives.ReadUInt16BigEndian(message[6..]);
        ushort nsCount = BinaryPrimitives.ReadUInt16BigEndian(message[8..]);
        ushort arCount = BinaryPrimitives.ReadUInt16BigEndian(message[10..]);
        int opcode = (flags >> DnsWire.OpcodeShift) & DnsWire.OpcodeMask;
        bool rd = (flags & DnsWire.FlagRd) != 0;

        query = new DnsQuery { Id = id, Opcode = opcode, RecursionDesired = rd };
        if ((flags & DnsWire.FlagQr) != 0)
            return DnsParseStatus.Drop;
        if (opcode != DnsWire.OpcodeQuery)
            return DnsParseStatus.NotImp;
        // RFC 9619: a QUERY carries exactly one question.
        if (qdCount != 1)
            return DnsParseStatus.FormErr;

        int offset = DnsWire.HeaderSize;
        if (!TryReadQuestion(message, ref offset, out var question))
            return DnsParseStatus.FormErr;
        query = new DnsQuery { Id = id, Opcode = opcode, RecursionDesired = rd, Question = question };

        // Skip answer and authority records, then look for OPT among the additional records.
        int skip = anCount + nsCount;
        for (int i = 0; i < skip; i++)
        {
            if (!TrySkipRecord(message, ref offset, out _, out _, out _))
                return DnsParseStatus.FormErr;
        }

        bool hasEdns = false;
        ushort udpSize = 0;
        byte version = 0;
        for (int i = 0; i < arCount; i++)
        {
            if (!TrySkipRecord(message, ref offset, out ushort type, out ushort @class, out uint ttl))
                return DnsParseStatus.FormErr;
            if (type != DnsWire.TypeOpt)
                continue;
            // RFC 6891 §6.1.1: more than one OPT is FORMERR.
            if (hasEdns)
                return DnsParseStatus.FormErr;
            hasEdns = true;
            udpSize = @class;
            version = (byte)(ttl >> 16);
        }

        query = new DnsQuery
        {
            Id = id, Opcode = opcode, RecursionDesired = rd, Question = question,
            HasEdns = hasEdns, EdnsUdpPayloadSize = udpSize, EdnsVersion = version,
        };
        return DnsParseStatus.Ok;
    }

    public static bool TryReadQuestion(ReadOnlySpan<byte> message, ref int offset, out DnsQuestion question)
    {
        question = null!;
        Span<byte> wire = stackalloc byte[DnsWire.MaxNameLength];
        if (!TryReadName(message, ref offset, wire, out int wireLength, out string text))
            return false;
        if (message.Length - offset < DnsWire.QuestionFixedSize)
            return false;
        ushort qtype = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
        ushort qclass = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 2)..]);
        offset += DnsWire.QuestionFixedSize;
        question = new DnsQuestion(wire[..wireLength].ToArray(), text, qtype, qclass);
        return true;
    }

    private static bool TrySkipRecord(ReadOnlySpan<byte> message, ref int offset, out ushort type, out ushort @class, out uint ttl)
    {
        type = 0; @class = 0; ttl = 0;
        Span<byte> wire = stackalloc byte[DnsWire.MaxNameLength];
        if (!TryReadName(message, ref offset, wire, out _, out _))
            return false;
        if (message.Length - offset < DnsWire.RecordFixedSize)
            return false;
        type = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
        @class = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 2)..]);
        ttl = BinaryPrimitives.ReadUInt32BigEndian(message[(offset + 4)..]);
        ushort rdLength = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 8)..]);
        offset += DnsWire.RecordFixedSize;
        if (message.Length - offset < rdLength)
            return false;
        offset += rdLength;
        return true;
    }

    /// <summary>
    /// Reads a possibly compressed name starting at <paramref name="offset"/> (RFC 1035 §3.1, §4.1.4),
    /// writes it uncompressed into <paramref name="wire"/> and advances <paramref name="offset"/>
    /// past the name as it sits in the message.
    /// </summary>
    /// <remarks>
    /// Loop safety: every pointer must target an offset strictly below every offset visited so far,
    /// so the walk is strictly decreasing after each jump and ends; <see cref="DnsWire.MaxCompressionJumps"/>
    /// bounds it again. The uncompressed name may not exceed <see cref="DnsWire.MaxNameLength"/>.
    /// </remarks>
    public static bool TryReadName(ReadOnlySpan<byte> message, ref int offset, Span<byte> wire, out int wireLength, out string text)
    {
        wireLength = 0;
        text = "";
        Span<char> chars = stackalloc char[DnsWire.MaxNameLength * 4];
        int charCount = 0;
        int pos = offset;
        int lowestVisited = offset;
        int end = -1;
        int jumps = 0;

        while (true)
        {
            if (pos < 0 || pos >= message.Length)
                return false;
            byte length = message[pos];
            if ((length & DnsWire.PointerMask) == DnsWire.PointerMask)
            {
                if (message.Length - pos < 2)
                    return false;
                int target = ((length & ~DnsWire.PointerMask) << 8) | message[pos + 1];
                if (end < 0)
                    end = pos + 2;
                if (target >= lowestVisited || ++jumps > DnsWire.MaxCompressionJumps)
                    return false;
                lowestVisited = target;
                pos = target;
                continue;
            }
            // 0b01 and 0b10 prefixes: extended / obsolete label types (RFC 6891 §5) — not accepted.
            if ((length & DnsWire.PointerMask) != 0)
                return false;
            if (length == 0)
            {
                if (wireLength + 1 > DnsWire.MaxNameLength)
                    return false;
                wire[wireLength++] = 0;
                offset = end >= 0 ? end : pos + 1;
                text = new string(chars[..charCount]);
                return true;
            }
            // length <= 63 is implied by the two high bits being clear.
            if (message.Length - pos - 1 < length)
                return false;
            // Room for this label and the final root octet.
            if (wireLength + 1 + length + 1 > DnsWire.MaxNameLength)
                return false;
            wire[wireLength++] = length;
            var label = message.Slice(pos + 1, length);
            label.CopyTo(wire[wireLength..]);
            wireLength += length;
            if (charCount > 0)
                chars[charCount++] = '.';
            foreach (byte b in label)
                charCount += AppendLowerEscaped(b, chars[charCount..]);
            pos += 1 + length;
            if (pos < lowestVisited)
                lowestVisited = pos;
        }
    }

    private static int AppendLowerEscaped(byte b, Span<char> destination)
    {
        if (b is >= (byte)'A' and <= (byte)'Z')
        {
            destination[0] = (char)(b | 0x20);
            return 1;
        }
        if (b is (>= (byte)'a' and <= (byte)'z') or (>= (byte)'0' and <= (byte)'9') or (byte)'-' or (byte)'_')
        {
            destination[0] = (char)b;
            return 1;
        }
        destination[0] = '\\';
        destination[1] = (char)('0' + b / 100);
        destination[2] = (char)('0' + b / 10 % 10);
        destination[3] = (char)('0' + b % 10);
        return 4;
    }
}
