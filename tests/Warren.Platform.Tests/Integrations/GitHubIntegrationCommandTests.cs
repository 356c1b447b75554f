using System.Text;
using System.Text.Json;
using CsCheck;
using Warren.Platform.Integrations;
using Xunit;

namespace Warren.Platform.Tests.Integrations;

/// <summary><c>integrations setup github</c> and <c>integrations add github</c> through the dispatcher, real SQLite (exe.dev's docs: github integration).</summary>
public sealed class GitHubIntegrationCommandTests : IDisposable
{
    private const string Token = "github_pat_11ABCDEFG0123456789_secretpart";
    private readonly IntegrationHarness _h = new();

    public void Dispose() => _h.Dispose();

    [Fact]
    public async Task Setup_stores_the_token_sealed_and_never_shows_or_audits_it()
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        var none = await _h.RunAsync(alice, "integrations", "setup", "github", "--json");
        Assert.Equal("not configured", none.Json.GetProperty("status").GetString());
        var add = await _h.RunAsync(alice, "integrations", "add", "github", "--name", "repo", "--repository", "acme/app");
        Assert.Equal(1, add.Exit);
        Assert.Contains("integrations setup github --token", add.Stderr);

        var setup = await _h.RunAsync(alice, "integrations", "setup", "github", "--token", Token);
        Assert.True(setup.Exit == 0, setup.Stderr);
        var shown = await _h.RunAsync(alice, "integrations", "setup", "github", "--json");
        Assert.Equal("configured", shown.Json.GetProperty("status").GetString());
        Assert.Equal("***", shown.Json.GetProperty("token").GetString());
        Assert.Equal(Token, await _h.Integrations.OpenGitHubTokenAsync(alice.Account.Id));

        var added = await _h.RunAsync(alice, "integrations", "add", "github", "--name", "repo", "--repository", "Acme/App.git", "--json");
        Assert.True(added.Exit == 0, added.Stderr);
        Assert.Equal("Acme/App", added.Json.GetProperty("repository").GetString());
        Assert.Equal("github", added.Json.GetProperty("type").GetString());
        Assert.Contains("git clone http://repo.int.", added.Json.GetProperty("help").GetString());

        foreach (var output in new[] { setup.Stdout, shown.Stdout, added.Stdout, (await _h.RunAsync(alice, "integrations", "list")).Stdout })
            Assert.DoesNotContain(Token, output);
        Assert.DoesNotContain(Token, JsonSerializer.Serialize(await _h.P.Audit.TailAsync(100)));
        foreach (var path in Directory.GetFiles(_h.P.Options.DataDirectory, "warren.db*"))
        {
            byte[] bytes;
            using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)) { bytes = new byte[fs.Length]; fs.ReadExactly(bytes); }
            Assert.True(bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(Token)) < 0, $"{Path.GetFileName(path)} holds the token in the clear");
        }

        // Another account sees none of it and has no GitHub setup of its own.
        var mallory = await _h.NewUserAsync("mallory@example.com");
        Assert.Null(await _h.Integrations.OpenGitHubTokenAsync(mallory.Account.Id));
        Assert.Equal(1, (await _h.RunAsync(mallory, "integrations", "add", "github", "--name", "x", "--repository", "acme/app")).Exit);

        var removed = await _h.RunAsync(alice, "integrations", "setup", "github", "--remove", "--json");
        Assert.Equal("removed", removed.Json.GetProperty("status").GetString());
        Assert.Null(await _h.Integrations.OpenGitHubTokenAsync(alice.Account.Id));
    }

    [Theory]
    [InlineData("acme", "invalid --repository")]
    [InlineData("acme/app/extra", "invalid --repository")]
    [InlineData("acme-/app", "invalid --repository")]
    [InlineData("acme/..", "invalid --repository")]
    [InlineData("ac me/app", "invalid --repository")]
    public async Task Bad_repositories_and_flags_fail_clearly(string repository, string message)
    {
        var alice = await _h.NewUserAsync("alice@example.com");
        Assert.Equal(0, (await _h.RunAsync(alice, "integrations", "setup", "github", "--token", Token)).Exit);
        var r = await _h.RunAsync(alice, "integrations", "add", "github", "--name", "repo", "--repository", repository);
        Assert.Equal(1, r.Exit);
        Assert.Contains(message, r.Stderr);
        var withBearer = await _h.RunAsync(alice, "integrations", "add", "github", "--name", "repo", "--repository", "acme/app", "--bearer", "x");
        Assert.Equal(1, withBearer.Exit);
        Assert.Contains("--repository OWNER/REPO only", withBearer.Stderr);
        var badToken = await _h.RunAsync(alice, "integrations", "setup", "github", "--token", "has space");
        Assert.Equal(1, badToken.Exit);
        Assert.DoesNotContain("has space", badToken.Stderr);
    }

    [Fact]
    public void Repository_parsing_accepts_only_what_github_names_and_round_trips()
    {
        Gen.String[0, 80].Sample(text =>
        {
            if (!GitHubRepository.TryParse(text, out var r)) return;
            Assert.Matches("^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$", r.ToString());
            Assert.NotEqual(".", r.Name);
            Assert.NotEqual("..", r.Name);
            Assert.True(GitHubRepository.TryParse(r.ToString(), out var again) && again == r);
        });
    }
}
