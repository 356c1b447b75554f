using System.Text.RegularExpressions;

namespace Warren.Platform.Integrations;

/// <summary>
/// A GitHub repository <c>OWNER/REPO</c> as <c>integrations add github --repository</c> takes it. GitHub's own rules:
/// an owner (user or organisation) is 1-39 letters, digits and single hyphens, not starting or ending with one; a
/// repository name is 1-100 of letters, digits, '.', '_' and '-', never "." or "..". Names compare without case, as
/// GitHub resolves them.
/// </summary>
public sealed partial record GitHubRepository(string Owner, string Name)
{
    public const int MaxOwnerLength = 39;
    public const int MaxNameLength = 100;

    [GeneratedRegex("^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$", RegexOptions.CultureInvariant)]
    private static partial Regex OwnerShape();

    [GeneratedRegex("^[A-Za-z0-9._-]{1,100}$", RegexOptions.CultureInvariant)]
    private static partial Regex NameShape();

    public override string ToString() => Owner + "/" + Name;

    /// <summary>Whether <paramref name="owner"/>/<paramref name="name"/> is this repository (case-insensitive; a <c>.git</c> suffix on the name allowed).</summary>
    public bool Is(ReadOnlySpan<char> owner, ReadOnlySpan<char> name)
    {
        if (name.EndsWith(".git", StringComparison.OrdinalIgnoreCase) && !Name.EndsWith(".git", StringComparison.OrdinalIgnoreCase))
            name = name[..^4];
        return owner.Equals(Owner, StringComparison.OrdinalIgnoreCase) && name.Equals(Name, StringComparison.OrdinalIgnoreCase);
    }

    public static bool TryParse(string? text, out GitHubRepository repository)
    {
        repository = null!;
        if (text is null || text.Length > MaxOwnerLength + 1 + MaxNameLength) return false;
        int slash = text.IndexOf('/');
        if (slash <= 0 || slash != text.LastIndexOf('/')) return false;
        string owner = text[..slash], name = text[(slash + 1)..];
        if (name.EndsWith(".git", StringComparison.OrdinalIgnoreCase)) name = name[..^4];
        if (!OwnerShape().IsMatch(owner) || !NameShape().IsMatch(name) || name is "." or "..") return false;
        repository = new GitHubRepository(owner, name);
        return true;
    }

    /// <summary>Parses or throws <c>invalid_argument</c> with the rule spelled out.</summary>
    public static GitHubRepository Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) throw IntegrationValidation.Invalid("missing --repository OWNER/REPO");
        if (!TryParse(text.Trim(), out var r))
            throw IntegrationValidation.Invalid($"invalid --repository \"{IntegrationValidation.Shown(text)}\": use OWNER/REPO as GitHub names them");
        return r;
    }
}
