using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace Warren.Edge.Http.Forwarding;

/// <summary>What became of one forwarded request.</summary>
internal enum ForwardOutcome
{
    Completed,
    /// <summary>No connection could be made to the VM's port (nothing listens, VM stopped).</summary>
    ConnectFailed,
    /// <summary>The VM's answer broke HTTP/1.1 (a <see cref="ForwardResult.Detail"/> says how), before anything reached the client.</summary>
    BadResponse,
    /// <summary>The VM went silent for the activity timeout before its response head.</summary>
    TimedOut,
    /// <summary>The connection to the VM failed before its response head.</summary>
    UpstreamFailed,
    /// <summary>The client's request body was refused (too large, too slow, malformed); <see cref="ForwardResult.StatusCode"/> says how.</summary>
    RequestBodyRejected,
    /// <summary>Something failed after the response started (the client connection was aborted) or the client went away.</summary>
    Aborted,
}

internal readonly record struct ForwardResult(ForwardOutcome Outcome, string? Detail = null, Exception? Error = null, int StatusCode = 0)
{
    public static readonly ForwardResult Completed = new(ForwardOutcome.Completed);
}

/// <summary>
/// The front door's HTTP/1.1 forwarder: every request that is not a protocol upgrade goes to the VM over a
/// pooled keep-alive connection, written and parsed here with pooled buffers — no per-request
/// HttpRequestMessage/HttpResponseMessage, header collections or content streams. The response is copied
/// into Kestrel's response pipe (received straight into its buffers when the length is known), so the same
/// code serves HTTP/1.1 and HTTP/2 clients.
/// </summary>
/// <remarks>
/// Header rules are <see cref="ForwardedHeaderRules"/>'s (shared with the YARP path that carries upgrades).
/// Framing toward the VM: the client's Content-Length when it has one, otherwise chunked when the request can
/// have a body (HTTP/1.1 chunked, HTTP/2 without a length). A reused connection that the VM had closed fails
/// before any response byte; the request is then sent once more on a new connection when it was sent whole
/// (HttpClient's rule); a request whose body is streamed gets a liveness check before it may reuse one.
/// Bodies up to <see cref="CoalescedBodyBytes"/> are read first and sent with the head in one write.
/// A response is reused only when it ended exactly where its framing says and the request body was all sent.
/// </remarks>
internal sealed class Http1Forwarder : IDisposable
{
    /// <summary>Request bodies up to this size travel in the same write as the head.</summary>
    public const int CoalescedBodyBytes = 16 * 1024;

    internal const int ReceiveBufferBytes = 16 * 1024;
    private const int MaxRequestHeadBytes = 128 * 1024;

    private readonly UpstreamConnectionPool _pool;
    private readonly TimeSpan _activityTimeout;

    public Http1Forwarder(TimeSpan connectTimeout, TimeSpan activityTimeout, TimeProvider? time = null)
    {
        _pool = new UpstreamConnectionPool(connectTimeout, time);
        _activityTimeout = activityTimeout;
    }

    internal TimeSpan ActivityTimeout => _activityTimeout;

    public void Dispose() => _pool.Dispose();

    internal enum BodyMode { None, ContentLength, Chunked }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<ForwardResult> ForwardAsync(HttpContext context, UpstreamEndpoint endpoint, ForwardState? state)
    {
        var head = new ByteBuffer(4096, MaxRequestHeadBytes);
        byte[] receive = ArrayPool<byte>.Shared.Rent(ReceiveBufferBytes);
        UpstreamConnection? connection = null;
        Task? bodyTask = null;
        try
        {
            if (!TryWriteRequestHead(context, state, head, out var mode, out long declaredLength, out string? headError))
                return new ForwardResult(ForwardOutcome.RequestBodyRejected, headError, StatusCode: StatusCodes.Status400BadRequest);

            bool wholeRequestInHead = mode == BodyMode.None;
            if (mode == BodyMode.ContentLength && declaredLength <= CoalescedBodyBytes)
            {
                var bodyError = await ReadSmallBodyAsync(context.Request.BodyReader, declaredLength, head).ConfigureAwait(false);
                if (bodyError is not null)
                    return bodyError.Value;
                wholeRequestInHead = true;
            }

            int filled = 0, headLength = 0;
            for (int attempt = 0; ; attempt++)
            {
                connection = attempt == 0 ? _pool.TryTake(endpoint, CurrentEngineThread()) : null;
                bool reused = connection is not null;
                // A streamed body cannot be sent twice: such a request takes a pooled connection only when the
                // VM has not closed it (readable while idle means EOF or stray bytes — either way unusable).
                if (connection is not null && !wholeRequestInHead && connection.Socket.Poll(0, SelectMode.SelectRead))
                {
                    connection.Dispose();
                    connection = null;
                    reused = false;
                }
                if (connection is null)
                {
                    try
                    {
                        connection = await _pool.ConnectAsync(endpoint, context.RequestAborted).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is SocketException or OperationCanceledException)
                    {
                        return context.RequestAborted.IsCancellationRequested
                            ? new ForwardResult(ForwardOutcome.Aborted, Error: ex)
                            : new ForwardResult(ForwardOutcome.ConnectFailed, Error: ex);
                    }
                }

                using var aborted = context.RequestAborted.UnsafeRegister(static s => ((UpstreamConnection)s!).Dispose(), connection);
                try
                {
                    connection.Arm(_activityTimeout);
                    await SendAllAsync(connection.Socket, head.Written).ConfigureAwait(false);
                    if (!wholeRequestInHead)
                        bodyTask = SendBodyAsync(context.Request.BodyReader, connection, mode, declaredLength);

                    var responseHead = connection.ResponseHead;
                    (filled, headLength, var parse) = await ReceiveHeadAsync(connection, responseHead, receive, 0).ConfigureAwait(false);
                    if (parse.Outcome == ForwardOutcome.Completed && filled == 0)
                    {
                        // EOF before any byte: a reused connection the VM had already closed.
                        if (reused && wholeRequestInHead)
                        {
                            connection.Dispose();
                            continue;
                        }
                        return new ForwardResult(ForwardOutcome.UpstreamFailed, "the VM closed the connection without a response");
                    }
                    if (parse.Outcome != ForwardOutcome.Completed)
                    {
                        // No response is coming on this connection: the rest of the body goes nowhere, so it is
                        // not waited for (a VM that stopped reading, or a client that waits for the answer, would
                        // hold it up); only the client's own body error wins over the VM's.
                        if (bodyTask is not null && await BodyFailureAsync(bodyTask, connection, waitForCompletion: false, context.Request.BodyReader).ConfigureAwait(false)
                            is { Outcome: ForwardOutcome.RequestBodyRejected } bodyFailure)
                            return bodyFailure;
                        return parse;
                    }
                }
                catch (Exception ex) when (IsConnectionFailure(ex))
                {
                    if (bodyTask is not null && await BodyFailureAsync(bodyTask, connection, waitForCompletion: false, context.Request.BodyReader).ConfigureAwait(false)
                        is { Outcome: ForwardOutcome.RequestBodyRejected } bodyFailure)
                        return bodyFailure;
                    if (reused && wholeRequestInHead && filled == 0 && !connection.TimedOut && !context.RequestAborted.IsCancellationRequested)
                    {
                        connection.Dispose();
                        continue;
                    }
                    return Failure(context, connection, ex);
                }

                // :: The response
                try
                {
                    bool reusable = await CopyResponseAsync(context, connection, connection.ResponseHead, receive, filled, headLength).ConfigureAwait(false);
                    if (bodyTask is not null)
                    {
                        // The VM answered before taking the whole body (e.g. an early 413): the rest cannot follow
                        // on this connection.
                        if (!bodyTask.IsCompleted)
                            reusable = false;
                        if (await BodyFailureAsync(bodyTask, connection, waitForCompletion: reusable, context.Request.BodyReader).ConfigureAwait(false) is not null)
                            reusable = false;
                    }
                    if (reusable && connection.Disarm())
                    {
                        connection.Uses++;
                        _pool.Return(connection);
                    }
                    else
                        connection.Dispose();
                    connection = null;
                    return ForwardResult.Completed;
                }
                catch (Exception ex) when (IsConnectionFailure(ex) || ex is InvalidResponseException)
                {
                    return Failure(context, connection!, ex);
                }
            }
        }
        finally
        {
            connection?.Dispose();
            if (bodyTask is not null)
            {
                // Its connection is closed; a read of the client's body must not keep this request waiting either.
                if (!bodyTask.IsCompleted)
                    context.Request.BodyReader.CancelPendingRead();
                await ObserveAsync(bodyTask).ConfigureAwait(false);
            }
            ArrayPool<byte>.Shared.Return(receive);
            head.Dispose();
        }
    }

    /// <summary>The socket engine thread this code runs on (inline completions), or 0 on the thread pool.</summary>
    internal static int CurrentEngineThread() =>
        Thread.CurrentThread.IsThreadPoolThread ? 0 : Environment.CurrentManagedThreadId;

    internal static bool IsConnectionFailure(Exception ex) =>
        ex is SocketException or ObjectDisposedException or IOException or OperationCanceledException;

    private static ForwardResult Failure(HttpContext context, UpstreamConnection connection, Exception ex)
    {
        connection.Dispose();
        // Body bytes already written to the response pipe cannot be taken back either, flushed or not.
        if (context.Response.HasStarted || context.Response.BodyWriter.UnflushedBytes > 0)
        {
            // Half a response cannot be turned into an error page: the client must see the break.
            context.Abort();
            return new ForwardResult(ForwardOutcome.Aborted, ex is InvalidResponseException ? ex.Message : null, ex);
        }
        // The VM's status and headers may have been copied already (its Content-Length, Set-Cookie…): the error
        // page the caller writes must not carry them.
        context.Response.Clear();
        if (context.RequestAborted.IsCancellationRequested)
            return new ForwardResult(ForwardOutcome.Aborted, Error: ex);
        if (ex is InvalidResponseException)
            return new ForwardResult(ForwardOutcome.BadResponse, ex.Message);
        if (connection.TimedOut)
            return new ForwardResult(ForwardOutcome.TimedOut, Error: ex);
        return new ForwardResult(ForwardOutcome.UpstreamFailed, Error: ex);
    }

    /// <summary>
    /// The body task's failure as a result when it was the client's body that failed (too large, too slow,
    /// malformed); null when it succeeded or only failed because the VM side went away.
    /// </summary>
    private static async ValueTask<ForwardResult?> BodyFailureAsync(Task bodyTask, UpstreamConnection connection, bool waitForCompletion, PipeReader reader)
    {
        if (!bodyTask.IsCompleted)
        {
            if (!waitForCompletion)
            {
                // Stops the body task wherever it is: in a send (the socket closes) or waiting for the client's
                // next bytes (the read is cancelled) — the client may be waiting for this response before it sends more.
                connection.Dispose();
                reader.CancelPendingRead();
            }
            await ObserveAsync(bodyTask).ConfigureAwait(false);
        }
        if (bodyTask.Exception?.InnerException is BadHttpRequestException bad)
            return new ForwardResult(ForwardOutcome.RequestBodyRejected, bad.Message, bad, bad.StatusCode);
        return bodyTask.IsCompletedSuccessfully ? null : new ForwardResult(ForwardOutcome.UpstreamFailed, Error: bodyTask.Exception?.InnerException);
    }

    private static async Task ObserveAsync(Task task)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch
        {
            // Observed: the caller reports what matters from the response side.
        }
    }

    // ------------------------------------------------------------------ request

    /// <summary>Reads a small request body whole and appends it to the head; an error result when the client's body fails.</summary>
    private static async ValueTask<ForwardResult?> ReadSmallBodyAsync(PipeReader reader, long length, ByteBuffer head)
    {
        long remaining = length;
        try
        {
            while (remaining > 0)
            {
                var result = await reader.ReadAsync().ConfigureAwait(false);
                var buffer = result.Buffer;
                long take = Math.Min(buffer.Length, remaining);
                foreach (var segment in buffer.Slice(0, take))
                    head.Append(segment.Span);
                remaining -= take;
                reader.AdvanceTo(buffer.GetPosition(take));
                if (remaining > 0 && result.IsCompleted)
                    return new ForwardResult(ForwardOutcome.RequestBodyRejected, "request body shorter than its Content-Length", StatusCode: StatusCodes.Status400BadRequest);
            }
        }
        catch (BadHttpRequestException bad)
        {
            return new ForwardResult(ForwardOutcome.RequestBodyRejected, bad.Message, bad, bad.StatusCode);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException)
        {
            return new ForwardResult(ForwardOutcome.Aborted, Error: ex);
        }
        return null;
    }

    private async Task SendBodyAsync(PipeReader reader, UpstreamConnection connection, BodyMode mode, long declaredLength)
    {
        byte[] frame = ArrayPool<byte>.Shared.Rent(32);
        long sent = 0;
        ReadResult result = default;
        bool reading = false;
        try
        {
            while (true)
            {
                result = await reader.ReadAsync().ConfigureAwait(false);
                reading = true;
                if (result.IsCanceled)
                    throw new OperationCanceledException("the request body is no longer forwarded");
                var buffer = result.Buffer;
                if (!buffer.IsEmpty)
                {
                    if (mode == BodyMode.ContentLength && sent + buffer.Length > declaredLength)
                        throw new IOException("request body longer than its Content-Length");
                    if (mode == BodyMode.Chunked)
                    {
                        // The previous chunk's closing CRLF travels with this chunk's size line: one send fewer.
                        int n = WriteChunkSize(frame, buffer.Length, closePrevious: sent > 0);
                        connection.Arm(_activityTimeout);
                        await SendAllAsync(connection.Socket, frame.AsMemory(0, n)).ConfigureAwait(false);
                    }
                    foreach (var segment in buffer)
                    {
                        connection.Arm(_activityTimeout);
                        await SendAllAsync(connection.Socket, segment).ConfigureAwait(false);
                    }
                    sent += buffer.Length;
                }
                reading = false;
                reader.AdvanceTo(buffer.End);
                if (result.IsCompleted)
                    break;
            }
            if (mode == BodyMode.ContentLength && sent != declaredLength)
                throw new IOException("request body shorter than its Content-Length");
            if (mode == BodyMode.Chunked)
                await SendAllAsync(connection.Socket, sent > 0 ? s_closeAndLastChunk : s_lastChunk).ConfigureAwait(false);
        }
        catch
        {
            // The VM must not take a truncated body for a whole one.
            connection.Dispose();
            // A read left open would fail Kestrel's own drain of the rest of the body (and with it the client connection).
            if (reading)
            {
                try
                {
                    reader.AdvanceTo(result.Buffer.End);
                }
                catch (InvalidOperationException)
                {
                    // The reader is already done with: nothing to release.
                }
            }
            throw;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(frame);
        }
    }

    private static readonly ReadOnlyMemory<byte> s_lastChunk = "0\r\n\r\n"u8.ToArray();
    private static readonly ReadOnlyMemory<byte> s_closeAndLastChunk = "\r\n0\r\n\r\n"u8.ToArray();

    /// <summary><c>[CRLF] size-in-hex CRLF</c> into <paramref name="frame"/>; returns its length.</summary>
    private static int WriteChunkSize(byte[] frame, long size, bool closePrevious)
    {
        int n = 0;
        if (closePrevious)
        {
            frame[n++] = (byte)'\r';
            frame[n++] = (byte)'\n';
        }
        size.TryFormat(frame.AsSpan(n), out int digits, "x", System.Globalization.CultureInfo.InvariantCulture);
        n += digits;
        frame[n++] = (byte)'\r';
        frame[n++] = (byte)'\n';
        return n;
    }

    internal static async ValueTask SendAllAsync(Socket socket, ReadOnlyMemory<byte> data)
    {
        while (!data.IsEmpty)
        {
            int n = await socket.SendAsync(data, SocketFlags.None).ConfigureAwait(false);
            data = data[n..];
        }
    }

    /// <summary>The VM's request head from Kestrel's parse of the client's (<see cref="UpstreamHeadWriter"/>: the one writer of both paths).</summary>
    internal static bool TryWriteRequestHead(HttpContext context, ForwardState? state, ByteBuffer head,
        out BodyMode mode, out long declaredLength, out string? error)
    {
        var request = context.Request;
        error = null;
        declaredLength = -1;
        mode = BodyMode.None;
        var writer = new UpstreamHeadWriter(head);

        string? rawTarget = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        string target = rawTarget is { Length: > 0 } && (rawTarget[0] == '/' || rawTarget == "*") && IsCleanTarget(rawTarget)
            ? rawTarget
            : request.PathBase.ToUriComponent() + request.Path.ToUriComponent() + request.QueryString.ToUriComponent();
        string host = request.Host.Value ?? "";
        if (!writer.Start(request.Method, target, host))
            return Fail("invalid Host", out error);

        var headers = request.Headers;
        StringValues connectionTokens = headers.Connection;
        bool removeAuthorization = state?.RemoveAuthorization == true;
        foreach (var (name, values) in headers)
        {
            if (ForwardedHeaderRules.IsReplacedRequestHeader(name, removeAuthorization)
                || ForwardedHeaderRules.IsNamedBy(connectionTokens, name))
                continue;
            if (!ForwardedHeaderRules.IsValidName(name))
                return Fail("invalid header name", out error);
            foreach (string? value in values)
            {
                if (value is not null && !writer.ClientField(name, value))
                    return Fail("invalid header value", out error);
            }
        }

        if (!writer.Cookie(ForwardedHeaderRules.ForwardedCookie(headers.Cookie)))
            return Fail("invalid Cookie", out error);
        if (context.Connection.RemoteIpAddress?.ToString() is { } client)
        {
            writer.StartForwardedFor();
            foreach (string? value in headers[ForwardedHeaderRules.ForwardedForHeader])
            {
                if (!writer.ForwardedForEntry(value))
                    return Fail("invalid X-Forwarded-For", out error);
            }
            writer.ForwardedForPeer(client);
        }
        writer.ProtoAndHost(request.Scheme, host);
        if (!writer.Identity(state?.User, state?.TokenCtx))
            return Fail("invalid identity or token context", out error);

        if (request.ContentLength is long length)
        {
            mode = length == 0 ? BodyMode.None : BodyMode.ContentLength;
            declaredLength = length;
            writer.ContentLength(length);
        }
        else if (context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody == true)
        {
            mode = BodyMode.Chunked;
            writer.Chunked();
        }
        if (!writer.End())
            return Fail("request head too large", out error);
        return true;
    }

    private static bool Fail(string message, out string? error)
    {
        error = message;
        return false;
    }

    /// <summary>Kestrel has validated the target; this only guards the one line it is written into.</summary>
    private static bool IsCleanTarget(string target)
    {
        foreach (char c in target)
        {
            if (c <= ' ' || c >= 0x7F)
                return false;
        }
        return true;
    }

    // ------------------------------------------------------------------ response

    /// <summary>Receives until a final (non-1xx) response head is parsed; returns the bytes held and the head's length.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<(int Filled, int HeadLength, ForwardResult Result)> ReceiveHeadAsync(
        UpstreamConnection connection, Http1ResponseHead head, byte[] buffer, int filled)
    {
        while (true)
        {
            var status = TakeResponseHead(head, buffer, ref filled, out int headLength, out var failure);
            if (status == HeadParseStatus.Complete)
                return (filled, headLength, ForwardResult.Completed);
            if (status == HeadParseStatus.Invalid)
                return (filled, 0, failure);
            var pending = connection.Socket.ReceiveAsync(buffer.AsMemory(filled, ReceiveBufferBytes - filled), SocketFlags.None);
            bool completedLater = !pending.IsCompleted;
            int n = await pending.ConfigureAwait(false);
            if (completedLater)
                connection.NoteEngineThread();
            if (n == 0)
            {
                return filled == 0
                    ? (0, 0, ForwardResult.Completed)
                    : (filled, 0, new ForwardResult(ForwardOutcome.BadResponse, "the VM closed the connection inside a response head"));
            }
            filled += n;
        }
    }

    /// <summary>
    /// Judges the first <paramref name="filled"/> bytes of <paramref name="buffer"/>: Complete with a final head of
    /// <paramref name="headLength"/> bytes (1xx heads before it are dropped from the buffer), Incomplete when more
    /// must be received, or Invalid (<paramref name="failure"/> says why). A head must fit in the receive buffer
    /// (<see cref="ReceiveBufferBytes"/>, 16 KiB; nginx's proxy_buffer_size is 4–8 KiB and it answers 502 "upstream
    /// sent too big header" the same way).
    /// </summary>
    internal static HeadParseStatus TakeResponseHead(Http1ResponseHead head, byte[] buffer, ref int filled, out int headLength, out ForwardResult failure)
    {
        headLength = 0;
        failure = ForwardResult.Completed;
        while (filled > 0)
        {
            var status = head.TryParse(buffer.AsSpan(0, filled), out int consumed, out string? error);
            if (status == HeadParseStatus.Invalid)
            {
                failure = new ForwardResult(ForwardOutcome.BadResponse, error);
                return status;
            }
            if (status == HeadParseStatus.Incomplete)
            {
                if (filled < ReceiveBufferBytes)
                    return status;
                failure = new ForwardResult(ForwardOutcome.BadResponse, "response head too large");
                return HeadParseStatus.Invalid;
            }
            if (!head.IsInformational)
            {
                headLength = consumed;
                return status;
            }
            // 100/102/103 are dropped (Kestrel answers Expect itself); 101 is never asked for.
            if (head.StatusCode == StatusCodes.Status101SwitchingProtocols)
            {
                failure = new ForwardResult(ForwardOutcome.BadResponse, "unrequested protocol switch");
                return HeadParseStatus.Invalid;
            }
            buffer.AsSpan(consumed, filled - consumed).CopyTo(buffer);
            filled -= consumed;
        }
        return HeadParseStatus.Incomplete;
    }

    /// <summary>Copies status, headers and body to the client; true when the connection ended the message cleanly.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> CopyResponseAsync(HttpContext context, UpstreamConnection connection, Http1ResponseHead head,
        byte[] buffer, int filled, int headLength)
    {
        var response = context.Response;
        response.StatusCode = head.StatusCode;
        var headers = response.Headers;
        var bytes = buffer.AsSpan(0, filled);
        foreach (var field in head.Headers)
        {
            var name = bytes.Slice(field.NameStart, field.NameLength);
            if (!ForwardedHeaderRules.IsRelayedResponseField(head, bytes, name))
                continue;
            var valueBytes = bytes.Slice(field.ValueStart, field.ValueLength);
            string? knownName = ForwardedHeaderRules.KnownResponseHeaderName(name);
            string nameString = knownName ?? Encoding.Latin1.GetString(name);
            string value = knownName is null ? Encoding.Latin1.GetString(valueBytes) : connection.ResponseValues.Get(knownName, valueBytes);
            if (ReferenceEquals(nameString, HeaderNames.SetCookie))
                value = HeaderParsing.RemoveDomainAttribute(value);
            headers.Append(nameString, value);
        }
        if (ResponseFraming.AnnouncedLength(head) is >= 0 and var length)
            response.ContentLength = length;

        int leftover = filled - headLength;
        var framing = ResponseFraming.Start(head, HttpMethods.IsHead(context.Request.Method), leftover);
        if (framing.Mode == ResponseBodyMode.None)
            return framing.Reusable;
        return await CopyBodyAsync(connection, framing, response.BodyWriter, buffer, headLength, leftover).ConfigureAwait(false);
    }

    /// <summary>
    /// Copies the body after a response head (the first <paramref name="leftover"/> bytes already at
    /// <paramref name="start"/> in <paramref name="buffer"/>) to <paramref name="writer"/> as data only (Kestrel frames
    /// it for the client), under <see cref="ResponseFraming"/>'s rules; true when the VM connection ended the message cleanly.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> CopyBodyAsync(UpstreamConnection connection, ResponseFraming framing, PipeWriter writer,
        byte[] buffer, int start, int leftover)
    {
        if (leftover > 0 && !framing.Take(buffer.AsSpan(start, leftover), writer, chunkToClient: false))
            throw new InvalidResponseException(framing.Error!);
        while (!framing.Done)
        {
            // Flushed first: memory from GetMemory is only valid until the next flush (before the response has
            // started, Kestrel hands out a temporary segment that the first flush copies and returns to its pool).
            if (!(await FlushAsync(writer).ConfigureAwait(false)))
                return false;
            connection.Arm(_activityTimeout);
            if (framing.Mode is ResponseBodyMode.Length or ResponseBodyMode.UntilClose)
            {
                // Received straight into the response pipe's memory: one copy less than a staging buffer.
                int want = framing.Mode == ResponseBodyMode.Length ? (int)Math.Min(framing.Remaining, ReceiveBufferBytes) : ReceiveBufferBytes;
                var memory = writer.GetMemory(want)[..want];
                int received = await connection.Socket.ReceiveAsync(memory, SocketFlags.None).ConfigureAwait(false);
                if (received == 0)
                {
                    if (!framing.TakeEnd(writer, chunkToClient: false))
                        throw new InvalidResponseException(framing.Error!);
                    continue;
                }
                writer.Advance(received);
                if (framing.Mode == ResponseBodyMode.Length)
                    framing.Counted(received);
                continue;
            }
            int n = await connection.Socket.ReceiveAsync(buffer.AsMemory(0, ReceiveBufferBytes), SocketFlags.None).ConfigureAwait(false);
            if (n == 0 ? !framing.TakeEnd(writer, chunkToClient: false) : !framing.Take(buffer.AsSpan(0, n), writer, chunkToClient: false))
                throw new InvalidResponseException(framing.Error!);
        }
        await FlushAsync(writer).ConfigureAwait(false);
        return framing.Reusable;
    }

    /// <summary>Flushes to the client; false when the client is gone (nothing more to copy).</summary>
    internal static async ValueTask<bool> FlushAsync(PipeWriter writer)
    {
        if (writer.UnflushedBytes == 0)
            return true;
        var result = await writer.FlushAsync().ConfigureAwait(false);
        return !result.IsCanceled && !result.IsCompleted;
    }
}

/// <summary>The VM's response broke HTTP/1.1 after its head was accepted.</summary>
internal sealed class InvalidResponseException(string message) : Exception(message);
