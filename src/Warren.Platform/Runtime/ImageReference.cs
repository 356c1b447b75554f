using System.Diagnostics.CodeAnalysis;
using System.Text.RegularExpressions;

namespace Warren.Platform.Runtime;

/// <summary>
/// A named image reference, parsed by the distribution reference grammar (github.com/distribution/reference,
/// reference.go): <c>[domain[:port]/]path[:tag][@sha256:hex]</c>. A repository path is required; engine image
/// ids (<c>sha256:…</c>, 64 hex digits) are not references and do not parse. Normalisation follows the same
/// package's <c>ParseNormalizedNamed</c>: no domain means <c>docker.io</c>, and a one-component path on
/// <c>docker.io</c> gains <c>library/</c>.
/// </summary>
public sealed partial record ImageReference
{
    /// <summary>The grammar's limit on a name (domain plus path).</summary>
    public const int MaxNameLength = 255;
    /// <summary>The grammar's limit on a tag.</summary>
    public const int MaxTagLength = 128;
    /// <summary>Where a reference without a domain lives.</summary>
    public const string DefaultDomain = "docker.io";
    /// <summary>The tag a reference without tag or digest means.</summary>
    public const string DefaultTag = "latest";
    /// <summary>Docker's legacy name for <see cref="DefaultDomain"/>.</summary>
    private const string LegacyDefaultDomain = "index.docker.io";
    private const string OfficialRepositoryPrefix = "library/";
    private const string Sha256Prefix = "sha256:";

    private ImageReference(string domain, string path, string? tag, string? digest, bool explicitDomain)
    {
        Domain = domain;
        Path = path;
        Tag = tag;
        Digest = digest;
        HasExplicitDomain = explicitDomain;
    }

    /// <summary>Registry host, with port when given: <c>docker.io</c>, <c>registry.example:5000</c>.</summary>
    public string Domain { get; }
    /// <summary>Repository path inside the registry: <c>library/alpine</c>, <c>team/app</c>.</summary>
    public string Path { get; }
    /// <summary>The tag, or null (then <see cref="DefaultTag"/> unless there is a digest).</summary>
    public string? Tag { get; }
    /// <summary><c>sha256:</c> and 64 lower-case hex digits, or null.</summary>
    public string? Digest { get; }
    /// <summary>Whether the text named the registry itself (rather than meaning <see cref="DefaultDomain"/>).</summary>
    public bool HasExplicitDomain { get; }

    /// <summary><c>domain/path</c>: what a registry and the engine call the repository.</summary>
    public string Repository => Domain + "/" + Path;

    /// <summary>The fully qualified form: <c>docker.io/library/alpine:latest</c>, <c>reg:5000/app@sha256:…</c>.</summary>
    public string Canonical => Repository + (Tag is not null ? ":" + Tag : Digest is null ? ":" + DefaultTag : "") + (Digest is not null ? "@" + Digest : "");

    /// <summary>The repository at exactly this manifest: <c>domain/path@sha256:…</c>.</summary>
    public string PinnedTo(string digest) => Repository + "@" + digest;

    public override string ToString() => Canonical;

    /// <summary>Parses <paramref name="text"/>; false for anything outside the grammar (including engine ids).</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out ImageReference? reference)
    {
        reference = null;
        if (string.IsNullOrEmpty(text) || text.Length > MaxNameLength + 1 + MaxTagLength + 1 + Sha256Prefix.Length + 64) return false;
        // ParseAnyReference reads "sha256:" and 64 hex digits as an image id, not as repository "sha256" with a tag.
        if (text.StartsWith(Sha256Prefix, StringComparison.OrdinalIgnoreCase) && DigestRegex().IsMatch(text)) return false;
        string rest = text;
        string? digest = null;
        int at = rest.IndexOf('@');
        if (at >= 0)
        {
            digest = rest[(at + 1)..];
            rest = rest[..at];
            if (!DigestRegex().IsMatch(digest)) return false;
            digest = digest.ToLowerInvariant();
        }
        string? tag = null;
        int colon = rest.LastIndexOf(':');
        if (colon > rest.LastIndexOf('/'))
        {
            tag = rest[(colon + 1)..];
            rest = rest[..colon];
            if (!TagRegex().IsMatch(tag)) return false;
        }
        if (rest.Length == 0 || rest.Length > MaxNameLength) return false;

        string domain;
        string path;
        bool explicitDomain;
        int slash = rest.IndexOf('/');
        string first = slash < 0 ? "" : rest[..slash];
        // ParseNormalizedNamed: the first component is a registry when it has a dot or a port, is "localhost",
        // or has upper case (which a path may not).
        if (slash > 0 && (first.Contains('.') || first.Contains(':') || first == "localhost" || first.Any(char.IsAsciiLetterUpper)))
        {
            if (!DomainRegex().IsMatch(first)) return false;
            domain = first == LegacyDefaultDomain ? DefaultDomain : first;
            path = rest[(slash + 1)..];
            explicitDomain = true;
        }
        else
        {
            domain = DefaultDomain;
            path = rest;
            explicitDomain = false;
        }
        if (!PathRegex().IsMatch(path)) return false;
        // The grammar refuses a name that is an engine id (64 hex digits), so an id never passes for a name.
        if (path.Length == 64 && path.All(char.IsAsciiHexDigitLower)) return false;
        if (domain == DefaultDomain && !path.Contains('/')) path = OfficialRepositoryPrefix + path;
        reference = new ImageReference(domain, path, tag, digest, explicitDomain);
        return true;
    }

    /// <summary>The same image, addressed by name: equal <see cref="Canonical"/> forms.</summary>
    public bool SameAs(ImageReference other) => Canonical == other.Canonical;

    // reference/regexp.go, with the tag's \w spelled out as ASCII (.NET's \w also matches non-ASCII letters).
    [GeneratedRegex(@"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]{1,5})?$", RegexOptions.CultureInvariant)]
    private static partial Regex DomainRegex();

    [GeneratedRegex(@"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$", RegexOptions.CultureInvariant)]
    private static partial Regex PathRegex();

    [GeneratedRegex(@"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", RegexOptions.CultureInvariant)]
    private static partial Regex TagRegex();

    // Only sha256 digests: the one algorithm registries and engines use for manifests.
    [GeneratedRegex(@"^sha256:[a-fA-F0-9]{64}$", RegexOptions.CultureInvariant)]
    private static partial Regex DigestRegex();
}

/// <summary>
/// The messages a refused or failed image gets. One text per outcome, used by the platform's checks and by
/// runtimes alike, so that a reference Warren refuses reads exactly like one no registry has.
/// </summary>
public static class ImageMessages
{
    /// <summary>The image does not exist, or Warren will not use it for this caller (which of the two is not said).</summary>
    public static string NotFound(string reference) => $"cannot pull {reference}";

    /// <summary>The registry refused the caller's credential (or wants one).</summary>
    public static string Unauthorized(string reference) => $"registry refused access to {reference} (check --registry-auth)";
}
