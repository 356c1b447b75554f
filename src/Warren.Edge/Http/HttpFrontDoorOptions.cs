using System.Net;
using Warren.Edge.Tls;
using Warren.Ssh.Server;

namespace Warren.Edge.Http;

/// <summary>Configuration of the HTTP(S) front door.</summary>
public sealed class HttpFrontDoorOptions
{
    /// <summary>The VM domain: <c>NAME.&lt;vm-domain&gt;</c> is VM NAME's website.</summary>
    public string VmDomain { get; set; } = "box.localhost";

    /// <summary>The control host: serves <c>POST /exec</c>; other paths go to the next middleware.</summary>
    public string ControlHost { get; set; } = "warren.localhost";

    /// <summary>Plain-HTTP listeners; every request there is redirected to HTTPS.</summary>
    public List<IPEndPoint> HttpEndpoints { get; set; } = new() { new(IPAddress.Loopback, 8080) };

    /// <summary>Main HTTPS listeners (HTTP/1.1 and HTTP/2). A Host port equal to their bound port means the default route.</summary>
    public List<IPEndPoint> HttpsEndpoints { get; set; } = new() { new(IPAddress.Loopback, 8443) };

    /// <summary>
    /// Extra HTTPS listeners for alternate ports (3000–9999): a request arriving there with
    /// <c>Host: NAME.&lt;vm-domain&gt;:PORT</c> goes to that port of the VM.
    /// </summary>
    public List<IPEndPoint> AlternatePortEndpoints { get; set; } = new();

    /// <summary>
    /// The HTTPS port clients use (after any NAT), for HTTP→HTTPS redirects and to recognise the
    /// default route. Null: the first HTTPS endpoint's bound port. 443 is always the default route.
    /// </summary>
    public int? PublicHttpsPort { get; set; }

    /// <summary>Certificates.</summary>
    public TlsOptions Tls { get; set; } = new();

    /// <summary>Time limit of one /exec command (exe.dev: 30 s). At the limit the command is cancelled and the answer is 504.</summary>
    public TimeSpan ExecTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Requests per second each source (<see cref="SourceNetwork"/>: an IPv4 address or IPv6 /64) may make
    /// to the VM sites and the control host; beyond it → 429 with <c>Retry-After</c>. 0 turns the limit off.
    /// Generous by default: a page load with many assets, or a busy API client, stays far below it.
    /// </summary>
    public double RequestsPerSecondPerSource { get; set; } = 200;

    /// <summary>Requests a source may make at once before <see cref="RequestsPerSecondPerSource"/> applies.</summary>
    public int RequestBurstPerSource { get; set; } = 400;

    /// <summary>
    /// Connections each source (<see cref="SourceNetwork"/>) may hold open at once on every HTTP(S) listener and both
    /// transports (<see cref="SourceConnectionLimit"/>); more are closed as they are accepted, before TLS. 0 turns the
    /// limit off. Generous: browsers open at most 6 HTTP/1.1 connections per host (or one for HTTP/2), so this leaves
    /// room for a busy office behind one NAT address while keeping a single client far from the descriptor limit.
    /// </summary>
    public int MaxConnectionsPerSource { get; set; } = 256;

    /// <summary>
    /// Time from the end of the TLS handshake to the first request (its first byte where the connection-level lane
    /// reads HTTP/1.1, else the request's start in Kestrel, HTTP/2 included); a connection without one is closed.
    /// Afterwards Kestrel's keep-alive timeout applies between requests.
    /// </summary>
    public TimeSpan FirstRequestTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Run request handling on the thread that completed the socket read (Kestrel's
    /// <c>UnsafePreferInlineScheduling</c>) instead of handing each request to the thread pool — nginx's event-loop
    /// model. Pays off when the process also turns on inline socket completions
    /// (<c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS</c>; <c>warren serve</c> does, see <c>Warren:InlineSocketIo</c>):
    /// then a proxied request makes no thread hop at all. Everything in the front door that may block (database,
    /// token checks, /exec) moves itself to the thread pool first.
    /// </summary>
    public bool InlineRequestProcessing { get; set; }

    /// <summary>
    /// Forward the plainest HTTP/1.1 requests (anonymous GET/HEAD to a public site) at the connection level, on the
    /// native event loops (<see cref="Forwarding.Http1LaneRules"/>); any other request hands its connection to
    /// Kestrel. Off, or with <see cref="HttpsTransport.Kestrel"/>: every request takes Kestrel's HTTP layer. Same
    /// answers either way.
    /// </summary>
    public bool ConnectionLevelForwarding { get; set; } = true;

    /// <summary>
    /// What terminates TLS on the main HTTPS endpoints (<c>Warren:Http:Transport</c>). <see cref="HttpsTransport.Native"/>
    /// (the default where supported: Linux with OpenSSL 3): event loops on epoll and OpenSSL
    /// (<see cref="EventLoop.NativeHttpsFrontDoor"/>), handing what they do not serve to Kestrel's HTTP layer.
    /// <see cref="HttpsTransport.Kestrel"/>: Kestrel's socket transport and SslStream. Same answers either way.
    /// </summary>
    public HttpsTransport Transport { get; set; } = EventLoop.NativeHttpsFrontDoor.IsSupported ? HttpsTransport.Native : HttpsTransport.Kestrel;

    /// <summary>Event loop threads of the native transport (<c>Warren:Http:EventLoopThreads</c>); one per core, as nginx's <c>worker_processes auto</c>.</summary>
    public int EventLoopThreads { get; set; } = Environment.ProcessorCount;

    /// <summary>Problems with these options (empty when valid), phrased for the configuration's author.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (ExecTimeout <= TimeSpan.Zero || ExecTimeout > HttpFrontDoorLimits.MaxExecTimeout)
            errors.Add($"Http:ExecTimeoutSeconds must be between 1 and {HttpFrontDoorLimits.MaxExecTimeout.TotalSeconds:0} (got {ExecTimeout.TotalSeconds})");
        if (double.IsNaN(RequestsPerSecondPerSource) || double.IsInfinity(RequestsPerSecondPerSource) || RequestsPerSecondPerSource < 0)
            errors.Add($"Http:RequestsPerSecondPerSource must be 0 (off) or positive (got {RequestsPerSecondPerSource})");
        else if (RequestsPerSecondPerSource > 0 && RequestBurstPerSource < 1)
            errors.Add($"Http:RequestBurstPerSource must be at least 1 when Http:RequestsPerSecondPerSource is set (got {RequestBurstPerSource})");
        if (Transport == HttpsTransport.Native && !EventLoop.NativeHttpsFrontDoor.IsSupported)
            errors.Add("Http:Transport native needs Linux (x64 or arm64) with OpenSSL 3 (libssl.so.3); use kestrel here");
        if (MaxConnectionsPerSource < 0)
            errors.Add($"Http:MaxConnectionsPerSource must be 0 (off) or positive (got {MaxConnectionsPerSource})");
        if (FirstRequestTimeout < TimeSpan.FromSeconds(1) || FirstRequestTimeout > HttpFrontDoorLimits.MaxFirstRequestTimeout)
            errors.Add($"Http:FirstRequestTimeoutSeconds must be between 1 and {HttpFrontDoorLimits.MaxFirstRequestTimeout.TotalSeconds:0} (got {FirstRequestTimeout.TotalSeconds})");
        if (EventLoopThreads is < 1 or > 256)
            errors.Add($"Http:EventLoopThreads must be between 1 and 256 (got {EventLoopThreads})");
        return errors;
    }
}

/// <summary>Fixed limits of the front door.</summary>
public static class HttpFrontDoorLimits
{
    /// <summary>
    /// Largest proxied request body. Generous on purpose (uploads of disk images, backups); the
    /// Kestrel default of 30 MB would break them. Streaming keeps memory flat regardless.
    /// </summary>
    public const long MaxProxiedRequestBodyBytes = 64L * 1024 * 1024 * 1024;

    /// <summary>Alternate ports reachable as <c>NAME.&lt;vm-domain&gt;:PORT</c> (exe.dev, <c>share port</c> range).</summary>
    public const int MinAlternatePort = 3000;
    public const int MaxAlternatePort = 9999;

    /// <summary>Login cookie lifetime (exe.dev: 30 days).</summary>
    public static readonly TimeSpan SessionLifetime = TimeSpan.FromDays(30);

    /// <summary>Session id size: 32 random bytes (256 bits), far beyond guessing (OWASP session guidance asks ≥ 64 bits).</summary>
    public const int SessionIdBytes = 32;

    /// <summary>Idle time after which a proxied request or response stream is aborted (YARP's ActivityTimeout). Long for slow streams (SSE, long polls).</summary>
    public static readonly TimeSpan UpstreamActivityTimeout = TimeSpan.FromMinutes(15);

    /// <summary>TCP connect timeout to a VM port; a VM that does not answer within it counts as unreachable.</summary>
    public static readonly TimeSpan UpstreamConnectTimeout = TimeSpan.FromSeconds(5);

    /// <summary>/exec body limit (exe.dev: more than 65536 bytes → 413).</summary>
    public const int MaxExecBodyBytes = 64 * 1024;

    /// <summary>/exec per-key token bucket (exe.dev): burst 60, 1 per second.</summary>
    public const int ExecRateBurst = 60;
    public const double ExecRatePerSecond = 1;

    /// <summary>/exec overdraft: requests refused while empty dig the bucket down to -120, about 2 minutes of penalty (exe.dev).</summary>
    public const int ExecRateOverdraft = 120;

    /// <summary>Login-email form: per address, burst 3, then one a minute.</summary>
    public const int LoginEmailBurst = 3;
    public const double LoginEmailPerSecond = 1.0 / 60;

    /// <summary>Longest configurable first-request timeout: Kestrel's own keep-alive timeout default (130 s).</summary>
    public static readonly TimeSpan MaxFirstRequestTimeout = TimeSpan.FromSeconds(130);

    /// <summary>Longest configurable /exec time limit: beyond an hour a command belongs in an SSH session, not an HTTP request.</summary>
    public static readonly TimeSpan MaxExecTimeout = TimeSpan.FromHours(1);

    /// <summary>
    /// Largest body of the front door's own forms (login email, request access). They hold an address,
    /// a token and a short message; the generous proxy body limit must not apply to them.
    /// </summary>
    public const int MaxFormBodyBytes = 16 * 1024;

    /// <summary>Longest message a person may add to an access request (characters); a note, not a letter.</summary>
    public const int MaxAccessRequestMessageChars = 1000;

    /// <summary>
    /// Access requests per requester and site: one, then one per 10 minutes, so the form cannot be used to
    /// flood an owner's mailbox; the owner got the first one anyway.
    /// </summary>
    public const int AccessRequestBurstPerSite = 1;
    public const double AccessRequestsPerSecondPerSite = 1.0 / 600;

    /// <summary>Access requests per requester across all sites: 10, then 10 an hour, so one account cannot mail every owner.</summary>
    public const int AccessRequestBurstPerRequester = 10;
    public const double AccessRequestsPerSecondPerRequester = 10.0 / 3600;

    /// <summary>
    /// Longest request target (path and query) the front door serves; longer → 414 with a page, on HTTP/1.1 and
    /// HTTP/2 alike. RFC 9110 §4.1 asks for at least 8000 octets; this is twice that, because a return path of
    /// <see cref="HeaderParsing.MaxRedirectLength"/> characters rides percent-encoded (up to 3 bytes each) through
    /// the login's hops (<c>/__exe.dev/login</c>, the control host's <c>/login</c>, <c>/__exe.dev/auth</c>).
    /// </summary>
    public const int MaxRequestTargetBytes = 16 * 1024;

    /// <summary>
    /// Kestrel's own request-line ceiling (and HTTP/2 header-field ceiling), above <see cref="MaxRequestTargetBytes"/>
    /// so a target between the two reaches the front door and gets its 414: past Kestrel's limit an HTTP/2 stream
    /// is only reset (PROTOCOL_ERROR), which a browser shows as a broken connection, not as an answer.
    /// </summary>
    public const int KestrelMaxRequestLineBytes = 32 * 1024;
}

/// <summary>What terminates TLS on the main HTTPS endpoints (<see cref="HttpFrontDoorOptions.Transport"/>).</summary>
public enum HttpsTransport
{
    Kestrel,
    Native,
}

