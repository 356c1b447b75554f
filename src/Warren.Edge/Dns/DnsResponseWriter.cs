using System.Buffers.Binary;
using System.Net.Sockets;

namespace Warren.Edge.Dns;

/// <summary>
/// Writes one response message into a caller-owned buffer, compressing names against the
/// question and earlier names (RFC 1035 §4.1.4). Writes past the buffer set <see cref="Overflowed"/>
/// instead of throwing; the caller then sends a truncated reply.
/// </summary>
internal sealed class DnsResponseWriter
{
    private readonly byte[] _buffer;
    private readonly Dictionary<string, int> _nameOffsets = new(StringComparer.Ordinal);
    private int _position;

    public DnsResponseWriter(byte[] buffer) => _buffer = buffer;

    public int Length => _position;
    public bool Overflowed { get; private set; }

    public void Reset()
    {
        _position = 0;
        Overflowed = false;
        _nameOffsets.Clear();
    }

    /// <summary>Header with QR set. RFC 1035 §4.1.1.</summary>
    public void WriteHeader(ushort id, int opcode, bool authoritative, bool truncated, bool recursionDesired, int rcode,
        int qdCount, int anCount, int nsCount, int arCount)
    {
        ushort flags = DnsWire.FlagQr;
        flags |= (ushort)((opcode & DnsWire.OpcodeMask) << DnsWire.OpcodeShift);
        if (authoritative) flags |= DnsWire.FlagAa;
        if (truncated) flags |= DnsWire.FlagTc;
        if (recursionDesired) flags |= DnsWire.FlagRd;
        flags |= (ushort)(rcode & DnsWire.RcodeMask);
        WriteUInt16(id);
        WriteUInt16(flags);
        WriteUInt16((ushort)qdCount);
        WriteUInt16((ushort)anCount);
        WriteUInt16((ushort)nsCount);
        WriteUInt16((ushort)arCount);
    }

    /// <summary>Echoes the question with the client's spelling; its suffixes become compression targets.</summary>
    public void WriteQuestion(DnsQuestion question)
    {
        int start = _position;
        WriteBytes(question.NameWire);
        if (!Overflowed && !question.Name.Contains('\\'))
        {
            // Register every suffix of the question name at its offset in the message.
            int wireIndex = 0;
            string name = question.Name;
            int textIndex = 0;
            while (wireIndex < question.NameWire.Length && question.NameWire[wireIndex] != 0)
            {
                Remember(name[textIndex..], start + wireIndex);
                int labelLength = question.NameWire[wireIndex];
                wireIndex += 1 + labelLength;
                textIndex = Math.Min(name.Length, textIndex + labelLength + 1);
            }
        }
        WriteUInt16(question.QType);
        WriteUInt16(question.QClass);
    }

    public void WriteRecord(DnsRecord record, ushort @class = DnsWire.ClassIn)
    {
        WriteName(record.Owner);
        WriteUInt16(record.Type);
        WriteUInt16(@class);
        WriteUInt32(record.Ttl);
        int lengthAt = _position;
        WriteUInt16(0);
        int rdataStart = _position;
        switch (record)
        {
            case DnsAddressRecord a:
                Span<byte> address = stackalloc byte[16];
                a.Address.TryWriteBytes(address, out int written);
                WriteBytes(address[..written]);
                break;
            case DnsNameRecord n:
                WriteName(n.Target);
                break;
            case DnsMxRecord mx:
                WriteUInt16(mx.Preference);
                WriteName(mx.Exchange);
                break;
            case DnsSoaRecord s:
                WriteName(s.MName);
                WriteName(s.RName);
                WriteUInt32(s.Serial);
                WriteUInt32(s.Refresh);
                WriteUInt32(s.Retry);
                WriteUInt32(s.Expire);
                WriteUInt32(s.Minimum);
                break;
        }
        if (!Overflowed)
            BinaryPrimitives.WriteUInt16BigEndian(_buffer.AsSpan(lengthAt), (ushort)(_position - rdataStart));
    }

    /// <summary>OPT pseudo-record advertising our payload size. RFC 6891 §6.1.2–6.1.3.</summary>
    public void WriteOpt(int extendedRcode)
    {
        WriteByte(0); // root owner
        WriteUInt16(DnsWire.TypeOpt);
        WriteUInt16(DnsWire.EdnsUdpPayloadSize);
        // TTL: EXTENDED-RCODE (upper 8 bits of the 12-bit rcode), VERSION, DO=0 + Z.
        WriteUInt32((uint)((extendedRcode >> 4) & 0xFF) << 24 | (uint)DnsWire.EdnsVersion << 16);
        WriteUInt16(0);
    }

    /// <summary>Writes a zone-generated name (LDH labels), using a pointer to the longest known suffix.</summary>
    public void WriteName(string name)
    {
        int index = 0;
        while (index < name.Length)
        {
            string suffix = name[index..];
            if (_nameOffsets.TryGetValue(suffix, out int offset))
            {
                WriteUInt16((ushort)(DnsWire.PointerMask << 8 | offset));
                return;
            }
            Remember(suffix, _position);
            int dot = name.IndexOf('.', index);
            int labelEnd = dot < 0 ? name.Length : dot;
            int labelLength = labelEnd - index;
            if (labelLength is 0 or > DnsWire.MaxLabelLength)
            {
                // Configuration produced an invalid name; our bug, not the peer's.
                System.Diagnostics.Debug.Fail($"invalid zone name {name}");
                Overflowed = true;
                return;
            }
            WriteByte((byte)labelLength);
            for (int i = index; i < labelEnd; i++)
                WriteByte((byte)name[i]);
            index = labelEnd + 1;
        }
        WriteByte(0);
    }

    private void Remember(string suffix, int offset)
    {
        if (offset <= DnsWire.MaxPointerOffset && suffix.Length > 0)
            _nameOffsets.TryAdd(suffix, offset);
    }

    private void WriteByte(byte value)
    {
        if (_position + 1 > _buffer.Length) { Overflowed = true; return; }
        _buffer[_position++] = value;
    }

    private void WriteUInt16(ushort value)
    {
        if (_position + sizeof(ushort) > _buffer.Length) { Overflowed = true; return; }
        BinaryPrimitives.WriteUInt16BigEndian(_buffer.AsSpan(_position), value);
        _position += sizeof(ushort);
    }

    private void WriteUInt32(uint value)
    {
        if (_position + sizeof(uint) > _buffer.Length) { Overflowed = true; return; }
        BinaryPrimitives.WriteUInt32BigEndian(_buffer.AsSpan(_position), value);
        _position += sizeof(uint);
    }

    private void WriteBytes(ReadOnlySpan<byte> bytes)
    {
        if (_position + bytes.Length > _buffer.Length) { Overflowed = true; return; }
        bytes.CopyTo(_buffer.AsSpan(_position));
        _position += bytes.Length;
    }
}
