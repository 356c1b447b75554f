using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon with one account ("owner") whose VM <c>site</c> runs busybox httpd on port 80 with a CGI
/// script that prints its environment, so tests can see exactly which headers reached the VM.
/// </summary>
public sealed class WebFrontDoorFixture : DaemonFixture, IAsyncLifetime
{
    public const string Site = "site";
    public const string Content = "hello from the site";
    public SshUser Owner { get; private set; } = null!;
    public string SlotIp { get; private set; } = null!;

    public new async Task InitializeAsync()
    {
        await base.InitializeAsync();
        Owner = await Daemon.CreateUserAsync("owner@example.com");
        SlotIp = await WebSupport.CreateWebVmAsync(Daemon, Owner, Site, Content);
    }
}

/// <summary>curl, ssh-keygen and VM helpers shared by the web and browser tests.</summary>
public static class WebSupport
{
    public sealed record HttpResult(int Status, Dictionary<string, string> Headers, string Body, string Raw)
    {
        public string? Header(string name) => Headers.TryGetValue(name.ToLowerInvariant(), out var v) ? v : null;
        public override string ToString() => Raw;

        /// <summary>The CGI environment the VM printed (KEY=VALUE lines).</summary>
        public Dictionary<string, string> Env()
        {
            var env = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var line in Body.Split('\n'))
            {
                int eq = line.IndexOf('=');
                if (eq > 0) env[line[..eq]] = line[(eq + 1)..].TrimEnd('\r');
            }
            return env;
        }
    }

    public static string CaPath(WarrenDaemon d) => Path.Combine(d.DataDirectory, "tls", "ca.crt");

    /// <summary>Creates a busybox VM, finds its slot with dig, and starts httpd on port 80 with index.html and cgi-bin/env.</summary>
    public static async Task<string> CreateWebVmAsync(WarrenDaemon daemon, SshUser owner, string vm, string content)
    {
        var r = await owner.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
        Assert.True(r.ExitCode == 0, r.ToString());
        var dig = await DnsEndToEndTests.DigAsync(daemon, $"{vm}.box.localhost");
        var a = dig.Answer.LastOrDefault(rr => rr.Type == "A");
        Assert.True(a is not null, dig.Raw);
        await StartHttpdAsync(owner, vm, 80, "/data/www", content);
        return a!.Data;
    }

    /// <summary>busybox httpd on PORT serving ROOT: index.html = CONTENT, cgi-bin/env prints the request environment.</summary>
    public static async Task StartHttpdAsync(SshUser owner, string vm, int port, string root, string content)
    {
        string script = $"mkdir -p {root}/cgi-bin && printf '%s\\n' '{content}' > {root}/index.html"
            + $" && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n' > {root}/cgi-bin/env && chmod 755 {root}/cgi-bin/env"
            + $" && (httpd -p {port} -h {root} &) ; sleep 0.5";
        var r = await owner.VmAsync("127.0.1.1", script, user: "vm+" + vm);
        Assert.True(r.ExitCode == 0, r.ToString());
        // Wait until it answers inside the VM (bounded).
        for (int i = 0; i < 40; i++)
        {
            var probe = await owner.VmAsync("127.0.1.1", $"wget -qO- http://127.0.0.1:{port}/", user: "vm+" + vm);
            if (probe.ExitCode == 0 && probe.Stdout.Contains(content)) return;
            await Task.Delay(250);
        }
        Assert.Fail($"httpd on port {port} in {vm} never answered");
    }

    /// <summary>
    /// curl to https://HOST:HttpsPort/PATH with the daemon's dev CA, HOST pinned to IP with --resolve.
    /// Returns the final response (no redirects followed).
    /// </summary>
    public static async Task<HttpResult> CurlAsync(WarrenDaemon d, string host, string ip, string path, params string[] extra)
    {
        string curl = ProcessRunner.Require("curl");
        var args = new List<string>
        {
            "-sS", "-i", "--max-time", "60", "--cacert", CaPath(d),
            "--resolve", $"{host}:{d.HttpsPort}:{ip}", $"https://{host}:{d.HttpsPort}{path}",
        };
        args.AddRange(extra);
        var r = await ProcessRunner.RunAsync(curl, args, timeout: TimeSpan.FromSeconds(90));
        Assert.True(r.ExitCode == 0, "curl failed: " + r);
        return ParseResponse(r.Stdout);
    }

    public static HttpResult ParseResponse(string raw)
    {
        string rest = raw;
        while (true)
        {
            int end = rest.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            Assert.True(end >= 0, "no header block in:\n" + raw);
            string head = rest[..end];
            string body = rest[(end + 4)..];
            var lines = head.Split("\r\n");
            var m = Regex.Match(lines[0], @"^HTTP/\S+ (\d{3})");
            Assert.True(m.Success, "no status line in:\n" + raw);
            int status = int.Parse(m.Groups[1].Value);
            if (status is >= 100 and < 200) { rest = body; continue; }
            var headers = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var line in lines.Skip(1))
            {
                int colon = line.IndexOf(':');
                if (colon > 0) headers[line[..colon].Trim().ToLowerInvariant()] = line[(colon + 1)..].Trim();
            }
            return new HttpResult(status, headers, body, raw);
        }
    }

    public static string B64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    /// <summary>
    /// An exe0 token minted as a person would: the payload signed by the real <c>ssh-keygen -Y sign -n NAMESPACE</c>,
    /// then <c>exe0.</c> + base64url(payload) + <c>.</c> + base64url(the SSHSIG blob without its armor).
    /// </summary>
    public static async Task<string> MintExe0Async(string privateKeyPath, string payload, string @namespace)
    {
        var dir = Directory.CreateTempSubdirectory("warren-exe0-").FullName;
        var file = Path.Combine(dir, "payload");
        var bytes = Encoding.UTF8.GetBytes(payload);
        File.WriteAllBytes(file, bytes);
        var r = await ProcessRunner.RunAsync(ProcessRunner.Require("ssh-keygen"), ["-Y", "sign", "-n", @namespace, "-f", privateKeyPath, file]);
        Assert.True(r.ExitCode == 0, r.ToString());
        var armored = File.ReadAllLines(file + ".sig");
        Assert.StartsWith("-----BEGIN SSH SIGNATURE-----", armored[0]);
        var blob = Convert.FromBase64String(string.Concat(armored.Where(l => !l.StartsWith("-----", StringComparison.Ordinal)).Select(l => l.Trim())));
        return "exe0." + B64Url(bytes) + "." + B64Url(blob);
    }

    public static long UnixNow() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();
}

/// <summary>
/// Issue 6 end to end with the real curl: the HTTPS front door (private by default, public, share port,
/// tokens in each header form, header stripping as the VM sees it) and POST /exec's status codes,
/// including an exe0 token minted with the real <c>ssh-keygen -Y sign</c>.
/// </summary>
public sealed class WebFrontDoorTests(WebFrontDoorFixture fixture) : IClassFixture<WebFrontDoorFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private SshUser Owner => fixture.Owner;
    private const string Site = WebFrontDoorFixture.Site;
    private const string SiteHost = Site + ".box.localhost";
    private const string ControlHost = "warren.localhost";

    private Task<WebSupport.HttpResult> SiteAsync(string path, params string[] extra) =>
        WebSupport.CurlAsync(Daemon, SiteHost, fixture.SlotIp, path, extra);

    private Task<WebSupport.HttpResult> ExecAsync(string? token, string bodyFile, params string[] extra)
    {
        var args = new List<string> { "--data-binary", "@" + bodyFile };
        if (token is not null) args.AddRange(["-H", "Authorization: Bearer " + token]);
        args.AddRange(extra);
        return WebSupport.CurlAsync(Daemon, ControlHost, Daemon.ControlAddress, "/exec", [.. args]);
    }

    private Task<WebSupport.HttpResult> ExecAsync(string? token, string command) => ExecAsync(token, BodyFile(Encoding.UTF8.GetBytes(command)));

    private static string BodyFile(byte[] bytes)
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("warren-exec-").FullName, "body");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static JsonElement Json(ProcessResult r)
    {
        Assert.True(r.ExitCode == 0, r.ToString());
        return JsonDocument.Parse(r.Stdout).RootElement;
    }

    private async Task<string> ApiKeyAsync(SshUser user, string args)
    {
        var j = Json(await user.ControlAsync($"ssh-key generate-api-key {args} --json"));
        return j.GetProperty("token").GetString()!;
    }

    private async Task SetPrivateAsync() => Json(await Owner.ControlAsync($"share set-private {Site} --json"));

    [Fact]
    public async Task PrivateSite_RedirectsToLogin_PublicSite_ServesTheVm()
    {
        await SetPrivateAsync();
        var anon = await SiteAsync("/");
        Assert.True(anon.Status == 307, anon.Raw);
        Assert.Equal("/__exe.dev/login?redirect=%2F", anon.Header("location"));
        Assert.DoesNotContain(WebFrontDoorFixture.Content, anon.Body);

        // A deeper path keeps its path and query in the redirect.
        var deep = await SiteAsync("/a/b?x=1");
        Assert.True(deep.Status == 307, deep.Raw);
        Assert.Equal("/__exe.dev/login?redirect=" + Uri.EscapeDataString("/a/b?x=1"), deep.Header("location"));

        // The login page sends the browser to the control host with where to come back to.
        var login = await SiteAsync("/__exe.dev/login?redirect=%2F");
        Assert.True(login.Status == 307, login.Raw);
        Assert.StartsWith($"https://{ControlHost}:{Daemon.HttpsPort}/login?redirect=%2F&return_host=", login.Header("location"));

        // Plain HTTP is redirected to HTTPS.
        var plain = await ProcessRunner.RunAsync(ProcessRunner.Require("curl"), ["-sS", "-i", "--max-time", "60",
            "--resolve", $"{SiteHost}:{Daemon.HttpPort}:{fixture.SlotIp}", $"http://{SiteHost}:{Daemon.HttpPort}/x"]);
        Assert.True(plain.ExitCode == 0, plain.ToString());
        var plainResponse = WebSupport.ParseResponse(plain.Stdout);
        Assert.True(plainResponse.Status == 308, plain.Stdout);
        Assert.Equal($"https://{SiteHost}:{Daemon.HttpsPort}/x", plainResponse.Header("location"));

        try
        {
            Json(await Owner.ControlAsync($"share set-public {Site} --json"));
            var pub = await SiteAsync("/");
            Assert.True(pub.Status == 200, pub.Raw);
            Assert.Equal(WebFrontDoorFixture.Content + "\n", pub.Body);

            // Also through the control address (127.0.0.1): the Host header alone picks the VM.
            var viaControl = await WebSupport.CurlAsync(Daemon, SiteHost, Daemon.ControlAddress, "/");
            Assert.True(viaControl.Status == 200, viaControl.Raw);
            Assert.Equal(WebFrontDoorFixture.Content + "\n", viaControl.Body);

            // /__exe.dev/* never reaches the VM.
            var reserved = await SiteAsync("/__exe.dev/nothing-here");
            Assert.True(reserved.Status == 404, reserved.Raw);
        }
        finally
        {
            await SetPrivateAsync();
        }
        var again = await SiteAsync("/");
        Assert.True(again.Status == 307, again.Raw);

        // An unknown VM looks exactly like a private one to an anonymous visitor.
        var unknown = await WebSupport.CurlAsync(Daemon, "no-such-site.box.localhost", fixture.SlotIp, "/");
        Assert.True(unknown.Status == 307, unknown.Raw);
    }

    [Fact]
    public async Task PublicSite_StripsSpoofedExeDevHeaders_AndSetsForwardedHeaders()
    {
        try
        {
            Json(await Owner.ControlAsync($"share set-public {Site} --json"));
            var r = await SiteAsync("/cgi-bin/env", "-H", "X-ExeDev-Email: evil@x", "-H", "X-ExeDev-UserID: u_evil",
                "-H", "X-Exedev-Token-Ctx: {\"evil\":1}", "-H", "X-Forwarded-For: 203.0.113.9");
            Assert.True(r.Status == 200, r.Raw);
            var env = r.Env();
            Assert.True(env.ContainsKey("REQUEST_METHOD"), "the CGI script did not run:\n" + r.Body);
            Assert.DoesNotContain(env, kv => kv.Key.StartsWith("HTTP_X_EXEDEV_", StringComparison.Ordinal));
            Assert.DoesNotContain("evil", r.Body);
            Assert.Equal("https", env.GetValueOrDefault("HTTP_X_FORWARDED_PROTO"));
            Assert.Equal($"{SiteHost}:{Daemon.HttpsPort}", env.GetValueOrDefault("HTTP_X_FORWARDED_HOST"));
            Assert.StartsWith("203.0.113.9, ", env.GetValueOrDefault("HTTP_X_FORWARDED_FOR"));
        }
        finally
        {
            await SetPrivateAsync();
        }
    }

    [Fact]
    public async Task VmToken_EachHeaderForm_OpensThePrivateSite_AndTheVmSeesTheUserNotTheToken()
    {
        await SetPrivateAsync();
        string token = await ApiKeyAsync(Owner, $"--vm={Site} --label=site-token");
        Assert.StartsWith("exe", token);

        var forms = new (string Name, string[] Args)[]
        {
            ("X-Exedev-Authorization: Bearer", ["-H", "X-Exedev-Authorization: Bearer " + token]),
            ("Authorization: Bearer", ["-H", "Authorization: Bearer " + token]),
            ("Basic with the token as password", ["-u", "anyone:" + token]),
        };
        foreach (var (name, args) in forms)
        {
            var page = await SiteAsync("/", args);
            Assert.True(page.Status == 200, $"{name}:\n{page.Raw}");
            Assert.Equal(WebFrontDoorFixture.Content + "\n", page.Body);

            // A spoofed identity header rides along; the VM must see only the real one.
            var r = await SiteAsync("/cgi-bin/env", [.. args, "-H", "X-ExeDev-Email: evil@x", "-H", "X-ExeDev-UserID: u_evil"]);
            Assert.True(r.Status == 200, $"{name}:\n{r.Raw}");
            var env = r.Env();
            Assert.Equal("owner@example.com", env.GetValueOrDefault("HTTP_X_EXEDEV_EMAIL"));
            Assert.False(string.IsNullOrEmpty(env.GetValueOrDefault("HTTP_X_EXEDEV_USERID")), $"{name}: no user id:\n{r.Body}");
            Assert.NotEqual("u_evil", env["HTTP_X_EXEDEV_USERID"]);
            Assert.DoesNotContain("evil", r.Body);
            Assert.False(env.ContainsKey("HTTP_X_EXEDEV_AUTHORIZATION"), $"{name}: the token header reached the VM:\n{r.Body}");
            Assert.DoesNotContain(token, r.Body);
        }

        // A wrong token in the preferred header is refused outright (not treated as anonymous).
        var bad = await SiteAsync("/", "-H", "X-Exedev-Authorization: Bearer exe1.AAAAAAAAAAAAAAAAAAAAAAAAAA");
        Assert.True(bad.Status == 401, bad.Raw);
        Assert.DoesNotContain(WebFrontDoorFixture.Content, bad.Body);

        // The same value in both headers is ambiguous: 400.
        var both = await SiteAsync("/", "-H", "X-Exedev-Authorization: Bearer " + token, "-H", "Authorization: Bearer " + token);
        Assert.True(both.Status == 400, both.Raw);

        // A control-plane token (namespace v0@warren.localhost) does not open a VM's site.
        string control = await ApiKeyAsync(Owner, "--label=control-token-for-site");
        var wrongNs = await SiteAsync("/", "-H", "X-Exedev-Authorization: Bearer " + control);
        Assert.True(wrongNs.Status == 401, wrongNs.Raw);

        // Revoking the key kills the token.
        Json(await Owner.ControlAsync("ssh-key remove site-token --json"));
        var revoked = await SiteAsync("/", "-H", "X-Exedev-Authorization: Bearer " + token);
        Assert.True(revoked.Status == 401, revoked.Raw);
    }

    [Fact]
    public async Task SelfMintedVmToken_CarriesCtx_ToTheVm()
    {
        await SetPrivateAsync();
        string payload = $"{{\"exp\":{WebSupport.UnixNow() + 3600},\"ctx\":{{\"job\":42}}}}";
        string token = await WebSupport.MintExe0Async(Owner.KeyPath, payload, $"v0@{SiteHost}");
        var r = await SiteAsync("/cgi-bin/env", "-H", "X-Exedev-Authorization: Bearer " + token);
        Assert.True(r.Status == 200, r.Raw);
        var env = r.Env();
        Assert.Equal("owner@example.com", env.GetValueOrDefault("HTTP_X_EXEDEV_EMAIL"));
        Assert.Equal("{\"job\":42}", env.GetValueOrDefault("HTTP_X_EXEDEV_TOKEN_CTX"));
    }

    [Fact]
    public async Task SecondAccount_GetsNoAccess_WithItsOwnTokens()
    {
        await SetPrivateAsync();
        var other = await Daemon.CreateUserAsync("intruder@example.com");
        // It cannot mint a token for a VM it does not own…
        var refused = await other.ControlAsync($"ssh-key generate-api-key --vm={Site} --json");
        Assert.NotEqual(0, refused.ExitCode);

        // …its control-plane token is no VM token…
        string control = await ApiKeyAsync(other, "--label=intruder");
        var r1 = await SiteAsync("/", "-H", "Authorization: Bearer " + control);
        Assert.True(r1.Status == 401, r1.Raw);
        Assert.DoesNotContain(WebFrontDoorFixture.Content, r1.Body);

        // …and a correctly signed token for this site's namespace proves who it is, but grants no access.
        string minted = await WebSupport.MintExe0Async(other.KeyPath, $"{{\"exp\":{WebSupport.UnixNow() + 3600}}}", $"v0@{SiteHost}");
        var r2 = await SiteAsync("/", "-H", "X-Exedev-Authorization: Bearer " + minted);
        Assert.True(r2.Status == 401, r2.Raw);
        Assert.DoesNotContain(WebFrontDoorFixture.Content, r2.Body);
        var r3 = await SiteAsync("/", "-u", "x:" + minted);
        Assert.True(r3.Status == 401, r3.Raw);
        Assert.DoesNotContain(WebFrontDoorFixture.Content, r3.Body);

        // Once the owner shares the site with that address, the same token works.
        Json(await Owner.ControlAsync($"share add {Site} intruder@example.com --json"));
        try
        {
            var ok = await SiteAsync("/cgi-bin/env", "-H", "X-Exedev-Authorization: Bearer " + minted);
            Assert.True(ok.Status == 200, ok.Raw);
            Assert.Equal("intruder@example.com", ok.Env().GetValueOrDefault("HTTP_X_EXEDEV_EMAIL"));
        }
        finally
        {
            Json(await Owner.ControlAsync($"share remove {Site} intruder@example.com --json"));
        }
        var after = await SiteAsync("/", "-H", "X-Exedev-Authorization: Bearer " + minted);
        Assert.True(after.Status == 401, after.Raw);
    }

    [Fact]
    public async Task SharePort_MovesTheDefaultRoute()
    {
        // Its own VM: a share port cannot be moved back to 80 (3000–9999 only).
        const string vm = "portsite";
        var r = await Owner.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
        Assert.True(r.ExitCode == 0, r.ToString());
        await WebSupport.StartHttpdAsync(Owner, vm, 80, "/data/www80", "port eighty");
        await WebSupport.StartHttpdAsync(Owner, vm, 3000, "/data/www3000", "port three thousand");
        Json(await Owner.ControlAsync($"share set-public {vm} --json"));
        string host = vm + ".box.localhost";

        var before = await WebSupport.CurlAsync(Daemon, host, Daemon.ControlAddress, "/");
        Assert.True(before.Status == 200, before.Raw);
        Assert.Equal("port eighty\n", before.Body);

        var set = Json(await Owner.ControlAsync($"share port {vm} 3000 --json"));
        Assert.Equal(3000, set.GetProperty("port").GetInt32());
        var show = Json(await Owner.ControlAsync($"share port {vm} --json"));
        Assert.Equal(3000, show.GetProperty("port").GetInt32());

        var after = await WebSupport.CurlAsync(Daemon, host, Daemon.ControlAddress, "/");
        Assert.True(after.Status == 200, after.Raw);
        Assert.Equal("port three thousand\n", after.Body);

        // Out of range is refused and changes nothing.
        foreach (var bad in new[] { "80", "2999", "10000", "x" })
        {
            var no = await Owner.ControlAsync($"share port {vm} {bad} --json");
            Assert.NotEqual(0, no.ExitCode);
            Assert.Contains("port must be between 3000 and 9999", no.Stdout + no.Stderr);
        }
        Assert.Equal(3000, Json(await Owner.ControlAsync($"share port {vm} --json")).GetProperty("port").GetInt32());

        // Nothing listening on the chosen port: the owner gets a clear 502, anonymous visitors 503, never a raw error.
        Json(await Owner.ControlAsync($"share port {vm} 3001 --json"));
        var unbound = await WebSupport.CurlAsync(Daemon, host, Daemon.ControlAddress, "/");
        Assert.True(unbound.Status == 503, unbound.Raw);
        string token = await ApiKeyAsync(Owner, $"--vm={vm} --label=portsite-token");
        var ownerView = await WebSupport.CurlAsync(Daemon, host, Daemon.ControlAddress, "/", "-H", "X-Exedev-Authorization: Bearer " + token);
        Assert.True(ownerView.Status == 502, ownerView.Raw);
        Assert.Contains("Port 3001 unbound.", ownerView.Body);
    }

    [Fact]
    public async Task Exec_StatusCodes_ThroughTheDaemon()
    {
        string token = await ApiKeyAsync(Owner, "--label=ci");           // default cmds: ls, whoami, …
        string rmToken = await ApiKeyAsync(Owner, "--label=ci-rm --cmds=ls,rm");

        // 200: ls, JSON forced.
        var ls = await ExecAsync(token, "ls");
        Assert.True(ls.Status == 200, ls.Raw);
        Assert.StartsWith("application/json", ls.Header("content-type"));
        var vms = JsonDocument.Parse(ls.Body).RootElement.GetProperty("vms");
        Assert.Contains(vms.EnumerateArray(), v => v.GetProperty("vm_name").GetString() == Site);

        // 401: no header, then a token that does not verify.
        var none = await ExecAsync(null, "ls");
        Assert.True(none.Status == 401, none.Raw);
        Assert.Equal("Bearer", none.Header("www-authenticate"));
        Assert.Equal("missing or invalid Authorization header", JsonDocument.Parse(none.Body).RootElement.GetProperty("error").GetString());
        var bad = await ExecAsync("exe1.AAAAAAAAAAAAAAAAAAAAAAAAAA", "ls");
        Assert.True(bad.Status == 401, bad.Raw);
        var garbage = await ExecAsync("not-a-token", "ls");
        Assert.True(garbage.Status == 401, garbage.Raw);

        // 403: rm is not in the default cmds.
        var rm = await ExecAsync(token, $"rm {Site}");
        Assert.True(rm.Status == 403, rm.Raw);
        Assert.Equal("command not allowed by token permissions", JsonDocument.Parse(rm.Body).RootElement.GetProperty("error").GetString());
        // …and whoami is not in --cmds=ls,rm.
        var who = await ExecAsync(rmToken, "whoami");
        Assert.True(who.Status == 403, who.Raw);

        // 404: unknown command.
        var unknown = await ExecAsync(token, "no-such-command");
        Assert.True(unknown.Status == 404, unknown.Raw);

        // 405: GET.
        var get = await WebSupport.CurlAsync(Daemon, ControlHost, Daemon.ControlAddress, "/exec", "-H", "Authorization: Bearer " + token);
        Assert.True(get.Status == 405, get.Raw);
        Assert.Equal("POST", get.Header("allow"));

        // 413: more than 64 KiB of body.
        var big = Encoding.ASCII.GetBytes("ls " + new string('a', 70_000));
        var tooBig = await ExecAsync(token, BodyFile(big));
        Assert.True(tooBig.Status == 413, tooBig.Raw);
        var tooBigH1 = await ExecAsync(token, BodyFile(big), "--http1.1");
        Assert.True(tooBigH1.Status == 413, tooBigH1.Raw);

        // 400: a NUL byte, an empty command, unbalanced quotes.
        var nul = await ExecAsync(token, BodyFile([(byte)'l', (byte)'s', 0, (byte)'x']));
        Assert.True(nul.Status == 400, nul.Raw);
        var empty = await ExecAsync(token, "   ");
        Assert.True(empty.Status == 400, empty.Raw);
        var quotes = await ExecAsync(token, "ls 'unterminated");
        Assert.True(quotes.Status == 400, quotes.Raw);

        // 422: the command runs and fails (rm of a VM that does not exist).
        var missing = await ExecAsync(rmToken, "rm no-such-vm");
        Assert.True(missing.Status == 422, missing.Raw);
        Assert.Contains("no-such-vm", missing.Body);
        // The site is still there.
        var still = await ExecAsync(token, "ls");
        Assert.Contains(Site, still.Body);

        // A bearer token cannot mint tokens.
        var mintToken = await ApiKeyAsync(Owner, "--label=ci-mint '--cmds=ssh-key generate-api-key'");
        var mint = await ExecAsync(mintToken, "ssh-key generate-api-key --label=nested");
        Assert.True(mint.Status is 422 or 403, mint.Raw);
        Assert.DoesNotContain("\"token\"", mint.Body);

        // A VM token is not an /exec token.
        var vmToken = await ApiKeyAsync(Owner, $"--vm={Site} --label=vm-not-exec");
        var vmOnExec = await ExecAsync(vmToken, "ls");
        Assert.True(vmOnExec.Status == 401, vmOnExec.Raw);
    }

    [Fact]
    public async Task Exec_AcceptsAnExe0Token_SignedWithTheRealSshKeygen()
    {
        long now = WebSupport.UnixNow();
        string token = await WebSupport.MintExe0Async(Owner.KeyPath, $"{{\"exp\":{now + 3600},\"cmds\":[\"whoami\",\"ls\"]}}", "v0@" + ControlHost);

        var who = await ExecAsync(token, "whoami");
        Assert.True(who.Status == 200, who.Raw);
        Assert.Equal("owner@example.com", JsonDocument.Parse(who.Body).RootElement.GetProperty("email").GetString());
        var ls = await ExecAsync(token, "ls");
        Assert.True(ls.Status == 200, ls.Raw);
        var notAllowed = await ExecAsync(token, "share show " + Site);
        Assert.True(notAllowed.Status == 403, notAllowed.Raw);

        // No cmds: the default set (whoami is in it).
        string defaults = await WebSupport.MintExe0Async(Owner.KeyPath, $"{{\"exp\":{now + 3600}}}", "v0@" + ControlHost);
        var d = await ExecAsync(defaults, "whoami");
        Assert.True(d.Status == 200, d.Raw);

        // Wrong namespace, expired, tampered payload, unknown key: 401.
        string wrongNs = await WebSupport.MintExe0Async(Owner.KeyPath, $"{{\"exp\":{now + 3600}}}", "v0@somewhere.else");
        Assert.Equal(401, (await ExecAsync(wrongNs, "whoami")).Status);
        string expired = await WebSupport.MintExe0Async(Owner.KeyPath, $"{{\"exp\":{now - 3600}}}", "v0@" + ControlHost);
        var exp = await ExecAsync(expired, "whoami");
        Assert.True(exp.Status == 401, exp.Raw);
        Assert.Contains("expired", exp.Body);
        var parts = token.Split('.');
        string tampered = "exe0." + WebSupport.B64Url(Encoding.UTF8.GetBytes($"{{\"exp\":{now + 3600},\"cmds\":[\"rm\"]}}")) + "." + parts[2];
        Assert.Equal(401, (await ExecAsync(tampered, "whoami")).Status);
        var stranger = await SshUser.CreateKeyAsync(Daemon, "stranger@example.com");
        string unknownKey = await WebSupport.MintExe0Async(stranger.KeyPath, $"{{\"exp\":{now + 3600}}}", "v0@" + ControlHost);
        Assert.Equal(401, (await ExecAsync(unknownKey, "whoami")).Status);

        // exe0-to-exe1 turns it into a short handle that works the same.
        var exe1 = await ExecAsync(token, "exe0-to-exe1 " + token);
        if (exe1.Status == 200)
        {
            string handle = JsonDocument.Parse(exe1.Body).RootElement.GetProperty("token").GetString()!;
            var viaHandle = await ExecAsync(handle, "whoami");
            Assert.True(viaHandle.Status == 200, viaHandle.Raw);
        }
        else
        {
            // Not in this token's cmds.
            Assert.True(exe1.Status == 403, exe1.Raw);
        }
    }
}
