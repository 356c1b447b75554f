using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Warren.Platform.Runtime;

namespace Warren.Runtime.Agent;

/// <summary>
/// One connection to a VM's agent session socket (docs/AGENT-PROTOCOL.md): OPEN, then frames both ways.
/// <para>
/// Writing: every frame goes out with one send from a pooled buffer (header and payload together), under a lock so
/// stdin data and resize/signal frames never interleave. Reading: one loop reads up to <see cref="ReadBufferBytes"/>
/// at a time, parses every frame in it, and streams STDOUT/STDERR payloads into pipes without waiting for whole
/// frames. Before each socket read it flushes those pipes, and a flush waits while a consumer has
/// <see cref="OutputPauseBytes"/> unread: then the socket is not read, the agent's writes block, and so does the
/// process, which is the protocol's flow control.
/// </para>
/// <para>
/// The peer is untrusted (root in the VM can replace the agent): every length is checked before it is used, a bad
/// frame ends the session with a <see cref="VmRuntimeException"/> (readers of the output streams see an
/// <see cref="IOException"/>), and nothing the peer sends makes the daemon buffer more than the bounds here.
/// </para>
/// </summary>
internal sealed class AgentSession : IAsyncDisposable
{
    /// <summary>Socket read size: several frames per read at full speed, while a frame larger than this (up to 256 KiB) is still streamed through.</summary>
    private const int ReadBufferBytes = 128 * 1024;
    /// <summary>Unread output per stream at which the reader stops taking frames off the socket.</summary>
    private const long OutputPauseBytes = 1024 * 1024;
    /// <summary>Unread output per stream below which reading resumes (half the pause mark, so it does not toggle per chunk).</summary>
    private const long OutputResumeBytes = 512 * 1024;
    /// <summary>
    /// Pipe segment size (segments come from ArrayPool.Shared). Output is copied in at up to read-buffer size; with
    /// 64 KiB a full pipe is 16 segments, few enough that the shared pool never runs dry and streaming allocates
    /// nothing (with 16 KiB, 64+ in flight outran the pool and every few chunks allocated one).
    /// </summary>
    private const int OutputSegmentBytes = 64 * 1024;
    /// <summary>How much of an ERROR message is kept; the rest is read and dropped, so a guest cannot make the daemon hold or log more.</summary>
    private const int MaxErrorMessageBytes = 1024;
    /// <summary>Characters of the agent's message put into an exception.</summary>
    private const int MaxErrorMessageChars = 300;
    /// <summary>
    /// How long the agent may take to answer OPEN. A connect answers after its TCP connect inside the VM, which can
    /// take Linux's SYN retry time (about 130 s with the default tcp_syn_retries=6); nothing else comes close. A
    /// frozen or hostile agent then costs one pending call, not a hang.
    /// </summary>
    internal static readonly TimeSpan AnswerTimeout = TimeSpan.FromSeconds(150);

    private static readonly PipeOptions s_outputOptions = new(
        pauseWriterThreshold: OutputPauseBytes,
        resumeWriterThreshold: OutputResumeBytes,
        minimumSegmentSize: OutputSegmentBytes,
        useSynchronizationContext: false);

    private enum State { AwaitingStarted, Running }

    private readonly Socket _socket;
    private readonly string _vmId;
    private readonly AgentOpenRequest _request;
    private readonly Pipe _stdout = new(s_outputOptions);
    private readonly Pipe? _stderr;
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<ExitResult> _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    /// <summary>Cancelled when we close the socket ourselves: whatever the reader sees after that is our doing, not the agent's.</summary>
    private readonly CancellationTokenSource _closing = new();
    private Task _reader = Task.CompletedTask;
    private int _disposed;
    /// <summary>Set when a send was interrupted part-way: frame boundaries are lost, so no further frame may follow.</summary>
    private volatile bool _writeBroken;
    private VmRuntimeException? _outputFailure;

    // Reader state: touched only by the read loop.
    private byte[]? _buffer;
    private int _start, _end;
    private State _state = State.AwaitingStarted;
    private bool _stdoutPending, _stderrPending;
    private bool _stdoutDropped, _stderrDropped;
    private bool _stdoutEnded, _outputsCompleted;

    private readonly AgentFailure _fail;

    private AgentSession(Socket socket, string vmId, AgentOpenRequest request, AgentFailure fail)
    {
        _fail = fail;
        _socket = socket;
        _vmId = vmId;
        _request = request;
        if (request.HasStderr) _stderr = new Pipe(s_outputOptions);
    }

    public AgentSessionKind Kind => _request.Kind;

    /// <summary>The process id inside the VM (exec), from STARTED.</summary>
    public int ProcessId { get; private set; }

    /// <summary>stdout (exec, or both streams with a pty), or the bytes from the TCP peer (connect). Call once.</summary>
    public Stream OpenStdout() => new AgentOutputStream(_stdout.Reader, this);

    /// <summary>stderr of an exec without a pty; else null. Call once.</summary>
    public Stream? OpenStderr() => _stderr == null ? null : new AgentOutputStream(_stderr.Reader, this);

    /// <summary>Why the session broke, once it did: output readers throw it (as an IOException) after the data received before.</summary>
    internal VmRuntimeException? OutputFailure => Volatile.Read(ref _outputFailure);

    /// <summary>
    /// The process's end (exec): after every output byte was handed to the pipes. Faults with a
    /// <see cref="VmRuntimeException"/> when the session broke; <c>ExitResult(null, null)</c> when we closed it first.
    /// </summary>
    public Task<ExitResult> Exit => _exit.Task;

    /// <summary>Sends OPEN on a connected socket and waits for STARTED; ERROR and any failure throw and close the socket.</summary>
    /// <remarks><paramref name="fail"/> makes the runtime's own exception for a broken or refused session.</remarks>
    public static async Task<AgentSession> OpenAsync(Socket socket, string vmId, AgentOpenRequest request, RentedFrame open, AgentFailure fail, CancellationToken ct)
    {
        var session = new AgentSession(socket, vmId, request, fail);
        try
        {
            try
            {
                await session.SendAsync(open.Memory, ct).ConfigureAwait(false);
            }
            finally
            {
                open.Dispose(); // wipes the token now that it is sent
            }
            session._reader = session.ReadLoopAsync();
            await session._started.Task.WaitAsync(AnswerTimeout, ct).ConfigureAwait(false);
            return session;
        }
        catch (TimeoutException)
        {
            await session.DisposeAsync().ConfigureAwait(false);
            throw fail(AgentErrors.AgentSessionFailed,
                $"the agent of VM {vmId} did not answer {request.Description} within {AnswerTimeout.TotalSeconds:0} s");
        }
        catch (IOException e)
        {
            await session.DisposeAsync().ConfigureAwait(false);
            throw fail(AgentErrors.AgentSessionFailed, $"the session socket of VM {vmId} failed: {e.Message}", e);
        }
        catch
        {
            await session.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    // ------------------------------------------------------------------ host → agent

    /// <summary>DATA frames (split at the protocol's payload limit), each one send.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask SendDataAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (!data.IsEmpty)
        {
            int chunk = Math.Min(data.Length, AgentProtocol.MaxPayloadBytes);
            int length = AgentProtocol.HeaderBytes + chunk;
            byte[] frame = ArrayPool<byte>.Shared.Rent(length);
            try
            {
                AgentProtocol.WriteHeader(frame, AgentFrameType.Data, chunk);
                data.Span[..chunk].CopyTo(frame.AsSpan(AgentProtocol.HeaderBytes));
                await SendAsync(frame.AsMemory(0, length), ct).ConfigureAwait(false);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(frame);
            }
            data = data[chunk..];
        }
    }

    /// <summary>EOF: stdin closed (exec) or the sending half of the TCP connection shut down (connect).</summary>
    public ValueTask SendEofAsync(CancellationToken ct) => SendControlAsync(AgentFrameType.Eof, 0, 0, 0, ct);

    public ValueTask SendResizeAsync(int columns, int rows, CancellationToken ct) =>
        SendControlAsync(AgentFrameType.Resize, (uint)columns, (uint)rows, 8, ct);

    public ValueTask SendSignalAsync(int signal, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(signal, AgentProtocol.MinSignal);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(signal, AgentProtocol.MaxSignal);
        return SendControlAsync(AgentFrameType.Signal, (uint)signal, 0, 4, ct);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendControlAsync(AgentFrameType type, uint first, uint second, int payloadBytes, CancellationToken ct)
    {
        int length = AgentProtocol.HeaderBytes + payloadBytes;
        byte[] frame = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            AgentProtocol.WriteHeader(frame, type, payloadBytes);
            if (payloadBytes >= 4) BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(AgentProtocol.HeaderBytes, 4), first);
            if (payloadBytes >= 8) BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(AgentProtocol.HeaderBytes + 4, 4), second);
            await SendAsync(frame.AsMemory(0, length), ct).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(frame);
        }
    }

    /// <summary>Sends one whole frame. Cancelling a send that has begun aborts the session: part of the frame may be gone.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendAsync(ReadOnlyMemory<byte> frame, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        bool sending = false;
        try
        {
            if (_writeBroken) throw new IOException($"the session with the agent of VM {_vmId} was aborted");
            ct.ThrowIfCancellationRequested();
            sending = true;
            int sent = 0;
            while (sent < frame.Length)
                sent += await _socket.SendAsync(frame[sent..], SocketFlags.None, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (sending)
        {
            _writeBroken = true;
            Close();
            throw;
        }
        catch (SocketException e)
        {
            _writeBroken = true;
            throw new IOException($"the session with the agent of VM {_vmId} failed: {e.Message}", e);
        }
        catch (ObjectDisposedException) when (Volatile.Read(ref _disposed) == 0)
        {
            // Closed by an earlier aborted send, not by DisposeAsync.
            throw new IOException($"the session with the agent of VM {_vmId} was aborted");
        }
        finally
        {
            _writeLock.Release();
        }
    }

    // ------------------------------------------------------------------ agent → host

    private async Task ReadLoopAsync()
    {
        VmRuntimeException? failure = null;
        try
        {
            await ReadFramesAsync(_closing.Token).ConfigureAwait(false);
        }
        catch (Exception) when (_closing.IsCancellationRequested)
        {
            // We closed the session (dispose, or an aborted send): not the agent's doing.
        }
        catch (VmRuntimeException e)
        {
            failure = e;
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            failure = _fail(AgentErrors.AgentSessionFailed,
                $"the session socket of VM {_vmId} failed ({_request.Description}): {e.Message}", e);
        }
        catch (Exception e)
        {
            // A bug here must still end the session rather than leave callers waiting.
            failure = _fail(AgentErrors.AgentSessionFailed,
                $"the session with the agent of VM {_vmId} failed ({_request.Description}): {e.Message}", e);
        }
        finally
        {
            if (_buffer != null)
            {
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = null;
            }
            Finish(failure);
        }
    }

    private async Task ReadFramesAsync(CancellationToken ct)
    {
        while (true)
        {
            if (!await EnsureAsync(AgentProtocol.HeaderBytes, ct).ConfigureAwait(false))
            {
                if (_end > _start) throw Violation("the socket closed in the middle of a frame header");
                if (EndOfStream()) return;
            }
            var type = (AgentFrameType)_buffer![_start];
            uint length = BinaryPrimitives.ReadUInt32BigEndian(_buffer.AsSpan(_start + 1, 4));
            if (length > AgentProtocol.MaxPayloadBytes)
                throw Violation($"a frame of {length} bytes (type 0x{(byte)type:x2}); the limit is {AgentProtocol.MaxPayloadBytes}");
            _start += AgentProtocol.HeaderBytes;

            switch (type)
            {
                case AgentFrameType.Started:
                {
                    Expect(_state == State.AwaitingStarted, type);
                    int expected = Kind == AgentSessionKind.Exec ? AgentProtocol.ExecStartedBytes : 0;
                    ExpectLength(type, length, expected);
                    if (!await EnsureAsync(expected, ct).ConfigureAwait(false)) throw Truncated(type);
                    if (expected > 0) ProcessId = (int)Math.Min(int.MaxValue, BinaryPrimitives.ReadUInt32BigEndian(_buffer.AsSpan(_start, 4)));
                    _start += expected;
                    _state = State.Running;
                    _started.TrySetResult();
                    break;
                }
                case AgentFrameType.Stdout:
                    Expect(_state == State.Running && !_stdoutEnded, type);
                    await CopyPayloadAsync((int)length, stderr: false, ct).ConfigureAwait(false);
                    break;
                case AgentFrameType.Stderr:
                    Expect(_state == State.Running && _stderr != null, type);
                    await CopyPayloadAsync((int)length, stderr: true, ct).ConfigureAwait(false);
                    break;
                case AgentFrameType.StdoutEof:
                    Expect(_state == State.Running && Kind == AgentSessionKind.Connect && !_stdoutEnded, type);
                    ExpectLength(type, length, 0);
                    _stdoutEnded = true;
                    _stdout.Writer.Complete();
                    break;
                case AgentFrameType.Exit:
                {
                    Expect(_state == State.Running && Kind == AgentSessionKind.Exec, type);
                    ExpectLength(type, length, AgentProtocol.ExitBytes);
                    if (!await EnsureAsync(AgentProtocol.ExitBytes, ct).ConfigureAwait(false)) throw Truncated(type);
                    var result = ParseExit(_buffer.AsSpan(_start, AgentProtocol.ExitBytes));
                    _start += AgentProtocol.ExitBytes;
                    // Output first, then the exit: every byte is in the pipes before Completion says the process ended.
                    CompleteOutputs(null);
                    _exit.TrySetResult(result);
                    return; // EXIT is the last frame
                }
                case AgentFrameType.Error:
                    throw Refused(await ReadMessageAsync((int)length, ct).ConfigureAwait(false));
                default:
                    throw Violation($"unknown frame type 0x{(byte)type:x2}");
            }
        }
    }

    /// <summary>At end of stream on a frame boundary: true when that is a clean end (connect, after STDOUT_EOF), else throws.</summary>
    private bool EndOfStream()
    {
        if (_state == State.AwaitingStarted)
            throw _fail(AgentErrors.AgentSessionFailed,
                $"the agent of VM {_vmId} closed the session without answering {_request.Description}");
        if (Kind == AgentSessionKind.Exec)
            throw _fail(AgentErrors.AgentSessionFailed,
                $"the agent of VM {_vmId} closed the session before the process exited ({_request.Description})");
        if (!_stdoutEnded)
            throw _fail(AgentErrors.ConnectFailed,
                $"the connection to {((AgentConnectRequest)_request).Host}:{((AgentConnectRequest)_request).Port} inside the VM was cut off");
        return true;
    }

    /// <summary>Streams a STDOUT/STDERR payload into its pipe as it arrives (the frame need not fit the read buffer).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask CopyPayloadAsync(int length, bool stderr, CancellationToken ct)
    {
        int remaining = length;
        while (remaining > 0)
        {
            if (_start == _end && !await FillAsync(ct).ConfigureAwait(false))
                throw Truncated(stderr ? AgentFrameType.Stderr : AgentFrameType.Stdout);
            int n = Math.Min(remaining, _end - _start);
            var data = _buffer!.AsSpan(_start, n);
            if (stderr)
            {
                // A consumer that stopped reading (disposed its stream) loses the rest; the process is not held up by it.
                if (!_stderrDropped) { _stderr!.Writer.Write(data); _stderrPending = true; }
            }
            else if (!_stdoutDropped)
            {
                _stdout.Writer.Write(data);
                _stdoutPending = true;
            }
            _start += n;
            remaining -= n;
        }
    }

    /// <summary>An ERROR message: the first <see cref="MaxErrorMessageBytes"/> kept, the rest read and dropped.</summary>
    private async Task<string> ReadMessageAsync(int length, CancellationToken ct)
    {
        var kept = new byte[Math.Min(length, MaxErrorMessageBytes)];
        int keptBytes = 0, remaining = length;
        while (remaining > 0)
        {
            if (_start == _end && !await FillAsync(ct).ConfigureAwait(false)) throw Truncated(AgentFrameType.Error);
            int n = Math.Min(remaining, _end - _start);
            int keep = Math.Min(n, kept.Length - keptBytes);
            _buffer!.AsSpan(_start, keep).CopyTo(kept.AsSpan(keptBytes));
            keptBytes += keep;
            _start += n;
            remaining -= n;
        }
        return Printable(Encoding.UTF8.GetString(kept, 0, keptBytes));
    }

    /// <summary>Waits until <paramref name="count"/> bytes (at most a header or a small fixed payload) are buffered; false at end of stream.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> EnsureAsync(int count, CancellationToken ct)
    {
        while (_end - _start < count)
            if (!await FillAsync(ct).ConfigureAwait(false)) return false;
        return true;
    }

    /// <summary>
    /// Flushes pending output (waiting while a consumer is full: flow control), then reads more.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> FillAsync(CancellationToken ct)
    {
        await FlushOutputsAsync(ct).ConfigureAwait(false);
        if (_start == _end)
        {
            _start = _end = 0;
            // Nothing waiting on the socket: the session is idle (a shell waiting for its user). Give the buffer back
            // and wait with a zero-byte receive, so idle sessions hold no buffer. While data streams the buffer is
            // kept, so a busy session does not churn the pool.
            if (_buffer == null || _socket.Available == 0)
            {
                if (_buffer != null)
                {
                    ArrayPool<byte>.Shared.Return(_buffer);
                    _buffer = null;
                }
                await _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, ct).ConfigureAwait(false);
                _buffer = ArrayPool<byte>.Shared.Rent(ReadBufferBytes);
            }
        }
        else if (_start > 0)
        {
            // Only a partial header or small fixed payload is ever left over: the copy is a few bytes.
            Buffer.BlockCopy(_buffer!, _start, _buffer!, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        int n = await _socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, ct).ConfigureAwait(false);
        if (n == 0) return false;
        _end += n;
        return true;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask FlushOutputsAsync(CancellationToken ct)
    {
        if (_stdoutPending)
        {
            _stdoutPending = false;
            if ((await _stdout.Writer.FlushAsync(ct).ConfigureAwait(false)).IsCompleted) _stdoutDropped = true;
        }
        if (_stderrPending)
        {
            _stderrPending = false;
            if ((await _stderr!.Writer.FlushAsync(ct).ConfigureAwait(false)).IsCompleted) _stderrDropped = true;
        }
    }

    private ExitResult ParseExit(ReadOnlySpan<byte> payload)
    {
        uint kind = BinaryPrimitives.ReadUInt32BigEndian(payload[..4]);
        uint value = BinaryPrimitives.ReadUInt32BigEndian(payload.Slice(4, 4));
        byte core = payload[8];
        if (core > 1) throw Violation($"EXIT with core-dumped flag {core}");
        switch (kind)
        {
            case AgentProtocol.ExitKindExited:
                if (value > AgentProtocol.MaxExitCode) throw Violation($"EXIT with exit code {value}");
                return new ExitResult((int)value, null);
            case AgentProtocol.ExitKindSignaled:
                if (value is < AgentProtocol.MinSignal or > AgentProtocol.MaxSignal) throw Violation($"EXIT with signal {value}");
                // SSH names only the signals of RFC 4254 §6.10; others are reported as a shell does, 128+N.
                return AgentSignals.Name((int)value) is { } name
                    ? new ExitResult(null, name, core == 1)
                    : new ExitResult(128 + (int)value, null);
            default:
                throw Violation($"EXIT of kind {kind}");
        }
    }

    private void Finish(VmRuntimeException? failure)
    {
        CompleteOutputs(failure);
        if (failure != null)
        {
            _started.TrySetException(failure);
            if (Kind == AgentSessionKind.Exec) _exit.TrySetException(failure);
            else _exit.TrySetResult(new ExitResult(null, null)); // nobody waits on a connect's exit
        }
        else
        {
            _started.TrySetCanceled();
            _exit.TrySetResult(new ExitResult(null, null));
        }
    }

    private void CompleteOutputs(VmRuntimeException? failure)
    {
        if (_outputsCompleted) return;
        _outputsCompleted = true;
        // The pipes end normally even on failure (a pipe completed with an error drops what is still buffered);
        // AgentOutputStream raises the failure once the data received before it has been read.
        Volatile.Write(ref _outputFailure, failure);
        if (!_stdoutEnded) _stdout.Writer.Complete();
        _stderr?.Writer.Complete();
    }

    private void Expect(bool allowed, AgentFrameType type)
    {
        if (allowed) return;
        string when = _state == State.AwaitingStarted ? "before STARTED" : "now";
        throw Violation($"{Name(type)} is not allowed {when} in a {(Kind == AgentSessionKind.Exec ? (_stderr != null ? "pipe exec" : "pty exec") : "connect")} session");
    }

    private void ExpectLength(AgentFrameType type, uint length, int expected)
    {
        if (length != expected) throw Violation($"{Name(type)} with {length} payload bytes (expected {expected})");
    }

    private VmRuntimeException Truncated(AgentFrameType type) => Violation($"the socket closed in the middle of a {Name(type)} frame");

    private VmRuntimeException Violation(string detail) =>
        _fail(AgentErrors.AgentSessionFailed, $"the agent of VM {_vmId} broke the session protocol ({_request.Description}): {detail}");

    private VmRuntimeException Refused(string message) => _request is AgentConnectRequest c
        ? _fail(AgentErrors.ConnectFailed, $"cannot connect to {c.Host}:{c.Port} inside the VM: {message}")
        : _fail(AgentErrors.AgentSessionFailed, $"the agent of VM {_vmId} refused {_request.Description}: {message}");

    private static string Name(AgentFrameType type) => type switch
    {
        AgentFrameType.Started => "STARTED",
        AgentFrameType.Stdout => "STDOUT",
        AgentFrameType.Stderr => "STDERR",
        AgentFrameType.Exit => "EXIT",
        AgentFrameType.Error => "ERROR",
        AgentFrameType.StdoutEof => "STDOUT_EOF",
        _ => $"0x{(byte)type:x2}",
    };

    /// <summary>The guest's text as it may appear in logs and messages: bounded, one line, no control characters.</summary>
    private static string Printable(string text)
    {
        var sb = new StringBuilder(Math.Min(text.Length, MaxErrorMessageChars));
        foreach (char c in text)
        {
            if (sb.Length == MaxErrorMessageChars) { sb.Append('…'); break; }
            sb.Append(char.IsControl(c) ? ' ' : c);
        }
        string s = sb.ToString().Trim();
        return s.Length == 0 ? "(no message)" : s;
    }

    // ------------------------------------------------------------------ closing

    /// <summary>Closes the socket: the agent sends SIGHUP to a process that still runs. Safe to call more than once.</summary>
    private void Close()
    {
        // Cancel first, so the reader takes what follows as our doing.
        try { _closing.Cancel(); } catch (ObjectDisposedException) { }
        _socket.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Close();
        await _reader.ConfigureAwait(false); // never faults: the loop records its failure instead
    }
}
