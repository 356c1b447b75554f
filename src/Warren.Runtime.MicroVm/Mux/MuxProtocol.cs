using System.Buffers.Binary;

namespace Warren.Runtime.MicroVm.Mux;

/// <summary>
/// The microVM channel multiplexer, version 1 (docs/AGENT-PROTOCOL.md, "The microVM channel multiplexer"): frames of
/// <c>type (1) | channel (uint32) | length (uint32) | payload</c>, big-endian, over the VM's virtio-serial port. The
/// guest (src/Warren.Agent/Vm/MuxCommand.cs) uses the same numbers.
/// </summary>
internal static class MuxProtocol
{
    public const uint Version = 1;
    public const int HeaderBytes = 9;
    /// <summary>Largest payload of any frame; a longer length from the guest ends the connection before anything is allocated.</summary>
    public const int MaxPayload = 32 * 1024;
    /// <summary>What the guest grants on each channel before its first WINDOW (the guest's own buffering bound).</summary>
    public const int GuestInitialWindow = 256 * 1024;
    public const int NonceBytes = 16;
    public const int HelloPayload = 4 + NonceBytes;
    /// <summary>Longest OPEN_FAILURE reason kept (the guest's limit too).</summary>
    public const int MaxReasonBytes = 1024;
}

internal enum MuxFrameType : byte
{
    Hello = 0x01,
    Open = 0x02,
    OpenConfirm = 0x03,
    OpenFailure = 0x04,
    Data = 0x05,
    Window = 0x06,
    Eof = 0x07,
    Close = 0x08,
    Shutdown = 0x09,
}

/// <summary>The guest broke the multiplexer protocol: the connection (every channel of that VM) is dropped, nothing else.</summary>
internal sealed class MuxProtocolException(string message) : Exception(message);

internal readonly record struct MuxFrameHeader(MuxFrameType Type, uint Channel, int Length);

/// <summary>Frame encoding and the checks made on every header from the guest, before its payload is read or buffered.</summary>
internal static class MuxFrames
{
    /// <summary>
    /// The header at the start of <paramref name="buffer"/>, or false when fewer than <see cref="MuxProtocol.HeaderBytes"/>
    /// bytes are there. A length over <see cref="MuxProtocol.MaxPayload"/>, an unknown type, or a type the guest never
    /// sends throws <see cref="MuxProtocolException"/>.
    /// </summary>
    public static bool TryReadGuestHeader(ReadOnlySpan<byte> buffer, out MuxFrameHeader header)
    {
        header = default;
        if (buffer.Length < MuxProtocol.HeaderBytes) return false;
        byte type = buffer[0];
        uint channel = BinaryPrimitives.ReadUInt32BigEndian(buffer[1..]);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(buffer[5..]);
        if (length > MuxProtocol.MaxPayload) throw new MuxProtocolException($"frame of {length} bytes (limit {MuxProtocol.MaxPayload})");
        var kind = (MuxFrameType)type;
        switch (kind)
        {
            case MuxFrameType.Hello or MuxFrameType.OpenConfirm or MuxFrameType.OpenFailure or MuxFrameType.Data
                or MuxFrameType.Window or MuxFrameType.Eof or MuxFrameType.Close:
                break;
            default:
                throw new MuxProtocolException($"frame type 0x{type:x2} from the guest");
        }
        int expected = kind switch
        {
            MuxFrameType.Hello => MuxProtocol.HelloPayload,
            MuxFrameType.OpenConfirm or MuxFrameType.Window => 4,
            MuxFrameType.Eof or MuxFrameType.Close => 0,
            _ => -1,
        };
        if (expected >= 0 && length != expected) throw new MuxProtocolException($"{kind} frame of {length} bytes");
        if (kind == MuxFrameType.OpenFailure && length > MuxProtocol.MaxReasonBytes) throw new MuxProtocolException($"OPEN_FAILURE reason of {length} bytes");
        if ((channel == 0) != (kind == MuxFrameType.Hello)) throw new MuxProtocolException($"{kind} frame on channel {channel}");
        header = new MuxFrameHeader(kind, channel, (int)length);
        return true;
    }

    public static void WriteHeader(Span<byte> destination, MuxFrameType type, uint channel, int length)
    {
        destination[0] = (byte)type;
        BinaryPrimitives.WriteUInt32BigEndian(destination[1..], channel);
        BinaryPrimitives.WriteUInt32BigEndian(destination[5..], (uint)length);
    }

    /// <summary>A whole frame as one array (control frames, tests).</summary>
    public static byte[] Build(MuxFrameType type, uint channel, ReadOnlySpan<byte> payload)
    {
        var frame = new byte[MuxProtocol.HeaderBytes + payload.Length];
        WriteHeader(frame, type, channel, payload.Length);
        payload.CopyTo(frame.AsSpan(MuxProtocol.HeaderBytes));
        return frame;
    }

    public static byte[] BuildUInt32(MuxFrameType type, uint channel, uint value)
    {
        Span<byte> payload = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(payload, value);
        return Build(type, channel, payload);
    }
}
