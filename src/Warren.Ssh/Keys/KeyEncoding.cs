using System.Security.Cryptography;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Keys;

/// <summary>Small helpers shared by the concrete key types.</summary>
internal static class KeyEncoding
{
    /// <summary>
    /// Left-pads an unsigned big-endian magnitude to exactly <paramref name="length"/> bytes;
    /// false when the value does not fit (after dropping leading zeros).
    /// </summary>
    public static bool TryToFixed(ReadOnlySpan<byte> magnitude, int length, out byte[] result)
    {
        while (!magnitude.IsEmpty && magnitude[0] == 0) magnitude = magnitude[1..];
        result = [];
        if (magnitude.Length > length) return false;
        result = new byte[length];
        magnitude.CopyTo(result.AsSpan(length - magnitude.Length));
        return true;
    }

    /// <summary>Like <see cref="TryToFixed"/> for values our own code produced; throws on overflow.</summary>
    public static byte[] ToFixed(ReadOnlySpan<byte> magnitude, int length)
    {
        if (!TryToFixed(magnitude, length, out var r))
            throw new CryptographicException("Value does not fit the expected length.");
        return r;
    }

    public static int BitLength(ReadOnlySpan<byte> magnitude)
    {
        while (!magnitude.IsEmpty && magnitude[0] == 0) magnitude = magnitude[1..];
        if (magnitude.IsEmpty) return 0;
        return (magnitude.Length - 1) * 8 + (32 - System.Numerics.BitOperations.LeadingZeroCount((uint)magnitude[0]));
    }

    /// <summary>Compares wire bytes with an ASCII name without allocating.</summary>
    public static bool AsciiEquals(ReadOnlySpan<byte> bytes, string name)
    {
        if (bytes.Length != name.Length) return false;
        for (int i = 0; i < bytes.Length; i++)
            if (bytes[i] != name[i]) return false;
        return true;
    }

    /// <summary>
    /// Reads a non-negative mpint in its one canonical encoding (RFC 4251 §5: "unnecessary
    /// leading bytes with the value 0 or 255 MUST NOT be included"), so that a parsed key
    /// re-encodes to exactly the bytes it came from. Returns the magnitude without the sign byte.
    /// </summary>
    public static bool TryReadCanonicalPositiveMpint(ref SshReader r, out ReadOnlySpan<byte> magnitude, int maxBytes = Mpint.MaxBytes)
    {
        const byte SignBit = 0x80;
        magnitude = default;
        if (!r.TryReadString(out var raw) || raw.Length > maxBytes) return false;
        if (raw.IsEmpty) return true;                       // zero
        if ((raw[0] & SignBit) != 0) return false;          // negative
        if (raw[0] == 0)
        {
            if (raw.Length == 1 || (raw[1] & SignBit) == 0) return false; // superfluous zero byte
            raw = raw[1..];
        }
        magnitude = raw;
        return true;
    }
}
