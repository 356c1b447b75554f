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
    /// <summary>ChaCha20: 20 rounds = 10 double rounds.</summary>
    private const int DoubleRounds = 10;
    /// <summary>Most blocks computed per SIMD batch (256-bit vectors, 8 lanes).</summary>
    private const int MaxLanes = 8;

    // "expand 32-byte k" (the sigma constant).
    private const uint Sigma0 = 0x61707865, Sigma1 = 0x3320646e, Sigma2 = 0x79622d32, Sigma3 = 0x6b206574;

    /// <summary>Reads a 32-byte key into the eight little-endian key words.</summary>
    public static void LoadKey(ReadOnlySpan<byte> key, Span<uint> words)
    {
        for (int i = 0; i < 8; i++) words[i] = BinaryPrimitives.ReadUInt32LittleEndian(key[(i * 4)..]);
    }

    /// <summary>XORs the keystream that starts at block <paramref name="counter"/> into <paramref name="data"/>.</summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Xor(ReadOnlySpan<uint> key, ulong nonce, ulong counter, Span<byte> data)
    {
        Span<uint> keystream = stackalloc uint[StateWords * MaxLanes];
        var keystreamBytes = MemoryMarshal.AsBytes(keystream);
        bool wide = Vector256.IsHardwareAccelerated;
        while (!data.IsEmpty)
        {
            int lanes;
            if (wide && data.Length > 4 * BlockLength) { Blocks8(key, nonce, counter, keystream); lanes = 8; }
            else { Blocks4(key, nonce, counter, keystream); lanes = 4; }
            int n = Math.Min(data.Length, lanes * BlockLength);
            XorHelper.XorInPlace(data[..n], keystreamBytes[..n]);
            data = data[n..];
            counter += (ulong)lanes;
        }
        keystream.Clear();
    }

    // The rounds are written out (generated) rather than calling a quarter-round helper with
    // ref parameters: ref-passed vector locals get spilled to memory, which cost 5x.

    /// <summary>4 consecutive keystream blocks, block-major little-endian words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Blocks4(ReadOnlySpan<uint> key, ulong nonce, ulong counter, Span<uint> output)
    {
        var i0 = Vector128.Create(Sigma0); var i1 = Vector128.Create(Sigma1); var i2 = Vector128.Create(Sigma2); var i3 = Vector128.Create(Sigma3);
        var i4 = Vector128.Create(key[0]); var i5 = Vector128.Create(key[1]); var i6 = Vector128.Create(key[2]); var i7 = Vector128.Create(key[3]); var i8 = Vector128.Create(key[4]); var i9 = Vector128.Create(key[5]); var i10 = Vector128.Create(key[6]); var i11 = Vector128.Create(key[7]);
        var i12 = Vector128.Create((uint)(counter + 0), (uint)(counter + 1), (uint)(counter + 2), (uint)(counter + 3));
        var i13 = Vector128.Create((uint)((counter + 0) >> 32), (uint)((counter + 1) >> 32), (uint)((counter + 2) >> 32), (uint)((counter + 3) >> 32));
        var i14 = Vector128.Create((uint)nonce); var i15 = Vector128.Create((uint)(nonce >> 32));
        var x0 = i0; var x1 = i1; var x2 = i2; var x3 = i3; var x4 = i4; var x5 = i5; var x6 = i6; var x7 = i7; var x8 = i8; var x9 = i9; var x10 = i10; var x11 = i11; var x12 = i12; var x13 = i13; var x14 = i14; var x15 = i15;
        for (int round = 0; round < DoubleRounds; round++)
        {
            x0 += x4; x12 ^= x0; x12 = Vector128.ShiftLeft(x12, 16) | Vector128.ShiftRightLogical(x12, 16);
            x8 += x12; x4 ^= x8; x4 = Vector128.ShiftLeft(x4, 12) | Vector128.ShiftRightLogical(x4, 20);
            x0 += x4; x12 ^= x0; x12 = Vector128.ShiftLeft(x12, 8) | Vector128.ShiftRightLogical(x12, 24);
            x8 += x12; x4 ^= x8; x4 = Vector128.ShiftLeft(x4, 7) | Vector128.ShiftRightLogical(x4, 25);
            x1 += x5; x13 ^= x1; x13 = Vector128.ShiftLeft(x13, 16) | Vector128.ShiftRightLogical(x13, 16);
            x9 += x13; x5 ^= x9; x5 = Vector128.ShiftLeft(x5, 12) | Vector128.ShiftRightLogical(x5, 20);
            x1 += x5; x13 ^= x1; x13 = Vector128.ShiftLeft(x13, 8) | Vector128.ShiftRightLogical(x13, 24);
            x9 += x13; x5 ^= x9; x5 = Vector128.ShiftLeft(x5, 7) | Vector128.ShiftRightLogical(x5, 25);
            x2 += x6; x14 ^= x2; x14 = Vector128.ShiftLeft(x14, 16) | Vector128.ShiftRightLogical(x14, 16);
            x10 += x14; x6 ^= x10; x6 = Vector128.ShiftLeft(x6, 12) | Vector128.ShiftRightLogical(x6, 20);
            x2 += x6; x14 ^= x2; x14 = Vector128.ShiftLeft(x14, 8) | Vector128.ShiftRightLogical(x14, 24);
            x10 += x14; x6 ^= x10; x6 = Vector128.ShiftLeft(x6, 7) | Vector128.ShiftRightLogical(x6, 25);
            x3 += x7; x15 ^= x3; x15 = Vector128.ShiftLeft(x15, 16) | Vector128.ShiftRightLogical(x15, 16);
            x11 += x15; x7 ^= x11; x7 = Vector128.ShiftLeft(x7, 12) | Vector128.ShiftRightLogical(x7, 20);
            x3 += x7; x15 ^= x3; x15 = Vector128.ShiftLeft(x15, 8) | Vector128.ShiftRightLogical(x15, 24);
            x11 += x15; x7 ^= x11; x7 = Vector128.ShiftLeft(x7, 7) | Vector128.ShiftRightLogical(x7, 25);
            x0 += x5; x15 ^= x0; x15 = Vector128.ShiftLeft(x15, 16) | Vector128.ShiftRightLogical(x15, 16);
            x10 += x15; x5 ^= x10; x5 = Vector128.ShiftLeft(x5, 12) | Vector128.ShiftRightLogical(x5, 20);
            x0 += x5; x15 ^= x0; x15 = Vector128.ShiftLeft(x15, 8) | Vector128.ShiftRightLogical(x15, 24);
            x10 += x15; x5 ^= x10; x5 = Vector128.ShiftLeft(x5, 7) | Vector128.ShiftRightLogical(x5, 25);
            x1 += x6; x12 ^= x1; x12 = Vector128.ShiftLeft(x12, 16) | Vector128.ShiftRightLogical(x12, 16);
            x11 += x12; x6 ^= x11; x6 = Vector128.ShiftLeft(x6, 12) | Vector128.ShiftRightLogical(x6, 20);
            x1 += x6; x12 ^= x1; x12 = Vector128.ShiftLeft(x12, 8) | Vector128.ShiftRightLogical(x12, 24);
            x11 += x12; x6 ^= x11; x6 = Vector128.ShiftLeft(x6, 7) | Vector128.ShiftRightLogical(x6, 25);
            x2 += x7; x13 ^= x2; x13 = Vector128.ShiftLeft(x13, 16) | Vector128.ShiftRightLogical(x13, 16);
            x8 += x13; x7 ^= x8; x7 = Vector128.ShiftLeft(x7, 12) | Vector128.ShiftRightLogical(x7, 20);
            x2 += x7; x13 ^= x2; x13 = Vector128.ShiftLeft(x13, 8) | Vector128.ShiftRightLogical(x13, 24);
            x8 += x13; x7 ^= x8; x7 = Vector128.ShiftLeft(x7, 7) | Vector128.ShiftRightLogical(x7, 25);
            x3 += x4; x14 ^= x3; x14 = Vector128.ShiftLeft(x14, 16) | Vector128.ShiftRightLogical(x14, 16);
            x9 += x14; x4 ^= x9; x4 = Vector128.ShiftLeft(x4, 12) | Vector128.ShiftRightLogical(x4, 20);
            x3 += x4; x14 ^= x3; x14 = Vector128.ShiftLeft(x14, 8) | Vector128.ShiftRightLogical(x14, 24);
            x9 += x14; x4 ^= x9; x4 = Vector128.ShiftLeft(x4, 7) | Vector128.ShiftRightLogical(x4, 25);
        }
        Store(x0 + i0, output, 0);
        Store(x1 + i1, output, 1);
        Store(x2 + i2, output, 2);
        Store(x3 + i3, output, 3);
        Store(x4 + i4, output, 4);
        Store(x5 + i5, output, 5);
        Store(x6 + i6, output, 6);
        Store(x7 + i7, output, 7);
        Store(x8 + i8, output, 8);
        Store(x9 + i9, output, 9);
        Store(x10 + i10, output, 10);
        Store(x11 + i11, output, 11);
        Store(x12 + i12, output, 12);
        Store(x13 + i13, output, 13);
        Store(x14 + i14, output, 14);
        Store(x15 + i15, output, 15);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector128<uint> v, Span<uint> output, int word)
    {
        for (int lane = 0; lane < Vector128<uint>.Count; lane++)
            output[lane * StateWords + word] = ToLittleEndian(v.GetElement(lane));
    }

    /// <summary>8 consecutive keystream blocks, block-major little-endian words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Blocks8(ReadOnlySpan<uint> key, ulong nonce, ulong counter, Span<uint> output)
    {
        var i0 = Vector256.Create(Sigma0); var i1 = Vector256.Create(Sigma1); var i2 = Vector256.Create(Sigma2); var i3 = Vector256.Create(Sigma3);
        var i4 = Vector256.Create(key[0]); var i5 = Vector256.Create(key[1]); var i6 = Vector256.Create(key[2]); var i7 = Vector256.Create(key[3]); var i8 = Vector256.Create(key[4]); var i9 = Vector256.Create(key[5]); var i10 = Vector256.Create(key[6]); var i11 = Vector256.Create(key[7]);
        var i12 = Vector256.Create((uint)(counter + 0), (uint)(counter + 1), (uint)(counter + 2), (uint)(counter + 3), (uint)(counter + 4), (uint)(counter + 5), (uint)(counter + 6), (uint)(counter + 7));
        var i13 = Vector256.Create((uint)((counter + 0) >> 32), (uint)((counter + 1) >> 32), (uint)((counter + 2) >> 32), (uint)((counter + 3) >> 32), (uint)((counter + 4) >> 32), (uint)((counter + 5) >> 32), (uint)((counter + 6) >> 32), (uint)((counter + 7) >> 32));
        var i14 = Vector256.Create((uint)nonce); var i15 = Vector256.Create((uint)(nonce >> 32));
        var x0 = i0; var x1 = i1; var x2 = i2; var x3 = i3; var x4 = i4; var x5 = i5; var x6 = i6; var x7 = i7; var x8 = i8; var x9 = i9; var x10 = i10; var x11 = i11; var x12 = i12; var x13 = i13; var x14 = i14; var x15 = i15;
        for (int round = 0; round < DoubleRounds; round++)
        {
            x0 += x4; x12 ^= x0; x12 = Vector256.ShiftLeft(x12, 16) | Vector256.ShiftRightLogical(x12, 16);
            x8 += x12; x4 ^= x8; x4 = Vector256.ShiftLeft(x4, 12) | Vector256.ShiftRightLogical(x4, 20);
            x0 += x4; x12 ^= x0; x12 = Vector256.ShiftLeft(x12, 8) | Vector256.ShiftRightLogical(x12, 24);
            x8 += x12; x4 ^= x8; x4 = Vector256.ShiftLeft(x4, 7) | Vector256.ShiftRightLogical(x4, 25);
            x1 += x5; x13 ^= x1; x13 = Vector256.ShiftLeft(x13, 16) | Vector256.ShiftRightLogical(x13, 16);
            x9 += x13; x5 ^= x9; x5 = Vector256.ShiftLeft(x5, 12) | Vector256.ShiftRightLogical(x5, 20);
            x1 += x5; x13 ^= x1; x13 = Vector256.ShiftLeft(x13, 8) | Vector256.ShiftRightLogical(x13, 24);
            x9 += x13; x5 ^= x9; x5 = Vector256.ShiftLeft(x5, 7) | Vector256.ShiftRightLogical(x5, 25);
            x2 += x6; x14 ^= x2; x14 = Vector256.ShiftLeft(x14, 16) | Vector256.ShiftRightLogical(x14, 16);
            x10 += x14; x6 ^= x10; x6 = Vector256.ShiftLeft(x6, 12) | Vector256.ShiftRightLogical(x6, 20);
            x2 += x6; x14 ^= x2; x14 = Vector256.ShiftLeft(x14, 8) | Vector256.ShiftRightLogical(x14, 24);
            x10 += x14; x6 ^= x10; x6 = Vector256.ShiftLeft(x6, 7) | Vector256.ShiftRightLogical(x6, 25);
            x3 += x7; x15 ^= x3; x15 = Vector256.ShiftLeft(x15, 16) | Vector256.ShiftRightLogical(x15, 16);
            x11 += x15; x7 ^= x11; x7 = Vector256.ShiftLeft(x7, 12) | Vector256.ShiftRightLogical(x7, 20);
            x3 += x7; x15 ^= x3; x15 = Vector256.ShiftLeft(x15, 8) | Vector256.ShiftRightLogical(x15, 24);
            x11 += x15; x7 ^= x11; x7 = Vector256.ShiftLeft(x7, 7) | Vector256.ShiftRightLogical(x7, 25);
            x0 += x5; x15 ^= x0; x15 = Vector256.ShiftLeft(x15, 16) | Vector256.ShiftRightLogical(x15, 16);
            x10 += x15; x5 ^= x10; x5 = Vector256.ShiftLeft(x5, 12) | Vector256.ShiftRightLogical(x5, 20);
            x0 += x5; x15 ^= x0; x15 = Vector256.ShiftLeft(x15, 8) | Vector256.ShiftRightLogical(x15, 24);
            x10 += x15; x5 ^= x10; x5 = Vector256.ShiftLeft(x5, 7) | Vector256.ShiftRightLogical(x5, 25);
            x1 += x6; x12 ^= x1; x12 = Vector256.ShiftLeft(x12, 16) | Vector256.ShiftRightLogical(x12, 16);
            x11 += x12; x6 ^= x11; x6 = Vector256.ShiftLeft(x6, 12) | Vector256.ShiftRightLogical(x6, 20);
            x1 += x6; x12 ^= x1; x12 = Vector256.ShiftLeft(x12, 8) | Vector256.ShiftRightLogical(x12, 24);
            x11 += x12; x6 ^= x11; x6 = Vector256.ShiftLeft(x6, 7) | Vector256.ShiftRightLogical(x6, 25);
            x2 += x7; x13 ^= x2; x13 = Vector256.ShiftLeft(x13, 16) | Vector256.ShiftRightLogical(x13, 16);
            x8 += x13; x7 ^= x8; x7 = Vector256.ShiftLeft(x7, 12) | Vector256.ShiftRightLogical(x7, 20);
            x2 += x7; x13 ^= x2; x13 = Vector256.ShiftLeft(x13, 8) | Vector256.ShiftRightLogical(x13, 24);
            x8 += x13; x7 ^= x8; x7 = Vector256.ShiftLeft(x7, 7) | Vector256.ShiftRightLogical(x7, 25);
            x3 += x4; x14 ^= x3; x14 = Vector256.ShiftLeft(x14, 16) | Vector256.ShiftRightLogical(x14, 16);
            x9 += x14; x4 ^= x9; x4 = Vector256.ShiftLeft(x4, 12) | Vector256.ShiftRightLogical(x4, 20);
            x3 += x4; x14 ^= x3; x14 = Vector256.ShiftLeft(x14, 8) | Vector256.ShiftRightLogical(x14, 24);
            x9 += x14; x4 ^= x9; x4 = Vector256.ShiftLeft(x4, 7) | Vector256.ShiftRightLogical(x4, 25);
        }
        Store(x0 + i0, output, 0);
        Store(x1 + i1, output, 1);
        Store(x2 + i2, output, 2);
        Store(x3 + i3, output, 3);
        Store(x4 + i4, output, 4);
        Store(x5 + i5, output, 5);
        Store(x6 + i6, output, 6);
        Store(x7 + i7, output, 7);
        Store(x8 + i8, output, 8);
        Store(x9 + i9, output, 9);
        Store(x10 + i10, output, 10);
        Store(x11 + i11, output, 11);
        Store(x12 + i12, output, 12);
        Store(x13 + i13, output, 13);
        Store(x14 + i14, output, 14);
        Store(x15 + i15, output, 15);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<uint> v, Span<uint> output, int word)
    {
        for (int lane = 0; lane < Vector256<uint>.Count; lane++)
            output[lane * StateWords + word] = ToLittleEndian(v.GetElement(lane));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint ToLittleEndian(uint v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
}
