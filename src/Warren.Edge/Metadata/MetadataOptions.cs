namespace Warren.Edge.Metadata;

/// <summary>Limits of the metadata service VMs reach at 169.254.169.254 (configuration section <c>Warren:Metadata</c>).</summary>
public sealed class MetadataOptions
{
    public const string SectionName = "Warren:Metadata";

    /// <summary>Largest request body (the email gateway's JSON: a 64 KiB body may triple when escaped).</summary>
    public long MaxRequestBodyBytes { get; set; } = 256 * 1024;

    /// <summary>Most request headers one request may carry.</summary>
    public int MaxRequestHeaderCount { get; set; } = 32;

    /// <summary>Largest size of all request headers together.</summary>
    public int MaxRequestHeadersTotalBytes { get; set; } = 16 * 1024;

    /// <summary>Largest request line (method, target, version).</summary>
    public int MaxRequestLineBytes { get; set; } = 4 * 1024;

    /// <summary>Open connections across all VMs.</summary>
    public int MaxConnections { get; set; } = 1024;

    /// <summary>Per-VM request rate (token bucket: burst, then this many per second).</summary>
    public int RequestBurstPerVm { get; set; } = 100;
    public double RequestsPerSecondPerVm { get; set; } = 20;

    /// <summary>Per-VM email rate (exe.dev's docs: send email — "sending is rate-limited"): burst, then per hour.</summary>
    public int EmailBurstPerVm { get; set; } = 10;
    public double EmailsPerHourPerVm { get; set; } = 30;
}
