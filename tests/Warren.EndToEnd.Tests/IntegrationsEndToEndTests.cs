using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Warren.Edge.Tests.Integrations;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon whose integrations may dial the test's recording HTTPS target (its name pinned to loopback with
/// <c>Warren:Integrations:ResolveOverrides</c>, its CA trusted with <c>TrustedCaFile</c>), with the owner's busybox
/// website VM "integ-be" (cgi-bin/env prints the request's headers) as a peer target.
/// </summary>
public sealed class IntegrationsFixture : MailingSiteFixture, IAsyncLifetime
{
    public const string Site = "integ-be";
    private readonly string _targetDirectory = Directory.CreateTempSubdirectory("warren-integ-target-").FullName;
    public RecordingHttpsTarget Target { get; private set; } = null!;
    protected override string SiteName => Site;
    protected override string SiteContent => "peer backend";
    protected override string OwnerEmail => "integ-owner@example.com";
    protected override Dictionary<string, string> ExtraConfig => new()
    {
        [$"Warren:Integrations:ResolveOverrides:{RecordingHttpsTarget.HostName}"] = "127.0.0.1",
        ["Warren:Integrations:TrustedCaFile"] = Target.CaPemPath,
    };

    public new async Task InitializeAsync()
    {
        Target = await RecordingHttpsTarget.StartAsync(_targetDirectory);
        await base.InitializeAsync();
    }

    public new async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Target.DisposeAsync();
        try { Directory.Delete(_targetDirectory, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// Integrations through the real daemon and real VMs (Docker runtime): curl inside the VM to <c>NAME.int.box.localhost</c>
/// (the VM resolver answers the metadata address; the metadata server identifies the VM and hands the request on),
/// the control plane over OpenSSH (exe.dev's docs: integrations, http-proxy, vm-to-vm, reflection).
/// </summary>
public sealed class IntegrationsEndToEndTests(IntegrationsFixture fixture) : IClassFixture<IntegrationsFixture>
{
    private const string Secret = "sk-e2e-9c8b7a6f5e4d3c2b1a00";
    private WarrenDaemon Daemon => fixture.Daemon;
    private SshUser Owner => fixture.Owner;
    private string TargetUrl => $"https://{RecordingHttpsTarget.HostName}:{fixture.Target.Port}";

    private Task<ProcessResult> InVmAsync(SshUser user, string vm, string script) =>
        user.VmAsync(Daemon.SlotAddresses[0], script, user: "vm+" + vm);

    /// <summary>
    /// curl in the VM to <c>http://INTEGRATION.int.box.localhost{path}</c>; the status code is the last line. curl maps
    /// every <c>*.localhost</c> name to loopback itself (RFC 6761), so the address comes from the VM's resolver first
    /// (getent) and is handed to curl with <c>--resolve</c>.
    /// </summary>
    private async Task<(int Status, string Body)> CurlInVmAsync(SshUser user, string vm, string integration, string path, string extra = "")
    {
        string host = $"{integration}.int.box.localhost";
        var r = await InVmAsync(user, vm, $"A=$(getent hosts {host} | cut -d' ' -f1); [ -n \"$A\" ] || exit 99; "
            + $"curl -sS --max-time 20 -w '\\n%{{http_code}}' --resolve {host}:80:$A {extra} 'http://{host}{path}'");
        Assert.True(r.ExitCode == 0, r + "\ndaemon: " + Daemon.Log);
        int cut = r.Stdout.LastIndexOf('\n');
        return (int.Parse(r.Stdout[(cut + 1)..].Trim()), r.Stdout[..cut]);
    }

    private async Task<SshUser> NewAccountWithVmAsync(string email, string vm)
    {
        var user = await Daemon.CreateUserAsync(email);
        await NewVmAsync(user, vm);
        return user;
    }

    private static async Task NewVmAsync(SshUser user, string vm)
    {
        var r = await user.ControlAsync($"new --name={vm} --image=warren/default:1 --no-email --json");
        Assert.True(r.ExitCode == 0, r.ToString());
    }

    private async Task ControlOkAsync(SshUser user, string command)
    {
        var r = await user.ControlAsync(command);
        Assert.True(r.ExitCode == 0, command + "\n" + r + "\ndaemon: " + Daemon.Log);
    }

    [Fact]
    public async Task Curl_in_the_vm_gets_the_bearer_injected_but_the_vm_never_holds_it_and_detach_and_tags_act_at_once()
    {
        const string vm = "integ-a";
        await NewVmAsync(Owner, vm);
        await ControlOkAsync(Owner, $"integrations add http-proxy --name api --target {TargetUrl}/v2 --bearer {Secret} --attach vm:{vm}");

        var (status, body) = await CurlInVmAsync(Owner, vm, "api", "/items/7?q=a%20b&x=1", "-X PUT --data-binary payload");
        Assert.True(status == 200, body + "\ndaemon: " + Daemon.Log);
        var seen = fixture.Target.Requests.Last();
        Assert.Equal("PUT", seen.Method);
        Assert.Equal("/v2/items/7?q=a%20b&x=1", seen.PathAndQuery);
        Assert.Equal("Bearer " + Secret, seen.Headers["authorization"]);
        Assert.Equal("payload", seen.Body);

        // Nothing in the VM holds the token: no process's command line or environment, no file it could read. The
        // pattern travels base64-encoded so the search itself does not put the token in a command line, and the marker
        // before the file list is printed by printf so it appears in no command line either.
        string b64 = Convert.ToBase64String(Encoding.UTF8.GetBytes(Secret));
        var search = await InVmAsync(Owner, vm, "(ps auxww 2>/dev/null || true); cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; "
            + $"printf 'FI%sES:\\n' L; P=$(echo {b64} | base64 -d); grep -rlF \"$P\" /etc /root /home /tmp /var /data /run 2>/dev/null; true");
        Assert.True(search.ExitCode == 0, search.ToString());
        Assert.DoesNotContain(Secret, search.Stdout);
        Assert.Equal("", search.Stdout[(search.Stdout.LastIndexOf("FILES:", StringComparison.Ordinal) + "FILES:".Length)..].Trim());

        // Detach: refused from the next request on.
        await ControlOkAsync(Owner, $"integrations detach api vm:{vm}");
        Assert.Equal(403, (await CurlInVmAsync(Owner, vm, "api", "/")).Status);

        // A tag attachment follows tag and tag -d.
        await ControlOkAsync(Owner, "integrations attach api tag:ci");
        Assert.Equal(403, (await CurlInVmAsync(Owner, vm, "api", "/")).Status);
        await ControlOkAsync(Owner, $"tag {vm} ci");
        Assert.Equal(200, (await CurlInVmAsync(Owner, vm, "api", "/")).Status);
        await ControlOkAsync(Owner, $"tag -d {vm} ci");
        Assert.Equal(403, (await CurlInVmAsync(Owner, vm, "api", "/")).Status);

        // Secrets at rest: the daemon's SQLite files never hold the token's bytes.
        foreach (var path in Directory.GetFiles(Daemon.DataDirectory, "warren.db*"))
        {
            byte[] bytes;
            using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)) { bytes = new byte[fs.Length]; fs.ReadExactly(bytes); }
            Assert.True(bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(Secret)) < 0, path);
        }
        Assert.DoesNotContain(Secret, Daemon.Log);
        var list = await Owner.ControlAsync("integrations list --json");
        Assert.DoesNotContain(Secret, list.Stdout);
        Assert.Contains("\"bearer\":\"***\"", list.Stdout);
    }

    [Fact]
    public async Task A_peer_call_from_the_vm_carries_its_true_name_and_reflection_answers_from_inside()
    {
        const string vm = "integ-peer-caller";
        await NewVmAsync(Owner, vm);
        await ControlOkAsync(Owner, $"integrations add http-proxy --peer --name be --target {IntegrationsFixture.Site} --attach vm:{vm}");
        var (status, body) = await CurlInVmAsync(Owner, vm, "be", "/cgi-bin/env", "-H 'X-Exedev-Source-Vm: liar'");
        Assert.True(status == 200, body + "\ndaemon: " + Daemon.Log);
        Assert.Contains($"HTTP_X_EXEDEV_SOURCE_VM={vm}", body);
        Assert.DoesNotContain("liar", body);
        // The target's site is private: the call got in on the integration's key, and the VM sees the identity the
        // front door would add for it. From outside, without credentials, the same path is refused.
        Assert.Contains("HTTP_X_EXEDEV_EMAIL=integ-owner@example.com", body);
        var anonymous = await WebSupport.CurlAsync(Daemon, IntegrationsFixture.Site + ".box.localhost", fixture.SlotIp, "/cgi-bin/env");
        Assert.True(anonymous.Status is 307 or 401, anonymous.Raw);
        Assert.DoesNotContain("HTTP_X_EXEDEV", anonymous.Body);
        var keys = await Owner.ControlAsync("ssh-key remove peer-be");
        Assert.NotEqual(0, keys.ExitCode);
        Assert.Contains("managed by an integration", keys.Stderr + keys.Stdout);

        await ControlOkAsync(Owner, $"tag {vm} blue");
        var (tagStatus, tags) = await CurlInVmAsync(Owner, vm, "reflection", "/tags");
        Assert.Equal(200, tagStatus);
        Assert.Contains("blue", JsonDocument.Parse(tags).RootElement.GetProperty("tags").EnumerateArray().Select(t => t.GetString()));
        var (_, email) = await CurlInVmAsync(Owner, vm, "reflection", "/email");
        Assert.Equal("integ-owner@example.com", JsonDocument.Parse(email).RootElement.GetProperty("email").GetString());
        Assert.Equal(403, (await CurlInVmAsync(Owner, vm, "reflection", "/secret")).Status);

        // Removing the integration revokes its key: the same call is refused, and the managed key is gone.
        await ControlOkAsync(Owner, "integrations remove be");
        var (removedStatus, removedBody) = await CurlInVmAsync(Owner, vm, "be", "/cgi-bin/env");
        Assert.Equal(403, removedStatus);
        Assert.DoesNotContain("HTTP_X_EXEDEV", removedBody);
        var keysAfter = await Owner.ControlAsync("ssh-key list --json");
        Assert.DoesNotContain("peer-be", keysAfter.Stdout);
    }

    [Fact]
    public async Task A_second_account_cannot_see_or_use_the_owners_integration_and_bad_input_fails_clearly()
    {
        await ControlOkAsync(Owner, $"integrations add http-proxy --name owned --target {TargetUrl} --bearer {Secret} --attach auto:all");
        var mallory = await NewAccountWithVmAsync("integ-mallory@example.com", "integ-m");
        int before = fixture.Target.Requests.Count;
        Assert.Equal(403, (await CurlInVmAsync(mallory, "integ-m", "owned", "/")).Status);
        Assert.Equal(before, fixture.Target.Requests.Count);
        var list = await mallory.ControlAsync("integrations list --json");
        Assert.DoesNotContain("owned", list.Stdout);
        var attach = await mallory.ControlAsync("integrations attach owned vm:integ-m");
        Assert.NotEqual(0, attach.ExitCode);
        var peer = await mallory.ControlAsync($"integrations add http-proxy --peer --name p --target {IntegrationsFixture.Site}");
        Assert.NotEqual(0, peer.ExitCode);

        foreach (var (command, message) in new[]
        {
            ("integrations add http-proxy --name Bad --target https://api.example.com", "invalid integration name"),
            ("integrations add http-proxy --name x --target http://api.example.com", "must use https"),
            ("integrations add http-proxy --name x --target https://10.0.0.1/", "not an IP address"),
            ("integrations add http-proxy --name x --target https://api.example.com --header X-Exedev-Email:a", "reserved"),
        })
        {
            var r = await mallory.ControlAsync(command);
            Assert.True(r.ExitCode != 0, command);
            Assert.Contains(message, r.Stderr + r.Stdout);
        }
    }

    /// <summary>
    /// exe.dev's docs (send email): a VM may mail people who logged into its site. A second account logs into the
    /// owner's public site with the real login-link flow (control host first, then the site's /__exe.dev/login hops,
    /// followed by curl); from then on that VM — and only that VM — may mail it, delivered to the SMTP sink; an
    /// account that never logged in stays refused.
    /// </summary>
    [Fact]
    public async Task A_vm_may_mail_a_person_who_logged_into_its_site_and_nobody_else()
    {
        const string site = "integ-pub";
        const string visitorEmail = "integ-visitor@example.com";
        string slotIp = await WebSupport.CreateWebVmAsync(Daemon, Owner, site, "public page");
        await ControlOkAsync(Owner, $"share set-public {site}");
        var visitor = await Daemon.CreateUserAsync(visitorEmail);
        await Daemon.CreateUserAsync("integ-stranger@example.com");

        string Send(string to, string marker) => "wget -qO- --header 'Content-Type: application/json' --post-data "
            + $"'{{\"to\":\"{to}\",\"subject\":\"visitor mail\",\"body\":\"{marker}\"}}' http://169.254.169.254/gateway/email/send 2>&1; echo exit=$?";

        // Before the login: refused.
        var early = await InVmAsync(Owner, site, Send(visitorEmail, "too early"));
        Assert.Contains("403", early.Stdout);

        // The login: control host with the one-time link, then the site's own login page, redirects followed.
        string siteHost = site + ".box.localhost";
        var browser = new CurlBrowser(Daemon, ("warren.localhost", Daemon.ControlAddress), (siteHost, slotIp));
        var printed = await visitor.ControlAsync("browser");
        Assert.True(printed.ExitCode == 0, printed.ToString());
        string link = Regex.Match(printed.Stdout + printed.Stderr, @"https://warren\.localhost:\d+/auth\?secret=[A-Za-z0-9_%\-]+").Value;
        Assert.False(string.IsNullOrEmpty(link), printed.ToString());
        Assert.Equal(303, (await browser.OpenLoginLinkAsync(link)).Status);
        var page = await browser.RequestAsync($"https://{siteHost}:{Daemon.HttpsPort}/__exe.dev/login?redirect=/", "-L", "--max-redirs", "10");
        Assert.True(page.Status == 200, page.Raw);
        Assert.Contains("public page", page.Body);

        // Now the site's VM may mail the visitor: delivered.
        var sent = await InVmAsync(Owner, site, Send(visitorEmail, "hello visitor"));
        Assert.True(sent.Stdout.Contains("\"success\":true") && sent.Stdout.Contains("exit=0"), sent + "\ndaemon: " + Daemon.Log);
        var mail = await fixture.Mail.NextContainingAsync("hello visitor", TimeSpan.FromSeconds(60));
        Assert.True(mail is not null, "no mail arrived\ndaemon: " + Daemon.Log);
        Assert.Contains(visitorEmail, mail);

        // A stranger who never logged in: 403. Another VM of the same owner, whose site the visitor never opened: 403.
        var stranger = await InVmAsync(Owner, site, Send("integ-stranger@example.com", "to a stranger"));
        Assert.Contains("403", stranger.Stdout);
        var otherVm = await InVmAsync(Owner, IntegrationsFixture.Site, Send(visitorEmail, "from another vm"));
        Assert.Contains("403", otherVm.Stdout);
    }
}
