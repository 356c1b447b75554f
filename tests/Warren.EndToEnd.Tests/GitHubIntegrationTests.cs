using System.Text;
using System.Text.Json;
using Warren.Edge.Tests.Integrations;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon whose github integrations reach <see cref="FakeGitHub"/> (git http-backend over HTTPS on loopback; its
/// name pinned with <c>ResolveOverrides</c>, its CA trusted, <c>GitHubUrl</c>/<c>GitHubApiUrl</c> pointed at it),
/// with repositories acme/app and acme/other; the VMs run the default image, which has git.
/// </summary>
public sealed class GitHubFixture : DaemonFixture, IAsyncLifetime
{
    public readonly string Token = "github_pat_e2e_" + Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
    private readonly string _directory = Directory.CreateTempSubdirectory("warren-fake-github-").FullName;
    public FakeGitHub GitHub { get; private set; } = null!;
    public SshUser Owner { get; private set; } = null!;

    protected override Dictionary<string, string> Config => new()
    {
        [$"Warren:Integrations:ResolveOverrides:{FakeGitHub.HostName}"] = "127.0.0.1",
        ["Warren:Integrations:TrustedCaFile"] = GitHub.CaPemPath,
        ["Warren:Integrations:GitHubUrl"] = GitHub.WebUrl,
        ["Warren:Integrations:GitHubApiUrl"] = GitHub.ApiUrl,
        ["Warren:Images:Provided:0"] = "warren/busybox:1",
        ["Warren:Images:Provided:1"] = "warren/default:1",
    };

    public new async Task InitializeAsync()
    {
        ProcessRunner.Require("git"); // the fake's git http-backend (scripts/prereqs.sh installs it)
        GitHub = await FakeGitHub.StartAsync(_directory, Token);
        await GitHub.CreateRepositoryAsync("acme", "app", "hello from acme/app\n");
        await GitHub.CreateRepositoryAsync("acme", "other", "not for the VM\n");
        await base.InitializeAsync();
        Owner = await Daemon.CreateUserAsync("gh-owner@example.com");
    }

    public new async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await GitHub.DisposeAsync();
        try { Directory.Delete(_directory, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// The github integration through the real daemon, a real VM with the real git client, and a local GitHub
/// (exe.dev's docs: github integration): clone, commit and push through <c>NAME.int.box.localhost</c> land in the
/// fake's repository; the fake saw Warren's token, the VM never held it; another repository, a detached VM and a
/// second account get 403 and never reach GitHub.
/// </summary>
public sealed class GitHubIntegrationTests(GitHubFixture fixture) : IClassFixture<GitHubFixture>
{
    private const string Host = "repo.int.box.localhost";
    private WarrenDaemon Daemon => fixture.Daemon;
    private SshUser Owner => fixture.Owner;

    private Task<ProcessResult> InVmAsync(SshUser user, string vm, string script) =>
        user.VmAsync(Daemon.SlotAddresses[0], script, user: "vm+" + vm, timeout: TimeSpan.FromMinutes(2));

    /// <summary>
    /// Shell prelude: the integration's address from the VM's own resolver, handed to git and curl (both map every
    /// <c>*.localhost</c> name to loopback themselves, RFC 6761) as a pinned resolve.
    /// </summary>
    private const string Prelude = $"A=$(getent hosts {Host} | cut -d' ' -f1); [ -n \"$A\" ] || exit 99; R=\"http.curloptResolve={Host}:80:$A\"; ";

    private async Task<(int Status, string Body)> CurlAsync(SshUser user, string vm, string path)
    {
        var r = await InVmAsync(user, vm, Prelude + $"curl -sS --max-time 20 -w '\\n%{{http_code}}' --resolve {Host}:80:$A 'http://{Host}{path}'");
        Assert.True(r.ExitCode == 0, r + "\ndaemon: " + Daemon.Log);
        int cut = r.Stdout.LastIndexOf('\n');
        return (int.Parse(r.Stdout[(cut + 1)..].Trim()), r.Stdout[..cut]);
    }

    private async Task ControlOkAsync(SshUser user, string command)
    {
        var r = await user.ControlAsync(command);
        Assert.True(r.ExitCode == 0, command + "\n" + r + "\ndaemon: " + Daemon.Log);
    }

    [Fact]
    public async Task Clone_commit_and_push_from_the_vm_reach_the_one_repository_and_the_token_stays_with_warren()
    {
        const string vm = "gh-a";
        await ControlOkAsync(Owner, $"new --name={vm} --image=warren/default:1 --no-email --json");
        var early = await Owner.ControlAsync("integrations add github --name repo --repository acme/app");
        Assert.NotEqual(0, early.ExitCode);
        Assert.Contains("integrations setup github", early.Stderr + early.Stdout);
        await ControlOkAsync(Owner, $"integrations setup github --token {fixture.Token}");
        var setup = await Owner.ControlAsync("integrations setup github --json");
        Assert.Contains("\"configured\"", setup.Stdout);
        Assert.DoesNotContain(fixture.Token, setup.Stdout);
        await ControlOkAsync(Owner, $"integrations add github --name repo --repository acme/app --attach vm:{vm}");

        // Clone, commit, push: the real git client, smart HTTP through the integration.
        var push = await InVmAsync(Owner, vm, Prelude + $"""
            set -e; cd /tmp; rm -rf app
            git -c "$R" clone -q http://{Host}/acme/app.git app 2>&1
            cd app; cat README.md
            git -c user.email=vm@example.com -c user.name=VM commit -q --allow-empty -m 'pushed from the vm'
            git -c "$R" push -q origin main 2>&1; echo PUSHED
            """);
        Assert.True(push.ExitCode == 0 && push.Stdout.Contains("PUSHED"), push + "\ndaemon: " + Daemon.Log);
        Assert.Contains("hello from acme/app", push.Stdout);
        Assert.StartsWith("pushed from the vm", await fixture.GitHub.LogAsync("acme", "app"));
        string basic = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("x-access-token:" + fixture.Token));
        Assert.Contains(fixture.GitHub.Requests, r => r.PathAndQuery == "/acme/app.git/git-receive-pack" && r.Authorization == basic && r.Status == 200);

        // A push whose pack is larger than an API call may be (40 MiB that do not compress) goes through whole.
        var bigPush = await InVmAsync(Owner, vm, Prelude + $"""
            set -e; cd /tmp/app
            head -c 41943040 /dev/urandom > big.bin; git add big.bin
            git -c user.email=vm@example.com -c user.name=VM commit -q -m 'a 40 MiB file'
            git -c "$R" -c http.postBuffer=1048576 push -q origin main 2>&1; echo PUSHED; rm -rf /tmp/app
            """);
        Assert.True(bigPush.ExitCode == 0 && bigPush.Stdout.Contains("PUSHED"), bigPush + "\ndaemon: " + Daemon.Log);
        Assert.StartsWith("a 40 MiB file", await fixture.GitHub.LogAsync("acme", "app"));

        // The root form fetches the same repository; the REST API route gets the token as a Bearer.
        var lsRoot = await InVmAsync(Owner, vm, Prelude + $"git -c \"$R\" ls-remote http://{Host}/ 2>&1");
        Assert.True(lsRoot.ExitCode == 0 && lsRoot.Stdout.Contains("refs/heads/main"), lsRoot.ToString());
        var (apiStatus, api) = await CurlAsync(Owner, vm, "/repos/acme/app");
        Assert.Equal(200, apiStatus);
        Assert.Equal("acme/app", JsonDocument.Parse(api).RootElement.GetProperty("full_name").GetString());
        Assert.Contains(fixture.GitHub.Requests, r => r.PathAndQuery == "/api/repos/acme/app" && r.Authorization == "Bearer " + fixture.Token);

        // Another repository, by git or by API, or another API route: 403 from Warren, GitHub never asked.
        int before = fixture.GitHub.Requests.Count;
        var other = await InVmAsync(Owner, vm, Prelude + $"git -c \"$R\" ls-remote http://{Host}/acme/other.git 2>&1; echo exit=$?");
        Assert.DoesNotContain("exit=0", other.Stdout);
        Assert.Equal(403, (await CurlAsync(Owner, vm, "/acme/other.git/info/refs?service=git-upload-pack")).Status);
        Assert.Equal(403, (await CurlAsync(Owner, vm, "/repos/acme/other")).Status);
        Assert.Equal(403, (await CurlAsync(Owner, vm, "/repos/acme/app/../other")).Status);
        Assert.Equal(403, (await CurlAsync(Owner, vm, "/user")).Status);
        Assert.Equal(before, fixture.GitHub.Requests.Count);

        // The VM never holds the token: no process's command line or environment, no file (the clone's config
        // included). The pattern travels base64-encoded so the search does not put the token in a command line.
        string b64 = Convert.ToBase64String(Encoding.UTF8.GetBytes(fixture.Token));
        var search = await InVmAsync(Owner, vm, "(ps auxww 2>/dev/null || true); cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; "
            + $"printf 'FI%sES:\\n' L; P=$(echo {b64} | base64 -d); grep -rlF \"$P\" /etc /root /home /tmp /var /data /run 2>/dev/null; true");
        Assert.True(search.ExitCode == 0, search.ToString());
        Assert.DoesNotContain(fixture.Token, search.Stdout);
        Assert.Equal("", search.Stdout[(search.Stdout.LastIndexOf("FILES:", StringComparison.Ordinal) + "FILES:".Length)..].Trim());
        // Nor do Warren's logs, its database files or the list output.
        Assert.DoesNotContain(fixture.Token, Daemon.Log);
        foreach (var path in Directory.GetFiles(Daemon.DataDirectory, "warren.db*"))
        {
            byte[] bytes;
            using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)) { bytes = new byte[fs.Length]; fs.ReadExactly(bytes); }
            Assert.True(bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(fixture.Token)) < 0, path);
        }
        var list = await Owner.ControlAsync("integrations list --json");
        Assert.Contains("\"repository\":\"acme/app\"", list.Stdout);
        Assert.DoesNotContain(fixture.Token, list.Stdout);

        // Detach: refused from the next request on.
        await ControlOkAsync(Owner, $"integrations detach repo vm:{vm}");
        Assert.Equal(403, (await CurlAsync(Owner, vm, "/acme/app.git/info/refs?service=git-upload-pack")).Status);
        Assert.Equal(before, fixture.GitHub.Requests.Count);
    }

    [Fact]
    public async Task A_second_account_cannot_see_or_use_the_owners_github_integration()
    {
        await ControlOkAsync(Owner, $"integrations setup github --token {fixture.Token}");
        await ControlOkAsync(Owner, "integrations add github --name shared --repository acme/app --attach auto:all");
        var mallory = await Daemon.CreateUserAsync("gh-mallory@example.com");
        await ControlOkAsync(mallory, "new --name=gh-m --image=warren/default:1 --no-email --json");
        int before = fixture.GitHub.Requests.Count;
        var r = await InVmAsync(mallory, "gh-m", $"A=$(getent hosts shared.int.box.localhost | cut -d' ' -f1); curl -sS -o /dev/null -w '%{{http_code}}' --resolve shared.int.box.localhost:80:$A 'http://shared.int.box.localhost/acme/app.git/info/refs?service=git-upload-pack'");
        Assert.Equal("403", r.Stdout.Trim());
        Assert.Equal(before, fixture.GitHub.Requests.Count);
        Assert.DoesNotContain("shared", (await mallory.ControlAsync("integrations list --json")).Stdout);
        var add = await mallory.ControlAsync("integrations add github --name mine --repository acme/app");
        Assert.NotEqual(0, add.ExitCode);
        Assert.Contains("not set up", add.Stderr + add.Stdout);
        var bad = await Owner.ControlAsync("integrations add github --name bad --repository 'acme/../x'");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("invalid --repository", bad.Stderr + bad.Stdout);
    }
}
