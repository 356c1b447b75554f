using System.Net;
using System.Net.Sockets;
using System.Text;
using Warren.Edge.Ssh;
using Warren.Platform.Runtime;
using Warren.Ssh.Client;
using Warren.Ssh.Connection;
using Warren.Ssh.Server;

namespace Warren.Edge.Tests.Ssh;

/// <summary>
/// <see cref="StreamRelay"/> between a real Warren.Ssh channel (client and server on loopback) and a
/// half-closable upstream: each side's EOF reaches the other while the opposite direction keeps flowing
/// (RFC 4254 §5.3), and a closed channel ends the relay even when the upstream never does.
/// </summary>
public sealed class StreamRelayTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = LoopbackSsh.Timeout;

    /// <summary>Longest text a test reads to EOF (bounds every read loop).</summary>
    private const int MaxReadBytes = 64 * 1024;

    private readonly TcpListener _upstreamListener = new(IPAddress.Loopback, 0);
    private readonly TaskCompletionSource _relayDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private LoopbackSsh _ssh = null!;
    private SshClient _client = null!;

    public async Task InitializeAsync()
    {
        _upstreamListener.Start();
        _ssh = await LoopbackSsh.StartAsync(RelayEveryChannelAsync);
        _client = _ssh.Client;
    }

    public async Task DisposeAsync()
    {
        await _ssh.DisposeAsync();
        _upstreamListener.Stop();
    }

    /// <summary>Serves direct-tcpip by connecting to the test's upstream listener and relaying.</summary>
    private async Task RelayEveryChannelAsync(SshServerConnection connection)
    {
        var relays = new List<Task>();
        await foreach (var open in connection.AcceptChannelsAsync(connection.Closing))
            relays.Add(RelayOneAsync(open, connection.Closing));
        await Task.WhenAll(relays);
    }

    private async Task RelayOneAsync(SshChannelOpenRequest open, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync((IPEndPoint)_upstreamListener.LocalEndpoint, ct);
        await using var upstream = new HalfClosableSocketStream(socket);
        var channel = await open.AcceptAsync(ct);
        await StreamRelay.RelayAsync(channel, upstream, ct);
        await channel.CloseAsync(ct);
        _relayDone.TrySetResult();
    }

    /// <summary>
    /// A socket as <see cref="IVmRuntime.ConnectAsync"/> returns a VM connection: a stream that can half-close,
    /// whose writes complete asynchronously and observe cancellation (as the agent session socket's do).
    /// </summary>
    private sealed class HalfClosableSocketStream(Socket socket) : Stream, IHalfClosableStream
    {
        private readonly NetworkStream _inner = new(socket, ownsSocket: true);
        public Task ShutdownWriteAsync() { socket.Shutdown(SocketShutdown.Send); return Task.CompletedTask; }
        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => _inner.ReadAsync(buffer, ct);
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => _inner.ReadAsync(buffer, offset, count, ct);
        public override void Write(byte[] buffer, int offset, int count) => _inner.Write(buffer, offset, count);
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
        {
            await Task.Yield();
            ct.ThrowIfCancellationRequested();
            await _inner.WriteAsync(buffer, ct);
        }
        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) => WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();
        protected override void Dispose(bool disposing) { if (disposing) _inner.Dispose(); base.Dispose(disposing); }
    }

    private static async Task<string> ReadToEofAsync(SshChannel channel)
    {
        var text = new StringBuilder();
        var buffer = new byte[4096];
        int n;
        while (text.Length < MaxReadBytes && (n = await channel.ReadAsync(buffer).AsTask().WaitAsync(Timeout)) > 0)
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        return text.ToString();
    }

    private static async Task<string> ReadToEofAsync(Socket socket)
    {
        var text = new StringBuilder();
        var buffer = new byte[4096];
        int n;
        while (text.Length < MaxReadBytes && (n = await socket.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(Timeout)) > 0)
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        return text.ToString();
    }

    [Fact]
    public async Task ClientEof_ReachesTheUpstream_WhichStillAnswers()
    {
        var channel = await _client.OpenDirectTcpIpAsync("upstream", 1).WaitAsync(Timeout);
        using var peer = await _upstreamListener.AcceptSocketAsync().WaitAsync(Timeout);

        await channel.WriteAsync("request"u8.ToArray());
        await channel.SendEofAsync();
        // A server that reads to EOF before it answers.
        Assert.Equal("request", await ReadToEofAsync(peer));
        await peer.SendAsync("answer"u8.ToArray());
        peer.Shutdown(SocketShutdown.Send);

        Assert.Equal("answer", await ReadToEofAsync(channel));
        await _relayDone.Task.WaitAsync(Timeout);
        await channel.Completion.WaitAsync(Timeout);
    }

    [Fact]
    public async Task UpstreamEof_ReachesTheClient_WhichStillSends()
    {
        var channel = await _client.OpenDirectTcpIpAsync("upstream", 1).WaitAsync(Timeout);
        using var peer = await _upstreamListener.AcceptSocketAsync().WaitAsync(Timeout);

        await peer.SendAsync("banner"u8.ToArray());
        peer.Shutdown(SocketShutdown.Send);
        Assert.Equal("banner", await ReadToEofAsync(channel));
        Assert.True(channel.EofReceived);
        Assert.False(channel.Completion.IsCompleted);

        // The channel stays open the other way (RFC 4254 §5.3: EOF is one direction only).
        await channel.WriteAsync("late data"u8.ToArray());
        await channel.SendEofAsync();
        Assert.Equal("late data", await ReadToEofAsync(peer));
        await _relayDone.Task.WaitAsync(Timeout);
        await channel.Completion.WaitAsync(Timeout);
    }

    /// <summary>Rounds of data + EOF + CLOSE sent back to back (each round a fresh channel).</summary>
    private const int CloseRightAfterDataRounds = 20;

    [Fact]
    public async Task DataThenEofThenClose_AllDataStillReachesTheUpstream()
    {
        // OpenSSH sends EOF and CLOSE back to back once both directions are done: data that arrived
        // before the CLOSE is still delivered (RFC 4254 §5.3 ends the channel, not what it carried).
        for (int round = 0; round < CloseRightAfterDataRounds; round++)
        {
            var channel = await _client.OpenDirectTcpIpAsync("upstream", 1).WaitAsync(Timeout);
            using var peer = await _upstreamListener.AcceptSocketAsync().WaitAsync(Timeout);
            await peer.SendAsync("banner"u8.ToArray());
            peer.Shutdown(SocketShutdown.Send);
            Assert.Equal("banner", await ReadToEofAsync(channel));

            var last = $"last words {round}";
            await channel.WriteAsync(Encoding.ASCII.GetBytes(last));
            await channel.SendEofAsync();
            await channel.CloseAsync();
            Assert.Equal(last, await ReadToEofAsync(peer));
            await channel.Completion.WaitAsync(Timeout);
        }
    }

    [Fact]
    public async Task ClientClose_EndsTheRelay_EvenIfTheUpstreamNeverFinishes()
    {
        var channel = await _client.OpenDirectTcpIpAsync("upstream", 1).WaitAsync(Timeout);
        using var peer = await _upstreamListener.AcceptSocketAsync().WaitAsync(Timeout);

        await channel.CloseAsync();
        await _relayDone.Task.WaitAsync(Timeout);
        // The upstream was let go: the peer sees its connection end.
        Assert.Equal("", await ReadToEofAsync(peer));
    }
}
