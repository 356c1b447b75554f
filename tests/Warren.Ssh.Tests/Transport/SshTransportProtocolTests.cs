using System.Buffers.Binary;
using System.Text;
using Warren.Ssh.Crypto;
using Warren.Ssh.Keys;
using Warren.Ssh.Tests.Crypto;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Ssh.Tests.Transport;

/// <summary>Serves fixed bytes to the reader, then end-of-stream; discards writes. Optionally records what was read.</summary>
internal sealed class ReplayStream(byte[] input) : Stream
{
    private int _position;
    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count)
    {
        int n = Math.Min(count, input.Length - _position);
        Array.Copy(input, _position, buffer, offset, n);
        _position += n;
        return n;
    }
    public override void Write(byte[] buffer, int offset, int count) { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}

/// <summary>Passes through to an inner stream and keeps a copy of every byte read.</summary>
internal sealed class RecordingStream(Stream inner) : Stream
{
    private readonly MemoryStream _read = new();
    public byte[] ReadBytes { get { lock (_read) return _read.ToArray(); } }
    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        int n = await inner.ReadAsync(buffer, ct);
        lock (_read) _read.Write(buffer.Span[..n]);
        return n;
    }
    public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default) => inner.WriteAsync(buffer, ct);
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    protected override void Dispose(bool disposing) { if (disposing) inner.Dispose(); base.Dispose(disposing); }
}

/// <summary>Passes bytes through, flipping one bit of the client→server stream once <see cref="Armed"/> is set.</summary>
internal sealed class CorruptingStream(Stream inner) : Stream
{
    public volatile bool Armed;
    private int _done;
    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);
    public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => inner.ReadAsync(buffer, ct);
    public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
    {
        if (Armed && buffer.Length > 20 && Interlocked.Exchange(ref _done, 1) == 0)
        {
            var copy = buffer.ToArray();
            copy[copy.Length / 2] ^= 0x10;
            return inner.WriteAsync(copy, ct);
        }
        return inner.WriteAsync(buffer, ct);
    }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    protected override void Dispose(bool disposing) { if (disposing) inner.Dispose(); base.Dispose(disposing); }
}

public class SshTransportProtocolTests
{
    private static byte[] Ascii(string s) => Encoding.ASCII.GetBytes(s);

    /// <summary>An unencrypted packet as a peer would send it before the first NEWKEYS.</summary>
    private static byte[] PlainPacket(byte[] payload)
    {
        int total = SshTransport.BuildPacketLength(NonePacketCipher.Instance, payload.Length, out int packetLength, out int padding);
        var wire = new byte[total];
        BinaryPrimitives.WriteUInt32BigEndian(wire, (uint)packetLength);
        wire[4] = (byte)padding;
        payload.CopyTo(wire, 5);
        return wire;
    }

    private static byte[] ClientKexInit(bool strict) => new SshKexInit
    {
        KexAlgorithms = strict ? [SshAlgorithms.KexCurve25519, SshAlgorithms.StrictKexClient] : [SshAlgorithms.KexCurve25519],
        ServerHostKeyAlgorithms = [SshAlgorithms.HostKeyEd25519],
        EncryptionAlgorithmsClientToServer = [SshAlgorithms.Aes128Gcm],
        EncryptionAlgorithmsServerToClient = [SshAlgorithms.Aes128Gcm],
        MacAlgorithmsClientToServer = [SshAlgorithms.HmacSha256],
        MacAlgorithmsServerToClient = [SshAlgorithms.HmacSha256],
        CompressionAlgorithmsClientToServer = ["none"],
        CompressionAlgorithmsServerToClient = ["none"],
    }.ToPayload();

    private static async Task<Exception?> AcceptFailure(byte[] input)
    {
        using var cts = new CancellationTokenSource(TransportPair.Timeout);
        try
        {
            await using var t = await SshTransport.AcceptAsync(new ReplayStream(input), TransportPair.Server(o => o.HostKeys = [TestHostKeys.Ed25519]), cts.Token);
            return null;
        }
        catch (Exception e) { return e; }
    }

    [Theory]
    [InlineData("SSH-1.5-old\r\n", SshDisconnectReason.ProtocolVersionNotSupported)]
    [InlineData("HELLO\r\n", SshDisconnectReason.ProtocolError)]
    public async Task Server_RejectsBadVersionLines(string line, SshDisconnectReason reason)
    {
        var e = Assert.IsType<SshProtocolException>(await AcceptFailure(Ascii(line)));
        Assert.Equal(reason, e.Reason);
    }

    [Fact]
    public async Task VersionLine_LongerThan255_IsRejected()
    {
        var line = "SSH-2.0-" + new string('x', SshVersionExchange.MaxVersionLineBytes - 8 - 2 + 1) + "\r\n";
        var e = Assert.IsType<SshProtocolException>(await AcceptFailure(Ascii(line)));
        Assert.Equal(SshDisconnectReason.ProtocolError, e.Reason);
        // Exactly 255 including CR LF is fine (the connection then ends for lack of data).
        var ok = "SSH-2.0-" + new string('x', SshVersionExchange.MaxVersionLineBytes - 8 - 2) + "\r\n";
        Assert.IsType<SshConnectionClosedException>(await AcceptFailure(Ascii(ok)));
    }

    [Fact]
    public async Task Client_SkipsBannerLines_AndAccepts199()
    {
        var input = Ascii("Welcome\r\nanother line\nSSH-1.99-Other_1.0\r\n");
        using var cts = new CancellationTokenSource(TransportPair.Timeout);
        var e = await Assert.ThrowsAsync<SshConnectionClosedException>(() => SshTransport.ConnectAsync(new ReplayStream(input), TransportPair.Client(), cts.Token));
        Assert.DoesNotContain("version exchange", e.Message); // got past the version line; ended in the key exchange
    }

    [Fact]
    public async Task PacketLength_AboveLimit_IsRejectedBeforeBuffering()
    {
        var header = new byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(header, SshTransport.MaxPacketLength + 1);
        var e = Assert.IsType<SshProtocolException>(await AcceptFailure([.. Ascii("SSH-2.0-t\r\n"), .. header]));
        Assert.Equal(SshDisconnectReason.ProtocolError, e.Reason);
        BinaryPrimitives.WriteUInt32BigEndian(header, uint.MaxValue);
        Assert.IsType<SshProtocolException>(await AcceptFailure([.. Ascii("SSH-2.0-t\r\n"), .. header]));
    }

    /// <summary>OpenSSH PROTOCOL §1.10 (Terrapin, CVE-2023-48795): with strict kex, KEXINIT must be the first packet.</summary>
    [Fact]
    public async Task StrictKex_IgnoreBeforeKexInit_IsFatal()
    {
        var input = (byte[])[.. Ascii("SSH-2.0-t\r\n"), .. PlainPacket([2, 0, 0, 0, 0]), .. PlainPacket(ClientKexInit(strict: true))];
        var e = Assert.IsType<SshProtocolException>(await AcceptFailure(input));
        Assert.Contains("strict KEX", e.Message);
    }

    [Fact]
    public async Task StrictKex_IgnoreAfterKexInit_IsFatal()
    {
        var input = (byte[])[.. Ascii("SSH-2.0-t\r\n"), .. PlainPacket(ClientKexInit(strict: true)), .. PlainPacket([2, 0, 0, 0, 0])];
        var e = Assert.IsType<SshProtocolException>(await AcceptFailure(input));
        Assert.Contains("strict KEX", e.Message);
    }

    [Fact]
    public async Task NonStrict_IgnoreBeforeKexInit_IsTolerated()
    {
        var input = (byte[])[.. Ascii("SSH-2.0-t\r\n"), .. PlainPacket([2, 0, 0, 0, 0]), .. PlainPacket(ClientKexInit(strict: false))];
        // Runs until the input ends: no protocol error.
        Assert.IsType<SshConnectionClosedException>(await AcceptFailure(input));
    }

    [Fact]
    public async Task UpperLayerMessage_BeforeKex_IsFatal()
    {
        var input = (byte[])[.. Ascii("SSH-2.0-t\r\n"), .. PlainPacket([50, 1, 2])];
        var e = Assert.IsType<SshProtocolException>(await AcceptFailure(input));
        Assert.Equal(SshDisconnectReason.ProtocolError, e.Reason);
    }

    /// <summary>RFC 4253 §6.4: a corrupted packet ends the connection with MAC_ERROR, nothing else.</summary>
    [Theory]
    [InlineData(SshAlgorithms.Aes128Gcm)]
    [InlineData(SshAlgorithms.ChaCha20Poly1305)]
    [InlineData(SshAlgorithms.Aes256Ctr)]
    public async Task FlippedBitOnTheWire_ClosesWithMacError(string cipher)
    {
        var (s, c) = await TransportPair.LoopbackStreamsAsync();
        var corrupting = new CorruptingStream(c);
        using var cts = new CancellationTokenSource(TransportPair.Timeout);
        var serverTask = SshTransport.AcceptAsync(s, TransportPair.Server(), cts.Token);
        await using var client = await SshTransport.ConnectAsync(corrupting, TransportPair.Client(o => { o.Ciphers = [cipher]; o.Macs = [SshAlgorithms.HmacSha256]; }), cts.Token);
        await using var server = await serverTask;
        corrupting.Armed = true;
        await client.SendAsync(new byte[100].Select((_, i) => (byte)(i == 0 ? 94 : i)).ToArray(), cts.Token);
        await server.Completion.WaitAsync(cts.Token);
        var e = Assert.IsType<SshProtocolException>(server.CloseReason);
        Assert.True(e.Reason is SshDisconnectReason.MacError or SshDisconnectReason.ProtocolError, e.Reason.ToString());
        await client.Completion.WaitAsync(cts.Token); // the server's DISCONNECT (or the close) reaches the client
    }

    /// <summary>
    /// Bounded mutation fuzzing: a handshake recorded from a real client (deterministic
    /// server randomness and host key, so the unmodified recording replays to a full
    /// session) is mutated with seeded edits and fed to AcceptAsync. Only
    /// SshProtocolException or SshConnectionClosedException may come out.
    /// </summary>
    [Fact]
    public async Task Fuzz_MutatedHandshake_OnlyProtocolErrorsOrCleanClose()
    {
        var hostKey = new Ed25519PrivateKey(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
        SshTransportServerOptions ServerOptions() => new() { HostKeys = [hostKey], Random = new FixedRandom([0x42, 0x17, 0x99]), KexAlgorithms = [SshAlgorithms.KexCurve25519] };

        // Record.
        var (s, c) = await TransportPair.LoopbackStreamsAsync();
        var recording = new RecordingStream(s);
        using (var cts = new CancellationTokenSource(TransportPair.Timeout))
        {
            var serverTask = SshTransport.AcceptAsync(recording, ServerOptions(), cts.Token);
            await using var client = await SshTransport.ConnectAsync(c, TransportPair.Client(), cts.Token);
            await using var server = await serverTask;
            await client.SendAsync(new byte[] { 94, 1, 2, 3, 4 }, cts.Token);
            using var p = await server.ReceiveAsync(cts.Token);
        }
        var recorded = recording.ReadBytes;

        // The unmodified recording replays to a complete session.
        using (var cts = new CancellationTokenSource(TransportPair.Timeout))
        {
            await using var replayed = await SshTransport.AcceptAsync(new ReplayStream(recorded), ServerOptions(), cts.Token);
            using var p = await replayed.ReceiveAsync(cts.Token);
            Assert.Equal(new byte[] { 94, 1, 2, 3, 4 }, p.Payload.ToArray());
        }

        const int Iterations = 400;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        for (int i = 0; i < Iterations && DateTime.UtcNow < deadline; i++)
        {
            var rng = new Random(i);
            var input = recorded.ToList();
            int edits = 1 + rng.Next(3);
            for (int e = 0; e < edits && input.Count > 0; e++)
            {
                int at = rng.Next(input.Count);
                switch (rng.Next(5))
                {
                    case 0: input[at] ^= (byte)(1 << rng.Next(8)); break;
                    case 1: input[at] = (byte)rng.Next(256); break;
                    case 2: input.RemoveRange(at, input.Count - at); break;
                    case 3: input.InsertRange(at, Enumerable.Range(0, 1 + rng.Next(8)).Select(_ => (byte)rng.Next(256))); break;
                    default: input.RemoveRange(at, Math.Min(input.Count - at, 1 + rng.Next(16))); break;
                }
            }
            using var cts = new CancellationTokenSource(TransportPair.Timeout);
            try
            {
                await using var t = await SshTransport.AcceptAsync(new ReplayStream([.. input]), ServerOptions(), cts.Token);
                for (int n = 0; n < 10; n++) { using var p = await t.ReceiveAsync(cts.Token); }
            }
            catch (SshProtocolException) { }
            catch (SshConnectionClosedException) { }
            Assert.False(cts.IsCancellationRequested, $"iteration {i} hung");
        }
    }
}
