using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Warren.Ssh.Crypto;

/// <summary>
/// One direction of the binary packet protocol's protection (RFC 4253 §6):
/// encryption and integrity for either the sending or the receiving side.
/// A packet buffer always holds <c>uint32 packet_length || byte padding_length || payload || padding</c>;
/// the MAC or AEAD tag is kept separately.
/// </summary>
/// <remarks>Not thread-safe: the owning transport uses one instance per direction, under that direction's lock.</remarks>
internal abstract class PacketCipher : IDisposable
{
    /// <summary>Length field size (RFC 4253 §6: uint32 packet_length).</summary>
    public const int LengthFieldSize = 4;

    /// <summary>The padded packet is a multiple of this (RFC 4253 §6: max(8, cipher block size)).</summary>
    public abstract int BlockSize { get; }

    /// <summary>Bytes of MAC or AEAD tag following each packet.</summary>
    public abstract int TagLength { get; }

    /// <summary>
    /// True when packet_length travels unencrypted or is handled apart from the
    /// payload (encrypt-then-MAC, AES-GCM, chacha20-poly1305): padding then aligns
    /// the packet without its length field (OpenSSH PROTOCOL §1.6, §1.7).
    /// </summary>
    public abstract bool AlignsWithoutLength { get; }

    /// <summary>Bytes that must be received before <see cref="DecryptLength"/> can run.</summary>
    public virtual int FirstBlockLength => LengthFieldSize;

    /// <summary>Bytes this key may protect before a rekey is required (RFC 4344 §3.2); <see cref="long.MaxValue"/> for no cipher-specific bound.</summary>
    public virtual long MaxBytesBeforeRekey => long.MaxValue;

    /// <summary>Encrypts <paramref name="packet"/> in place and writes the tag.</summary>
    public abstract void Encrypt(uint sequenceNumber, Span<byte> packet, Span<byte> tag);

    /// <summary>
    /// Returns packet_length from the first <see cref="FirstBlockLength"/> bytes. May decrypt
    /// those bytes in place; <see cref="Decrypt"/> expects the buffer in the state this leaves it.
    /// The value is unvalidated peer input.
    /// </summary>
    public abstract uint DecryptLength(uint sequenceNumber, Span<byte> firstBlock);

    /// <summary>Verifies the tag and decrypts the whole packet in place; false when the MAC does not match.</summary>
    public abstract bool Decrypt(uint sequenceNumber, Span<byte> packet, ReadOnlySpan<byte> tag);

    public virtual void Dispose() { }
}

/// <summary>Sizes of one cipher, for key derivation (RFC 4253 §7.2).</summary>
internal sealed record CipherInfo(string Name, int KeyLength, int IvLength, bool IsAead);

/// <summary>Sizes of one MAC.</summary>
internal sealed record MacInfo(string Name, int KeyLength, int TagLength, bool EncryptThenMac, HashAlgorithmName Hash);

internal static class PacketCiphers
{
    public static CipherInfo? GetCipher(string name) => name switch
    {
        SshAlgorithms.ChaCha20Poly1305 => new(name, ChaCha20Poly1305OpenSsh.KeyLength, 0, true),
        SshAlgorithms.Aes128Gcm => new(name, 16, AesGcmPacketCipher.IvLength, true),
        SshAlgorithms.Aes256Gcm => new(name, 32, AesGcmPacketCipher.IvLength, true),
        SshAlgorithms.Aes128Ctr => new(name, 16, AesCtr.BlockSize, false),
        SshAlgorithms.Aes192Ctr => new(name, 24, AesCtr.BlockSize, false),
        SshAlgorithms.Aes256Ctr => new(name, 32, AesCtr.BlockSize, false),
        _ => null,
    };

    public static MacInfo? GetMac(string name) => name switch
    {
        SshAlgorithms.HmacSha256 => new(name, 32, 32, false, HashAlgorithmName.SHA256),
        SshAlgorithms.HmacSha512 => new(name, 64, 64, false, HashAlgorithmName.SHA512),
        SshAlgorithms.HmacSha256Etm => new(name, 32, 32, true, HashAlgorithmName.SHA256),
        SshAlgorithms.HmacSha512Etm => new(name, 64, 64, true, HashAlgorithmName.SHA512),
        _ => null,
    };

    /// <summary>Builds the protection for one direction. <paramref name="mac"/> is ignored for AEAD ciphers.</summary>
    public static PacketCipher Create(CipherInfo cipher, MacInfo? mac, ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv, ReadOnlySpan<byte> macKey)
    {
        switch (cipher.Name)
        {
            case SshAlgorithms.ChaCha20Poly1305:
                return new ChaCha20Poly1305OpenSsh(key);
            case SshAlgorithms.Aes128Gcm:
            case SshAlgorithms.Aes256Gcm:
                return new AesGcmPacketCipher(key, iv);
            default:
                if (mac is null) throw new ArgumentException("A non-AEAD cipher needs a MAC.", nameof(mac));
                return new AesCtrHmacPacketCipher(key, iv, mac, macKey);
        }
    }
}

/// <summary>No protection: the state before the first NEWKEYS (RFC 4253 §6, "none").</summary>
internal sealed class NonePacketCipher : PacketCipher
{
    /// <summary>RFC 4253 §6: block size 8 when there is no cipher.</summary>
    public const int MinimumBlockSize = 8;

    public static NonePacketCipher Instance { get; } = new();

    public override int BlockSize => MinimumBlockSize;
    public override int TagLength => 0;
    public override bool AlignsWithoutLength => false;
    public override void Encrypt(uint sequenceNumber, Span<byte> packet, Span<byte> tag) { }
    public override uint DecryptLength(uint sequenceNumber, Span<byte> firstBlock) => BinaryPrimitives.ReadUInt32BigEndian(firstBlock);
    public override bool Decrypt(uint sequenceNumber, Span<byte> packet, ReadOnlySpan<byte> tag) => true;
}

/// <summary>
/// aes*-ctr (RFC 4344 §4) with hmac-sha2-* (RFC 6668), either MAC-then-encrypt
/// over the plaintext (RFC 4253 §6.4) or encrypt-then-MAC (OpenSSH PROTOCOL §1.7:
/// the length is sent in clear and the MAC covers the ciphertext).
/// </summary>
internal sealed class AesCtrHmacPacketCipher : PacketCipher
{
    /// <summary>RFC 4344 §3.2: rekey after 2^(L/4) blocks, L = 128 for AES.</summary>
    private const long MaxBlocksPerKey = 1L << (AesCtr.BlockSize * 8 / 4);

    private readonly AesCtr _ctr;
    private readonly IncrementalHash _mac;
    private readonly int _tagLength;
    private readonly bool _etm;
    private readonly byte[] _computedTag;
    private readonly byte[] _sequence = new byte[sizeof(uint)];

    public AesCtrHmacPacketCipher(ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv, MacInfo mac, ReadOnlySpan<byte> macKey)
    {
        _ctr = new AesCtr(key, iv);
        _mac = IncrementalHash.CreateHMAC(mac.Hash, macKey);
        _tagLength = mac.TagLength;
        _etm = mac.EncryptThenMac;
        _computedTag = new byte[_tagLength];
    }

    public override int BlockSize => AesCtr.BlockSize;
    public override int TagLength => _tagLength;
    public override bool AlignsWithoutLength => _etm;
    public override int FirstBlockLength => _etm ? LengthFieldSize : AesCtr.BlockSize;
    public override long MaxBytesBeforeRekey => MaxBlocksPerKey * AesCtr.BlockSize;

    private void ComputeMac(uint seq, ReadOnlySpan<byte> packet, Span<byte> tag)
    {
        // RFC 4253 §6.4: mac = MAC(key, sequence_number || unencrypted_packet).
        BinaryPrimitives.WriteUInt32BigEndian(_sequence, seq);
        _mac.AppendData(_sequence);
        _mac.AppendData(packet);
        _mac.GetHashAndReset(tag);
    }

    public override void Encrypt(uint sequenceNumber, Span<byte> packet, Span<byte> tag)
    {
        if (_etm)
        {
            _ctr.Transform(packet[LengthFieldSize..]);
            ComputeMac(sequenceNumber, packet, tag);
        }
        else
        {
            ComputeMac(sequenceNumber, packet, tag);
            _ctr.Transform(packet);
        }
    }

    public override uint DecryptLength(uint sequenceNumber, Span<byte> firstBlock)
    {
        if (!_etm) _ctr.Transform(firstBlock[..AesCtr.BlockSize]);
        return BinaryPrimitives.ReadUInt32BigEndian(firstBlock);
    }

    public override bool Decrypt(uint sequenceNumber, Span<byte> packet, ReadOnlySpan<byte> tag)
    {
        if (tag.Length != _tagLength) return false;
        if (_etm)
        {
            ComputeMac(sequenceNumber, packet, _computedTag);
            if (!CryptographicOperations.FixedTimeEquals(_computedTag, tag)) return false;
            _ctr.Transform(packet[LengthFieldSize..]);
            return true;
        }
        _ctr.Transform(packet[AesCtr.BlockSize..]);
        ComputeMac(sequenceNumber, packet, _computedTag);
        return CryptographicOperations.FixedTimeEquals(_computedTag, tag);
    }

    public override void Dispose()
    {
        _ctr.Dispose();
        _mac.Dispose();
    }
}

/// <summary>
/// aes128-gcm@openssh.com / aes256-gcm@openssh.com: RFC 5647 §7 with OpenSSH's
/// naming (PROTOCOL §1.6). The 4-byte packet_length is AAD and travels in clear;
/// the 12-byte nonce is a 4-byte fixed field and an 8-byte invocation counter
/// incremented after every packet (RFC 5647 §7.1).
/// </summary>
internal sealed class AesGcmPacketCipher : PacketCipher
{
    /// <summary>RFC 5647 §7.1: 12-byte IV.</summary>
    public const int IvLength = 12;
    /// <summary>RFC 5647 §7.3: 16-byte authentication tag.</summary>
    public const int AuthTagLength = 16;
    private const int FixedFieldLength = 4;
    /// <summary>RFC 4344 §3.2 bound for a 128-bit block cipher, as for CTR.</summary>
    private const long MaxBlocksPerKey = 1L << 32;

    private readonly AesGcm _gcm;
    private readonly byte[] _nonce;

    public AesGcmPacketCipher(ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv)
    {
        if (iv.Length < IvLength) throw new ArgumentException("AES-GCM needs a 12-byte IV.", nameof(iv));
        _gcm = new AesGcm(key, AuthTagLength);
        _nonce = iv[..IvLength].ToArray();
    }

    public override int BlockSize => AesCtr.BlockSize;
    public override int TagLength => AuthTagLength;
    public override bool AlignsWithoutLength => true;
    public override long MaxBytesBeforeRekey => MaxBlocksPerKey * AesCtr.BlockSize;

    private void IncrementInvocationCounter()
    {
        var counter = _nonce.AsSpan(FixedFieldLength);
        BinaryPrimitives.WriteUInt64BigEndian(counter, unchecked(BinaryPrimitives.ReadUInt64BigEndian(counter) + 1));
    }

    public override void Encrypt(uint sequenceNumber, Span<byte> packet, Span<byte> tag)
    {
        var body = packet[LengthFieldSize..];
        _gcm.Encrypt(_nonce, body, body, tag, packet[..LengthFieldSize]);
        IncrementInvocationCounter();
    }

    public override uint DecryptLength(uint sequenceNumber, Span<byte> firstBlock) => BinaryPrimitives.ReadUInt32BigEndian(firstBlock);

    public override bool Decrypt(uint sequenceNumber, Span<byte> packet, ReadOnlySpan<byte> tag)
    {
        if (tag.Length != AuthTagLength) return false;
        var body = packet[LengthFieldSize..];
        try
        {
            _gcm.Decrypt(_nonce, body, tag, body, packet[..LengthFieldSize]);
        }
        catch (AuthenticationTagMismatchException)
        {
            return false;
        }
        IncrementInvocationCounter();
        return true;
    }

    public override void Dispose() => _gcm.Dispose();
}

/// <summary>
/// chacha20-poly1305@openssh.com (OpenSSH PROTOCOL.chacha20poly1305). Two ChaCha20
/// keys from the 64 derived bytes: K_2 (first 32) encrypts the payload, K_1 (last 32)
/// the packet length. The nonce is the packet sequence number as a 64-bit big-endian
/// value; the Poly1305 key is the first 32 bytes of K_2's block 0 and the payload
/// starts at block 1. The MAC covers the encrypted length and the encrypted payload.
/// </summary>
internal sealed class ChaCha20Poly1305OpenSsh : PacketCipher
{
    /// <summary>PROTOCOL.chacha20poly1305: 512 bits of key material (K_2 || K_1).</summary>
    public const int KeyLength = 64;
    /// <summary>Poly1305 tag size (RFC 8439 §2.5).</summary>
    public const int PolyTagLength = 16;
    private const int PolyKeyLength = 32;
    /// <summary>8-byte block size for padding (PROTOCOL.chacha20poly1305 "block size 8").</summary>
    private const int PaddingBlockSize = 8;

    private readonly uint[] _mainKey = new uint[8];
    private readonly uint[] _headerKey = new uint[8];
    private readonly Poly1305Mac _poly = new();
    private readonly byte[] _block0 = new byte[ChaCha20.BlockLength];
    private readonly byte[] _computedTag = new byte[PolyTagLength];
    private readonly byte[] _lengthBytes = new byte[LengthFieldSize];

    public ChaCha20Poly1305OpenSsh(ReadOnlySpan<byte> key)
    {
        if (key.Length < KeyLength) throw new ArgumentException("chacha20-poly1305 needs 64 bytes of key.", nameof(key));
        ChaCha20.LoadKey(key[..ChaCha20.KeyLength], _mainKey);
        ChaCha20.LoadKey(key.Slice(ChaCha20.KeyLength, ChaCha20.KeyLength), _headerKey);
    }

    public override int BlockSize => PaddingBlockSize;
    public override int TagLength => PolyTagLength;
    public override bool AlignsWithoutLength => true;

    /// <summary>The 8 nonce bytes are seqno as uint64 big-endian; ChaCha20 reads them as two little-endian words.</summary>
    private static ulong Nonce(uint seq) => (ulong)BinaryPrimitives.ReverseEndianness(seq) << 32;

    /// <summary>Keys Poly1305 from block 0 of K_2.</summary>
    private void StartMac(ulong nonce)
    {
        Array.Clear(_block0);
        ChaCha20.Xor(_mainKey, nonce, 0, _block0);
        _poly.Init(_block0.AsSpan(0, PolyKeyLength));
        CryptographicOperations.ZeroMemory(_block0);
    }

    public override void Encrypt(uint sequenceNumber, Span<byte> packet, Span<byte> tag)
    {
        ulong nonce = Nonce(sequenceNumber);
        ChaCha20.Xor(_headerKey, nonce, 0, packet[..LengthFieldSize]);
        ChaCha20.Xor(_mainKey, nonce, 1, packet[LengthFieldSize..]);
        StartMac(nonce);
        _poly.Update(packet);
        _poly.Final(tag);
    }

    public override uint DecryptLength(uint sequenceNumber, Span<byte> firstBlock)
    {
        firstBlock[..LengthFieldSize].CopyTo(_lengthBytes);
        ChaCha20.Xor(_headerKey, Nonce(sequenceNumber), 0, _lengthBytes);
        return BinaryPrimitives.ReadUInt32BigEndian(_lengthBytes);
    }

    public override bool Decrypt(uint sequenceNumber, Span<byte> packet, ReadOnlySpan<byte> tag)
    {
        if (tag.Length != PolyTagLength) return false;
        ulong nonce = Nonce(sequenceNumber);
        StartMac(nonce);
        _poly.Update(packet);
        _poly.Final(_computedTag);
        if (!CryptographicOperations.FixedTimeEquals(_computedTag, tag)) return false;
        ChaCha20.Xor(_headerKey, nonce, 0, packet[..LengthFieldSize]);
        ChaCha20.Xor(_mainKey, nonce, 1, packet[LengthFieldSize..]);
        return true;
    }

    public override void Dispose()
    {
        Array.Clear(_mainKey);
        Array.Clear(_headerKey);
    }
}
