using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Warren.Runtime.MicroVm.Mux;

/// <summary>
/// The host side of one VM's channel multiplexer (docs/AGENT-PROTOCOL.md, "The microVM channel multiplexer"), over the
/// stream QEMU gives the VM's virtio-serial port. The guest is untrusted: every header is checked before its payload is
/// read (<see cref="MuxFrames.TryReadGuestHeader"/>), a channel's data may never exceed the window we granted, so what
/// we buffer is at most <see cref="MaxChannels"/> × <see cref="ReceiveWindow"/>, and the reader never waits for a channel's
/// consumer: a slow consumer only stops granting window to its own channel. Any violation ends this connection (all
/// channels of that VM fail with an <see cref="IOException"/>), never more.
/// </summary>
internal sealed class MuxConnection : IAsyncDisposable
{
    /// <summary>Channels open at once on one VM (the guest allows more).</summary>
    public const int MaxChannels = 128;
    /// <summary>Bytes the guest may send on a channel before we grant more: the most we buffer per channel.</summary>
    public const int ReceiveWindow = 128 * 1024;
    /// <summary>
    /// Bytes skipped while looking for the guest's HELLO: a port can still hold what the guest wrote for an earlier
    /// connection. The echoed nonce makes the HELLO unmistakable; past this much the guest is not answering sensibly.
    /// </summary>
    private const int MaxStaleBytes = 1024 * 1024;
    private const int ReadBufferBytes = 2 * (MuxProtocol.HeaderBytes + MuxProtocol.MaxPayload);

    private readonly Stream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly object _lock = new();
    private readonly Dictionary<uint, MuxChannel> _channels = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private uint _nextChannel;
    private Task _reader = Task.CompletedTask;
    private Exception? _failure;

    private MuxConnection(Stream stream) => _stream = stream;

    /// <summary>Completes when the connection ended (guest gone, violation, or disposed); never faults.</summary>
    public Task Ended => _ended.Task;

    public bool IsAlive => !_ended.Task.IsCompleted;

    /// <summary>Why the connection ended, when it did.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    /// <summary>Sends HELLO and waits for the guest's echo, then starts reading frames. Disposes <paramref name="stream"/> on failure.</summary>
    public static async Task<MuxConnection> ConnectAsync(Stream stream, CancellationToken ct)
    {
        var connection = new MuxConnection(stream);
        try
        {
            var nonce = RandomNumberGenerator.GetBytes(MuxProtocol.NonceBytes);
            var hello = new byte[MuxProtocol.HelloPayload];
            BinaryPrimitives.WriteUInt32BigEndian(hello, MuxProtocol.Version);
            nonce.CopyTo(hello, 4);
            var expected = MuxFrames.Build(MuxFrameType.Hello, 0, hello);
            await stream.WriteAsync(expected, ct).ConfigureAwait(false);
            var (buffer, start, end) = await ReadUntilHelloAsync(stream, expected, ct).ConfigureAwait(false);
            connection._reader = connection.ReadLoopAsync(buffer, start, end);
            return connection;
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Reads until the exact HELLO frame we expect; returns the buffer with whatever followed it.</summary>
    private static async Task<(byte[] Buffer, int Start, int End)> ReadUntilHelloAsync(Stream stream, byte[] expected, CancellationToken ct)
    {
        var buffer = new byte[ReadBufferBytes];
        int end = 0;
        long skipped = 0;
        while (true)
        {
            int n = await stream.ReadAsync(buffer.AsMemory(end), ct).ConfigureAwait(false);
            if (n == 0) throw new IOException("the VM's agent port closed before HELLO");
            end += n;
            int at = buffer.AsSpan(0, end).IndexOf(expected);
            if (at >= 0)
            {
                skipped += at;
                return (buffer, at + expected.Length, end);
            }
            // Keep the tail that could be the start of the HELLO.
            int keep = Math.Min(end, expected.Length - 1);
            skipped += end - keep;
            if (skipped > MaxStaleBytes) throw new MuxProtocolException($"no HELLO from the guest within {MaxStaleBytes} bytes");
            Array.Copy(buffer, end - keep, buffer, 0, keep);
            end = keep;
        }
    }

    /// <summary>
    /// Opens a channel (the guest connects it to the agent's session socket). Throws <see cref="MuxOpenFailedException"/>
    /// when the guest refuses, <see cref="IOException"/> when the connection is gone or has no free channel.
    /// </summary>
    public async Task<MuxChannel> OpenChannelAsync(CancellationToken ct)
    {
        MuxChannel channel;
        lock (_lock)
        {
            if (_failure != null || _ended.Task.IsCompleted) throw new IOException("the VM's agent connection is closed", _failure);
            if (_channels.Count >= MaxChannels) throw new IOException($"the VM has {MaxChannels} open channels");
            uint id;
            do { id = ++_nextChannel; } while (id == 0 || _channels.ContainsKey(id));
            channel = new MuxChannel(this, id);
            _channels[id] = channel;
        }
        await SendAsync(MuxFrames.BuildUInt32(MuxFrameType.Open, channel.Id, ReceiveWindow), ct).ConfigureAwait(false);
        try
        {
            await channel.Opened.WaitAsync(ct).ConfigureAwait(false);
            return channel;
        }
        catch (OperationCanceledException)
        {
            // The answer may still come: the channel then closes itself (MuxChannel.OnConfirm).
            channel.Abandon();
            throw;
        }
    }

    /// <summary>Asks the guest to power off cleanly (its init stops every process, syncs and calls reboot(2)).</summary>
    public Task SendShutdownAsync(CancellationToken ct) => SendAsync(MuxFrames.Build(MuxFrameType.Shutdown, 0, []), ct).AsTask();

    /// <summary>Writes one whole frame; frames never interleave.</summary>
    internal async ValueTask SendAsync(ReadOnlyMemory<byte> frame, CancellationToken ct)
    {
        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_ended.Task.IsCompleted) throw new IOException("the VM's agent connection is closed", Failure);
            await _stream.WriteAsync(frame, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
            Fail(e as IOException ?? new IOException(e.Message, e));
            throw e as IOException ?? new IOException(e.Message, e);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>DATA with the payload copied behind the header into one pooled buffer (one write).</summary>
    internal async ValueTask SendDataAsync(uint channel, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        int length = MuxProtocol.HeaderBytes + data.Length;
        byte[] frame = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            MuxFrames.WriteHeader(frame, MuxFrameType.Data, channel, data.Length);
            data.Span.CopyTo(frame.AsSpan(MuxProtocol.HeaderBytes));
            await SendAsync(frame.AsMemory(0, length), ct).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(frame);
        }
    }

    /// <summary>Both sides have closed the channel: its id may be used again.</summary>
    internal void Release(MuxChannel channel)
    {
        lock (_lock)
        {
            if (_channels.TryGetValue(channel.Id, out var current) && ReferenceEquals(current, channel)) _channels.Remove(channel.Id);
        }
    }

    internal int OpenChannels
    {
        get { lock (_lock) return _channels.Count; }
    }

    private async Task ReadLoopAsync(byte[] buffer, int start, int end)
    {
        try
        {
            while (true)
            {
                while (MuxFrames.TryReadGuestHeader(buffer.AsSpan(start, end - start), out var header)
                       && end - start >= MuxProtocol.HeaderBytes + header.Length)
                {
                    Dispatch(header, buffer.AsSpan(start + MuxProtocol.HeaderBytes, header.Length));
                    start += MuxProtocol.HeaderBytes + header.Length;
                }
                // A whole frame always fits: the buffer holds two maximal frames.
                if (start > 0)
                {
                    Array.Copy(buffer, start, buffer, 0, end - start);
                    end -= start;
                    start = 0;
                }
                int n = await _stream.ReadAsync(buffer.AsMemory(end), _stop.Token).ConfigureAwait(false);
                if (n == 0) throw new IOException("the VM's agent port closed (the VM stopped or the guest hung up)");
                end += n;
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            Fail(new IOException("the VM's agent connection was closed"));
        }
        catch (Exception e)
        {
            // Whatever the guest's bytes led to, only this VM's connection ends.
            Fail(e is MuxProtocolException ? new IOException($"the VM broke the channel protocol: {e.Message}", e) : e as IOException ?? new IOException(e.Message, e));
        }
    }

    private void Dispatch(MuxFrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.Type == MuxFrameType.Hello) return; // a repeated answer is harmless
        MuxChannel? channel;
        lock (_lock) _channels.TryGetValue(header.Channel, out channel);
        if (channel == null) throw new MuxProtocolException($"{header.Type} for channel {header.Channel}, which is not open");
        switch (header.Type)
        {
            case MuxFrameType.OpenConfirm: channel.OnConfirm(BinaryPrimitives.ReadUInt32BigEndian(payload)); break;
            case MuxFrameType.OpenFailure: channel.OnFailure(Encoding.UTF8.GetString(payload)); break;
            case MuxFrameType.Data: channel.OnData(payload); break;
            case MuxFrameType.Window: channel.OnWindow(BinaryPrimitives.ReadUInt32BigEndian(payload)); break;
            case MuxFrameType.Eof: channel.OnEof(); break;
            case MuxFrameType.Close: channel.OnClose(); break;
        }
    }

    private void Fail(IOException error)
    {
        List<MuxChannel> channels;
        lock (_lock)
        {
            if (_failure != null) return;
            _failure = error;
            channels = _channels.Values.ToList();
            _channels.Clear();
        }
        _stop.Cancel();
        foreach (var channel in channels) channel.Fail(error);
        try { _stream.Dispose(); } catch (Exception) { /* already broken */ }
        _ended.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        Fail(new IOException("the VM's agent connection was closed"));
        await _reader.ConfigureAwait(false);
    }
}

/// <summary>The guest refused to open a channel (the agent's socket is not up yet, or too many channels).</summary>
internal sealed class MuxOpenFailedException(string reason) : IOException($"the guest refused the channel: {reason}")
{
    public string Reason { get; } = reason;
}
