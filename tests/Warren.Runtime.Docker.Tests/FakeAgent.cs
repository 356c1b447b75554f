using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Warren.Runtime.Agent;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// An in-process stand-in for <c>warren-agent serve</c> (docs/AGENT-PROTOCOL.md) for unit tests of the host side:
/// it listens on a VM's socket path and lets a test read the host's frames and send any bytes back, valid or not.
/// The real agent is tested in containers (the conformance suite); this only makes the host's framing observable.
/// </summary>
internal sealed class FakeAgent : IDisposable
{
    private static readonly TimeSpan AcceptTimeout = TimeSpan.FromSeconds(10);
    private readonly Socket _listener = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);

    public FakeAgent(string socketPath)
    {
        SocketPath = socketPath;
        _listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        _listener.Listen(16);
    }

    public string SocketPath { get; }

    public async Task<FakeAgentConnection> AcceptAsync()
    {
        using var cts = new CancellationTokenSource(AcceptTimeout);
        return new FakeAgentConnection(await _listener.AcceptAsync(cts.Token));
    }

    public void Dispose()
    {
        _listener.Dispose();
        File.Delete(SocketPath);
    }

    public static byte[] Frame(AgentFrameType type, ReadOnlySpan<byte> payload)
    {
        var frame = new byte[5 + payload.Length];
        frame[0] = (byte)type;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(frame.AsSpan(5));
        return frame;
    }

    public static byte[] Frame(AgentFrameType type, string text) => Frame(type, Encoding.UTF8.GetBytes(text));

    public static byte[] Started(uint? pid)
    {
        if (pid is not { } p) return Frame(AgentFrameType.Started, []);
        var payload = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(payload, p);
        return Frame(AgentFrameType.Started, payload);
    }

    public static byte[] Exit(uint kind, uint value, byte core = 0)
    {
        var payload = new byte[9];
        BinaryPrimitives.WriteUInt32BigEndian(payload, kind);
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4), value);
        payload[8] = core;
        return Frame(AgentFrameType.Exit, payload);
    }

    public static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();
}

internal sealed class FakeAgentConnection(Socket socket) : IAsyncDisposable
{
    private static readonly TimeSpan ReadTimeout = TimeSpan.FromSeconds(30);

    public Socket Socket => socket;

    public async Task SendAsync(byte[] bytes)
    {
        int sent = 0;
        while (sent < bytes.Length) sent += await socket.SendAsync(bytes.AsMemory(sent), SocketFlags.None);
    }

    /// <summary>The next frame from the host, or null at end of stream.</summary>
    public async Task<(AgentFrameType Type, byte[] Payload)?> ReadFrameAsync()
    {
        var header = new byte[5];
        if (!await ReadExactlyAsync(header, allowEof: true)) return null;
        var payload = new byte[BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(1))];
        await ReadExactlyAsync(payload, allowEof: false);
        return ((AgentFrameType)header[0], payload);
    }

    public async Task<(AgentFrameType Type, byte[] Payload)> ExpectFrameAsync()
    {
        var frame = await ReadFrameAsync();
        Xunit.Assert.True(frame.HasValue, "the host closed the session socket");
        return frame.Value;
    }

    private async Task<bool> ReadExactlyAsync(byte[] buffer, bool allowEof)
    {
        using var cts = new CancellationTokenSource(ReadTimeout);
        int read = 0;
        while (read < buffer.Length)
        {
            int n;
            try { n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, cts.Token); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset) { n = 0; }
            if (n == 0)
            {
                if (read == 0 && allowEof) return false;
                throw new EndOfStreamException("the host closed the socket in the middle of a frame");
            }
            read += n;
        }
        return true;
    }

    public ValueTask DisposeAsync()
    {
        socket.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>An OPEN payload taken apart (docs/AGENT-PROTOCOL.md, "OPEN payload, in order").</summary>
internal sealed record FakeOpen(string Token, string Kind, string User, string Cwd, string Term, uint Columns, uint Rows,
    IReadOnlyList<string> Argv, IReadOnlyList<string> Env, string Host, uint Port)
{
    public static FakeOpen Parse(byte[] payload)
    {
        int pos = 0;
        uint U32()
        {
            uint v = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(pos, 4));
            pos += 4;
            return v;
        }
        string Str()
        {
            int n = (int)U32();
            string s = Encoding.UTF8.GetString(payload, pos, n);
            pos += n;
            return s;
        }
        string token = Str(), kind = Str();
        FakeOpen open;
        if (kind == "exec")
        {
            string user = Str(), cwd = Str(), term = Str();
            uint cols = U32(), rows = U32();
            var argv = Enumerable.Range(0, (int)U32()).Select(_ => Str()).ToList();
            var env = Enumerable.Range(0, (int)U32()).Select(_ => Str()).ToList();
            open = new FakeOpen(token, kind, user, cwd, term, cols, rows, argv, env, "", 0);
        }
        else
        {
            string host = Str();
            uint port = U32();
            open = new FakeOpen(token, kind, "", "", "", 0, 0, [], [], host, port);
        }
        Xunit.Assert.Equal(payload.Length, pos); // nothing after the last field
        return open;
    }
}
