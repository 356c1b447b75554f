using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Warren.Runtime.MicroVm.Mux;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// The guest end of a multiplexer connection, scripted by a test: reads the host's frames and writes whatever the
/// test says, including frames a real guest would never send. The host end is a <see cref="NetworkStream"/> over the
/// other half of a socketpair.
/// </summary>
internal sealed partial class FakeGuest : IDisposable
{
    private readonly Socket _socket;

    private FakeGuest(Socket socket) => _socket = socket;

    /// <summary>A connected pair: the host's stream and the fake guest.</summary>
    public static (Stream Host, FakeGuest Guest) Create()
    {
        Span<int> fds = stackalloc int[2];
        if (SocketPair(1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0, fds) != 0) throw new IOException("socketpair failed");
        var host = new Socket(new SafeSocketHandle(fds[0], true));
        var guest = new Socket(new SafeSocketHandle(fds[1], true));
        return (new NetworkStream(host, ownsSocket: true), new FakeGuest(guest));
    }

    /// <summary>Connects the host side and answers its HELLO as the guest does (echoing the nonce).</summary>
    public static async Task<(MuxConnection Mux, FakeGuest Guest)> ConnectAsync(CancellationToken ct)
    {
        var (host, guest) = Create();
        var connecting = MuxConnection.ConnectAsync(host, ct);
        var (type, _, payload) = await guest.ReadFrameAsync(ct);
        if (type != MuxFrameType.Hello) throw new InvalidOperationException("expected HELLO");
        await guest.SendAsync(MuxFrameType.Hello, 0, payload, ct);
        return (await connecting, guest);
    }

    /// <summary>Opens a channel from the host, confirming with <paramref name="window"/>.</summary>
    public async Task<MuxChannel> OpenAsync(MuxConnection mux, uint window, CancellationToken ct)
    {
        var opening = mux.OpenChannelAsync(ct);
        var (type, channel, _) = await ReadFrameAsync(ct);
        if (type != MuxFrameType.Open) throw new InvalidOperationException($"expected OPEN, got {type}");
        await SendUInt32Async(MuxFrameType.OpenConfirm, channel, window, ct);
        return await opening;
    }

    public async Task<(MuxFrameType Type, uint Channel, byte[] Payload)> ReadFrameAsync(CancellationToken ct)
    {
        var header = new byte[MuxProtocol.HeaderBytes];
        await ReadExactlyAsync(header, ct);
        int length = (int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(5));
        var payload = new byte[length];
        await ReadExactlyAsync(payload, ct);
        return ((MuxFrameType)header[0], BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(1)), payload);
    }

    private async Task ReadExactlyAsync(Memory<byte> buffer, CancellationToken ct)
    {
        while (!buffer.IsEmpty)
        {
            int n = await _socket.ReceiveAsync(buffer, SocketFlags.None, ct);
            if (n == 0) throw new EndOfStreamException("host closed");
            buffer = buffer[n..];
        }
    }

    public Task SendAsync(MuxFrameType type, uint channel, ReadOnlyMemory<byte> payload, CancellationToken ct) =>
        SendRawAsync(MuxFrames.Build(type, channel, payload.Span), ct);

    public Task SendUInt32Async(MuxFrameType type, uint channel, uint value, CancellationToken ct) =>
        SendRawAsync(MuxFrames.BuildUInt32(type, channel, value), ct);

    public async Task SendRawAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        while (!bytes.IsEmpty)
            bytes = bytes[await _socket.SendAsync(bytes, SocketFlags.None, ct)..];
    }

    public void Dispose() => _socket.Dispose();

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    private static partial int SocketPair(int domain, int type, int protocol, Span<int> fds);
}
