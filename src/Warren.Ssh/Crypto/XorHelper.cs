using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Warren.Ssh.Crypto;

internal static class XorHelper
{
    /// <summary>data ^= keystream, element-wise; vectorized. Lengths must match.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void XorInPlace(Span<byte> data, ReadOnlySpan<byte> keystream)
    {
        System.Diagnostics.Debug.Assert(data.Length == keystream.Length);
        ref byte d = ref MemoryMarshal.GetReference(data);
        ref byte k = ref MemoryMarshal.GetReference(keystream);
        nuint n = (nuint)data.Length;
        nuint i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + (nuint)Vector256<byte>.Count <= n; i += (nuint)Vector256<byte>.Count)
                Vector256.StoreUnsafe(Vector256.LoadUnsafe(ref d, i) ^ Vector256.LoadUnsafe(ref k, i), ref d, i);
        }
        for (; i + (nuint)Vector128<byte>.Count <= n; i += (nuint)Vector128<byte>.Count)
            Vector128.StoreUnsafe(Vector128.LoadUnsafe(ref d, i) ^ Vector128.LoadUnsafe(ref k, i), ref d, i);
        for (; i < n; i++) Unsafe.Add(ref d, i) ^= Unsafe.Add(ref k, i);
    }
}
