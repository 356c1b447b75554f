using System.Numerics;
using System.Runtime.InteropServices;

namespace Warren.Ssh.Crypto;

internal static class XorHelper
{
    /// <summary>data ^= keystream, element-wise; vectorized. Lengths must match.</summary>
    public static void XorInPlace(Span<byte> data, ReadOnlySpan<byte> keystream)
    {
        System.Diagnostics.Debug.Assert(data.Length == keystream.Length);
        int i = 0;
        if (Vector.IsHardwareAccelerated && data.Length >= Vector<byte>.Count)
        {
            var dv = MemoryMarshal.Cast<byte, Vector<byte>>(data);
            var kv = MemoryMarshal.Cast<byte, Vector<byte>>(keystream);
            for (int v = 0; v < dv.Length; v++) dv[v] ^= kv[v];
            i = dv.Length * Vector<byte>.Count;
        }
        for (; i < data.Length; i++) data[i] ^= keystream[i];
    }
}
