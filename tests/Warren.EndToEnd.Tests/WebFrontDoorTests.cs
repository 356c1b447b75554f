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
            + $" && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nhead -c \"$CONTENT_LENGTH\" | md5sum\\n' > {root}/cgi-bin/md5 && chmod 755 {root}/cgi-bin/md5"
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

    private Task<WebSupport.HttpResult> ExecFileAsync(string? token, string bodyFile, params string[] extra)
    {
        var args = new List<string> { "--data-binary", "@" + bodyFile };
        if (token is not null) args.AddRange(["-H", "Authorization: Bearer " + token]);
        args.AddRange(extra);
        return WebSupport.CurlAsync(Daemon, ControlHost, Daemon.ControlAddress, "/exec", [.. args]);
    }

    private Task<WebSupport.HttpResult> ExecAsync(string? token, string command) => ExecFileAsync(token, BodyFile(Encoding.UTF8.GetBytes(command)));

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

            // On a public site, an Authorization header that is no Warren token is the app's own: forwarded untouched.
            var app = await SiteAsync("/cgi-bin/env", "-H", "Authorization: Bearer app-own-credential");
            Assert.True(app.Status == 200, app.Raw);
            Assert.Equal("Bearer app-own-credential", app.Env().GetValueOrDefault("HTTP_AUTHORIZATION"));
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
            Assert.False(env.ContainsKey("HTTP_AUTHORIZATION"), $"{name}: the Authorization header reached the VM:\n{r.Body}");
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
    public async Task LargeUpload_StreamsThroughToTheVm_Intact()
    {
        await SetPrivateAsync();
        string token = await ApiKeyAsync(Owner, $"--vm={Site} --label=upload-token");
        var payload = new byte[24 * 1024 * 1024 + 123];
        new Random(6).NextBytes(payload);
        var file = BodyFile(payload);
        string expected = Convert.ToHexStringLower(System.Security.Cryptography.MD5.HashData(payload));
        foreach (var version in new[] { "--http2", "--http1.1" })
        {
            var r = await SiteAsync("/cgi-bin/md5", "-H", "X-Exedev-Authorization: Bearer " + token, "-H", "Content-Type: application/octet-stream",
                "--data-binary", "@" + file, version);
            Assert.True(r.Status == 200, r.Raw.Length > 2000 ? r.Raw[..2000] : r.Raw);
            Assert.StartsWith(expected, r.Body.Trim());
        }
    }

    /// <summary>A tiny RFC 6455 echo server for the VM (the default image has perl, not python or node).</summary>
    private const string WebSocketEchoServer = """
        # Minimal RFC 6455 echo server: one connection at a time, replies "echo: " + each message.
        use strict; use warnings;
        use IO::Socket::INET;
        # perl-base only: SHA-1 from coreutils' sha1sum, base64 by the uuencode alphabet trick.
        sub sha1_base64 {
            my ($text) = @_;
            pipe(my $r, my $w) or die; my $pid = open(my $out, '-|') // die;
            if (!$pid) { close $w; open(STDIN, '<&', $r) or die; exec('sha1sum') or die; }
            close $r; print $w $text; close $w;
            my ($hex) = split ' ', scalar <$out>; close $out; waitpid($pid, 0);
            my $bytes = pack('H*', $hex);
            my $u = pack('u', $bytes); $u =~ s/^.//mg; $u =~ s/\n//g;
            $u =~ tr|` -_|AA-Za-z0-9+/|;
            my $pad = (3 - length($bytes) % 3) % 3;
            return substr($u, 0, length($u) - $pad);
        }
        my $port = shift // 8000;
        my $srv = IO::Socket::INET->new(LocalPort => $port, Listen => 5, ReuseAddr => 1) or die "listen: $!";
        while (my $c = $srv->accept) {
            binmode $c;
            my $req = '';
            while (defined(my $line = <$c>)) { $req .= $line; last if $line eq "\r\n"; }
            my ($key) = $req =~ /^Sec-WebSocket-Key:\s*(\S+)/mi;
            unless ($key) {
                print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n\r\nplain\n";
                close $c; next;
            }
            my $accept = sha1_base64($key . "258EAFA5-E914-47DA-95CA-C5AB0DC85B11") . "=";
            $c->autoflush(1);
            print $c "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: $accept\r\n\r\n";
            while (1) {
                my $h;
                last unless defined(read($c, $h, 2)) && length($h) == 2;
                my ($b0, $b1) = unpack('CC', $h);
                my $op = $b0 & 0x0f;
                my $len = $b1 & 0x7f;
                if ($len == 126) { read($c, $h, 2); $len = unpack('n', $h); }
                elsif ($len == 127) { read($c, $h, 8); $len = unpack('Q>', $h); }
                my $mask = '';
                read($c, $mask, 4) if $b1 & 0x80;
                my $data = '';
                while (length($data) < $len) { my $n = read($c, $data, $len - length($data), length($data)); last unless $n; }
                if ($mask ne '') { my $m = substr($mask x (int($len / 4) + 1), 0, $len); $data = $data ^ $m; }
                if ($op == 8) { print $c pack('CC', 0x88, 0); last; }
                next unless $op == 1 || $op == 2;
                my $out = "echo: " . $data;
                my $l = length $out;
                my $hdr = $l < 126 ? pack('CC', 0x80 | $op, $l) : $l < 65536 ? pack('CCn', 0x80 | $op, 126, $l) : pack('CCQ>', 0x80 | $op, 127, $l);
                print $c $hdr . $out;
            }
            close $c;
        }
        """;

    [Fact]
    public async Task WebSocket_Echo_ThroughTheProxy_WithAVmToken()
    {
        const string vm = "wsite";
        var made = await Owner.ControlAsync($"new --name={vm} --image=warren/default:1 --json");
        Assert.True(made.ExitCode == 0, made.ToString());
        var put = await Owner.VmAsync("127.0.1.1", "cat > /tmp/ws.pl && (perl /tmp/ws.pl 8000 > /tmp/ws.log 2>&1 &) ; sleep 1; cat /tmp/ws.log",
            stdin: WebSocketEchoServer, user: "vm+" + vm);
        Assert.True(put.ExitCode == 0, put.ToString());
        Json(await Owner.ControlAsync($"share port {vm} 8000 --json"));
        string token = await ApiKeyAsync(Owner, $"--vm={vm} --label=ws-token");
        string host = vm + ".box.localhost";

        // Plain HTTP first, bounded wait for the server to come up.
        WebSupport.HttpResult? plain = null;
        for (int i = 0; i < 40; i++)
        {
            plain = await WebSupport.CurlAsync(Daemon, host, Daemon.ControlAddress, "/", "-H", "X-Exedev-Authorization: Bearer " + token);
            if (plain.Status == 200) break;
            await Task.Delay(250);
        }
        Assert.True(plain!.Status == 200, plain.Raw);
        Assert.Equal("plain\n", plain.Body);

        var ca = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadCertificateFromFile(WebSupport.CaPath(Daemon));
        var handler = new System.Net.Http.SocketsHttpHandler
        {
            // --resolve: every connection goes to the control address, whatever the host name.
            ConnectCallback = async (ctx, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                await socket.ConnectAsync(System.Net.IPAddress.Parse(Daemon.ControlAddress), ctx.DnsEndPoint.Port, ct);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        };
        handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, errors) =>
        {
            if (cert is null || (errors & ~System.Net.Security.SslPolicyErrors.RemoteCertificateChainErrors) != 0) return false;
            using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
            chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
            chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
            return chain.Build(new System.Security.Cryptography.X509Certificates.X509Certificate2(cert));
        };
        using var invoker = new HttpMessageInvoker(handler);
        var uri = new Uri($"wss://{host}:{Daemon.HttpsPort}/ws");

        // Without credentials the upgrade is refused (a 307 to login, not a socket).
        using (var anon = new System.Net.WebSockets.ClientWebSocket())
        {
            using var cts0 = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await Assert.ThrowsAnyAsync<System.Net.WebSockets.WebSocketException>(() => anon.ConnectAsync(uri, invoker, cts0.Token));
        }

        using var ws = new System.Net.WebSockets.ClientWebSocket();
        ws.Options.SetRequestHeader("X-Exedev-Authorization", "Bearer " + token);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await ws.ConnectAsync(uri, invoker, cts.Token);
        Assert.Equal(System.Net.WebSockets.WebSocketState.Open, ws.State);
        foreach (var message in new[] { "hello", new string('w', 70_000) })
        {
            await ws.SendAsync(Encoding.UTF8.GetBytes(message), System.Net.WebSockets.WebSocketMessageType.Text, true, cts.Token);
            var received = new MemoryStream();
            var buffer = new byte[16 * 1024];
            System.Net.WebSockets.WebSocketReceiveResult result;
            do
            {
                result = await ws.ReceiveAsync(buffer, cts.Token);
                received.Write(buffer, 0, result.Count);
            } while (!result.EndOfMessage);
            Assert.Equal("echo: " + message, Encoding.UTF8.GetString(received.ToArray()));
        }
        await ws.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, "bye", cts.Token);
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
        var tooBig = await ExecFileAsync(token, BodyFile(big));
        Assert.True(tooBig.Status == 413, tooBig.Raw);
        var tooBigH1 = await ExecFileAsync(token, BodyFile(big), "--http1.1");
        Assert.True(tooBigH1.Status == 413, tooBigH1.Raw);

        // 400: a NUL byte, an empty command, unbalanced quotes.
        var nul = await ExecFileAsync(token, BodyFile([(byte)'l', (byte)'s', 0, (byte)'x']));
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

        // exe0-to-exe1 (not in the first token's cmds) turns a token into a short handle that works the same.
        Assert.Equal(403, (await ExecAsync(token, "exe0-to-exe1 " + token)).Status);
        string convertible = await WebSupport.MintExe0Async(Owner.KeyPath, $"{{\"exp\":{now + 3600},\"cmds\":[\"whoami\",\"exe0-to-exe1\"]}}", "v0@" + ControlHost);
        var exe1 = await ExecAsync(convertible, "exe0-to-exe1 " + convertible);
        Assert.True(exe1.Status == 200, exe1.Raw);
        string handle = JsonDocument.Parse(exe1.Body).RootElement.GetProperty("token").GetString()!;
        Assert.StartsWith("exe1.", handle);
        var viaHandle = await ExecAsync(handle, "whoami");
        Assert.True(viaHandle.Status == 200, viaHandle.Raw);
        Assert.Equal("owner@example.com", JsonDocument.Parse(viaHandle.Body).RootElement.GetProperty("email").GetString());
    }

    [Fact]
    public async Task Exec_RateLimit_Gives429_PerSigningKey()
    {
        // Burst 60, refilling 1/s: 150 requests on one connection exhaust it whatever the machine's speed.
        string token = await ApiKeyAsync(Owner, "--label=ci-burst");
        var body = BodyFile(Encoding.UTF8.GetBytes("whoami"));
        var args = new List<string>
        {
            "-s", "-w", "%{http_code}\\n", "--max-time", "120", "--cacert", WebSupport.CaPath(Daemon),
            "--resolve", $"{ControlHost}:{Daemon.HttpsPort}:{Daemon.ControlAddress}",
            "-H", "Authorization: Bearer " + token, "--data-binary", "@" + body,
        };
        for (int i = 0; i < 150; i++) args.AddRange(["-o", "/dev/null", $"https://{ControlHost}:{Daemon.HttpsPort}/exec"]);
        var r = await ProcessRunner.RunAsync(ProcessRunner.Require("curl"), args, timeout: TimeSpan.FromSeconds(180));
        var codes = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(codes.Length == 150, r.ToString());
        Assert.True(codes.Take(60).All(c => c == "200"), string.Join(' ', codes));
        Assert.Contains("429", codes);
        Assert.All(codes, c => Assert.True(c is "200" or "429", string.Join(' ', codes)));
        var limited = await ExecAsync(token, "whoami");
        Assert.True(limited.Status == 429, limited.Raw);
        Assert.Equal("rate limit exceeded", JsonDocument.Parse(limited.Body).RootElement.GetProperty("error").GetString());

        // Another key's bucket is untouched.
        string other = await ApiKeyAsync(Owner, "--label=ci-calm");
        Assert.Equal(200, (await ExecAsync(other, "whoami")).Status);
    }
}

/// <summary>A daemon that also listens on one alternate HTTPS port (3000–9999) for <c>NAME.box.localhost:PORT</c>.</summary>
public sealed class AlternatePortFixture : DaemonFixture, IAsyncLifetime
{
    public const string Site = "altsite";
    private static readonly Lazy<int> s_port = new(FindFreeAlternatePort);
    public int AlternatePort => s_port.Value;
    public SshUser Owner { get; private set; } = null!;

    protected override Dictionary<string, string> Config => new() { ["Warren:Http:AlternatePorts:0"] = AlternatePort.ToString() };

    public new async Task InitializeAsync()
    {
        await base.InitializeAsync();
        Owner = await Daemon.CreateUserAsync("alt-owner@example.com");
        await WebSupport.CreateWebVmAsync(Daemon, Owner, Site, "default route");
        await WebSupport.StartHttpdAsync(Owner, Site, AlternatePort, "/data/alt", "alternate port");
    }

    /// <summary>A port in the alternate range free on the control address and every slot address (bounded search).</summary>
    private static int FindFreeAlternatePort()
    {
        string[] addresses = ["127.0.0.1", "127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"];
        int start = 7000 + Environment.ProcessId % 2000;
        for (int i = 0; i < 500; i++)
        {
            int port = start + i;
            var listeners = new List<System.Net.Sockets.TcpListener>();
            try
            {
                foreach (var a in addresses)
                {
                    var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Parse(a), port);
                    l.Start();
                    listeners.Add(l);
                }
                return port;
            }
            catch (System.Net.Sockets.SocketException) { }
            finally { foreach (var l in listeners) l.Stop(); }
        }
        throw new InvalidOperationException("no free alternate port");
    }
}

/// <summary>
/// Issue 6 "ports 3000–9999 are reachable at NAME.&lt;domain&gt;:PORT for users with access": straight to that
/// VM port, never public (reference §4), with the real curl.
/// </summary>
public sealed class AlternatePortTests(AlternatePortFixture fixture) : IClassFixture<AlternatePortFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private string Host => AlternatePortFixture.Site + ".box.localhost";

    private async Task<WebSupport.HttpResult> AltAsync(params string[] extra)
    {
        string curl = ProcessRunner.Require("curl");
        int port = fixture.AlternatePort;
        var args = new List<string>
        {
            "-sS", "-i", "--max-time", "60", "--cacert", WebSupport.CaPath(Daemon),
            "--resolve", $"{Host}:{port}:{Daemon.ControlAddress}", $"https://{Host}:{port}/",
        };
        args.AddRange(extra);
        var r = await ProcessRunner.RunAsync(curl, args, timeout: TimeSpan.FromSeconds(90));
        Assert.True(r.ExitCode == 0, "curl failed: " + r);
        return WebSupport.ParseResponse(r.Stdout);
    }

    [Fact]
    public async Task AlternatePort_GoesToThatVmPort_ForTheOwnerOnly_EvenWhenPublic()
    {
        var owner = fixture.Owner;
        var made = await owner.ControlAsync($"ssh-key generate-api-key --vm={AlternatePortFixture.Site} --json");
        Assert.True(made.ExitCode == 0, made.ToString());
        string token = System.Text.Json.JsonDocument.Parse(made.Stdout).RootElement.GetProperty("token").GetString()!;

        var anon = await AltAsync();
        Assert.True(anon.Status == 307, anon.Raw);
        Assert.StartsWith("/__exe.dev/login", anon.Header("location"));

        var ok = await AltAsync("-H", "X-Exedev-Authorization: Bearer " + token);
        Assert.True(ok.Status == 200, ok.Raw);
        Assert.Equal("alternate port\n", ok.Body);

        // The default route still goes to port 80.
        var main = await WebSupport.CurlAsync(Daemon, Host, Daemon.ControlAddress, "/", "-H", "X-Exedev-Authorization: Bearer " + token);
        Assert.True(main.Status == 200, main.Raw);
        Assert.Equal("default route\n", main.Body);

        // Public covers the default route only.
        var pub = await owner.ControlAsync($"share set-public {AlternatePortFixture.Site} --json");
        Assert.True(pub.ExitCode == 0, pub.ToString());
        var anonPublic = await AltAsync();
        Assert.True(anonPublic.Status == 307, anonPublic.Raw);
        Assert.DoesNotContain("alternate port", anonPublic.Body);
        var mainPublic = await WebSupport.CurlAsync(Daemon, Host, Daemon.ControlAddress, "/");
        Assert.True(mainPublic.Status == 200, mainPublic.Raw);

        // Another account with a correctly signed token for this site is refused.
        var other = await Daemon.CreateUserAsync("alt-other@example.com");
        string minted = await WebSupport.MintExe0Async(other.KeyPath, $"{{\"exp\":{WebSupport.UnixNow() + 3600}}}", $"v0@{Host}");
        var denied = await AltAsync("-H", "X-Exedev-Authorization: Bearer " + minted);
        Assert.True(denied.Status == 401, denied.Raw);
        Assert.DoesNotContain("alternate port", denied.Body);
    }
}
