using System.Net;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;
using Microsoft.Playwright;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>A daemon that mails through a loopback SMTP sink, with one private site whose owner is "owner".</summary>
public sealed class RequestAccessFixture : MailingSiteFixture
{
    public const string Site = "asksite";
    public const string Content = "the private content";
    protected override string SiteName => Site;
    protected override string SiteContent => Content;
    protected override string OwnerEmail => "site-owner@example.com";
}

/// <summary>
/// "Request access" through the real daemon with curl as the browser: a second account logs in with the
/// one-time link from <c>ssh CONTROL browser</c>, gets "You need access" with the form, sends it; the owner
/// receives a mail (through the daemon's SMTP relay) naming the requester and the <c>share add</c> command;
/// running that command lets the requester in. The requester never sees the owner's address.
/// </summary>
public sealed partial class RequestAccessTests(RequestAccessFixture fixture) : IClassFixture<RequestAccessFixture>
{
    private static readonly TimeSpan MailWait = TimeSpan.FromSeconds(60);
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string ControlHost = "warren.localhost";
    private string SiteHost => RequestAccessFixture.Site + ".box.localhost";
    private string SiteUrl(string path = "/") => $"https://{SiteHost}:{Daemon.HttpsPort}{path}";

    [GeneratedRegex("name=\"csrf\" value=\"([^\"]+)\"")]
    private static partial Regex CsrfField();

    /// <summary>The next request-access mail (the owner is also mailed that the site's VM was created; that one is skipped).</summary>
    private async Task<string> NextMailAsync() =>
        await fixture.Mail.NextContainingAsync("asks for access", MailWait) ?? throw new Xunit.Sdk.XunitException("no mail arrived\ndaemon: " + Daemon.Log);

    /// <summary>
    /// The same form sent by a real browser: the page's referrer policy decides which <c>Origin</c> Chromium sends
    /// with the POST (Fetch standard, "serializing a request origin": under <c>no-referrer</c> it is "null"), and the
    /// form refuses any Origin but its own site's.
    /// </summary>
    [Fact]
    public async Task Chromium_SendsTheRequestAccessForm_AndTheOwnerIsMailed()
    {
        var asker = await Daemon.CreateUserAsync("chromium-asker@example.com");
        var printed = await asker.ControlAsync("browser");
        Assert.True(printed.ExitCode == 0, printed.ToString());
        string link = Regex.Match(printed.Stdout + printed.Stderr, @"https://warren\.localhost:\d+/auth\?secret=[A-Za-z0-9_%\-]+").Value;
        Assert.False(string.IsNullOrEmpty(link), printed.ToString());

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await Chromium.LaunchAsync(playwright, fixture.SlotIp, Daemon.ControlAddress);
        await using var context = await Chromium.NewContextAsync(browser);
        var page = await context.NewPageAsync();
        var login = await Chromium.OpenLoginLinkAsync(page, link);
        Assert.Equal(200, login!.Status);

        var site = await page.GotoAsync(SiteUrl());
        Assert.Equal(401, site!.Status);
        Assert.Contains("You need access", await page.InnerTextAsync("body"));
        await page.FillAsync("textarea", "Sent from a browser.");
        var sent = await Chromium.ClickAndWaitAsync(page, "text=Request access");
        string text = await page.InnerTextAsync("body");
        Assert.True(sent.Status == 200, $"{sent.Status}: {text}");
        Assert.Contains("Access requested", text);

        string mail = await fixture.Mail.NextContainingAsync("chromium-asker@example.com asks for access", MailWait)
            ?? throw new Xunit.Sdk.XunitException("no mail arrived\ndaemon: " + Daemon.Log);
        Assert.Contains("> Sent from a browser.", mail);
    }

    [Fact]
    public async Task LoggedInStranger_RequestsAccess_OwnerIsMailed_ShareAddLetsThemIn()
    {
        var asker = await Daemon.CreateUserAsync("asker@example.com");
        var browser = new CurlBrowser(Daemon, (ControlHost, Daemon.ControlAddress), (SiteHost, fixture.SlotIp));

        // Log in on the control host with the one-time link, then open the private site (the login hops are followed).
        var printed = await asker.ControlAsync("browser");
        Assert.True(printed.ExitCode == 0, printed.ToString());
        string link = Regex.Match(printed.Stdout + printed.Stderr, @"https://warren\.localhost:\d+/auth\?secret=[A-Za-z0-9_%\-]+").Value;
        Assert.False(string.IsNullOrEmpty(link), printed.ToString());
        var loggedIn = await browser.OpenLoginLinkAsync(link);
        Assert.True(loggedIn.Status == 303, loggedIn.Raw);

        var page = await browser.RequestAsync(SiteUrl(), "-L", "--max-redirs", "10");
        Assert.True(page.Status == 401, page.Raw);
        Assert.Contains("You need access", page.Body);
        Assert.Contains("asker@example.com", page.Body);
        Assert.DoesNotContain(RequestAccessFixture.Content, page.Body);
        Assert.DoesNotContain(fixture.Owner.Email, page.Body);
        var csrf = CsrfField().Match(page.Body);
        Assert.True(csrf.Success, "no request-access form:\n" + page.Body);
        string token = WebUtility.HtmlDecode(csrf.Groups[1].Value);

        // A forged form (no valid token) sends nothing.
        var forged = await browser.RequestAsync(SiteUrl("/__exe.dev/request-access"), "--data-urlencode", "csrf=forged", "--data-urlencode", "message=spam");
        Assert.True(forged.Status == 403, forged.Raw);

        // The real form.
        var sent = await browser.RequestAsync(SiteUrl("/__exe.dev/request-access"),
            "--data-urlencode", "csrf=" + token, "--data-urlencode", "message=Hi, I am on the web team.");
        Assert.True(sent.Status == 200, sent.Raw);
        Assert.Contains("Access requested", sent.Body);
        Assert.DoesNotContain(fixture.Owner.Email, sent.Raw);

        string mail = await NextMailAsync();
        Assert.Contains("To: " + fixture.Owner.Email, mail);
        Assert.Contains("asker@example.com asks for access", mail);
        Assert.Contains("> Hi, I am on the web team.", mail);
        string grant = $"ssh -p {Daemon.SshPort} {ControlHost} share add {RequestAccessFixture.Site} asker@example.com";
        Assert.Contains(grant, mail);

        // Asking again at once is limited, and mails nobody.
        var again = await browser.RequestAsync(SiteUrl("/__exe.dev/request-access"), "--data-urlencode", "csrf=" + token);
        Assert.True(again.Status == 429, again.Raw);
        Assert.True(int.TryParse(again.Header("retry-after"), out int retryAfter) && retryAfter > 0, again.Raw);

        // The audit log records who asked for which site.
        Assert.Contains(AuditedRequests(), a => a.Arguments.Contains(RequestAccessFixture.Site) && a.Source == "https");

        // The owner runs the command from the mail (without the "ssh -p PORT HOST" prefix): the asker gets in.
        var share = await fixture.Owner.ControlAsync(grant[(grant.IndexOf(" share add", StringComparison.Ordinal) + 1)..] + " --json");
        Assert.True(share.ExitCode == 0, share.ToString());
        var allowed = await browser.RequestAsync(SiteUrl());
        Assert.True(allowed.Status == 200, allowed.Raw);
        Assert.Equal(RequestAccessFixture.Content + "\n", allowed.Body);
        Assert.False(fixture.Mail.Messages.Reader.TryRead(out var extra) && extra.Contains("asks for access"), "a second access request was mailed");
    }

    private List<(string Arguments, string? Source)> AuditedRequests()
    {
        var result = new List<(string, string?)>();
        using var c = new SqliteConnection($"Data Source={Path.Combine(Daemon.DataDirectory, "warren.db")};Mode=ReadOnly;Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT arguments, source FROM audit_log WHERE command = 'request-access'";
        using var r = cmd.ExecuteReader();
        while (r.Read()) result.Add((r.GetString(0), r.IsDBNull(1) ? null : r.GetString(1)));
        return result;
    }
}
