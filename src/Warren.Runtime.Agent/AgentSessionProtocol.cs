using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Warren.Runtime.Agent;

/// <summary>Frame types of the agent session socket (docs/AGENT-PROTOCOL.md).</summary>
internal enum AgentFrameType : byte
{
    // host → agent
    Open = 0x01,
    Data = 0x02,
    Eof = 0x03,
    Resize = 0x04,
    Signal = 0x05,
    // agent → host
    Started = 0x10,
    Stdout = 0x11,
    Stderr = 0x12,
    Exit = 0x13,
    Error = 0x14,
    StdoutEof = 0x15,
}

internal enum AgentSessionKind { Exec, Connect }

/// <summary>The fixed numbers of docs/AGENT-PROTOCOL.md, version 1.</summary>
internal static class AgentProtocol
{
    /// <summary>type (1 byte) + length (uint32 big-endian).</summary>
    public const int HeaderBytes = 5;
    /// <summary>Largest payload of any frame, both directions; the agent closes the connection on a larger one, and so do we.</summary>
    public const int MaxPayloadBytes = 256 * 1024;
    /// <summary>Largest OPEN payload the agent accepts.</summary>
    public const int MaxOpenPayloadBytes = 64 * 1024;
    /// <summary>argc bounds of an exec OPEN.</summary>
    public const int MaxArgs = 4096;
    /// <summary>envc bound of an exec OPEN.</summary>
    public const int MaxEnv = 1024;
    /// <summary>The token file: 32 random bytes as lowercase hex.</summary>
    public const int TokenBytes = 64;
    /// <summary>STARTED payload: exec carries a uint32 pid, connect nothing.</summary>
    public const int ExecStartedBytes = 4;
    /// <summary>EXIT payload: uint32 kind, uint32 value, uint8 core dumped.</summary>
    public const int ExitBytes = 9;
    /// <summary>EXIT kinds.</summary>
    public const uint ExitKindExited = 0, ExitKindSignaled = 1;
    /// <summary>Linux signal numbers a SIGNAL or EXIT may carry.</summary>
    public const int MinSignal = 1, MaxSignal = 64;
    /// <summary>Largest exit status a process can have (the low 8 bits of wait status).</summary>
    public const uint MaxExitCode = 255;

    /// <summary>Writes a frame header at the start of <paramref name="destination"/>.</summary>
    public static void WriteHeader(Span<byte> destination, AgentFrameType type, int payloadLength)
    {
        destination[0] = (byte)type;
        BinaryPrimitives.WriteUInt32BigEndian(destination.Slice(1, 4), (uint)payloadLength);
    }
}

/// <summary>
/// What an OPEN asks for, without the token: the token is read from the host's token file only when the frame is
/// built (<see cref="BuildOpenFrame"/>) and wiped from the frame buffer once it is sent.
/// </summary>
internal abstract class AgentOpenRequest
{
    private const string ExecKind = "exec", ConnectKind = "connect";

    public abstract AgentSessionKind Kind { get; }

    /// <summary>Whether the agent answers with separate STDERR frames (exec without a pty).</summary>
    public abstract bool HasStderr { get; }

    /// <summary>For messages: "exec sh" or "connect 127.0.0.1:8080".</summary>
    public abstract string Description { get; }

    /// <summary>Bytes of the OPEN payload after the token and kind strings.</summary>
    protected abstract int MeasureBody();

    protected abstract void WriteBody(ref PayloadWriter writer);

    private string KindName => Kind == AgentSessionKind.Exec ? ExecKind : ConnectKind;

    /// <summary>Characters of a caller's argument put into messages and logs.</summary>
    private const int MaxDescriptionChars = 64;

    protected static string Short(string s) => s.Length <= MaxDescriptionChars ? s : s[..MaxDescriptionChars] + "…";

    /// <summary>The OPEN payload length, or -1 when it exceeds <see cref="AgentProtocol.MaxOpenPayloadBytes"/> (or a count limit).</summary>
    public int MeasurePayload()
    {
        int body = MeasureBody();
        if (body < 0) return -1;
        long total = PayloadWriter.StringBytes(AgentProtocol.TokenBytes) + PayloadWriter.StringBytes(Encoding.UTF8.GetByteCount(KindName)) + (long)body;
        return total <= AgentProtocol.MaxOpenPayloadBytes ? (int)total : -1;
    }

    /// <summary>
    /// The whole OPEN frame (header included) in a pooled buffer; dispose it to wipe the token and return the buffer.
    /// Null when the request does not fit the protocol's limits.
    /// </summary>
    public RentedFrame? BuildOpenFrame(ReadOnlySpan<byte> token)
    {
        if (token.Length != AgentProtocol.TokenBytes) throw new ArgumentException("token must be 64 bytes", nameof(token));
        int payload = MeasurePayload();
        if (payload < 0) return null;
        var frame = new RentedFrame(AgentProtocol.HeaderBytes + payload);
        AgentProtocol.WriteHeader(frame.Span, AgentFrameType.Open, payload);
        var writer = new PayloadWriter(frame.Span[AgentProtocol.HeaderBytes..]);
        writer.WriteString(token);
        writer.WriteString(KindName);
        WriteBody(ref writer);
        if (!writer.IsFull) throw new InvalidOperationException("OPEN payload length mismatch");
        return frame;
    }
}

/// <summary>An exec OPEN: user, cwd, term (empty = pipes), initial size, argv, env.</summary>
internal sealed class AgentExecRequest(string user, string workingDirectory, string term, int columns, int rows,
    IReadOnlyList<string> argv, IReadOnlyList<string> env) : AgentOpenRequest
{
    public override AgentSessionKind Kind => AgentSessionKind.Exec;
    public override bool HasStderr => term.Length == 0;
    public override string Description => "exec " + Short(argv.Count > 0 ? argv[0] : "");

    protected override int MeasureBody()
    {
        if (argv.Count is < 1 or > AgentProtocol.MaxArgs || env.Count > AgentProtocol.MaxEnv) return -1;
        long total = PayloadWriter.StringBytes(user) + PayloadWriter.StringBytes(workingDirectory) + PayloadWriter.StringBytes(term)
                     + 4 + 4 // columns, rows
                     + 4 + 4; // argc, envc
        foreach (var a in argv) total += PayloadWriter.StringBytes(a);
        foreach (var e in env) total += PayloadWriter.StringBytes(e);
        return total <= AgentProtocol.MaxOpenPayloadBytes ? (int)total : -1;
    }

    protected override void WriteBody(ref PayloadWriter writer)
    {
        writer.WriteString(user);
        writer.WriteString(workingDirectory);
        writer.WriteString(term);
        writer.WriteUInt32((uint)Math.Max(0, columns));
        writer.WriteUInt32((uint)Math.Max(0, rows));
        writer.WriteUInt32((uint)argv.Count);
        foreach (var a in argv) writer.WriteString(a);
        writer.WriteUInt32((uint)env.Count);
        foreach (var e in env) writer.WriteString(e);
    }
}

/// <summary>A connect OPEN: host and port, connected to from inside the VM.</summary>
internal sealed class AgentConnectRequest(string host, int port) : AgentOpenRequest
{
    public string Host => host;
    public int Port => port;
    public override AgentSessionKind Kind => AgentSessionKind.Connect;
    public override bool HasStderr => false;
    public override string Description => $"connect {Short(host)}:{port}";

    protected override int MeasureBody()
    {
        long total = PayloadWriter.StringBytes(host) + 4;
        return total <= AgentProtocol.MaxOpenPayloadBytes ? (int)total : -1;
    }

    protected override void WriteBody(ref PayloadWriter writer)
    {
        writer.WriteString(host);
        writer.WriteUInt32((uint)port);
    }
}

/// <summary>Sequential big-endian writer over a span whose size was measured beforehand.</summary>
internal ref struct PayloadWriter(Span<byte> destination)
{
    private readonly Span<byte> _destination = destination;
    private int _position;

    public readonly bool IsFull => _position == _destination.Length;

    public static long StringBytes(string s) => 4L + Encoding.UTF8.GetByteCount(s);
    public static long StringBytes(int byteCount) => 4L + byteCount;

    public void WriteUInt32(uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_destination.Slice(_position, 4), value);
        _position += 4;
    }

    public void WriteString(string value)
    {
        int length = Encoding.UTF8.GetByteCount(value);
        WriteUInt32((uint)length);
        _position += Encoding.UTF8.GetBytes(value, _destination.Slice(_position, length));
    }

    public void WriteString(ReadOnlySpan<byte> utf8)
    {
        WriteUInt32((uint)utf8.Length);
        utf8.CopyTo(_destination.Slice(_position, utf8.Length));
        _position += utf8.Length;
    }
}

/// <summary>A frame in a pooled buffer, wiped when returned (an OPEN frame carries the token).</summary>
internal sealed class RentedFrame(int length) : IDisposable
{
    private byte[]? _buffer = ArrayPool<byte>.Shared.Rent(length);

    public int Length => length;
    public Span<byte> Span => (_buffer ?? throw new ObjectDisposedException(nameof(RentedFrame))).AsSpan(0, length);
    public ReadOnlyMemory<byte> Memory => (_buffer ?? throw new ObjectDisposedException(nameof(RentedFrame))).AsMemory(0, length);

    public void Dispose()
    {
        var buffer = Interlocked.Exchange(ref _buffer, null);
        if (buffer != null) ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
    }
}
