using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http.Forwarding;
using Warren.Edge.Tls;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// The main HTTPS listeners as native event loops (<c>Warren:Http:Transport=native</c>, the default on Linux with
/// OpenSSL 3): one <see cref="EventLoop"/> thread per core, each listening on every HTTPS endpoint with
/// SO_REUSEPORT, terminating TLS with OpenSSL and forwarding plain public GETs itself
/// (<see cref="LaneConnection"/>). Every other connection goes, TLS and all, to Kestrel's HTTP layer through the
/// hand-off transport (<see cref="HandOffConnectionListenerFactory"/>), where <c>FrontDoor/HttpFrontDoor</c> serves it as
/// on the Kestrel transport.
/// </summary>
/// <remarks>
/// Why: for a proxied GET, Kestrel's socket transport, SslStream and their pipes cost about 47 µs of CPU here
/// against nginx's 39; epoll and OpenSSL called directly cost about 31 (docs/PERFORMANCE.md). The sockets are bound
/// when Kestrel starts (so the ports are known, and reported, with Kestrel's), and the loops start accepting once
/// the application has started, when the hand-off listener is bound.
/// </remarks>
internal sealed class NativeHttpsFrontDoor : IDisposable
{
    private readonly HttpFrontDoorOptions _options;
    private readonly KestrelServerLimits _limits;
    private readonly Func<LaneSites> _sites;
    private readonly HandOffConnectionListenerFactory _handOff;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly long _origin;
    private readonly List<EventLoop> _loops = new();
    private readonly List<IPEndPoint> _bound = new();
    private LaneSites? _resolvedSites;
    private volatile bool _stopping;
    private int _started;

    public NativeHttpsFrontDoor(HttpFrontDoorOptions options, TlsCertificateProvider certificates, Func<LaneSites> sites,
        HandOffConnectionListenerFactory handOff, KestrelServerLimits limits, SourceConnectionLimit connectionLimit, ILogger logger,
        TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
        _origin = _time.GetTimestamp();
        Dates = new ResponseDate(_time);
        _limits = limits;
        ConnectionLimit = connectionLimit;
        FirstRequestTimeoutMs = (long)options.FirstRequestTimeout.TotalMilliseconds;
        _options = options;
        _sites = sites;
        _handOff = handOff;
        _logger = logger;
        Tls = new TlsServerContext(certificates, http2: true);
        HandOffEndPoint = new HandOffEndPoint("https", options.HttpsEndpoints);
    }

    /// <summary>The Date line of the responses the loops write, on the same clock.</summary>
    public ResponseDate Dates { get; }

    /// <summary>
    /// Milliseconds on the loops' clock (monotonic, from the injected <see cref="TimeProvider"/>): every connection
    /// deadline and idle age is measured on it.
    /// </summary>
    public long NowMs => (long)_time.GetElapsedTime(_origin).TotalMilliseconds;

    /// <summary>The native transport runs here: Linux, x64 or arm64, OpenSSL 3.</summary>
    public static bool IsSupported => LinuxSockets.IsSupported && TlsServerContext.IsSupported;

    public TlsServerContext Tls { get; }

    /// <summary>The Kestrel listener that serves the connections the loops hand over.</summary>
    public HandOffEndPoint HandOffEndPoint { get; }

    /// <summary>What the lane asks the front door's stages (resolved at first use: the caller registers their ports after this).</summary>
    public LaneSites Sites => _resolvedSites ??= _sites();

    /// <summary>Off: every connection goes to Kestrel after the handshake (<see cref="HttpFrontDoorOptions.ConnectionLevelForwarding"/>).</summary>
    public bool LaneEnabled => _options.ConnectionLevelForwarding;

    public bool Stopping => _stopping;

    /// <summary>Open connections per source, shared with Kestrel's listeners (a hand-off moves a connection between them).</summary>
    public SourceConnectionLimit ConnectionLimit { get; }

    /// <summary>From the handshake to the first request's first byte (<see cref="HttpFrontDoorOptions.FirstRequestTimeout"/>).</summary>
    public long FirstRequestTimeoutMs { get; }

    /// <summary>As Kestrel's HttpsConnectionAdapterOptions.HandshakeTimeout default.</summary>
    public long HandshakeTimeoutMs { get; } = 10_000;
    /// <summary>Kestrel's own limits, so both transports time out alike (read when the loops start: configuration may still change them before).</summary>
    public long KeepAliveTimeoutMs { get; private set; }
    public long RequestHeadersTimeoutMs { get; private set; }
    public long ResponseFlushTimeoutMs { get; } = (long)Http1LaneRules.ResponseFlushTimeout.TotalMilliseconds;
    /// <summary>The VM activity timeout of the forwarder, read at first use (the loops ask on every request).</summary>
    public long ActivityTimeoutMs => _activityTimeoutMs >= 0
        ? _activityTimeoutMs
        : _activityTimeoutMs = (long)Sites.Http1.ActivityTimeout.TotalMilliseconds;
    private long _activityTimeoutMs = -1;

    /// <summary>Bytes the loops' threads have allocated (<see cref="EventLoop.AllocatedBytes"/>, summed).</summary>
    public long AllocatedBytes
    {
        get
        {
            long sum = 0;
            foreach (var loop in _loops)
                sum += loop.AllocatedBytes;
            return sum;
        }
    }

    /// <summary>The addresses the loops listen on (port 0 resolved).</summary>
    public IReadOnlyList<IPEndPoint> BoundEndPoints => _bound;

    /// <summary>Creates the loops and binds every HTTPS endpoint on each; throws when an address cannot be bound.</summary>
    public void Bind(int loops, int backlog = 512)
    {
        if (_loops.Count > 0)
            return;
        try
        {
            for (int i = 0; i < Math.Max(1, loops); i++)
                _loops.Add(new EventLoop(this, i));
            foreach (var endpoint in _options.HttpsEndpoints)
            {
                // Port 0: the first loop's socket picks the port, the others join it.
                var first = _loops[0].Listen(endpoint, backlog);
                for (int i = 1; i < _loops.Count; i++)
                    _loops[i].Listen(first, backlog);
                _bound.Add(first);
            }
        }
        catch
        {
            foreach (var loop in _loops)
                loop.Dispose();
            _loops.Clear();
            _bound.Clear();
            throw;
        }
    }

    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
            return;
        KeepAliveTimeoutMs = (long)_limits.KeepAliveTimeout.TotalMilliseconds;
        RequestHeadersTimeoutMs = (long)_limits.RequestHeadersTimeout.TotalMilliseconds;
        foreach (var loop in _loops)
            loop.Start();
        Log.Started(_logger, string.Join(", ", _bound), _loops.Count);
    }

    /// <summary>Stops accepting; requests in progress get <paramref name="grace"/> to finish.</summary>
    public void Stop(TimeSpan grace)
    {
        if (_stopping)
            return;
        _stopping = true;
        if (_started == 0)
            return;
        foreach (var loop in _loops)
            loop.Stop(grace);
        foreach (var loop in _loops)
            loop.Join(grace + TimeSpan.FromSeconds(2));
    }

    internal bool HandOff(Socket socket, TlsSession session, ReadOnlyMemory<byte> decrypted, IPEndPoint local, IPEndPoint remote) =>
        _handOff.HandOff(HandOffEndPoint, socket, session, decrypted, local, remote);

    internal void LogConnectionFailed(Exception ex) => Log.ConnectionFailed(_logger, ex);

    private long _lastExhaustedLog = -AcceptExhaustedLogIntervalMs; // the first shortage is logged (long.MinValue overflowed the subtraction)
    private const long AcceptExhaustedLogIntervalMs = 60_000;

    /// <summary>At most once a minute: a full descriptor table would otherwise log on every retry.</summary>
    internal void LogAcceptExhausted()
    {
        long now = NowMs;
        long last = Interlocked.Read(ref _lastExhaustedLog);
        if (now - last >= AcceptExhaustedLogIntervalMs && Interlocked.CompareExchange(ref _lastExhaustedLog, now, last) == last)
            Log.AcceptExhausted(_logger);
    }

    public void Dispose()
    {
        Stop(TimeSpan.FromSeconds(1));
        foreach (var loop in _loops)
            loop.Dispose();
        _loops.Clear();
        Tls.Dispose();
    }

    private static class Log
    {
        private static readonly Action<ILogger, string, int, Exception?> s_started = LoggerMessage.Define<string, int>(
            LogLevel.Information, new EventId(EdgeEventIds.HttpNativeStarted, "HttpNativeStarted"),
            "HTTPS on {Endpoints}: native event loops ({Loops} threads, epoll + OpenSSL)");
        private static readonly Action<ILogger, Exception?> s_failed = LoggerMessage.Define(
            LogLevel.Error, new EventId(EdgeEventIds.HttpNativeConnectionFailed, "HttpNativeConnectionFailed"),
            "HTTPS event loop: a connection failed unexpectedly and was closed");

        private static readonly Action<ILogger, Exception?> s_exhausted = LoggerMessage.Define(
            LogLevel.Warning, new EventId(EdgeEventIds.HttpNativeAcceptExhausted, "HttpNativeAcceptExhausted"),
            "HTTPS event loop: out of file descriptors or memory accepting connections; they wait in the listen queue (raise the open-files limit)");

        public static void Started(ILogger l, string endpoints, int loops) => s_started(l, endpoints, loops, null);
        public static void AcceptExhausted(ILogger l) => s_exhausted(l, null);
        public static void ConnectionFailed(ILogger l, Exception ex) => s_failed(l, ex);
    }
}
