using System.Net;
using Warren.Edge.Tls;

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

    /// <summary>Time limit of one /exec command (reference §3: 30 s).</summary>
    public TimeSpan ExecTimeout { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>Fixed limits of the front door.</summary>
public static class HttpFrontDoorLimits
{
    /// <summary>
    /// Largest proxied request body. Generous on purpose (uploads of disk images, backups); the
    /// Kestrel default of 30 MB would break them. Streaming keeps memory flat regardless.
    /// </summary>
    public const long MaxProxiedRequestBodyBytes = 64L * 1024 * 1024 * 1024;

    /// <summary>Alternate ports reachable as <c>NAME.&lt;vm-domain&gt;:PORT</c> (reference §4, <c>share port</c> range).</summary>
    public const int MinAlternatePort = 3000;
    public const int MaxAlternatePort = 9999;

    /// <summary>Login cookie lifetime (reference §4: 30 days).</summary>
    public static readonly TimeSpan SessionLifetime = TimeSpan.FromDays(30);

    /// <summary>Session id size: 32 random bytes (256 bits), far beyond guessing (OWASP session guidance asks ≥ 64 bits).</summary>
    public const int SessionIdBytes = 32;

    /// <summary>Idle time after which a proxied request or response stream is aborted (YARP's ActivityTimeout). Long for slow streams (SSE, long polls).</summary>
    public static readonly TimeSpan UpstreamActivityTimeout = TimeSpan.FromMinutes(15);

    /// <summary>TCP connect timeout to a VM port; a VM that does not answer within it counts as unreachable.</summary>
    public static readonly TimeSpan UpstreamConnectTimeout = TimeSpan.FromSeconds(5);

    /// <summary>/exec body limit (reference §3: more than 65536 bytes → 413).</summary>
    public const int MaxExecBodyBytes = 64 * 1024;

    /// <summary>/exec per-key token bucket (reference §3, execore/exe.go): burst 60, 1 per second.</summary>
    public const int ExecRateBurst = 60;
    public const double ExecRatePerSecond = 1;

    /// <summary>/exec overdraft: requests refused while empty dig the bucket down to -120, about 2 minutes of penalty (reference §3).</summary>
    public const int ExecRateOverdraft = 120;

    /// <summary>Login-email form: per address, burst 3, then one a minute.</summary>
    public const int LoginEmailBurst = 3;
    public const double LoginEmailPerSecond = 1.0 / 60;
}
