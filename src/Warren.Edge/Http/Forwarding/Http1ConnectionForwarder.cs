using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;

namespace Warren.Edge.Http.Forwarding;

/// <summary>
/// Forwards the plainest HTTP/1.1 requests at the connection level, after TLS and before Kestrel's HTTP layer:
/// an anonymous GET or HEAD without a body to a public site's default route goes from the client's decrypted bytes
/// to the VM and back with no HttpContext, header dictionaries or response pipe — nginx's shape (the daemon's CPU per
/// proxied request fell from 49 to 42 µs, docs/PERFORMANCE.md). The first request that is anything else (a body, a token, a login cookie, an
/// upgrade, /__exe.dev, a private or stopped site, a head Kestrel must judge) hands the connection to Kestrel with
/// that request unread, and Kestrel's HTTP layer and <see cref="HttpFrontDoor"/> serve it and the rest of the
/// connection. HTTP/1.1 is one request at a time, so the hand-off point is always a request boundary.
/// </summary>
/// <remarks>
/// What Kestrel's HTTP layer would enforce is enforced here for the requests kept: the keep-alive and
/// request-headers timeouts (checked on Kestrel's per-connection heartbeat), the head size (<see cref="MaxHeadBytes"/>,
/// larger goes to Kestrel, which answers 431), graceful shutdown between requests, and a slow reader's response
/// flush deadline. The headers sent to the VM follow <see cref="ForwardedHeaderRules"/>, as on the other paths. A
/// VM that does not answer properly gets the page the full path gives an anonymous visitor (503, or 502 for an
/// invalid response), after one retry on a new connection when a pooled one turns out closed (HttpClient's rule);
/// a response that breaks after its head aborts the client connection.
/// </remarks>
internal sealed class Http1ConnectionForwarder
{
    /// <summary>A request head larger than this goes to Kestrel (whose limit is 32 KiB).</summary>
    public const int MaxHeadBytes = 16 * 1024;

    /// <summary>A flush to the client that does not drain within this ends the connection (a reader that stopped).</summary>
    public static readonly TimeSpan ResponseFlushTimeout = TimeSpan.FromSeconds(60);

    private readonly LaneSites _sites;
    private readonly Http1Forwarder _forwarder;
    private readonly long _keepAliveMs;
    private readonly long _headersMs;

    public Http1ConnectionForwarder(LaneSites sites, TimeSpan keepAliveTimeout, TimeSpan requestHeadersTimeout)
    {
        _sites = sites;
        _forwarder = sites.Http1;
        _keepAliveMs = (long)keepAliveTimeout.TotalMilliseconds;
        _headersMs = (long)requestHeadersTimeout.TotalMilliseconds;
    }

    /// <summary>Kestrel connection middleware, placed after <c>UseHttps</c>.</summary>
    public Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        // HTTP/2 (ALPN h2) is Kestrel's; no ALPN or http/1.1 is ours to look at.
        var alpn = connection.Features.Get<ITlsApplicationProtocolFeature>()?.ApplicationProtocol ?? default;
        if (!alpn.IsEmpty && !alpn.Span.SequenceEqual("http/1.1"u8))
            return next(connection);
        return ServeAsync(connection, next);
    }

    private enum Next { Continue, Close, HandOff }

    /// <summary>
    /// The connection's loop, one request at a time. It is one async method on purpose: a suspended async method
    /// costs a state-machine box, and nested ones would each cost one per request (with 64 requests in flight the
    /// pooling builder's caches miss); this one's box is allocated once per connection.
    /// </summary>
    private async Task ServeAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        var lane = new Lane(connection);
        connection.Features.Get<IConnectionHeartbeatFeature>()?.OnHeartbeat(static s => ((Lane)s).CheckDeadline(), lane);
        var closing = connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested
            .UnsafeRegister(static s => ((Lane)s!).Connection.Transport.Input.CancelPendingRead(), lane);
        var input = connection.Transport.Input;
        var output = connection.Transport.Output;
        Next step = Next.Continue;
        try
        {
            while (step == Next.Continue)
            {
                // :: The next request's head.
                ReadResult read = default;
                int headLength = 0;
                while (true)
                {
                    if (lane.ClosingRequested)
                    {
                        step = Next.Close;
                        break;
                    }
                    if (!lane.Partial)
                        lane.Deadline.Set(_keepAliveMs); // a partial head keeps the deadline set at its first byte
                    read = await input.ReadAsync().ConfigureAwait(false);
                    var buffer = read.Buffer;
                    if (read.IsCanceled)
                    {
                        // Graceful shutdown between requests; anything half-read goes to Kestrel, which drains it properly.
                        input.AdvanceTo(buffer.Start);
                        step = buffer.IsEmpty ? Next.Close : Next.HandOff;
                        break;
                    }
                    if (buffer.IsEmpty && read.IsCompleted)
                    {
                        input.AdvanceTo(buffer.End);
                        step = Next.Close;
                        break;
                    }
                    if (!lane.RequestSeen)
                    {
                        lane.RequestSeen = true; // the first request's first bytes: the first-request deadline is met
                        FirstRequestDeadline.MarkStarted(connection);
                    }
                    headLength = FindHead(buffer, lane);
                    if (headLength > 0)
                        break;
                    if (headLength == Http1RequestHead.NotPlain || buffer.Length >= MaxHeadBytes || read.IsCompleted)
                    {
                        input.AdvanceTo(buffer.Start);
                        step = Next.HandOff;
                        break;
                    }
                    if (!lane.Partial)
                    {
                        lane.Partial = true; // the headers timeout runs from the request's first byte, as Kestrel's does
                        lane.Deadline.Set(_headersMs);
                    }
                    input.AdvanceTo(buffer.Start, buffer.End);
                }
                if (step != Next.Continue)
                    break;
                lane.Partial = false;
                lane.Deadline.Clear();
                var request = read.Buffer;

                // :: Ours to forward?
                UpstreamEndpoint? route = null;
                if (Http1LaneRules.Inspect(lane.Head.AsSpan(0, headLength), lane.Request, out var laneRequest))
                {
                    lane.IsHead = laneRequest.IsHead;
                    lane.CloseAfterResponse = laneRequest.CloseAfterResponse;
                    lane.Host.Set(lane.Head.AsSpan(laneRequest.HostStart, laneRequest.HostLength));
                    if (lane.Host.VmName(_sites) is { } vmName)
                        route = await _sites.RoutePublicSiteAsync(vmName, lane.RemoteAddress).ConfigureAwait(false);
                }
                if (route is not { } endpoint
                    || !Http1LaneRules.WriteUpstreamHead(lane.Head.AsSpan(0, headLength), lane.Request, lane.Host.Bytes, lane.ClientAddress, lane.Upstream))
                {
                    input.AdvanceTo(request.Start);
                    step = Next.HandOff;
                    break;
                }

                // :: To the VM, and its response head back.
                byte[] receive = lane.Receive;
                UpstreamConnection? upstream = null;
                int filled = 0, responseHeadLength = 0;
                ForwardResult failure = default;
                try
                {
                    for (int attempt = 0; ; attempt++)
                    {
                        upstream = attempt == 0 ? _forwarder.Pool.TryTake(endpoint, Http1Forwarder.CurrentEngineThread()) : null;
                        bool reused = upstream is not null;
                        if (upstream is null)
                        {
                            try
                            {
                                upstream = await _forwarder.Pool.ConnectAsync(endpoint, CancellationToken.None).ConfigureAwait(false);
                            }
                            catch (Exception ex) when (ex is SocketException or OperationCanceledException)
                            {
                                failure = new ForwardResult(ForwardOutcome.ConnectFailed, Error: ex);
                                break;
                            }
                        }
                        filled = 0;
                        try
                        {
                            upstream.Arm(_forwarder.ActivityTimeout);
                            await Http1Forwarder.SendAllAsync(upstream.Socket, lane.Upstream.Written).ConfigureAwait(false);
                            while (Http1Forwarder.TakeResponseHead(upstream.ResponseHead, receive, ref filled, out responseHeadLength, out failure)
                                   == HeadParseStatus.Incomplete)
                            {
                                var pending = upstream.Socket.ReceiveAsync(receive.AsMemory(filled, Http1Forwarder.ReceiveBufferBytes - filled), SocketFlags.None);
                                bool completedLater = !pending.IsCompleted;
                                int n = await pending.ConfigureAwait(false);
                                if (completedLater)
                                    upstream.NoteEngineThread();
                                if (n == 0)
                                {
                                    failure = filled == 0 ? default
                                        : new ForwardResult(ForwardOutcome.BadResponse, "the VM closed the connection inside a response head");
                                    break;
                                }
                                filled += n;
                            }
                        }
                        catch (Exception ex) when (Http1Forwarder.IsConnectionFailure(ex))
                        {
                            bool timedOut = upstream.TimedOut;
                            upstream.Dispose();
                            upstream = null;
                            if (reused && filled == 0 && !timedOut)
                                continue; // the VM had closed the pooled connection: once more on a new one (HttpClient's rule)
                            failure = new ForwardResult(timedOut ? ForwardOutcome.TimedOut : ForwardOutcome.UpstreamFailed, Error: ex);
                            break;
                        }
                        if (failure.Outcome == ForwardOutcome.Completed && filled == 0)
                        {
                            // EOF before any byte.
                            upstream.Dispose();
                            upstream = null;
                            if (reused)
                                continue;
                            failure = new ForwardResult(ForwardOutcome.UpstreamFailed, "the VM closed the connection without a response");
                            break;
                        }
                        var head = upstream.ResponseHead;
                        if (failure.Outcome == ForwardOutcome.Completed && !lane.IsHead && !head.Chunked
                            && head.ContentLength >= 0 && filled - responseHeadLength > head.ContentLength)
                            failure = new ForwardResult(ForwardOutcome.BadResponse, "more bytes than the response's Content-Length");
                        break;
                    }

                    // :: The request is answered from here: consume it, write the VM's response or the page.
                    input.AdvanceTo(request.GetPosition(headLength));
                    _sites.CountRequest();
                    if (failure.Outcome != ForwardOutcome.Completed)
                    {
                        _sites.LogForwardFailed(failure, lane.Host.VmName(_sites)!, endpoint.Port);
                        Http1LaneRules.WritePage(output, Http1LaneRules.PageFor(failure.Outcome), lane.IsHead, lane.CloseAfterResponse);
                        await Http1Forwarder.FlushAsync(output, lane.Deadline).ConfigureAwait(false);
                    }
                    else
                    {
                        bool reusable;
                        try
                        {
                            var head = upstream!.ResponseHead;
                            bool bodyless = lane.IsHead || head.StatusCode is 204 or 304;
                            Http1LaneRules.WriteResponseHead(output, head, receive.AsSpan(0, filled), bodyless, lane.CloseAfterResponse);
                            int leftover = filled - responseHeadLength;
                            if (bodyless)
                            {
                                reusable = head.KeepAlive && leftover == 0;
                                await Http1Forwarder.FlushAsync(output, lane.Deadline).ConfigureAwait(false);
                            }
                            else
                                reusable = await _forwarder.CopyBodyAsync(upstream, head, output, receive, responseHeadLength, leftover, chunkToClient: true, lane.Deadline).ConfigureAwait(false);
                        }
                        catch (Exception ex) when (Http1Forwarder.IsConnectionFailure(ex) || ex is InvalidResponseException)
                        {
                            // Half a response cannot become an error page: the client must see the break.
                            connection.Abort(new ConnectionAbortedException("the VM's response broke off"));
                            step = Next.Close;
                            break;
                        }
                        if (reusable && upstream.Disarm())
                        {
                            upstream.Uses++;
                            _forwarder.Pool.Return(upstream);
                            upstream = null;
                        }
                    }
                }
                finally
                {
                    upstream?.Dispose();
                }
                if (lane.CloseAfterResponse)
                    step = Next.Close;
            }
        }
        catch (Exception ex) when (ex is IOException or ConnectionAbortedException or ConnectionResetException or OperationCanceledException or ObjectDisposedException)
        {
            step = Next.Close; // the client or the deadline ended the connection
        }
        finally
        {
            // Kestrel's HTTP layer owns the connection from here: no deadline or cancelled read of ours may reach it.
            closing?.Dispose();
            lane.Deadline.Clear();
            lane.Dispose();
        }
        if (step == Next.HandOff)
            await next(connection).ConfigureAwait(false);
    }

    /// <summary>
    /// The head's length when a whole one is buffered (copied to the lane's array), else <see cref="Http1RequestHead.FindEnd"/>'s
    /// -1 (wait for more) or <see cref="Http1RequestHead.NotPlain"/>.
    /// </summary>
    private static int FindHead(ReadOnlySequence<byte> buffer, Lane lane)
    {
        if (buffer.IsSingleSegment)
        {
            var span = buffer.FirstSpan;
            int end = Http1RequestHead.FindEnd(span.Length > MaxHeadBytes ? span[..MaxHeadBytes] : span);
            if (end > 0)
                span[..end].CopyTo(lane.Head);
            return end;
        }
        int length = (int)Math.Min(buffer.Length, MaxHeadBytes);
        buffer.Slice(0, length).CopyTo(lane.Head);
        return Http1RequestHead.FindEnd(lane.Head.AsSpan(0, length));
    }

    /// <summary>One connection's state while it stays on this path.</summary>
    private sealed class Lane : IDisposable
    {
        public Lane(ConnectionContext connection)
        {
            Connection = connection;
            _lifetime = connection.Features.Get<IConnectionLifetimeNotificationFeature>();
            RemoteAddress = (connection.RemoteEndPoint as IPEndPoint)?.Address;
            ClientAddress = Encoding.ASCII.GetBytes(RemoteAddress?.ToString() ?? "unknown");
        }

        public ConnectionContext Connection { get; }
        public IPAddress? RemoteAddress { get; }
        public byte[] ClientAddress { get; }
        public byte[] Head { get; } = ArrayPool<byte>.Shared.Rent(MaxHeadBytes);
        public byte[] Receive { get; } = ArrayPool<byte>.Shared.Rent(Http1Forwarder.ReceiveBufferBytes);
        public Http1RequestHead Request { get; } = new();
        public ByteBuffer Upstream { get; } = new(1024, MaxHeadBytes * 2);
        public bool Partial { get; set; }
        public bool IsHead { get; set; }
        public bool CloseAfterResponse { get; set; }

        /// <summary>When the heartbeat aborts the connection: waiting for a request, its head, or a flush.</summary>
        public ConnectionDeadline Deadline { get; } = new(ResponseFlushTimeout);

        /// <summary>Bytes of a first request have arrived (<see cref="FirstRequestDeadline"/>).</summary>
        public bool RequestSeen { get; set; }

        private readonly IConnectionLifetimeNotificationFeature? _lifetime;

        public bool ClosingRequested => _lifetime?.ConnectionClosedRequested.IsCancellationRequested == true;

        /// <summary>The requests' Host and the VM it routes to.</summary>
        public LaneHost Host { get; } = new();

        public void CheckDeadline()
        {
            if (Deadline.Expired)
                Connection.Abort(new ConnectionAbortedException("timed out"));
        }

        public void Dispose()
        {
            ArrayPool<byte>.Shared.Return(Head);
            ArrayPool<byte>.Shared.Return(Receive);
            Upstream.Dispose();
        }
    }
}

/// <summary>
/// A point in time after which a connection is given up, checked from outside (Kestrel's heartbeat) so that the
/// hot path only writes a number. <see cref="FlushTimeoutMs"/> is the budget of one flush to the client.
/// </summary>
internal sealed class ConnectionDeadline(TimeSpan flushTimeout)
{
    private long _at = long.MaxValue;

    public long FlushTimeoutMs { get; } = (long)flushTimeout.TotalMilliseconds;

    public bool Expired => Environment.TickCount64 > Volatile.Read(ref _at);

    public void Set(long milliseconds) => Volatile.Write(ref _at, Environment.TickCount64 + milliseconds);

    public void Clear() => Volatile.Write(ref _at, long.MaxValue);
}

/// <summary>The <c>Date</c> field line for responses written below Kestrel, rebuilt at most once a second.</summary>
internal static class ResponseDate
{
    private static byte[] s_line = [];
    private static long s_second = -1;

    public static byte[] Line()
    {
        long second = Environment.TickCount64 / 1000;
        if (second != Volatile.Read(ref s_second))
        {
            s_line = Encoding.ASCII.GetBytes("Date: " + DateTime.UtcNow.ToString("r", System.Globalization.CultureInfo.InvariantCulture) + "\r\n");
            Volatile.Write(ref s_second, second);
        }
        return s_line;
    }
}
