using System.Diagnostics.CodeAnalysis;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Warren.Ssh.Crypto;

/// <summary>
/// The original ChaCha20 (D. J. Bernstein, 2008; the variant OpenSSH's
/// chacha20-poly1305@openssh.com uses): 64-bit block counter in state words 12–13,
/// 64-bit nonce in words 14–15, 20 rounds. Computes several blocks at once with one
/// SIMD lane per block ("vertical" layout), which is what makes it competitive
/// with AES-NI; BouncyCastle's engine is scalar and several times slower.
/// </summary>
internal static class ChaCha20
{
    public const int KeyLength = 32;
    public const int BlockLength = 64;
    private const int StateWords = 16;
    /// <summary>Blocks per SIMD batch with 128-bit vectors.</summary>
    private const int Lanes = 4;
    private const int BatchLength = Lanes * BlockLength;

    // "expand 32-byte k" (the sigma constant).
    private const uint Sigma0 = 0x61707865, Sigma1 = 0x3320646e, Sigma2 = 0x79622d32, Sigma3 = 0x6b206574;

    /// <summary>Reads a 32-byte key into the eight little-endian key words.</summary>
    public static void LoadKey(ReadOnlySpan<byte> key, Span<uint> words)
    {
        for (int i = 0; i < 8; i++) words[i] = BinaryPrimitives.ReadUInt32LittleEndian(key[(i * 4)..]);
    }

    /// <summary>XORs the keystream that starts at block <paramref name="counter"/> into <paramref name="data"/>.</summary>
    [SkipLocalsInit]
    public static void Xor(ReadOnlySpan<uint> key, ulong nonce, ulong counter, Span<byte> data)
    {
        Span<uint> keystream = stackalloc uint[StateWords * Lanes];
        var keystreamBytes = MemoryMarshal.AsBytes(keystream);
        while (!data.IsEmpty)
        {
            Blocks(key, nonce, counter, keystream);
            int n = Math.Min(data.Length, BatchLength);
            XorHelper.XorInPlace(data[..n], keystreamBytes[..n]);
            data = data[n..];
            counter += Lanes;
        }
        keystream.Clear();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<uint> Rotl(Vector128<uint> v, [ConstantExpected] byte n) =>
        Vector128.ShiftLeft(v, n) | Vector128.ShiftRightLogical(v, 32 - n);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void QuarterRound(ref Vector128<uint> a, ref Vector128<uint> b, ref Vector128<uint> c, ref Vector128<uint> d)
    {
        a += b; d ^= a; d = Rotl(d, 16);
        c += d; b ^= c; b = Rotl(b, 12);
        a += b; d ^= a; d = Rotl(d, 8);
        c += d; b ^= c; b = Rotl(b, 7);
    }

    /// <summary>Four consecutive keystream blocks, little-endian words, block-major.</summary>
    private static void Blocks(ReadOnlySpan<uint> key, ulong nonce, ulong counter, Span<uint> output)
    {
        var s0 = Vector128.Create(Sigma0); var s1 = Vector128.Create(Sigma1);
        var s2 = Vector128.Create(Sigma2); var s3 = Vector128.Create(Sigma3);
        var k0 = Vector128.Create(key[0]); var k1 = Vector128.Create(key[1]);
        var k2 = Vector128.Create(key[2]); var k3 = Vector128.Create(key[3]);
        var k4 = Vector128.Create(key[4]); var k5 = Vector128.Create(key[5]);
        var k6 = Vector128.Create(key[6]); var k7 = Vector128.Create(key[7]);
        ulong c0 = counter, c1 = counter + 1, c2 = counter + 2, c3 = counter + 3;
        var ctrLow = Vector128.Create((uint)c0, (uint)c1, (uint)c2, (uint)c3);
        var ctrHigh = Vector128.Create((uint)(c0 >> 32), (uint)(c1 >> 32), (uint)(c2 >> 32), (uint)(c3 >> 32));
        var n0 = Vector128.Create((uint)nonce);
        var n1 = Vector128.Create((uint)(nonce >> 32));

        Vector128<uint> x0 = s0, x1 = s1, x2 = s2, x3 = s3, x4 = k0, x5 = k1, x6 = k2, x7 = k3,
            x8 = k4, x9 = k5, x10 = k6, x11 = k7, x12 = ctrLow, x13 = ctrHigh, x14 = n0, x15 = n1;
        for (int round = 0; round < 10; round++)
        {
            QuarterRound(ref x0, ref x4, ref x8, ref x12);
            QuarterRound(ref x1, ref x5, ref x9, ref x13);
            QuarterRound(ref x2, ref x6, ref x10, ref x14);
            QuarterRound(ref x3, ref x7, ref x11, ref x15);
            QuarterRound(ref x0, ref x5, ref x10, ref x15);
            QuarterRound(ref x1, ref x6, ref x11, ref x12);
            QuarterRound(ref x2, ref x7, ref x8, ref x13);
            QuarterRound(ref x3, ref x4, ref x9, ref x14);
        }
        Span<Vector128<uint>> words = [x0 + s0, x1 + s1, x2 + s2, x3 + s3, x4 + k0, x5 + k1, x6 + k2, x7 + k3,
            x8 + k4, x9 + k5, x10 + k6, x11 + k7, x12 + ctrLow, x13 + ctrHigh, x14 + n0, x15 + n1];
        // Transpose word-major lanes into block-major little-endian output.
        for (int w = 0; w < StateWords; w++)
        {
            var v = words[w];
            output[w] = ToLittleEndian(v.GetElement(0));
            output[StateWords + w] = ToLittleEndian(v.GetElement(1));
            output[2 * StateWords + w] = ToLittleEndian(v.GetElement(2));
            output[3 * StateWords + w] = ToLittleEndian(v.GetElement(3));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint ToLittleEndian(uint v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
}
