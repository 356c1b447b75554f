namespace Warren.Platform.Integrations;

/// <summary>The kinds of integration (exe.dev's docs: integrations).</summary>
public enum IntegrationType { HttpProxy, Reflection, GitHub }

public static class IntegrationTypes
{
    public static string ToWire(this IntegrationType t) => t switch
    {
        IntegrationType.HttpProxy => "http-proxy",
        IntegrationType.Reflection => "reflection",
        IntegrationType.GitHub => "github",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static bool TryParse(string s, out IntegrationType type)
    {
        switch (s)
        {
            case "http-proxy": type = IntegrationType.HttpProxy; return true;
            case "reflection": type = IntegrationType.Reflection; return true;
            case "github": type = IntegrationType.GitHub; return true;
            default: type = default; return false;
        }
    }
}

/// <summary>What an integration is attached to: one VM (by id, so renames follow), a tag (live), or every VM.</summary>
public enum AttachmentKind { Vm, Tag, All }

/// <summary>One attachment. <see cref="Value"/> is the VM id, the tag, or "all".</summary>
public sealed record IntegrationAttachment(AttachmentKind Kind, string Value);

/// <summary>
/// An integration as stored, secrets still sealed. <see cref="Target"/> carries no user info (the basic-auth user is in
/// <see cref="BasicUser"/>, its password among the secrets). <see cref="HeaderNames"/> are the names of injected headers;
/// their values are secrets.
/// </summary>
public sealed record Integration(
    string Id,
    string AccountId,
    string Name,
    IntegrationType Type,
    string? Target,
    IReadOnlyList<string> HeaderNames,
    string? BasicUser,
    bool HasBearer,
    string? PeerVmId,
    string? PeerKeyFingerprint,
    IReadOnlyList<string>? Fields,
    IReadOnlyList<IntegrationAttachment> Attachments,
    DateTimeOffset CreatedAt)
{
    /// <summary>A VM-to-VM integration (<c>--peer</c>); <see cref="PeerVmId"/> is null once the target VM is deleted.</summary>
    public bool IsPeer => PeerKeyFingerprint is not null;

    /// <summary>The one repository a github integration reaches (its <see cref="Target"/>), else null.</summary>
    public GitHubRepository? Repository => Type == IntegrationType.GitHub && GitHubRepository.TryParse(Target, out var r) ? r : null;

    /// <summary>The sealed secrets as stored; open with <c>IntegrationService.OpenSecrets</c>.</summary>
    internal byte[]? SealedSecrets { get; init; }

    /// <summary>Whether a VM with these tags is attached.</summary>
    public bool IsAttachedTo(string vmId, IReadOnlyList<string> vmTags)
        => Attachments.Any(a => a.Kind switch
        {
            AttachmentKind.All => true,
            AttachmentKind.Vm => a.Value == vmId,
            AttachmentKind.Tag => vmTags.Contains(a.Value),
            _ => false,
        });
}

/// <summary>The secret parts of an http-proxy integration, only ever in memory in the clear.</summary>
public sealed record IntegrationSecrets(
    IReadOnlyDictionary<string, string> Headers,
    string? Bearer,
    string? BasicPassword,
    string? PeerToken)
{
    public static readonly IntegrationSecrets None = new(new Dictionary<string, string>(), null, null, null);
}

/// <summary>What <c>integrations add</c> asks for, already parsed (not yet validated).</summary>
public sealed record IntegrationAddRequest
{
    public required string Name { get; init; }
    public required IntegrationType Type { get; init; }
    public string? Target { get; init; }
    public IReadOnlyList<string> Headers { get; init; } = [];
    public string? Bearer { get; init; }
    public bool Peer { get; init; }
    public IReadOnlyList<string>? Fields { get; init; }
    public IReadOnlyList<string> Attach { get; init; } = [];
    /// <summary>github: <c>OWNER/REPO</c>.</summary>
    public string? Repository { get; init; }
}
