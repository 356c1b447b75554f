using System.Buffers;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using Warren.Edge.Http.Forwarding;
using Warren.Ssh.Server;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// One client connection on an <see cref="EventLoop"/>: the TLS handshake, then plain anonymous GET/HEAD requests
/// to public sites forwarded to the VM on the loop thread (<see cref="Http1LaneRules"/>; the VM's head written by
/// <see cref="UpstreamHeadWriter"/>, its answer framed by <see cref="ResponseFraming"/>, both shared with the full
/// path), until the first request that is anything else — then the connection, with that request
/// unread, goes to Kestrel's HTTP layer (<see cref="NativeHttpsFrontDoor.HandOff"/>). HTTP/2 (ALPN h2) goes there
/// right after the handshake.
/// </summary>
/// <remarks>
/// A state machine driven by <see cref="Advance"/>, called for every event on the client's or its VM connection's
/// descriptor: each step tries its operation and returns false when it must wait. Buffers are rented for a request
/// and returned between requests, so an idle keep-alive connection holds only its TLS session (and its two head
/// writers, emptied: kept so that a request allocates nothing). The request head
/// must fit in <see cref="Http1LaneRules.MaxHeadBytes"/> (larger goes to Kestrel, which answers 431), the
/// VM's response head in <see cref="Http1Forwarder.ReceiveBufferBytes"/> (else 502, as nginx's "too big header").
/// A response body is relayed a receive buffer at a time: the next read from the VM waits until the client has
/// taken the previous one, so a slow client holds back the VM, never the daemon's memory.
/// </remarks>
internal sealed class LaneConnection
{
    private enum State { Handshake, ReadHead, Routing, Upstream, Respond, Closed }
    private enum UpstreamPhase { Acquire, Send, ReadHead }

    private const int OutputLimit = Http1Forwarder.ReceiveBufferBytes * 4 + Http1LaneRules.MaxHeadBytes;

    private readonly EventLoop _loop;
    private readonly NativeHttpsFrontDoor _owner;
    private readonly SafeDescriptor _fd;
    private readonly TlsSession _session;
    private readonly IPEndPoint _local;
    private readonly IPEndPoint _remote;
    private byte[]? _clientAddress;

    private State _state = State.Handshake;

    /// <summary>
    /// A readiness event came since SSL_read last said it wants more: only then is a read worth a system call
    /// (with edge-triggered epoll the event for bytes that arrived while a response was being written has already
    /// been delivered, so it is remembered here; bytes OpenSSL buffered are <see cref="TlsSession.HasBufferedInput"/>).
    /// </summary>
    private bool _clientReadable = true;

    /// <summary>The client closed or the connection failed (sticky): reads go on until they report it.</summary>
    private bool _clientHungUp;
    private long _deadline;

    // Request head: decrypted bytes, possibly followed by pipelined ones.
    private byte[]? _head;
    private int _headFilled;
    private int _headLength;
    private readonly Http1RequestHead _request = new();
    private bool _isHead;
    private bool _closeAfterResponse;
    private readonly LaneHost _host = new();

    // The VM side of the current request.
    private UpstreamEndpoint _endpoint;
    private UpstreamPhase _phase;
    private UpstreamSocket? _upstream;
    private bool _reused;
    private int _attempt;
    private ByteBuffer? _upstreamHead;
    private int _upstreamSent;
    private byte[]? _receive;
    private int _filled;
    private int _responseHeadLength;
    private readonly Http1ResponseHead _responseHead = new();

    // The client side of the current response.
    private ByteBuffer? _output;
    private int _outputSent;
    private ResponseFraming _framing;

    /// <summary>Counted in <see cref="NativeHttpsFrontDoor.ConnectionLimit"/> until the connection closes or leaves the loop.</summary>
    private readonly SourceNetwork _source;

    /// <summary>A request has begun: from now on the keep-alive timeout applies between requests, not the first-request one.</summary>
    private bool _requestSeen;

    public LaneConnection(EventLoop loop, SafeDescriptor fd, IPEndPoint local, IPEndPoint remote, SourceNetwork source)
    {
        _loop = loop;
        _owner = loop.Owner;
        _fd = fd;
        _local = local;
        _remote = remote;
        _source = source;
        _session = _owner.Tls.NewSession(fd);
        _deadline = _owner.NowMs + _owner.HandshakeTimeoutMs;
    }

    /// <summary>Position in the loop's connection list.</summary>
    public int Index { get; set; } = -1;

    /// <summary>Between requests with nothing buffered: may be closed at once on shutdown.</summary>
    public bool IsIdle => _state is State.Handshake or State.ReadHead && _headFilled == 0;

    public void OnClientEvent(bool readable, bool hangUp)
    {
        _clientReadable |= readable;
        _clientHungUp |= hangUp;
        Advance();
    }

    public void Advance()
    {
        while (true)
        {
            bool more = _state switch
            {
                State.Handshake => StepHandshake(),
                State.ReadHead => StepReadHead(),
                State.Upstream => StepUpstream(),
                State.Respond => StepRespond(),
                _ => false,
            };
            if (!more)
                return;
        }
    }

    public void CheckDeadline(long now)
    {
        if (_state == State.Closed || now < _deadline)
            return;
        if (_state is State.Routing or State.Upstream)
        {
            // The VM did not answer in time: the visitor gets the page, as on the other paths.
            Fail(new ForwardResult(ForwardOutcome.TimedOut, "the VM did not answer in time"));
            Advance();
            return;
        }
        Close();
    }

    private bool StepHandshake()
    {
        switch (_session.Handshake())
        {
            case TlsStatus.Done:
                if (!_owner.LaneEnabled || _session.ApplicationProtocol == SslApplicationProtocol.Http2)
                {
                    HandOff();
                    return false;
                }
                EnterReadHead();
                return true;
            case TlsStatus.WantRead:
            case TlsStatus.WantWrite:
                return false;
            default:
                Close();
                return false;
        }
    }

    private void EnterReadHead()
    {
        _state = State.ReadHead;
        _deadline = _owner.NowMs + (_headFilled > 0 ? _owner.RequestHeadersTimeoutMs
            : _requestSeen ? _owner.KeepAliveTimeoutMs : _owner.FirstRequestTimeoutMs);
    }

    private bool StepReadHead()
    {
        while (true)
        {
            if (_headFilled > 0)
            {
                int end = Http1RequestHead.FindEnd(_head.AsSpan(0, _headFilled));
                if (end > 0)
                    return BeginRequest(end);
                if (end == Http1RequestHead.NotPlain || _headFilled >= Http1LaneRules.MaxHeadBytes)
                {
                    HandOff(); // Kestrel judges what this parser does not accept, and answers 431 past its own limit
                    return false;
                }
            }
            else if (_owner.Stopping)
            {
                Close();
                return false;
            }
            if (!_clientReadable && !_session.HasBufferedInput)
            {
                if (_headFilled == 0)
                    ReleaseHeadBuffer();
                return false;
            }
            _head ??= ArrayPool<byte>.Shared.Rent(Http1LaneRules.MaxHeadBytes);
            var status = _session.Read(_head.AsSpan(_headFilled, Http1LaneRules.MaxHeadBytes - _headFilled), out int read);
            if (status == TlsStatus.Done)
            {
                // The socket was left empty: wait for its next event rather than read again only to hear EAGAIN.
                if (_session.InputDrained && !_clientHungUp)
                    _clientReadable = false;
                if (_headFilled == 0 && read > 0)
                {
                    _deadline = _owner.NowMs + _owner.RequestHeadersTimeoutMs; // from the request's first byte, as Kestrel's
                    _requestSeen = true;
                }
                _headFilled += read;
                continue;
            }
            if (status is TlsStatus.WantRead or TlsStatus.WantWrite)
            {
                if (status == TlsStatus.WantRead)
                    _clientReadable = false;
                if (_headFilled == 0)
                    ReleaseHeadBuffer();
                return false;
            }
            Close();
            return false;
        }
    }

    private bool BeginRequest(int headLength)
    {
        _headLength = headLength;
        var head = _head.AsSpan(0, headLength);
        if (!Http1LaneRules.Inspect(head, _request, out var request))
        {
            HandOff();
            return false;
        }
        _isHead = request.IsHead;
        _closeAfterResponse = request.CloseAfterResponse;
        _host.Set(head.Slice(request.HostStart, request.HostLength));
        if (_host.VmName(_owner.Sites) is not { } vmName)
        {
            HandOff();
            return false;
        }
        var route = _owner.Sites.RoutePublicSiteAsync(vmName, _remote.Address);
        if (route.IsCompletedSuccessfully)
            return Route(route.Result);
        // Not known without waiting (an address cache refreshing, a directory on disk): the loop never waits, so
        // the connection pauses here and the answer comes back to this thread (EventLoop.Post).
        _state = State.Routing;
        _deadline = _owner.NowMs + _owner.ActivityTimeoutMs;
        route.AsTask().ContinueWith(static (task, state) =>
        {
            var connection = (LaneConnection)state!;
            connection._loop.Post(connection, task.IsCompletedSuccessfully ? task.Result : null);
        }, this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return false;
    }

    /// <summary>The routing answer that came back later (on the loop thread); ignored when the connection moved on (closed, timed out).</summary>
    public void Routed(UpstreamEndpoint? endpoint)
    {
        if (_state != State.Routing)
            return;
        if (Route(endpoint))
            Advance();
    }

    private bool Route(UpstreamEndpoint? route)
    {
        var head = _head.AsSpan(0, _headLength);
        _upstreamHead ??= new ByteBuffer(1024, Http1LaneRules.MaxHeadBytes * 2);
        _clientAddress ??= Encoding.ASCII.GetBytes(_remote.Address.ToString());
        if (route is not { } endpoint || !Http1LaneRules.WriteUpstreamHead(head, _request, _host.Bytes, _clientAddress, _upstreamHead))
        {
            HandOff();
            return false;
        }
        _endpoint = endpoint;
        _attempt = 0;
        _phase = UpstreamPhase.Acquire;
        _state = State.Upstream;
        _deadline = _owner.NowMs + _owner.ActivityTimeoutMs;
        return true;
    }

    private bool StepUpstream()
    {
        while (true)
        {
            switch (_phase)
            {
                case UpstreamPhase.Acquire:
                    _upstream = _attempt == 0 ? _loop.TakeIdle(_endpoint) : null;
                    _reused = _upstream is not null;
                    if (_upstream is null)
                    {
                        try
                        {
                            _upstream = _loop.Connect(_endpoint);
                        }
                        catch (SocketException ex)
                        {
                            Fail(new ForwardResult(ForwardOutcome.ConnectFailed, Error: ex));
                            return true;
                        }
                    }
                    _upstream.Owner = this;
                    _upstreamSent = 0;
                    _filled = 0;
                    _phase = UpstreamPhase.Send;
                    break;

                case UpstreamPhase.Send:
                    var request = _upstreamHead!.WrittenSpan;
                    int sent = LinuxSockets.Send(_upstream!.Fd, request[_upstreamSent..]);
                    if (sent > 0)
                    {
                        // A send that went through also means a pending connect completed.
                        _upstream.Connecting = false;
                        _upstreamSent += sent;
                        if (_upstreamSent == request.Length)
                        {
                            _receive ??= ArrayPool<byte>.Shared.Rent(Http1Forwarder.ReceiveBufferBytes);
                            _phase = UpstreamPhase.ReadHead;
                        }
                        _deadline = _owner.NowMs + _owner.ActivityTimeoutMs;
                        break;
                    }
                    if (sent == 0)
                        return false; // connecting, or the VM's receive window is full
                    if (_upstream.Connecting)
                    {
                        int error = LinuxSockets.TakeError(_upstream.Fd);
                        Fail(new ForwardResult(ForwardOutcome.ConnectFailed, $"connect to {_endpoint.Address}:{_endpoint.Port} failed (errno {error})"));
                        return true;
                    }
                    if (RetryOnNewConnection())
                        break;
                    Fail(new ForwardResult(ForwardOutcome.UpstreamFailed, "sending to the VM failed"));
                    return true;

                case UpstreamPhase.ReadHead:
                    if (!_upstream!.Readable)
                        return false; // the response is not here yet: its EPOLLIN will say so
                    int space = Http1Forwarder.ReceiveBufferBytes - _filled;
                    int n = LinuxSockets.Receive(_upstream.Fd, _receive.AsSpan(_filled, space));
                    if (n == -1 || n > 0 && n < space && !_upstream.HungUp)
                        _upstream.Readable = false; // empty now: the next bytes raise an event
                    if (n == -1)
                        return false;
                    if (n <= 0)
                    {
                        if (RetryOnNewConnection())
                            break;
                        Fail(_filled == 0
                            ? new ForwardResult(ForwardOutcome.UpstreamFailed, "the VM closed the connection without a response")
                            : new ForwardResult(ForwardOutcome.BadResponse, "the VM closed the connection inside a response head"));
                        return true;
                    }
                    _filled += n;
                    _deadline = _owner.NowMs + _owner.ActivityTimeoutMs;
                    var status = Http1Forwarder.TakeResponseHead(_responseHead, _receive!, ref _filled, out _responseHeadLength, out var failure);
                    if (status == HeadParseStatus.Incomplete)
                        break;
                    if (status == HeadParseStatus.Invalid)
                    {
                        Fail(failure);
                        return true;
                    }
                    if (!_isHead && !_responseHead.Chunked && _responseHead.ContentLength >= 0
                        && _filled - _responseHeadLength > _responseHead.ContentLength)
                    {
                        Fail(new ForwardResult(ForwardOutcome.BadResponse, "more bytes than the response's Content-Length"));
                        return true;
                    }
                    StartResponse();
                    return true;
            }
        }
    }

    /// <summary>
    /// A pooled connection the VM had already closed fails before any response byte: once more on a new one
    /// (HttpClient's rule; a GET or HEAD is safe to repeat).
    /// </summary>
    private bool RetryOnNewConnection()
    {
        if (!_reused || _filled != 0 || _attempt > 0)
            return false;
        _loop.CloseUpstream(_upstream!);
        _upstream = null;
        _attempt++;
        _phase = UpstreamPhase.Acquire;
        return true;
    }

    /// <summary>The request failed before the VM's head: the visitor gets the front door's page.</summary>
    private void Fail(ForwardResult failure)
    {
        if (_upstream is not null)
        {
            _loop.CloseUpstream(_upstream);
            _upstream = null;
        }
        _owner.Sites.LogForwardFailed(failure, _host.LastVmName ?? "?", _endpoint.Port);
        ConsumeRequest();
        var output = RentOutput();
        Http1LaneRules.WritePage(output, Http1LaneRules.PageFor(failure.Outcome), _isHead, _closeAfterResponse, _owner.Dates);
        _framing = ResponseFraming.Failed;
        _state = State.Respond;
    }

    private void ConsumeRequest()
    {
        _owner.Sites.CountRequest();
        int rest = _headFilled - _headLength;
        if (rest > 0)
            Buffer.BlockCopy(_head!, _headLength, _head!, 0, rest);
        _headFilled = rest;
        _headLength = 0;
    }

    private ByteBuffer RentOutput()
    {
        _output ??= new ByteBuffer(4096, OutputLimit);
        _output.Clear();
        _outputSent = 0;
        return _output;
    }

    private void StartResponse()
    {
        ConsumeRequest();
        var head = _responseHead;
        var output = RentOutput();
        Http1LaneRules.WriteResponseHead(output, head, _receive.AsSpan(0, _filled), ResponseFraming.IsBodyless(head, _isHead), _closeAfterResponse, _owner.Dates);
        int leftover = _filled - _responseHeadLength;
        _state = State.Respond;
        _framing = ResponseFraming.Start(head, _isHead, leftover);
        // A bodyless answer ignores what follows its head (then not reusable); a body takes it, chunked to the client
        // when the VM gave no length (a Length overrun was refused above).
        if (_framing.Mode != ResponseBodyMode.None && leftover > 0
            && !_framing.Take(_receive.AsSpan(_responseHeadLength, leftover), output, chunkToClient: true))
            Close(); // a malformed chunked body
    }

    private bool StepRespond()
    {
        if (_state == State.Closed)
            return false;
        while (true)
        {
            var output = _output!;
            if (_outputSent < output.Length)
            {
                var status = _session.Write(output.WrittenSpan[_outputSent..], out int written);
                if (status == TlsStatus.Done)
                {
                    _outputSent += written;
                    continue;
                }
                if (status is TlsStatus.WantWrite or TlsStatus.WantRead)
                {
                    _deadline = _owner.NowMs + _owner.ResponseFlushTimeoutMs;
                    return false;
                }
                Close();
                return false;
            }
            output.Clear();
            _outputSent = 0;
            if (_framing.Done)
            {
                FinishRequest();
                return _state != State.Closed;
            }
            if (!_upstream!.Readable)
            {
                _deadline = _owner.NowMs + _owner.ActivityTimeoutMs;
                return false;
            }
            int n = LinuxSockets.Receive(_upstream.Fd, _receive.AsSpan(0, Http1Forwarder.ReceiveBufferBytes));
            if (n == -1 || n > 0 && n < Http1Forwarder.ReceiveBufferBytes && !_upstream.HungUp)
                _upstream.Readable = false; // empty now: the next bytes raise an event
            if (n == -1)
            {
                _deadline = _owner.NowMs + _owner.ActivityTimeoutMs;
                return false;
            }
            if (n == 0 ? !_framing.TakeEnd(output, chunkToClient: true) : n < 0 || !_framing.Take(_receive.AsSpan(0, n), output, chunkToClient: true))
            {
                // Half a response cannot become an error page: the client must see the break.
                Close();
                return false;
            }
        }
    }

    private void FinishRequest()
    {
        if (_upstream is not null)
        {
            if (_framing.Reusable)
            {
                _upstream.Uses++;
                _loop.ReturnIdle(_upstream);
            }
            else
                _loop.CloseUpstream(_upstream);
            _upstream = null;
        }
        ReleaseRequestBuffers();
        if (_closeAfterResponse || _owner.Stopping)
        {
            Close();
            return;
        }
        EnterReadHead();
    }

    /// <summary>Gives the connection, with what it has decrypted and not consumed, to Kestrel's HTTP layer.</summary>
    private void HandOff()
    {
        _state = State.Closed;
        _loop.Unwatch(_fd, removeFromEpoll: true);
        _loop.Forget(this);
        _owner.ConnectionLimit.Leave(_source); // the hand-off listener counts it from here
        if (_upstream is not null)
        {
            _loop.CloseUpstream(_upstream);
            _upstream = null;
        }
        var socket = _fd.TransferToSocket();
        var prefix = _head is null ? ReadOnlyMemory<byte>.Empty : _head.AsMemory(0, _headFilled);
        bool accepted;
        try
        {
            accepted = _owner.HandOff(socket, _session, prefix, _local, _remote);
        }
        catch (Exception ex)
        {
            _owner.LogConnectionFailed(ex);
            accepted = false;
        }
        if (!accepted)
        {
            socket.Dispose();
            _session.Dispose();
        }
        ReleaseHeadBuffer(force: true);
        ReleaseRequestBuffers();
    }

    public void Close()
    {
        if (_state == State.Closed)
            return;
        _state = State.Closed;
        _session.Shutdown();
        _session.Dispose();
        _loop.Unwatch(_fd, removeFromEpoll: false);
        _fd.Dispose();
        _loop.Forget(this);
        _owner.ConnectionLimit.Leave(_source);
        if (_upstream is not null)
        {
            _loop.CloseUpstream(_upstream);
            _upstream = null;
        }
        ReleaseHeadBuffer(force: true);
        ReleaseRequestBuffers();
    }

    private void ReleaseHeadBuffer(bool force = false)
    {
        if (_head is not null && (force || _headFilled == 0))
        {
            ArrayPool<byte>.Shared.Return(_head);
            _head = null;
            _headFilled = 0;
        }
    }

    private void ReleaseRequestBuffers()
    {
        if (_receive is not null)
        {
            ArrayPool<byte>.Shared.Return(_receive);
            _receive = null;
        }
        // The arrays go back to the pool; the two writers stay for the connection's next request.
        _output?.Release();
        _upstreamHead?.Release();
    }
}
