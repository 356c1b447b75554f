using System.Buffers.Binary;
using System.Net.Sockets;
using Warren.Agent.Native;

namespace Warren.Agent.Vm;

/// <summary>
/// The guest side of the VM channel multiplexer (docs/AGENT-PROTOCOL.md, "The microVM channel multiplexer").
/// Frame types and limits; both sides use the same numbers.
/// </summary>
internal static class Mux
{
    public const byte Hello = 0x01, Open = 0x02, OpenConfirm = 0x03, OpenFailure = 0x04, Data = 0x05,
        Window = 0x06, Eof = 0x07, Close = 0x08, Shutdown = 0x09;

    public const uint Version = 1;
    /// <summary>type (1) + channel (uint32) + length (uint32), big-endian.</summary>
    public const int HeaderBytes = 9;
    /// <summary>Largest payload of any frame.</summary>
    public const int MaxPayload = 32 * 1024;
    /// <summary>Open channels at once; a further OPEN gets OPEN_FAILURE.</summary>
    public const int MaxChannels = 256;
    /// <summary>Bytes each side may send on a new channel before the first WINDOW (also the most either side buffers per channel).</summary>
    public const int InitialWindow = 256 * 1024;
    /// <summary>HELLO payload: uint32 version + the host's 16-byte nonce (echoed, so the host can skip bytes left from an earlier connection).</summary>
    public const int HelloPayload = 4 + NonceBytes;
    public const int NonceBytes = 16;
    /// <summary>Longest OPEN_FAILURE reason sent.</summary>
    public const int MaxReasonBytes = 1024;

    /// <summary>
    /// The first frame in <paramref name="buffer"/>: <see cref="MuxSplit.Frame"/> with its header fields when it is all
    /// there (payload at <see cref="HeaderBytes"/>), <see cref="MuxSplit.Incomplete"/> when more bytes are needed,
    /// <see cref="MuxSplit.Oversized"/> when the length exceeds <see cref="MaxPayload"/> (framing is then lost).
    /// </summary>
    public static MuxSplit TrySplit(ReadOnlySpan<byte> buffer, out byte type, out uint channel, out int length)
    {
        type = 0;
        channel = 0;
        length = 0;
        if (buffer.Length < HeaderBytes) return MuxSplit.Incomplete;
        uint declared = BinaryPrimitives.ReadUInt32BigEndian(buffer[5..]);
        if (declared > MaxPayload) return MuxSplit.Oversized;
        if (buffer.Length < HeaderBytes + (int)declared) return MuxSplit.Incomplete;
        type = buffer[0];
        channel = BinaryPrimitives.ReadUInt32BigEndian(buffer[1..]);
        length = (int)declared;
        return MuxSplit.Frame;
    }
}

internal enum MuxSplit { Incomplete, Frame, Oversized }

/// <summary>
/// <c>mux AGENT_SOCKET</c>: relays the host's channels, multiplexed over the virtio-serial port named
/// <see cref="VmGuest.PortName"/>, each to its own connection to the agent's session socket, so every channel carries
/// the session protocol unchanged. Per-channel credit windows (as SSH channels, RFC 4254 §5.2): a channel whose
/// reader is slow runs out of window and waits, the others go on. The port is a link that comes and goes: reads give
/// EOF while no host is connected, so every channel is dropped then and the host starts over with HELLO.
/// </summary>
internal static unsafe class MuxCommand
{
    /// <summary>How often a disconnected port is polled, and how long a blocked write waits before re-checking that its connection still exists.</summary>
    private const int IdlePollMs = 100;
    /// <summary>
    /// The poll of a disconnected port while the VM boots (<see cref="BootPollWindowMs"/> after mux started, until the
    /// first HELLO): the host is usually connected already, but the guest learns it from a control message that may come
    /// just after the port's first read, and the host's first session must not wait a whole <see cref="IdlePollMs"/>.
    /// </summary>
    private const int BootPollMs = 5;
    private const long BootPollWindowMs = 15_000;
    private const int ReadBufferBytes = 64 * 1024;

    public static int Run(string[] args)
    {
        if (args.Length != 1) throw new AgentUsageException("mux: AGENT_SOCKET");
        Libc.Signal(Libc.SIGPIPE, Libc.SIG_IGN);
        string? port = null;
        for (int i = 0; (port = VmGuest.FindPort()) == null; i++)
        {
            if (i == 50) { Log($"no virtio-serial port named {VmGuest.PortName}"); return 1; }
            Thread.Sleep(IdlePollMs);
        }
        int fd = Libc.Open(port, Libc.O_RDWR | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0);
        if (fd < 0) { Log($"cannot open {port}: errno {Libc.Errno}"); return 1; }
        VmGuest.MarkBoot("mux opened its port");
        new GuestMux(fd, args[0]).Run();
        return 0;
    }

    public static void Log(string message) => Console.Error.Write($"warren-agent mux: {message}\n");

    private sealed class GuestMux(int fd, string agentSocket)
    {
        private readonly object _writeLock = new();
        private readonly Dictionary<uint, GuestChannel> _channels = new();
        private readonly byte[] _writeBuffer = new byte[Mux.HeaderBytes + Mux.MaxPayload];
        /// <summary>Bumped on every reset: frames of an older connection are never written to a newer one.</summary>
        private int _epoch;
        /// <summary>Boot marks (<see cref="VmGuest.MarkBoot"/>) only for the first HELLO and channel.</summary>
        private bool _greeted, _openedAny;
        private readonly long _startedAt = Environment.TickCount64;

        public int Epoch => Volatile.Read(ref _epoch);

        public void Run()
        {
            var buffer = new byte[ReadBufferBytes];
            int start = 0, end = 0;
            while (true)
            {
                if (start == end) start = end = 0;
                else if (end == buffer.Length)
                {
                    Array.Copy(buffer, start, buffer, 0, end - start);
                    end -= start;
                    start = 0;
                }
                nint n;
                fixed (byte* p = &buffer[end]) n = Libc.Read(fd, p, (nuint)(buffer.Length - end));
                if (n == 0)
                {
                    // No host connected: whatever was in flight belongs to a connection that is gone.
                    if (_channels.Count > 0 || end > start) Reset();
                    start = end = 0;
                    Thread.Sleep(!_greeted && Environment.TickCount64 - _startedAt < BootPollWindowMs ? BootPollMs : IdlePollMs);
                    continue;
                }
                if (n < 0)
                {
                    int errno = Libc.Errno;
                    if (errno == Libc.EAGAIN || errno == Libc.EINTR) { WaitPort(Libc.POLLIN); continue; }
                    Log($"read: errno {errno}");
                    Thread.Sleep(IdlePollMs);
                    continue;
                }
                end += (int)n;
                while (true)
                {
                    var split = Mux.TrySplit(buffer.AsSpan(start, end - start), out byte type, out uint channel, out int length);
                    if (split == MuxSplit.Incomplete) break;
                    if (split == MuxSplit.Oversized)
                    {
                        Log("oversized frame from the host; dropping every channel");
                        Reset();
                        start = end = 0;
                        break;
                    }
                    Handle(type, channel, buffer.AsSpan(start + Mux.HeaderBytes, length));
                    start += Mux.HeaderBytes + length;
                }
            }
        }

        private void Handle(byte type, uint id, ReadOnlySpan<byte> payload)
        {
            GuestChannel? channel;
            switch (type)
            {
                case Mux.Hello:
                    if (payload.Length != Mux.HelloPayload) return;
                    Reset();
                    Span<byte> hello = stackalloc byte[Mux.HelloPayload];
                    BinaryPrimitives.WriteUInt32BigEndian(hello, Mux.Version);
                    payload[4..].CopyTo(hello[4..]);
                    Send(Mux.Hello, 0, hello, Epoch);
                    if (!_greeted) { _greeted = true; VmGuest.MarkBoot("mux greeted the host"); }
                    return;
                case Mux.Shutdown:
                    Log("shutdown requested by the host");
                    Libc.Kill(1, 15);
                    return;
                case Mux.Open:
                    if (payload.Length != 4 || id == 0) return;
                    OpenChannel(id, BinaryPrimitives.ReadUInt32BigEndian(payload));
                    return;
                case Mux.Data:
                    if (_channels.TryGetValue(id, out channel) && !channel.Receive(payload)) channel.Close();
                    return;
                case Mux.Window:
                    if (payload.Length == 4 && _channels.TryGetValue(id, out channel)) channel.Grant(BinaryPrimitives.ReadUInt32BigEndian(payload));
                    return;
                case Mux.Eof:
                    if (_channels.TryGetValue(id, out channel)) channel.ReceiveEof();
                    return;
                case Mux.Close:
                    if (_channels.Remove(id, out channel)) channel.Close();
                    return;
                default:
                    return; // unknown types are ignored, so a newer host can add some
            }
        }

        private void OpenChannel(uint id, uint hostWindow)
        {
            if (_channels.ContainsKey(id) || _channels.Count >= Mux.MaxChannels)
            {
                SendFailure(id, _channels.ContainsKey(id) ? "channel in use" : "too many channels");
                return;
            }
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Connect(new UnixDomainSocketEndPoint(agentSocket));
            }
            catch (SocketException e)
            {
                socket.Dispose();
                // The agent's serve has not bound yet (early boot) or is restarting: the host retries.
                SendFailure(id, $"agent socket: {e.SocketErrorCode}");
                if (!_openedAny) VmGuest.MarkBoot("mux refused a channel: serve not listening yet");
                return;
            }
            var channel = new GuestChannel(this, id, socket, hostWindow, Epoch);
            _channels[id] = channel;
            Span<byte> window = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(window, Mux.InitialWindow);
            Send(Mux.OpenConfirm, id, window, channel.Epoch);
            channel.Start();
            if (!_openedAny) { _openedAny = true; VmGuest.MarkBoot("mux opened the first channel"); }
        }

        private void SendFailure(uint id, string reason)
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(reason);
            Send(Mux.OpenFailure, id, bytes.AsSpan(0, Math.Min(bytes.Length, Mux.MaxReasonBytes)), Epoch);
        }

        /// <summary>Drops every channel: the host is gone, or has started over.</summary>
        private void Reset()
        {
            Interlocked.Increment(ref _epoch);
            foreach (var channel in _channels.Values) channel.Close();
            _channels.Clear();
        }

        /// <summary>
        /// Writes one whole frame, unless the connection it belongs to (<paramref name="epoch"/>) has ended, which a
        /// write blocked on a disconnected port notices within <see cref="IdlePollMs"/>. False when not written.
        /// </summary>
        public bool Send(byte type, uint channel, ReadOnlySpan<byte> payload, int epoch)
        {
            lock (_writeLock)
            {
                if (epoch != Epoch) return false;
                _writeBuffer[0] = type;
                BinaryPrimitives.WriteUInt32BigEndian(_writeBuffer.AsSpan(1), channel);
                BinaryPrimitives.WriteUInt32BigEndian(_writeBuffer.AsSpan(5), (uint)payload.Length);
                payload.CopyTo(_writeBuffer.AsSpan(Mux.HeaderBytes));
                int left = Mux.HeaderBytes + payload.Length, offset = 0;
                while (left > 0)
                {
                    nint n;
                    fixed (byte* p = &_writeBuffer[offset]) n = Libc.Write(fd, p, (nuint)left);
                    if (n > 0) { offset += (int)n; left -= (int)n; continue; }
                    int errno = Libc.Errno;
                    if (n < 0 && errno != Libc.EAGAIN && errno != Libc.EINTR) return false;
                    if (epoch != Epoch) return false;
                    WaitPort(Libc.POLLOUT);
                }
                return true;
            }
        }

        private void WaitPort(short events)
        {
            var p = new PollFd { Fd = fd, Events = events };
            Libc.Poll(&p, 1, IdlePollMs);
            // A disconnected port reports POLLHUP at once: pause instead of spinning.
            if ((p.REvents & Libc.POLLHUP) != 0) Thread.Sleep(IdlePollMs);
        }
    }

    /// <summary>
    /// One channel: a connection to the agent's socket, an upstream thread (socket → host, within the host's window) and
    /// a downstream thread (host → socket, granting window back as it writes).
    /// </summary>
    private sealed class GuestChannel(GuestMux mux, uint id, Socket socket, uint hostWindow, int epoch)
    {
        private readonly Queue<byte[]> _incoming = new();
        private long _sendWindow = hostWindow;
        private int _receiveWindow = Mux.InitialWindow;
        private bool _incomingEof, _closed;
        private readonly object _sendLock = new();
        private bool _closeSent;

        public int Epoch => epoch;

        public void Start()
        {
            ServeCommand.StartThread("mux-up", Upstream);
            ServeCommand.StartThread("mux-down", Downstream);
        }

        /// <summary>DATA from the host; false when it overran the window it was given (the channel is then closed).</summary>
        public bool Receive(ReadOnlySpan<byte> data)
        {
            lock (this)
            {
                if (_closed) return true;
                if (data.Length > _receiveWindow) return false;
                _receiveWindow -= data.Length;
                if (data.Length > 0) _incoming.Enqueue(data.ToArray());
                Monitor.PulseAll(this);
                return true;
            }
        }

        public void ReceiveEof()
        {
            lock (this) { _incomingEof = true; Monitor.PulseAll(this); }
        }

        public void Grant(uint bytes)
        {
            lock (this)
            {
                _sendWindow = Math.Min(_sendWindow + bytes, int.MaxValue);
                Monitor.PulseAll(this);
            }
        }

        /// <summary>
        /// The host closed the channel, overran its window, or the connection ended: stop both threads and send CLOSE
        /// unless it was sent already (a CLOSE for an older connection is dropped by <see cref="GuestMux.Send"/>).
        /// </summary>
        public void Close()
        {
            lock (this) { _closed = true; Monitor.PulseAll(this); }
            try { socket.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
            socket.Dispose();
            SendClose();
        }

        private void SendClose()
        {
            lock (_sendLock)
            {
                if (_closeSent) return;
                _closeSent = true;
                mux.Send(Mux.Close, id, [], epoch);
            }
        }

        /// <summary>
        /// A frame on this channel unless our CLOSE went out: after it the host may already have forgotten the id, and a
        /// frame for an id it does not know ends the whole connection.
        /// </summary>
        private bool SendOnChannel(byte type, ReadOnlySpan<byte> payload)
        {
            lock (_sendLock)
            {
                return !_closeSent && mux.Send(type, id, payload, epoch);
            }
        }

        private void Upstream()
        {
            var buffer = new byte[Mux.MaxPayload];
            while (true)
            {
                int allowed;
                lock (this)
                {
                    while (_sendWindow == 0 && !_closed) Monitor.Wait(this);
                    if (_closed) return;
                    allowed = (int)Math.Min(_sendWindow, Mux.MaxPayload);
                }
                int n;
                try { n = socket.Receive(buffer, 0, allowed, SocketFlags.None); }
                catch (Exception e) when (e is SocketException or ObjectDisposedException) { n = 0; }
                if (n == 0) break;
                lock (this) _sendWindow -= n;
                if (!SendOnChannel(Mux.Data, buffer.AsSpan(0, n))) return;
            }
            // The agent closed the session: nothing more comes either way.
            SendOnChannel(Mux.Eof, []);
            SendClose();
        }

        private void Downstream()
        {
            Span<byte> grant = stackalloc byte[4];
            while (true)
            {
                byte[] chunk;
                lock (this)
                {
                    while (_incoming.Count == 0 && !_incomingEof && !_closed) Monitor.Wait(this);
                    if (_closed) return;
                    if (_incoming.Count == 0)
                    {
                        try { socket.Shutdown(SocketShutdown.Send); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
                        return;
                    }
                    chunk = _incoming.Dequeue();
                }
                try
                {
                    for (int sent = 0; sent < chunk.Length;) sent += socket.Send(chunk, sent, chunk.Length - sent, SocketFlags.None);
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException) { return; }
                lock (this) _receiveWindow += chunk.Length;
                BinaryPrimitives.WriteUInt32BigEndian(grant, (uint)chunk.Length);
                if (!SendOnChannel(Mux.Window, grant)) return;
            }
        }
    }
}
