using CsCheck;
using Warren.Edge.Integrations;
using Warren.Platform.Integrations;
using Xunit;

namespace Warren.Edge.Tests.Integrations;

/// <summary><see cref="GitHubRoute"/>: git smart HTTP and <c>/repos/OWNER/REPO</c> for the one repository, nothing else.</summary>
public sealed class GitHubRouteTests
{
    private static readonly GitHubRepository Repo = new("acme", "app");

    [Theory]
    [InlineData("/info/refs?service=git-upload-pack", GitHubService.Git, "/acme/app.git/info/refs?service=git-upload-pack")]
    [InlineData("/info/refs?service=git-receive-pack", GitHubService.Git, "/acme/app.git/info/refs?service=git-receive-pack")]
    [InlineData("/git-upload-pack", GitHubService.Git, "/acme/app.git/git-upload-pack")]
    [InlineData("/acme/app.git/git-receive-pack", GitHubService.Git, "/acme/app.git/git-receive-pack")]
    [InlineData("/ACME/App/info/refs?service=git-upload-pack", GitHubService.Git, "/acme/app.git/info/refs?service=git-upload-pack")]
    [InlineData("/repos/acme/app", GitHubService.Api, "/repos/acme/app")]
    [InlineData("/repos/Acme/APP/pulls?state=open&per_page=5", GitHubService.Api, "/repos/acme/app/pulls?state=open&per_page=5")]
    [InlineData("/repos/acme/app/contents/docs/a%20b.md", GitHubService.Api, "/repos/acme/app/contents/docs/a%20b.md")]
    public void Maps_the_repositorys_own_routes(string request, GitHubService service, string upstream)
    {
        var r = GitHubRoute.Map(request, Repo);
        Assert.NotNull(r);
        Assert.Equal(service, r.Value.Service);
        Assert.Equal(upstream, r.Value.PathAndQuery);
    }

    [Theory]
    [InlineData("/")]
    [InlineData("/acme/other.git/info/refs?service=git-upload-pack")]
    [InlineData("/other/app/git-upload-pack")]
    [InlineData("/repos/acme/other")]
    [InlineData("/repos/acme/app.git")]
    [InlineData("/repos/acme")]
    [InlineData("/repos/acme/app/../other")]
    [InlineData("/repos/acme/app/%2e%2e/other")]
    [InlineData("/repos/acme/app%2F..%2Fother")]
    [InlineData("/repos/acme/app/.\\../x")]
    [InlineData("/user")]
    [InlineData("/info/refs")]
    [InlineData("/info/refs?service=git-upload-archive")]
    [InlineData("/git-upload-pack?x=1")]
    [InlineData("//repos/acme/app")]
    [InlineData("repos/acme/app")]
    public void Refuses_everything_else(string request) => Assert.Null(GitHubRoute.Map(request, Repo));

    /// <summary>Whatever a VM sends, an accepted request goes to the repository's own prefix with no dot segment.</summary>
    [Fact]
    public void Any_accepted_request_stays_inside_the_repository()
    {
        var part = Gen.OneOf(Gen.Const("acme"), Gen.Const("app"), Gen.Const("app.git"), Gen.Const("repos"), Gen.Const(".."), Gen.Const("."),
            Gen.Const("%2e"), Gen.Const("%2F"), Gen.Const("info"), Gen.Const("refs"), Gen.Const("git-upload-pack"), Gen.Const("other"), Gen.String[0, 6]);
        var path = Gen.Select(part.Array[0, 6], Gen.OneOf(Gen.Const(""), Gen.Const("?service=git-upload-pack"), Gen.String[0, 8].Select(q => "?" + q)),
            (parts, query) => "/" + string.Join('/', parts) + query);
        path.Sample(p =>
        {
            if (GitHubRoute.Map(p, Repo) is not { } r) return;
            string upstreamPath = r.PathAndQuery.Split('?')[0];
            Assert.True(upstreamPath.StartsWith(r.Service == GitHubService.Git ? "/acme/app.git/" : "/repos/acme/app", StringComparison.Ordinal), p);
            Assert.DoesNotContain("/../", upstreamPath + "/");
            Assert.DoesNotContain("/./", upstreamPath + "/");
            Assert.DoesNotContain("%2e", upstreamPath, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("%2f", upstreamPath, StringComparison.OrdinalIgnoreCase);
        }, iter: 20_000);
    }
}
