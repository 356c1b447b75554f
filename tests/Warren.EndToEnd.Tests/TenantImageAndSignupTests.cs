using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon with the production sign-up default (a code mailed through a loopback SMTP sink, no auto-verify) and
/// one website VM owned by "owner", shared with carol@mail.internal before carol has an account.
/// </summary>
public sealed class TenantFixture : MailingSiteFixture
{
    public const string Site = "tenantsite";
    public const string Content = "the owner site";
    protected override string SiteName => Site;
    protected override string SiteContent => Content;
    protected override string OwnerEmail => "owner@example.com";
    protected override Dictionary<string, string> ExtraConfig => new() { ["Warren:Signup:AutoVerify"] = "false" };
}

/// <summary>
/// A hostile second account against the real daemon, with the real OpenSSH client, curl and engine: it cannot start
/// another tenant's snapshot by image id, id prefix or snapshot name, nor another account's private registry image
/// by name; claiming someone's address at sign-up activates nothing and announces nothing to VMs; and the registry
/// secret stays out of the audit log however the flag is spelled.
/// </summary>
public sealed partial class TenantImageAndSignupTests(TenantFixture fixture) : IClassFixture<TenantFixture>
{
    private static readonly TimeSpan MailWait = TimeSpan.FromSeconds(60);
    private const string ControlHost = "warren.localhost";
    private WarrenDaemon Daemon => fixture.Daemon;
    private string Instance => File.ReadAllText(Path.Combine(Daemon.DataDirectory, "instance-id")).Trim();

    [GeneratedRegex(@"^failed to create VM ""[^""]+"": cannot pull \S+$")]
    private static partial Regex NotFoundMessage();

    [GeneratedRegex(@"https://\S+/(?:__exe\.dev/)?auth\?secret=[A-Za-z0-9_%\-]+(&redirect=\S*)?")]
    private static partial Regex LoginLink();

    /// <summary>The next mail to <paramref name="to"/> about <paramref name="subject"/> (quoted-printable undone), skipping others (invitations).</summary>
    private async Task<string> NextMailAsync(string to, string subject)
    {
        using var wait = new CancellationTokenSource(MailWait);
        while (true)
        {
            string mail = (await fixture.Mail.Messages.Reader.ReadAsync(wait.Token)).Replace("=\r\n", "").Replace("=\n", "").Replace("=3D", "=");
            if (mail.Contains("To: " + to) && mail.Contains(subject)) return mail;
        }
    }

    private static JsonElement Json(ProcessResult r)
    {
        Assert.True(r.ExitCode == 0, r.ToString());
        return JsonDocument.Parse(r.Stdout).RootElement;
    }

    private static string Error(ProcessResult r)
    {
        Assert.True(r.ExitCode == 1, r.ToString());
        return JsonDocument.Parse(r.Stdout).RootElement.GetProperty("error").GetString()!;
    }

    private static Task<ProcessResult> Docker(params string[] args) => ProcessRunner.RunAsync(ProcessRunner.Require("docker"), args);

    private async Task<string> VmIdAsync(string name)
    {
        var r = await Docker("ps", "-a", "--filter", $"label=warren.instance={Instance}", "--filter", $"label=warren.vm-name={name}",
            "--format", "{{.Label \"warren.vm-id\"}}");
        Assert.True(r.ExitCode == 0, r.ToString());
        return Assert.Single(r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    private static async Task AssertNoVmsAsync(SshUser u)
        => Assert.Empty(Json(await u.ControlAsync("ls --json")).GetProperty("vms").EnumerateArray());

    private SqliteConnection OpenDatabase()
    {
        var c = new SqliteConnection($"Data Source={Path.Combine(Daemon.DataDirectory, "warren.db")};Pooling=False;Default Timeout=30");
        c.Open();
        return c;
    }

    // ------------------------------------------------------------------ images

    [Fact]
    public async Task AnotherTenantsSnapshot_CannotBeStarted_ByIdPrefix_Id_OrSnapshotName()
    {
        var alice = await Daemon.CreateUserAsync("snap-alice@example.com");
        var mallory = await Daemon.CreateUserAsync("snap-mallory@example.com");
        Json(await alice.ControlAsync("new --name=snap-src --image=warren/busybox:1 --json"));
        Json(await alice.ControlAsync("cp snap-src snap-copy --json"));
        // cp committed alice's VM to a local image: warren-vm/<id>:copy.
        string snapshot = $"warren-vm/{(await VmIdAsync("snap-copy")).ToLowerInvariant()}:copy";
        var inspect = await Docker("image", "inspect", "--format", "{{.Id}}", snapshot);
        Assert.True(inspect.ExitCode == 0, inspect.ToString());
        string id = inspect.Stdout.Trim();
        Assert.StartsWith("sha256:", id);
        string hex = id["sha256:".Length..];

        // What a missing image says (a registry that has no such repository), for comparison.
        await using var registry = await RegistryServer.StartAsync();
        string missing = Error(await mallory.ControlAsync(
            $"new --name=steal --image={registry.Host}/absent/app:1 --registry-auth {registry.User}:{registry.Password} --json"));
        Assert.Matches(NotFoundMessage(), missing);

        foreach (var attempt in new[] { hex[..4], hex[..12], "sha256:" + hex[..12], id, hex, snapshot, "docker.io/" + snapshot })
        {
            string error = Error(await mallory.ControlAsync($"new --name=steal --image={attempt} --json"));
            Assert.Matches(NotFoundMessage(), error); // the same words as a missing image: nothing about what exists
        }
        await AssertNoVmsAsync(mallory);
        var containers = await Docker("ps", "-a", "-q", "--filter", $"label=warren.instance={Instance}", "--filter", "label=warren.vm-name=steal");
        Assert.Equal("", containers.Stdout.Trim());
    }

    [Fact]
    public async Task AnotherAccountsPrivateImage_CannotBeStartedByName_EvenOnceCached()
    {
        await using var registry = await RegistryServer.StartAsync();
        string image = await registry.PushAsync("warren/busybox:1", "tenant/private-app", "1");
        var alice = await Daemon.CreateUserAsync("reg-alice@example.com");
        var bob = await Daemon.CreateUserAsync("reg-bob@example.com");
        var created = Json(await alice.ControlAsync($"new --name=alice-private --image={image} --registry-auth {registry.User}:{registry.Password} --json"));
        Assert.Equal("running", created.GetProperty("status").GetString());

        // The engine has the image now; bob's requests still go to the registry, which refuses them.
        var digests = await Docker("image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", image);
        string pinned = digests.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Single(d => d.StartsWith(registry.Host + "/tenant/private-app@"));
        foreach (var command in new[]
        {
            $"new --name=bob-steal --image={image} --json",
            $"new --name=bob-steal --image={pinned} --json",
            $"new --name=bob-steal --image={image} --registry-auth {registry.User}:wrong-{Guid.NewGuid():N} --json",
        })
        {
            var r = await bob.ControlAsync(command);
            Assert.True(r.ExitCode == 1, command + "\n" + r);
            Assert.Contains("registry refused access", Error(r));
        }
        await AssertNoVmsAsync(bob);

        // Alice's VM runs the manifest the registry served her, and the grant says so.
        using var db = OpenDatabase();
        using var cmd = db.CreateCommand();
        cmd.CommandText = "SELECT a.email, g.reference, g.digest FROM image_grants g JOIN accounts a ON a.id = g.account_id WHERE g.reference LIKE '%private-app%'";
        using var rows = cmd.ExecuteReader();
        Assert.True(rows.Read());
        Assert.Equal("reg-alice@example.com", rows.GetString(0));
        Assert.Equal(image, rows.GetString(1));
        Assert.Equal(pinned[(pinned.IndexOf('@') + 1)..], rows.GetString(2));
        Assert.False(rows.Read());
        var runImage = await Docker("inspect", "--format", "{{.Config.Image}}", "warren-" + await VmIdAsync("alice-private"));
        Assert.Equal(pinned, runImage.Stdout.Trim());
        Json(await alice.ControlAsync("rm alice-private --json"));
    }

    // ------------------------------------------------------------------ audit

    [Fact]
    public async Task TheRegistrySecret_IsMaskedInTheAuditLog_HoweverTheFlagIsSpelled()
    {
        var u = await Daemon.CreateUserAsync("audit-spelling@example.com");
        string secret = "s3cret-" + Guid.NewGuid().ToString("N");
        string[] spellings =
        [
            $"-registry-auth=me:{secret}", $"-registry-auth me:{secret}", $"--registry-auth=me:{secret}", $"--registry-auth me:{secret}",
        ];
        // --cpu out of range: refused before any VM is made, and audited like any other run.
        for (int i = 0; i < spellings.Length; i++)
            Assert.Contains("--cpu", Error(await u.ControlAsync($"new --name=audit-{i} --image=warren/busybox:1 {spellings[i]} --cpu=999 --json")));

        using var db = OpenDatabase();
        using var cmd = db.CreateCommand();
        cmd.CommandText = "SELECT arguments FROM audit_log a JOIN accounts x ON x.id = a.account_id WHERE x.email = 'audit-spelling@example.com' AND command = 'new'";
        var logged = new List<string>();
        using (var rows = cmd.ExecuteReader())
            while (rows.Read()) logged.Add(rows.GetString(0));
        Assert.Equal(spellings.Length, logged.Count);
        Assert.All(logged, a => Assert.DoesNotContain(secret, a));
        Assert.All(logged, a => Assert.Contains("***", a));
        Assert.All(logged, a => Assert.Contains("warren/busybox:1", a)); // the rest stays readable
    }

    // ------------------------------------------------------------------ sign-up and identity

    private async Task<string> CarolsShareStatusAsync()
    {
        var show = Json(await fixture.Owner.ControlAsync($"share show {TenantFixture.Site} --json"));
        var users = show.GetProperty("users").EnumerateArray().Where(u => u.GetProperty("email").GetString() == "carol@mail.internal").ToList();
        return Assert.Single(users).GetProperty("status").GetString()!;
    }

    private async Task ShareWithCarolAsync()
    {
        var r = await fixture.Owner.ControlAsync($"share add {TenantFixture.Site} carol@mail.internal --json");
        Assert.True(r.ExitCode == 0 || r.Stdout.Contains("already shared"), r.ToString());
    }

    [Fact]
    public async Task ClaimingCarolsAddress_WithoutHerMailbox_ActivatesNothing_AndGetsNoIdentity()
    {
        await ShareWithCarolAsync();
        Assert.Equal("pending", await CarolsShareStatusAsync());

        // Mallory's fresh key asks to sign up as carol: the code goes to carol's mailbox, mallory guesses.
        var mallory = await SshUser.CreateKeyAsync(Daemon, "carol@mail.internal");
        var args = mallory.SshOptions(Daemon.SshPort);
        args.AddRange(["-tt", Daemon.ControlAddress]);
        var signup = ProcessRunner.RunAsync("ssh", args, stdin: "carol@mail.internal\n000000\n111111\n222222\n333333\n444444\n");
        Assert.Contains("verification code", await NextMailAsync("carol@mail.internal", "verification code"));
        var screen = await signup;
        Assert.Contains("Verification email sent to: carol@mail.internal", screen.Stdout);
        Assert.DoesNotContain("Registration complete", screen.Stdout);

        // No account, so nothing to announce: the share waits for carol, and mallory's key can mint no token.
        Assert.Equal("pending", await CarolsShareStatusAsync());
        Assert.NotEqual(0, (await mallory.ControlAsync("whoami --json")).ExitCode);
        Assert.NotEqual(0, (await mallory.ControlAsync($"ssh-key generate-api-key --vm={TenantFixture.Site} --json")).ExitCode);
    }

    [Fact]
    public async Task AnAccountWhoseAddressIsUnverified_GetsNoShareNoBrowserNoIdentityHeader_UntilAMailedLoginLinkVerifiesIt()
    {
        // dave@ (at a domain mail can reach: RFC 2606 example domains are not mailed) as the upgrade leaves an account that claimed its address under the old AutoVerify default:
        // email_verified = 0 (the migration's value for every existing row).
        var dave = await Daemon.CreateUserAsync("dave@mail.internal");
        using (var db = OpenDatabase())
        {
            using var cmd = db.CreateCommand();
            cmd.CommandText = "UPDATE accounts SET email_verified = 0 WHERE email = 'dave@mail.internal'";
            Assert.Equal(1, cmd.ExecuteNonQuery());
        }
        Json(await fixture.Owner.ControlAsync($"share add {TenantFixture.Site} dave@mail.internal --json"));
        var share = Json(await fixture.Owner.ControlAsync($"share show {TenantFixture.Site} --json")).GetProperty("users").EnumerateArray()
            .Single(u => u.GetProperty("email").GetString() == "dave@mail.internal");
        Assert.Equal("pending", share.GetProperty("status").GetString());

        // No browser session for an unproven address.
        var browser = await dave.ControlAsync("browser --json");
        Assert.Equal(1, browser.ExitCode);
        Assert.Contains("not verified", browser.Stdout);

        // Dave's token reaches the public site without an identity: the VM never hears dave@mail.internal.
        Json(await fixture.Owner.ControlAsync($"share set-public {TenantFixture.Site} --json"));
        try
        {
            // An exe0 token for the site, signed by dave's key with the real ssh-keygen, as anyone may make one.
            string siteNamespace = $"v0@{TenantFixture.Site}.box.localhost";
            string token = await WebSupport.MintExe0Async(dave.KeyPath, $"{{\"exp\":{WebSupport.UnixNow() + 3600}}}", siteNamespace);
            var withToken = await SiteAsync("/cgi-bin/env", "-H", "Authorization: Bearer " + token);
            Assert.DoesNotContain("dave@mail.internal", withToken.Body);
            if (withToken.Status == 200) Assert.False(withToken.Env().ContainsKey("HTTP_X_EXEDEV_EMAIL"), withToken.Body);
            // The owner's token, for contrast, is announced.
            string ownerToken = await WebSupport.MintExe0Async(fixture.Owner.KeyPath, $"{{\"exp\":{WebSupport.UnixNow() + 3600}}}", siteNamespace);
            var owner = await SiteAsync("/cgi-bin/env", "-H", "Authorization: Bearer " + ownerToken);
            Assert.Equal("owner@example.com", owner.Env().GetValueOrDefault("HTTP_X_EXEDEV_EMAIL"));

            // A login link mailed to dave's address, opened: that proves the address.
            var form = await ControlAsync("/login", "--data-urlencode", "email=dave@mail.internal", "--data-urlencode", "redirect=/",
                "-H", $"Origin: https://{ControlHost}:{Daemon.HttpsPort}");
            Assert.True(form.Status == 200, form.Raw);
            string mail = await NextMailAsync("dave@mail.internal", "Log in to");
            var link = LoginLink().Match(mail);
            Assert.True(link.Success, mail);
            var opened = await new CurlBrowser(Daemon, (ControlHost, Daemon.ControlAddress)).OpenLoginLinkAsync(link.Value);
            Assert.True(opened.Status is >= 300 and < 400, opened.Raw);

            share = Json(await fixture.Owner.ControlAsync($"share show {TenantFixture.Site} --json")).GetProperty("users").EnumerateArray()
                .Single(u => u.GetProperty("email").GetString() == "dave@mail.internal");
            Assert.Equal("active", share.GetProperty("status").GetString());
            var verified = await SiteAsync("/cgi-bin/env", "-H", "Authorization: Bearer " + token);
            Assert.Equal("dave@mail.internal", verified.Env().GetValueOrDefault("HTTP_X_EXEDEV_EMAIL"));
            Assert.Equal(0, (await dave.ControlAsync("browser --json")).ExitCode);
        }
        finally
        {
            Json(await fixture.Owner.ControlAsync($"share set-private {TenantFixture.Site} --json"));
        }
    }

    private Task<WebSupport.HttpResult> SiteAsync(string path, params string[] extra)
        => WebSupport.CurlAsync(Daemon, TenantFixture.Site + ".box.localhost", fixture.SlotIp, path, extra);

    private Task<WebSupport.HttpResult> ControlAsync(string path, params string[] extra)
        => WebSupport.CurlAsync(Daemon, ControlHost, Daemon.ControlAddress, path, extra);
}
