using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace Warren.Ssh.Wire;

/// <summary>
/// Reads the data types of RFC 4251 §5 from a span. Every read checks the
/// remaining length before it slices, and returns false rather than throwing,
/// so peer-controlled input can never index past the buffer.
/// </summary>
/// <remarks>Mutable ref struct: pass it by <c>ref</c>.</remarks>
public ref struct SshReader
{
    private ReadOnlySpan<byte> _rest;

    public SshReader(ReadOnlySpan<byte> data) => _rest = data;

    public readonly ReadOnlySpan<byte> Remaining => _rest;
    public readonly int RemainingLength => _rest.Length;
    public readonly bool IsEmpty => _rest.IsEmpty;

    public bool TryReadByte(out byte value)
    {
        if (_rest.IsEmpty) { value = 0; return false; }
        value = _rest[0];
        _rest = _rest[1..];
        return true;
    }

    /// <summary>RFC 4251 §5 "boolean": any non-zero value is TRUE.</summary>
    public bool TryReadBoolean(out bool value)
    {
        var ok = TryReadByte(out var b);
        value = b != 0;
        return ok;
    }

    public bool TryReadUInt32(out uint value)
    {
        if (_rest.Length < 4) { value = 0; return false; }
        value = BinaryPrimitives.ReadUInt32BigEndian(_rest);
        _rest = _rest[4..];
        return true;
    }

    public bool TryReadUInt64(out ulong value)
    {
        if (_rest.Length < 8) { value = 0; return false; }
        value = BinaryPrimitives.ReadUInt64BigEndian(_rest);
        _rest = _rest[8..];
        return true;
    }

    /// <summary>RFC 4251 §5 "string": uint32 length then that many bytes.</summary>
    public bool TryReadString(out ReadOnlySpan<byte> value)
    {
        value = default;
        if (_rest.Length < 4) return false;
        uint len = BinaryPrimitives.ReadUInt32BigEndian(_rest);
        // Compare as unsigned so a length of 2^32-1 cannot wrap into a small int.
        if (len > (uint)(_rest.Length - 4)) return false;
        value = _rest.Slice(4, (int)len);
        _rest = _rest[(4 + (int)len)..];
        return true;
    }

    /// <summary>A string that must be UTF-8 (RFC 4251 §5 allows ISO-10646 UTF-8 text).</summary>
    public bool TryReadUtf8(out string value, int maxBytes = int.MaxValue)
    {
        value = "";
        if (!TryReadString(out var raw) || raw.Length > maxBytes) return false;
        try { value = s_strictUtf8.GetString(raw); return true; }
        catch (DecoderFallbackException) { return false; }
    }

    /// <summary>RFC 4251 §5 "name-list": comma-separated US-ASCII names, no empty names.</summary>
    public bool TryReadNameList(out string[] names, int maxBytes = NameList.MaxBytes)
    {
        names = [];
        if (!TryReadString(out var raw) || raw.Length > maxBytes) return false;
        if (raw.IsEmpty) return true;
        foreach (var b in raw)
            if (b < 0x21 || b > 0x7e) return false; // printable ASCII only, no spaces
        names = Encoding.ASCII.GetString(raw).Split(',');
        foreach (var n in names)
            if (n.Length == 0) return false;
        return true;
    }

    /// <summary>RFC 4251 §5 "mpint": two's complement, big-endian, minimal length.</summary>
    public bool TryReadMpint(out BigInteger value, int maxBytes = Mpint.MaxBytes)
    {
        value = BigInteger.Zero;
        if (!TryReadString(out var raw) || raw.Length > maxBytes) return false;
        value = new BigInteger(raw, isUnsigned: false, isBigEndian: true);
        return true;
    }

    /// <summary>An mpint's magnitude without sign padding; false for negative values.</summary>
    public bool TryReadPositiveMpint(out ReadOnlySpan<byte> magnitude, int maxBytes = Mpint.MaxBytes)
    {
        magnitude = default;
        if (!TryReadString(out var raw) || raw.Length > maxBytes) return false;
        if (!raw.IsEmpty && (raw[0] & 0x80) != 0) return false;
        while (!raw.IsEmpty && raw[0] == 0) raw = raw[1..];
        magnitude = raw;
        return true;
    }

    public bool TryReadBytes(int count, out ReadOnlySpan<byte> value)
    {
        value = default;
        if (count < 0 || count > _rest.Length) return false;
        value = _rest[..count];
        _rest = _rest[count..];
        return true;
    }

    private static readonly UTF8Encoding s_strictUtf8 = new(false, throwOnInvalidBytes: true);
}

public static class NameList
{
    /// <summary>
    /// Upper bound for one name-list. RFC 4251 §6 caps a name at 64 characters;
    /// 64 KiB bounds even a hostile KEXINIT list while leaving room for real ones.
    /// </summary>
    public const int MaxBytes = 64 * 1024;
}

public static class Mpint
{
    /// <summary>
    /// Largest mpint accepted: 16384-bit RSA moduli (the largest user key size
    /// Warren accepts) plus a sign byte.
    /// </summary>
    public const int MaxBytes = 16384 / 8 + 1;
}
