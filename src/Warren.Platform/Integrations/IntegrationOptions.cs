namespace Warren.Platform.Integrations;

/// <summary>
/// Operator settings for integrations, bound from <c>Warren:Integrations</c>. Both test aids are off by default.
/// </summary>
public sealed class IntegrationOptions
{
    public const string SectionName = "Warren:Integrations";

    /// <summary>Environment variable that may hold the secrets key (base64 of 32 bytes) instead of the key file.</summary>
    public const string KeyEnvironmentVariable = "WARREN_INTEGRATION_SECRETS_KEY";

    /// <summary>
    /// Host name → address (like curl's <c>--resolve</c>), for split-horizon DNS and for tests whose HTTPS target
    /// runs on a loopback address. A host listed here is dialled at that address even when it is private or
    /// loopback, which ordinary resolution refuses. Empty by default.
    /// </summary>
    public Dictionary<string, string> ResolveOverrides { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// A PEM file of extra certificate authorities trusted for integration targets (a test's self-signed target,
    /// a private CA). Null by default: only the system's roots.
    /// </summary>
    public string? TrustedCaFile { get; set; }

    /// <summary>
    /// Where github integrations send git's smart HTTP requests (<c>{GitHubUrl}/OWNER/REPO.git/…</c>); a GitHub
    /// Enterprise Server's address, or a test's local fake, instead of github.com.
    /// </summary>
    public string GitHubUrl { get; set; } = "https://github.com";

    /// <summary>Where github integrations send REST API requests (<c>{GitHubApiUrl}/repos/OWNER/REPO/…</c>); GitHub Enterprise Server uses <c>https://HOST/api/v3</c>.</summary>
    public string GitHubApiUrl { get; set; } = "https://api.github.com";

    /// <summary>Longest time one upstream request may take, headers and body.</summary>
    public TimeSpan UpstreamTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Largest body of one git transfer through a github integration, each way (a push's pack, a clone's answer).
    /// GitHub's docs (repository limits) refuse pushes over 2 GiB.
    /// </summary>
    public long GitMaxTransferBytes { get; set; } = 2L * 1024 * 1024 * 1024;

    /// <summary>Longest time one git transfer through a github integration may take, headers and body.</summary>
    public TimeSpan GitTransferTimeout { get; set; } = TimeSpan.FromMinutes(30);

    /// <summary>Refuses limits that would make every request fail (zero or negative sizes and times).</summary>
    public void Validate()
    {
        if (UpstreamTimeout <= TimeSpan.Zero) throw new InvalidOperationException($"{SectionName}:UpstreamTimeout must be positive.");
        if (GitTransferTimeout <= TimeSpan.Zero) throw new InvalidOperationException($"{SectionName}:GitTransferTimeout must be positive.");
        if (GitMaxTransferBytes <= 0) throw new InvalidOperationException($"{SectionName}:GitMaxTransferBytes must be positive.");
    }
}

/// <summary>Fixed limits of integrations.</summary>
public static class IntegrationLimits
{
    /// <summary>Integrations one account may hold.</summary>
    public const int MaxIntegrationsPerAccount = 100;

    /// <summary>Attachments one integration may hold.</summary>
    public const int MaxAttachments = 100;

    /// <summary>Headers one http-proxy integration may inject.</summary>
    public const int MaxHeaders = 16;

    /// <summary>Longest header value (name and value) accepted by <c>--header</c> / <c>--bearer</c>.</summary>
    public const int MaxHeaderValueLength = 8 * 1024;

    /// <summary>Longest <c>--target</c> URL.</summary>
    public const int MaxTargetLength = 2048;

    /// <summary>Largest request body forwarded upstream; larger ones get 413.</summary>
    public const long MaxRequestBodyBytes = 32L * 1024 * 1024;

    /// <summary>Largest response body relayed back; the relay stops (and the connection is cut) past it.</summary>
    public const long MaxResponseBodyBytes = 256L * 1024 * 1024;
}
