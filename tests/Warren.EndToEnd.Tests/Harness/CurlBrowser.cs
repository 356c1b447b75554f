using System.Text.RegularExpressions;
using Xunit;

namespace Warren.EndToEnd.Tests.Harness;

/// <summary>
/// The real curl as one browser against the daemon's HTTPS port: its own cookie jar, the dev CA, and the given
/// host names pinned with <c>--resolve</c> (what the daemon's DNS would answer).
/// </summary>
public sealed partial class CurlBrowser
{
    private static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(90);

    private readonly WarrenDaemon _daemon;
    private readonly List<string> _resolve = [];

    /// <param name="names">Host name → address, e.g. the control host → the control address, a site → its slot address.</param>
    public CurlBrowser(WarrenDaemon daemon, params (string Host, string Address)[] names)
    {
        _daemon = daemon;
        Jar = Path.Combine(Directory.CreateTempSubdirectory("warren-e2e-jar-").FullName, "cookies");
        foreach (var (host, address) in names)
        {
            _resolve.Add("--resolve");
            _resolve.Add($"{host}:{daemon.HttpsPort}:{address}");
        }
    }

    /// <summary>The cookie jar file (read and written by every request).</summary>
    public string Jar { get; }

    /// <summary>One request (with <c>-L</c>, a chain of them: the last response counts); <paramref name="extra"/> are curl options.</summary>
    public async Task<WebSupport.HttpResult> RequestAsync(string url, params string[] extra)
    {
        var args = new List<string> { "-sS", "-i", "--max-time", "60", "--cacert", WebSupport.CaPath(_daemon), "-b", Jar, "-c", Jar };
        args.AddRange(_resolve);
        args.AddRange(extra);
        args.Add(url);
        var r = await ProcessRunner.RunAsync(ProcessRunner.Require("curl"), args, timeout: RunTimeout);
        Assert.True(r.ExitCode == 0, "curl failed: " + r);
        return WebSupport.ParseResponse(LastResponse(r.Stdout));
    }

    /// <summary>
    /// Opens a control-host login link as a person does: GET shows the page with its button (nothing is used up), then
    /// the button's POST (the page's hidden fields and this jar's anti-forgery cookie) logs in. The POST's response:
    /// 303 with <c>exe-auth</c> when the link was good; <paramref name="extra"/> go to the POST (e.g. <c>-L</c>).
    /// </summary>
    public async Task<WebSupport.HttpResult> OpenLoginLinkAsync(string link, params string[] extra)
    {
        var page = await RequestAsync(link);
        Assert.True(page.Status == 200, page.Raw);
        var uri = new Uri(link);
        var args = new List<string>(extra);
        foreach (var name in new[] { "secret", "redirect", "form_token" })
        {
            var field = HiddenField(name).Match(page.Body);
            Assert.True(field.Success, $"no {name} field on the login page:\n{page.Raw}");
            args.AddRange(["--data-urlencode", name + "=" + System.Net.WebUtility.HtmlDecode(field.Groups[1].Value)]);
        }
        return await RequestAsync($"{uri.Scheme}://{uri.Authority}/auth", [.. args]);
    }

    private static Regex HiddenField(string name) => new($"name=\"{Regex.Escape(name)}\" value=\"([^\"]*)\"");

    [GeneratedRegex(@"(?m)^HTTP/\S+ [2-5]\d\d")]
    private static partial Regex StatusLine();

    /// <summary>With -L, curl -i prints every response of the chain; the last one counts.</summary>
    public static string LastResponse(string raw)
    {
        int last = 0;
        foreach (Match m in StatusLine().Matches(raw))
            last = m.Index;
        return raw[last..];
    }
}
