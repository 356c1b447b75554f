using System.Text.Json;
using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon with the <c>modern</c> SSH algorithm profile and a loopback SMTP sink, one private site ("compat")
/// whose owner is "compat-owner".
/// </summary>
public sealed class ExeDevCompatibilityFixture : DaemonFixture, IAsyncLifetime
{
    public const string Site = "compat";
    public const string Content = "the compat content";
    public SmtpSink Mail { get; } = new();
    public SshUser Owner { get; private set; } = null!;
    public string SlotIp { get; private set; } = null!;

    protected override Dictionary<string, string> Config => new()
    {
        ["Warren:Ssh:AlgorithmProfile"] = "modern",
        ["Warren:Smtp:Host"] = "127.0.0.1",
        ["Warren:Smtp:Port"] = Mail.Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["Warren:Smtp:Security"] = "None",
        ["Warren:Smtp:From"] = "warren@localhost",
    };

    public new async Task InitializeAsync()
    {
        await base.InitializeAsync();
        Owner = await Daemon.CreateUserAsync("compat-owner@example.com");
        SlotIp = await WebSupport.CreateWebVmAsync(Daemon, Owner, Site, Content);
    }

    public new async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Mail.DisposeAsync();
    }
}

/// <summary>
/// exe.dev's web answers and the SSH algorithm profile through the real daemon, with curl as the browser (one
/// cookie jar per person), ssh-audit and the OpenSSH client: share links (302, other parameters kept; a POST
/// forwarded minus <c>share</c>), logout (307 to the control host's logged-out page), the 401 sign-in page,
/// request-access mail (Reply-To the requester), and the control host's <c>/api/profile</c> and <c>/api/dashboard</c>.
/// </summary>
public sealed partial class ExeDevWebCompatibilityTests(ExeDevCompatibilityFixture fixture) : IClassFixture<ExeDevCompatibilityFixture>
{
    private static readonly TimeSpan MailWait = TimeSpan.FromSeconds(60);
    private const string ControlHost = "warren.localhost";
    private WarrenDaemon Daemon => fixture.Daemon;
    private string Control => $"https://{ControlHost}:{Daemon.HttpsPort}";
    private static string SiteHost(string vm) => vm + ".box.localhost";
    private string SiteUrl(string path = "/", string vm = ExeDevCompatibilityFixture.Site) => $"https://{SiteHost(vm)}:{Daemon.HttpsPort}{path}";

    [GeneratedRegex(@"https://warren\.localhost:\d+/auth\?secret=[A-Za-z0-9_%\-]+")]
    private static partial Regex LoginLink();

    [GeneratedRegex("name=\"csrf\" value=\"([^\"]+)\"")]
    private static partial Regex CsrfField();

    /// <summary>A new browser (cookie jar) that reaches the control host and the fixture's site.</summary>
    private CurlBrowser NewBrowser(params (string Host, string Address)[] more) =>
        new(Daemon, [(ControlHost, Daemon.ControlAddress), (SiteHost(ExeDevCompatibilityFixture.Site), fixture.SlotIp), .. more]);

    /// <summary>Signs <paramref name="user"/> in on the control host in <paramref name="browser"/> with the link <c>ssh CONTROL browser</c> prints.</summary>
    private static async Task SignInAsync(SshUser user, CurlBrowser browser)
    {
        var printed = await user.ControlAsync("browser");
        Assert.True(printed.ExitCode == 0, printed.ToString());
        string link = LoginLink().Match(printed.Stdout + printed.Stderr).Value;
        Assert.False(string.IsNullOrEmpty(link), printed.ToString());
        var r = await browser.OpenLoginLinkAsync(link);
        Assert.True(r.Status == 303, r.Raw);
    }

    private async Task<string> NextMailAsync(string containing) =>
        await fixture.Mail.NextContainingAsync(containing, MailWait)
        ?? throw new Xunit.Sdk.XunitException($"no mail with \"{containing}\" arrived\ndaemon: " + Daemon.Log);

    [Fact]
    public async Task SshAudit_ReportsNoFailure_ForTheModernProfile_AndOpenSshStillConnects()
    {
        foreach (var address in new[] { Daemon.ControlAddress, fixture.SlotIp })
        {
            var audit = await ProcessRunner.RunAsync(ProcessRunner.Require("ssh-audit"),
                ["-n", "-2", "-t", "30", "-p", Daemon.SshPort.ToString(System.Globalization.CultureInfo.InvariantCulture), address], timeout: TimeSpan.FromSeconds(90));
            Assert.True(audit.ExitCode is 0 or 2, audit.ToString()); // exitcodes.py: 0 good, 2 warnings (names it does not know yet)
            Assert.DoesNotContain("[fail]", audit.Stdout, StringComparison.Ordinal);
            Assert.Contains("ssh-ed25519", audit.Stdout, StringComparison.Ordinal);
            Assert.DoesNotContain("nistp", audit.Stdout, StringComparison.Ordinal);
        }
        var whoami = await fixture.Owner.ControlAsync("whoami --json");
        Assert.True(whoami.ExitCode == 0, whoami.ToString());
        Assert.Contains("compat-owner@example.com", whoami.Stdout);
    }

    [Fact]
    public async Task ShareLink_Get302KeepsOtherParameters_PostIsForwardedWithoutShare()
    {
        var link = await fixture.Owner.ControlAsync($"share add-link {ExeDevCompatibilityFixture.Site} --json");
        Assert.True(link.ExitCode == 0, link.ToString());
        string token = JsonDocument.Parse(link.Stdout).RootElement.GetProperty("token").GetString()!;
        var visitor = await Daemon.CreateUserAsync("link-visitor@example.com");
        var browser = NewBrowser();
        await SignInAsync(visitor, browser);
        try
        {
            // Signed in on the site (through its login hops) but not yet let in.
            var before = await browser.RequestAsync(SiteUrl(), "-L", "--max-redirs", "10");
            Assert.True(before.Status == 401, before.Raw);
            // The link: 302 to the same URL without share, every other parameter as sent.
            var hop = await browser.RequestAsync(SiteUrl($"/cgi-bin/env?a=1&share={token}&b=%2Fx+y"));
            Assert.True(hop.Status == 302, hop.Raw);
            Assert.Equal("/cgi-bin/env?a=1&b=%2Fx+y", hop.Header("location"));
            var page = await browser.RequestAsync(SiteUrl(hop.Header("location")!));
            Assert.True(page.Status == 200, page.Raw);
            Assert.Equal("a=1&b=%2Fx+y", page.Env()["QUERY_STRING"]);

            // A POST with the link is not redirected: the app gets it, minus share.
            var post = await browser.RequestAsync(SiteUrl($"/cgi-bin/env?share={token}&keep=1"), "--data", "x=1");
            Assert.True(post.Status == 200, post.Raw);
            var env = post.Env();
            Assert.Equal("POST", env["REQUEST_METHOD"]);
            Assert.Equal("keep=1", env["QUERY_STRING"]);
            Assert.Equal("link-visitor@example.com", env["HTTP_X_EXEDEV_EMAIL"]);
        }
        finally
        {
            await fixture.Owner.ControlAsync($"share remove {ExeDevCompatibilityFixture.Site} link-visitor@example.com --json");
        }
    }

    [Fact]
    public async Task NotSignedIn_Gets401SignIn_Logout307sToTheControlHost()
    {
        // Anonymous, following every hop: the control host's sign-in page, 401, naming where it returns to.
        var anon = NewBrowser();
        var signIn = await anon.RequestAsync(SiteUrl("/deep?q=1"), "-L", "--max-redirs", "10");
        Assert.True(signIn.Status == 401, signIn.Raw);
        Assert.Contains("Sign in to continue", signIn.Body);
        Assert.Contains($"{SiteHost(ExeDevCompatibilityFixture.Site)}:{Daemon.HttpsPort}", signIn.Body);
        Assert.DoesNotContain(ExeDevCompatibilityFixture.Content, signIn.Body);
        var ask = await anon.RequestAsync(SiteUrl("/__exe.dev/request-access"));
        Assert.True(ask.Status == 401, ask.Raw);

        // The owner signs in, sees the site, logs out: 307 to the control host's logged-out page, cookie expired.
        var browser = NewBrowser();
        await SignInAsync(fixture.Owner, browser);
        var site = await browser.RequestAsync(SiteUrl(), "-L", "--max-redirs", "10");
        Assert.True(site.Status == 200, site.Raw);
        var logout = await browser.RequestAsync(SiteUrl("/__exe.dev/logout"), "-X", "POST");
        Assert.True(logout.Status == 307, logout.Raw);
        Assert.Equal($"{Control}/logged-out", logout.Header("location"));
        Assert.Contains("max-age=0", logout.Header("set-cookie") ?? "", StringComparison.OrdinalIgnoreCase);
        var loggedOut = await browser.RequestAsync(logout.Header("location")!, "-X", "POST");
        Assert.True(loggedOut.Status == 200, loggedOut.Raw);
        var after = await browser.RequestAsync(SiteUrl());
        Assert.True(after.Status == 307, after.Raw);
        Assert.True((await browser.RequestAsync(SiteUrl("/__exe.dev/logout"), "-X", "PUT")).Status == 405);
    }

    [Fact]
    public async Task RequestAccessMail_NamesTheVm_RepliesToTheRequester_CarriesTheShareAddCommand()
    {
        var asker = await Daemon.CreateUserAsync("compat-asker@example.com");
        var browser = NewBrowser();
        await SignInAsync(asker, browser);
        var page = await browser.RequestAsync(SiteUrl(), "-L", "--max-redirs", "10");
        Assert.True(page.Status == 401, page.Raw);
        Assert.Contains("You need access", page.Body);
        var csrf = CsrfField().Match(page.Body);
        Assert.True(csrf.Success, page.Body);
        var sent = await browser.RequestAsync(SiteUrl("/__exe.dev/request-access"),
            "--data-urlencode", "csrf=" + System.Net.WebUtility.HtmlDecode(csrf.Groups[1].Value));
        Assert.True(sent.Status == 200, sent.Raw);

        string mail = await NextMailAsync("compat-asker@example.com asks for access");
        Assert.Contains("To: " + fixture.Owner.Email, mail);
        Assert.Matches(@"(?m)^Reply-To: compat-asker@example\.com$", mail);
        Assert.Contains($"Subject: compat-asker@example.com asks for access to {ExeDevCompatibilityFixture.Site}", mail);
        Assert.Contains($"ssh -p {Daemon.SshPort} {ControlHost} share add {ExeDevCompatibilityFixture.Site} compat-asker@example.com", mail);
    }

    [Fact]
    public async Task ProfileAndDashboard_AreThePersonsOwn_AndRenamedOrRemovedVmsLeaveTheProfile()
    {
        // Without the control host's cookie: 401 JSON.
        var anonymous = await NewBrowser().RequestAsync(Control + "/api/profile");
        Assert.True(anonymous.Status == 401, anonymous.Raw);
        Assert.Equal("not signed in", JsonDocument.Parse(anonymous.Body).RootElement.GetProperty("error").GetString());
        Assert.True((await NewBrowser().RequestAsync(Control + "/api/dashboard")).Status == 401);

        var friend = await Daemon.CreateUserAsync("compat-friend@example.com");
        var other = await Daemon.CreateUserAsync("compat-other@example.com");
        var share = await fixture.Owner.ControlAsync($"share add {ExeDevCompatibilityFixture.Site} compat-friend@example.com --json");
        Assert.True(share.ExitCode == 0, share.ToString());
        var second = await friend.ControlAsync("new --name=compat-own --image=warren/busybox:1 --json");
        Assert.True(second.ExitCode == 0, second.ToString());
        try
        {
            var browser = NewBrowser((SiteHost("compat-own"), fixture.SlotIp), (SiteHost("compat-moved"), fixture.SlotIp));
            await SignInAsync(friend, browser);
            var site = await browser.RequestAsync(SiteUrl(), "-L", "--max-redirs", "10");
            Assert.True(site.Status == 200, site.Raw);
            // Signed in on the friend's own site too (nothing listens there: the owner's 502 page, after the session is made).
            var ownSite = await browser.RequestAsync(SiteUrl("/", "compat-own"), "-L", "--max-redirs", "10");
            Assert.True(ownSite.Status == 502, ownSite.Raw);

            var profile = await browser.RequestAsync(Control + "/api/profile");
            Assert.True(profile.Status == 200, profile.Raw);
            Assert.StartsWith("application/json", profile.Header("content-type"));
            var p = JsonDocument.Parse(profile.Body).RootElement;
            Assert.Equal("compat-friend@example.com", p.GetProperty("email").GetString());
            Assert.Equal([ExeDevCompatibilityFixture.Site, "compat-own"],
                p.GetProperty("sites").EnumerateArray().Select(s => s.GetProperty("vm_name").GetString()).Order(StringComparer.Ordinal));

            var dashboard = await browser.RequestAsync(Control + "/api/dashboard");
            Assert.True(dashboard.Status == 200, dashboard.Raw);
            var d = JsonDocument.Parse(dashboard.Body).RootElement;
            var own = Assert.Single(d.GetProperty("vms").EnumerateArray());
            Assert.Equal("compat-own", own.GetProperty("vm_name").GetString());
            Assert.Equal("compat-friend@example.com", own.GetProperty("owner_email").GetString());
            var shared = Assert.Single(d.GetProperty("shared_vms").EnumerateArray());
            Assert.Equal(ExeDevCompatibilityFixture.Site, shared.GetProperty("vm_name").GetString());
            Assert.Equal(fixture.Owner.Email, shared.GetProperty("owner_email").GetString());
            Assert.Equal($"https://{SiteHost(ExeDevCompatibilityFixture.Site)}:{Daemon.HttpsPort}", shared.GetProperty("https_url").GetString());

            // A second account sees nothing of the first's.
            var otherBrowser = NewBrowser();
            await SignInAsync(other, otherBrowser);
            var otherDashboard = await otherBrowser.RequestAsync(Control + "/api/dashboard");
            Assert.True(otherDashboard.Status == 200, otherDashboard.Raw);
            Assert.DoesNotContain("compat-own", otherDashboard.Body);
            Assert.DoesNotContain(ExeDevCompatibilityFixture.Site + "\"", otherDashboard.Body);
            var otherProfile = await otherBrowser.RequestAsync(Control + "/api/profile");
            Assert.Empty(JsonDocument.Parse(otherProfile.Body).RootElement.GetProperty("sites").EnumerateArray());

            // The friend renames their VM: its session leaves the profile; removing the VM does the same for the new name.
            var rename = await friend.ControlAsync("rename compat-own compat-moved --json");
            Assert.True(rename.ExitCode == 0, rename.ToString());
            profile = await browser.RequestAsync(Control + "/api/profile");
            Assert.Equal([ExeDevCompatibilityFixture.Site],
                JsonDocument.Parse(profile.Body).RootElement.GetProperty("sites").EnumerateArray().Select(s => s.GetProperty("vm_name").GetString()));
            var moved = await browser.RequestAsync(SiteUrl("/", "compat-moved"), "-L", "--max-redirs", "10");
            Assert.True(moved.Status is 502 or 503, moved.Raw);
            var movedProfile = JsonDocument.Parse((await browser.RequestAsync(Control + "/api/profile")).Body).RootElement;
            Assert.Contains(movedProfile.GetProperty("sites").EnumerateArray(), s => s.GetProperty("vm_name").GetString() == "compat-moved");
            var rm = await friend.ControlAsync("rm compat-moved --json");
            Assert.True(rm.ExitCode == 0, rm.ToString());
            profile = await browser.RequestAsync(Control + "/api/profile");
            Assert.Equal([ExeDevCompatibilityFixture.Site],
                JsonDocument.Parse(profile.Body).RootElement.GetProperty("sites").EnumerateArray().Select(s => s.GetProperty("vm_name").GetString()));
        }
        finally
        {
            await fixture.Owner.ControlAsync($"share remove {ExeDevCompatibilityFixture.Site} compat-friend@example.com --json");
            await friend.ControlAsync("rm compat-own compat-moved --json");
        }
    }
}
