using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Warren.Agent.Native;

namespace Warren.Agent.Serve;

/// <summary>Frame types and limits of the agent session socket (docs/AGENT-PROTOCOL.md, version 1).</summary>
internal static class Frame
{
    // Host → agent.
    public const byte Open = 0x01;
    public const byte Data = 0x02;
    public const byte Eof = 0x03;
    public const byte Resize = 0x04;
    public const byte Signal = 0x05;

    // Agent → host.
    public const byte Started = 0x10;
    public const byte Stdout = 0x11;
    public const byte Stderr = 0x12;
    public const byte Exit = 0x13;
    public const byte Error = 0x14;
    public const byte StdoutEof = 0x15;

    /// <summary>type (1) + length (uint32 big-endian).</summary>
    public const int HeaderBytes = 5;

    /// <summary>Largest payload in either direction; a larger length closes the connection.</summary>
    public const int MaxPayload = 256 * 1024;

    /// <summary>Largest OPEN payload.</summary>
    public const int MaxOpenPayload = 64 * 1024;

    public static void WriteHeader(Span<byte> header, byte type, int length)
    {
        header[0] = type;
        BinaryPrimitives.WriteUInt32BigEndian(header[1..], (uint)length);
    }
}

/// <summary>The peer broke the protocol (bad length, unknown type, frame in the wrong state): close the connection.</summary>
internal sealed class ProtocolViolation(string message) : Exception(message);

/// <summary>The host closed its side of the socket (or it failed), possibly in the middle of a frame.</summary>
internal sealed class HostClosed() : Exception("host closed the connection");

/// <summary>
/// Reads frames from the host with one receive buffer: a receive takes whatever the socket has (often several
/// frames), and DATA payloads are handed out in place, a piece at a time, so a frame never has to be
/// buffered whole and nothing is copied or allocated per frame.
/// </summary>
internal sealed unsafe class FrameReader : IDisposable
{
    private readonly Socket _socket;
    private readonly byte* _buffer;
    private int _start, _end;
    private long _deadline;

    /// <summary>Receive buffer: one maximal payload plus a header, so a full DATA frame fits one receive.</summary>
    private const int BufferBytes = Frame.MaxPayload + Frame.HeaderBytes;

    public FrameReader(Socket socket)
    {
        _socket = socket;
        // Native memory, not a managed array: untouched pages of an idle session cost nothing.
        _buffer = (byte*)NativeMemory.Alloc(BufferBytes);
    }

    /// <summary>Until cleared (null), receives fail with <see cref="TimeoutException"/> past this moment.</summary>
    public void SetDeadline(TimeSpan? fromNow) =>
        _deadline = fromNow is { } t ? Environment.TickCount64 + (long)t.TotalMilliseconds : 0;

    /// <summary>Next frame's header; false when the host closed the socket between frames.</summary>
    public bool TryReadHeader(out byte type, out int length)
    {
        type = 0;
        length = 0;
        if (!Fill(Frame.HeaderBytes)) return false;
        type = _buffer[_start];
        uint raw = BinaryPrimitives.ReadUInt32BigEndian(new ReadOnlySpan<byte>(_buffer + _start + 1, 4));
        if (raw > Frame.MaxPayload) throw new ProtocolViolation($"frame length {raw} over {Frame.MaxPayload}");
        length = (int)raw;
        _start += Frame.HeaderBytes;
        return true;
    }

    /// <summary>Up to <paramref name="max"/> payload bytes, in place (valid until the next call); receives only when none are buffered.</summary>
    public ReadOnlySpan<byte> ReadSome(int max)
    {
        if (_start == _end)
        {
            _start = _end = 0;
            if (!Receive()) throw new HostClosed();
        }
        int n = Math.Min(max, _end - _start);
        var span = new ReadOnlySpan<byte>(_buffer + _start, n);
        _start += n;
        return span;
    }

    public void ReadExactly(Span<byte> destination)
    {
        while (destination.Length > 0)
        {
            var piece = ReadSome(destination.Length);
            piece.CopyTo(destination);
            destination = destination[piece.Length..];
        }
    }

    /// <summary>Skips a payload (DATA nobody can take any more).</summary>
    public void Skip(int length)
    {
        while (length > 0) length -= ReadSome(length).Length;
    }

    private bool Fill(int need)
    {
        if (_end - _start >= need) return true;
        if (_start > 0)
        {
            // Move the partial header to the front; at most HeaderBytes - 1 bytes.
            Buffer.MemoryCopy(_buffer + _start, _buffer, BufferBytes, _end - _start);
            _end -= _start;
            _start = 0;
        }
        while (_end - _start < need)
            if (!Receive())
            {
                if (_end != _start) throw new HostClosed(); // EOF inside a header
                return false;
            }
        return true;
    }

    private bool Receive()
    {
        if (_deadline != 0)
        {
            int remaining = (int)Math.Max(0, _deadline - Environment.TickCount64);
            if (remaining == 0 || !FdIo.WaitReadable((int)_socket.Handle, remaining)) throw new TimeoutException();
        }
        int n;
        try { n = _socket.Receive(new Span<byte>(_buffer + _end, BufferBytes - _end)); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { return false; }
        _end += n;
        return n > 0;
    }

    public void Dispose() => NativeMemory.Free(_buffer);
}

/// <summary>
/// Sends frames to the host. One lock serialises the session's senders (stdout, stderr, the waiter); a frame
/// goes out with one send (header and payload contiguous). After a failed send the writer is broken and
/// every later send returns false at once: the host is gone and output is only discarded.
/// </summary>
internal sealed unsafe class FrameWriter(Socket socket)
{
    private readonly object _lock = new();
    private volatile bool _broken;

    /// <summary>Largest small frame built on the stack (ERROR messages are truncated to fit).</summary>
    private const int SmallFrameBytes = 1024;

    public bool IsBroken => _broken;

    /// <summary>The host socket's descriptor, for poll()ing it for hang-up while waiting on something else.</summary>
    public int SocketFd => (int)socket.Handle;

    /// <summary>Sends a frame whose payload is at <paramref name="frame"/> + HeaderBytes; the header is written in front of it.</summary>
    public bool SendInPlace(byte* frame, byte type, int payloadLength)
    {
        Frame.WriteHeader(new Span<byte>(frame, Frame.HeaderBytes), type, payloadLength);
        return SendRaw(new ReadOnlySpan<byte>(frame, Frame.HeaderBytes + payloadLength));
    }

    public bool Send(byte type, ReadOnlySpan<byte> payload)
    {
        payload = payload[..Math.Min(payload.Length, SmallFrameBytes - Frame.HeaderBytes)];
        Span<byte> frame = stackalloc byte[Frame.HeaderBytes + payload.Length];
        Frame.WriteHeader(frame, type, payload.Length);
        payload.CopyTo(frame[Frame.HeaderBytes..]);
        return SendRaw(frame);
    }

    public bool SendError(string message)
    {
        Span<byte> utf8 = stackalloc byte[SmallFrameBytes - Frame.HeaderBytes];
        int n = Encoding.UTF8.GetBytes(message.AsSpan(0, Math.Min(message.Length, utf8.Length / 3)), utf8);
        return Send(Frame.Error, utf8[..n]);
    }

    private bool SendRaw(ReadOnlySpan<byte> bytes)
    {
        lock (_lock)
        {
            if (_broken) return false;
            try
            {
                while (bytes.Length > 0) bytes = bytes[socket.Send(bytes)..];
                return true;
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                _broken = true;
                return false;
            }
        }
    }

    /// <summary>Ends the connection both ways (wakes a receive blocked on it); later sends fail.</summary>
    public void Close()
    {
        _broken = true;
        try { socket.Shutdown(SocketShutdown.Both); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }
}
