using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace Warren.Ssh.Wire;

/// <summary>
/// Writes the data types of RFC 4251 §5 into a growable buffer.
/// </summary>
public sealed class SshWriter
{
    private readonly ArrayBufferWriter<byte> _buffer;

    public SshWriter(int initialCapacity = 256) => _buffer = new ArrayBufferWriter<byte>(initialCapacity);

    public int Length => _buffer.WrittenCount;
    public ReadOnlySpan<byte> WrittenSpan => _buffer.WrittenSpan;
    public ReadOnlyMemory<byte> WrittenMemory => _buffer.WrittenMemory;
    public byte[] ToArray() => _buffer.WrittenSpan.ToArray();
    public void Clear() => _buffer.Clear();

    public SshWriter WriteByte(byte value)
    {
        _buffer.GetSpan(1)[0] = value;
        _buffer.Advance(1);
        return this;
    }

    public SshWriter WriteBoolean(bool value) => WriteByte(value ? (byte)1 : (byte)0);

    public SshWriter WriteUInt32(uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_buffer.GetSpan(4), value);
        _buffer.Advance(4);
        return this;
    }

    public SshWriter WriteUInt64(ulong value)
    {
        BinaryPrimitives.WriteUInt64BigEndian(_buffer.GetSpan(8), value);
        _buffer.Advance(8);
        return this;
    }

    /// <summary>Raw bytes without a length prefix.</summary>
    public SshWriter WriteRaw(ReadOnlySpan<byte> value)
    {
        _buffer.Write(value);
        return this;
    }

    public SshWriter WriteString(ReadOnlySpan<byte> value)
    {
        WriteUInt32((uint)value.Length);
        _buffer.Write(value);
        return this;
    }

    public SshWriter WriteString(string value)
    {
        int max = Encoding.UTF8.GetMaxByteCount(value.Length);
        var span = _buffer.GetSpan(4 + max);
        int n = Encoding.UTF8.GetBytes(value, span[4..]);
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)n);
        _buffer.Advance(4 + n);
        return this;
    }

    public SshWriter WriteNameList(IEnumerable<string> names) => WriteString(string.Join(',', names));

    public SshWriter WriteMpint(BigInteger value)
    {
        if (value.IsZero) return WriteUInt32(0);
        return WriteString(value.ToByteArray(isUnsigned: false, isBigEndian: true));
    }

    /// <summary>
    /// Writes an unsigned big-endian magnitude as an mpint: leading zeros
    /// dropped, and a zero byte added when the top bit is set (RFC 4251 §5).
    /// </summary>
    public SshWriter WriteMpintFromUnsigned(ReadOnlySpan<byte> magnitude)
    {
        while (!magnitude.IsEmpty && magnitude[0] == 0) magnitude = magnitude[1..];
        if (magnitude.IsEmpty) return WriteUInt32(0);
        bool pad = (magnitude[0] & 0x80) != 0;
        WriteUInt32((uint)(magnitude.Length + (pad ? 1 : 0)));
        if (pad) WriteByte(0);
        return WriteRaw(magnitude);
    }
}
