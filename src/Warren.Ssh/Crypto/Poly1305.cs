using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Warren.Ssh.Crypto;

/// <summary>
/// Poly1305 one-time authenticator (RFC 8439 §2.5) with three 44/44/42-bit limbs and
/// 64×64→128-bit multiplies (the "donna-64" layout): about twice as fast as the 26-bit
/// limb code in BouncyCastle. One instance per direction; <see cref="Init"/> per packet.
/// </summary>
internal sealed class Poly1305Mac
{
    public const int KeyLength = 32;
    public const int TagLength = 16;
    private const int BlockLength = 16;
    private const ulong Mask44 = 0xfffffffffff;
    private const ulong Mask42 = 0x3ffffffffff;
    /// <summary>The 2^128 bit appended to every full block, in limb 2 (bit 128 - 88 = 40).</summary>
    private const ulong HighBit = 1UL << 40;

    private ulong _r0, _r1, _r2, _s1, _s2;
    private ulong _h0, _h1, _h2;
    private ulong _pad0, _pad1;
    private readonly byte[] _partial = new byte[BlockLength];
    private int _partialLength;

    public void Init(ReadOnlySpan<byte> key)
    {
        ulong t0 = BinaryPrimitives.ReadUInt64LittleEndian(key);
        ulong t1 = BinaryPrimitives.ReadUInt64LittleEndian(key[8..]);
        // r &= 0xffffffc0ffffffc0ffffffc0fffffff (RFC 8439 §2.5 clamp), split into limbs.
        _r0 = t0 & 0xffc0fffffff;
        _r1 = ((t0 >> 44) | (t1 << 20)) & 0xfffffc0ffff;
        _r2 = (t1 >> 24) & 0x00ffffffc0f;
        _s1 = _r1 * (5 << 2);
        _s2 = _r2 * (5 << 2);
        _h0 = _h1 = _h2 = 0;
        _pad0 = BinaryPrimitives.ReadUInt64LittleEndian(key[16..]);
        _pad1 = BinaryPrimitives.ReadUInt64LittleEndian(key[24..]);
        _partialLength = 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Update(ReadOnlySpan<byte> data)
    {
        if (_partialLength > 0)
        {
            int n = Math.Min(data.Length, BlockLength - _partialLength);
            data[..n].CopyTo(_partial.AsSpan(_partialLength));
            _partialLength += n;
            data = data[n..];
            if (_partialLength < BlockLength) return;
            Blocks(_partial, HighBit);
            _partialLength = 0;
        }
        int full = data.Length & ~(BlockLength - 1);
        if (full > 0) Blocks(data[..full], HighBit);
        data = data[full..];
        if (!data.IsEmpty)
        {
            data.CopyTo(_partial);
            _partialLength = data.Length;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Blocks(ReadOnlySpan<byte> data, ulong hibit)
    {
        ulong r0 = _r0, r1 = _r1, r2 = _r2, s1 = _s1, s2 = _s2;
        ulong h0 = _h0, h1 = _h1, h2 = _h2;
        while (data.Length >= BlockLength)
        {
            ulong t0 = BinaryPrimitives.ReadUInt64LittleEndian(data);
            ulong t1 = BinaryPrimitives.ReadUInt64LittleEndian(data[8..]);
            h0 += t0 & Mask44;
            h1 += ((t0 >> 44) | (t1 << 20)) & Mask44;
            h2 += ((t1 >> 24) & Mask42) | hibit;

            // d = h * r mod (2^130 - 5), as three 128-bit column sums (written out: helper
            // methods with ref locals made the JIT spill them to memory).
            ulong d0h = Math.BigMul(h0, r0, out ulong d0l);
            ulong ph = Math.BigMul(h1, s2, out ulong pl); d0l += pl; d0h += ph + (d0l < pl ? 1UL : 0UL);
            ph = Math.BigMul(h2, s1, out pl); d0l += pl; d0h += ph + (d0l < pl ? 1UL : 0UL);
            ulong d1h = Math.BigMul(h0, r1, out ulong d1l);
            ph = Math.BigMul(h1, r0, out pl); d1l += pl; d1h += ph + (d1l < pl ? 1UL : 0UL);
            ph = Math.BigMul(h2, s2, out pl); d1l += pl; d1h += ph + (d1l < pl ? 1UL : 0UL);
            ulong d2h = Math.BigMul(h0, r2, out ulong d2l);
            ph = Math.BigMul(h1, r1, out pl); d2l += pl; d2h += ph + (d2l < pl ? 1UL : 0UL);
            ph = Math.BigMul(h2, r0, out pl); d2l += pl; d2h += ph + (d2l < pl ? 1UL : 0UL);

            ulong c = (d0l >> 44) | (d0h << 20); h0 = d0l & Mask44;
            d1l += c; d1h += d1l < c ? 1UL : 0UL;
            c = (d1l >> 44) | (d1h << 20); h1 = d1l & Mask44;
            d2l += c; d2h += d2l < c ? 1UL : 0UL;
            c = (d2l >> 42) | (d2h << 22); h2 = d2l & Mask42;
            h0 += c * 5; c = h0 >> 44; h0 &= Mask44;
            h1 += c;
            data = data[BlockLength..];
        }
        _h0 = h0; _h1 = h1; _h2 = h2;
    }

    public void Final(Span<byte> tag)
    {
        if (_partialLength > 0)
        {
            _partial[_partialLength] = 1;
            _partial.AsSpan(_partialLength + 1).Clear();
            Blocks(_partial, 0);
            _partialLength = 0;
        }
        ulong h0 = _h0, h1 = _h1, h2 = _h2, c;
        c = h1 >> 44; h1 &= Mask44;
        h2 += c; c = h2 >> 42; h2 &= Mask42;
        h0 += c * 5; c = h0 >> 44; h0 &= Mask44;
        h1 += c; c = h1 >> 44; h1 &= Mask44;
        h2 += c; c = h2 >> 42; h2 &= Mask42;
        h0 += c * 5; c = h0 >> 44; h0 &= Mask44;
        h1 += c;

        // g = h + 5 - 2^130; use g if it did not go negative (constant time select).
        ulong g0 = h0 + 5; c = g0 >> 44; g0 &= Mask44;
        ulong g1 = h1 + c; c = g1 >> 44; g1 &= Mask44;
        ulong g2 = h2 + c - (1UL << 42);
        c = (g2 >> 63) - 1;
        g0 &= c; g1 &= c; g2 &= c;
        c = ~c;
        h0 = (h0 & c) | g0;
        h1 = (h1 & c) | g1;
        h2 = (h2 & c) | g2;

        // tag = (h + s) mod 2^128
        ulong t0 = _pad0, t1 = _pad1;
        h0 += t0 & Mask44; c = h0 >> 44; h0 &= Mask44;
        h1 += (((t0 >> 44) | (t1 << 20)) & Mask44) + c; c = h1 >> 44; h1 &= Mask44;
        h2 += ((t1 >> 24) & Mask42) + c; h2 &= Mask42;
        BinaryPrimitives.WriteUInt64LittleEndian(tag, h0 | (h1 << 44));
        BinaryPrimitives.WriteUInt64LittleEndian(tag[8..], (h1 >> 20) | (h2 << 24));
        _h0 = _h1 = _h2 = _r0 = _r1 = _r2 = _s1 = _s2 = _pad0 = _pad1 = 0;
    }
}
