using System.Buffers.Binary;
using System.Numerics;
using System.Security.Cryptography;

namespace Warren.Ssh.Keys;

/// <summary>
/// OpenBSD's bcrypt_pbkdf, the KDF "bcrypt" of OpenSSH's openssh-key-v1 format
/// (PROTOCOL.key). It is PBKDF2-like: each output block is the XOR of
/// <c>rounds</c> iterations of bcrypt_hash, and output bytes are interleaved
/// across blocks ("stride") so that every byte depends on all rounds.
/// </summary>
internal static class BcryptPbkdf
{
    /// <summary>bcrypt_hash output: 8 Blowfish words = 32 bytes.</summary>
    private const int HashBytes = 32;

    /// <summary>bcrypt_hash works on SHA-512 digests of the password and salt.</summary>
    private const int Sha512Bytes = 64;

    /// <summary>bcrypt_hash runs the expensive key schedule this many times.</summary>
    private const int ExpensiveRounds = 64;

    /// <summary>The 32-byte plaintext bcrypt_hash encrypts ("OxychromaticBlowfishSwatDynamite").</summary>
    private static ReadOnlySpan<byte> MagicText => "OxychromaticBlowfishSwatDynamite"u8;

    /// <summary>Derives <paramref name="output"/>.Length bytes.</summary>
    public static void Derive(ReadOnlySpan<byte> password, ReadOnlySpan<byte> salt, int rounds, Span<byte> output)
    {
        if (rounds < 1) throw new ArgumentOutOfRangeException(nameof(rounds));
        if (output.IsEmpty || output.Length > HashBytes * HashBytes) throw new ArgumentOutOfRangeException(nameof(output));

        int keyLength = output.Length;
        int stride = (keyLength + HashBytes - 1) / HashBytes;
        int amount = (keyLength + stride - 1) / stride;

        Span<byte> sha2pass = stackalloc byte[Sha512Bytes];
        Span<byte> sha2salt = stackalloc byte[Sha512Bytes];
        Span<byte> block = stackalloc byte[HashBytes];
        Span<byte> tmp = stackalloc byte[HashBytes];
        byte[] countSalt = new byte[salt.Length + 4];
        var state = new Blowfish();
        try
        {
            SHA512.HashData(password, sha2pass);
            salt.CopyTo(countSalt);
            int remaining = keyLength;
            for (uint count = 1; remaining > 0; count++)
            {
                BinaryPrimitives.WriteUInt32BigEndian(countSalt.AsSpan(salt.Length), count);
                SHA512.HashData(countSalt, sha2salt);
                Hash(state, sha2pass, sha2salt, tmp);
                tmp.CopyTo(block);
                for (int i = 1; i < rounds; i++)
                {
                    SHA512.HashData(tmp, sha2salt);
                    Hash(state, sha2pass, sha2salt, tmp);
                    for (int j = 0; j < HashBytes; j++) block[j] ^= tmp[j];
                }
                int take = Math.Min(amount, remaining);
                int written = 0;
                for (; written < take; written++)
                {
                    int dest = written * stride + (int)(count - 1);
                    if (dest >= keyLength) break;
                    output[dest] = block[written];
                }
                remaining -= written;
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(sha2pass);
            CryptographicOperations.ZeroMemory(sha2salt);
            CryptographicOperations.ZeroMemory(block);
            CryptographicOperations.ZeroMemory(tmp);
            CryptographicOperations.ZeroMemory(countSalt);
            state.Clear();
        }
    }

    /// <summary>bcrypt_hash: EksBlowfish keyed by (salt, password), then encrypt the magic text 64 times.</summary>
    private static void Hash(Blowfish state, ReadOnlySpan<byte> sha2pass, ReadOnlySpan<byte> sha2salt, Span<byte> output)
    {
        state.InitState();
        state.ExpandState(sha2salt, sha2pass);
        for (int i = 0; i < ExpensiveRounds; i++)
        {
            state.ExpandState(default, sha2salt);
            state.ExpandState(default, sha2pass);
        }
        Span<uint> cdata = stackalloc uint[HashBytes / 4];
        int pos = 0;
        for (int i = 0; i < cdata.Length; i++) cdata[i] = Blowfish.StreamToWord(MagicText, ref pos);
        for (int i = 0; i < ExpensiveRounds; i++)
            for (int b = 0; b < cdata.Length; b += 2)
                state.Encipher(ref cdata[b], ref cdata[b + 1]);
        // bcrypt_pbkdf copies the words out little-endian.
        for (int i = 0; i < cdata.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(output[(4 * i)..], cdata[i]);
        cdata.Clear();
    }
}

/// <summary>
/// Blowfish (Schneier 1993) with the Eksblowfish key-schedule primitives that
/// bcrypt needs. The initial P-array and S-boxes are the fractional hexadecimal
/// digits of π, which we compute once instead of embedding a 4 KiB table.
/// </summary>
internal sealed class Blowfish
{
    /// <summary>Blowfish has 16 rounds and so 18 subkeys.</summary>
    public const int Rounds = 16;
    public const int PCount = Rounds + 2;
    public const int SBoxCount = 4;
    public const int SBoxSize = 256;
    private const int InitialWords = PCount + SBoxCount * SBoxSize;

    private static readonly uint[] s_piWords = ComputePiWords(InitialWords);

    private readonly uint[] _p = new uint[PCount];
    private readonly uint[] _s = new uint[SBoxCount * SBoxSize];

    /// <summary>Exposed for a known-answer test of the π digits.</summary>
    internal static ReadOnlySpan<uint> InitialState => s_piWords;

    public void InitState()
    {
        s_piWords.AsSpan(0, PCount).CopyTo(_p);
        s_piWords.AsSpan(PCount).CopyTo(_s);
    }

    public void Clear()
    {
        Array.Clear(_p);
        Array.Clear(_s);
    }

    /// <summary>Standard Blowfish key schedule (InitState then ExpandState with no salt).</summary>
    public void SetKey(ReadOnlySpan<byte> key)
    {
        InitState();
        ExpandState(default, key);
    }

    /// <summary>
    /// Eksblowfish ExpandKey(state, salt, key). With an empty <paramref name="data"/>
    /// (salt) this is OpenBSD's Blowfish_expand0state, otherwise Blowfish_expandstate.
    /// </summary>
    public void ExpandState(ReadOnlySpan<byte> data, ReadOnlySpan<byte> key)
    {
        int j = 0;
        for (int i = 0; i < PCount; i++) _p[i] ^= StreamToWord(key, ref j);
        j = 0;
        uint l = 0, r = 0;
        for (int i = 0; i < PCount; i += 2)
        {
            if (!data.IsEmpty) { l ^= StreamToWord(data, ref j); r ^= StreamToWord(data, ref j); }
            Encipher(ref l, ref r);
            _p[i] = l;
            _p[i + 1] = r;
        }
        for (int i = 0; i < _s.Length; i += 2)
        {
            if (!data.IsEmpty) { l ^= StreamToWord(data, ref j); r ^= StreamToWord(data, ref j); }
            Encipher(ref l, ref r);
            _s[i] = l;
            _s[i + 1] = r;
        }
    }

    public void Encipher(ref uint xl, ref uint xr)
    {
        uint l = xl, r = xr;
        l ^= _p[0];
        for (int i = 1; i <= Rounds; i += 2)
        {
            r ^= F(l) ^ _p[i];
            l ^= F(r) ^ _p[i + 1];
        }
        r ^= _p[PCount - 1];
        xl = r;
        xr = l;
    }

    private uint F(uint x)
    {
        var s = _s;
        return ((s[x >> 24] + s[SBoxSize + (int)((x >> 16) & 0xff)]) ^ s[2 * SBoxSize + (int)((x >> 8) & 0xff)]) + s[3 * SBoxSize + (int)(x & 0xff)];
    }

    /// <summary>Next big-endian 32-bit word of <paramref name="data"/>, wrapping around cyclically.</summary>
    public static uint StreamToWord(ReadOnlySpan<byte> data, ref int pos)
    {
        uint w = 0;
        for (int i = 0; i < 4; i++)
        {
            if (pos >= data.Length) pos = 0;
            w = (w << 8) | data[pos];
            pos++;
        }
        return w;
    }

    /// <summary>
    /// The first <paramref name="count"/> 32-bit words of π's fractional part,
    /// by Machin's formula π = 16·atan(1/5) − 4·atan(1/239) in fixed point.
    /// </summary>
    private static uint[] ComputePiWords(int count)
    {
        const int GuardBits = 64;
        int bits = count * 32 + GuardBits;
        var one = BigInteger.One << bits;
        var pi = 16 * ArcTanInverse(5, one) - 4 * ArcTanInverse(239, one);
        var frac = (pi - 3 * one) >> GuardBits;   // count*32 bits of fraction
        var words = new uint[count];
        var mask = new BigInteger(uint.MaxValue);
        for (int i = count - 1; i >= 0; i--)
        {
            words[i] = (uint)(frac & mask);
            frac >>= 32;
        }
        return words;
    }

    private static BigInteger ArcTanInverse(int x, BigInteger one)
    {
        BigInteger x2 = x * x;
        BigInteger power = one / x;   // one / x^(2k+1)
        BigInteger sum = power;
        for (int k = 1; !power.IsZero; k++)
        {
            power /= x2;
            var term = power / (2 * k + 1);
            sum = (k & 1) == 1 ? sum - term : sum + term;
        }
        return sum;
    }
}
