using Warren.Platform.Integrations;

namespace Warren.Edge.Integrations;

/// <summary>Which GitHub service a VM's request to a github integration goes to.</summary>
public enum GitHubService { Git, Api }

/// <summary>Where a VM's request to a github integration goes: the service, and the path and query to send there.</summary>
public readonly record struct GitHubUpstream(GitHubService Service, string PathAndQuery);

/// <summary>
/// Maps a VM's request on <c>NAME.int.&lt;vm-domain&gt;</c> to GitHub, for the integration's one repository only
/// (exe.dev's docs: github integration).
/// </summary>
/// <remarks>
/// Git's smart HTTP protocol (Git's documentation: gitprotocol-http): <c>/info/refs?service=git-upload-pack</c> or
/// <c>git-receive-pack</c>, <c>POST /git-upload-pack</c> and <c>POST /git-receive-pack</c>, either at the root (<c>git
/// clone http://NAME.int.&lt;vm-domain&gt;/</c>) or under <c>/OWNER/REPO[.git]</c> → <c>{github}/OWNER/REPO.git/…</c>.
/// The REST API (GitHub's docs: REST API, repositories): <c>/repos/OWNER/REPO</c> and everything below it →
/// <c>{api}/repos/OWNER/REPO/…</c> with the query unchanged. Anything else — another repository, another API route,
/// a dot segment, an encoded '/', '\' or '.' that a server might decode into one — is refused, so the token Warren
/// adds can only ever act on that repository.
/// </remarks>
public static class GitHubRoute
{
    private static readonly string[] s_gitEndpoints = ["/info/refs", "/git-upload-pack", "/git-receive-pack"];

    /// <summary>The upstream for <paramref name="pathAndQuery"/> (as sent, undecoded), or null when it is refused.</summary>
    public static GitHubUpstream? Map(string pathAndQuery, GitHubRepository repository)
    {
        if (pathAndQuery.Length == 0 || pathAndQuery[0] != '/') return null;
        int q = pathAndQuery.IndexOf('?');
        string path = q < 0 ? pathAndQuery : pathAndQuery[..q];
        string query = q < 0 ? "" : pathAndQuery[q..];
        if (!IsPlainPath(path)) return null;
        string canonical = "/" + repository.Owner + "/" + repository.Name;

        // The REST API: /repos/OWNER/REPO[/...].
        if (path.StartsWith("/repos/", StringComparison.OrdinalIgnoreCase))
        {
            var rest = path.AsSpan("/repos/".Length);
            int s1 = rest.IndexOf('/');
            if (s1 <= 0) return null;
            var owner = rest[..s1];
            var afterOwner = rest[(s1 + 1)..];
            int s2 = afterOwner.IndexOf('/');
            var name = s2 < 0 ? afterOwner : afterOwner[..s2];
            // The API names a repository without ".git".
            if (name.EndsWith(".git", StringComparison.OrdinalIgnoreCase) || !repository.Is(owner, name)) return null;
            string tail = s2 < 0 ? "" : afterOwner[s2..].ToString();
            return new GitHubUpstream(GitHubService.Api, "/repos" + canonical + tail + query);
        }

        // Git smart HTTP: [/OWNER/REPO[.git]]/ENDPOINT.
        string endpoint = path;
        var segments = path.Split('/');
        if (segments.Length >= 4 && repository.Is(segments[1], segments[2]))
            endpoint = path[(1 + segments[1].Length + 1 + segments[2].Length)..];
        if (!s_gitEndpoints.Contains(endpoint, StringComparer.Ordinal)) return null;
        if (endpoint == "/info/refs")
        {
            if (query is not ("?service=git-upload-pack" or "?service=git-receive-pack")) return null;
        }
        else if (query.Length > 0) return null;
        return new GitHubUpstream(GitHubService.Git, canonical + ".git" + endpoint + query);
    }

    /// <summary>No empty, "." or ".." segment, no backslash, and no percent-encoding of '/', '\', '.' or '%' itself.</summary>
    private static bool IsPlainPath(string path)
    {
        if (path.Contains('\\') || path.Contains("//", StringComparison.Ordinal)) return false;
        for (int i = path.IndexOf('%'); i >= 0; i = path.IndexOf('%', i + 1))
        {
            if (i + 2 >= path.Length) return false;
            string code = path.Substring(i + 1, 2).ToUpperInvariant();
            if (code is "2F" or "5C" or "2E" or "25" or "00") return false;
        }
        foreach (var segment in path.Split('/').Skip(1))
            if (segment is "." or "..") return false;
        return true;
    }
}
