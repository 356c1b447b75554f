using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http;
using Warren.Edge.Tests.Support;
using Warren.Edge.Http.FrontDoor;

namespace Warren.Edge.Tests.Http;

/// <summary>
/// The real front door (Kestrel + YARP) on 127.0.0.1 ephemeral ports with fake platform services,
/// and two upstream web servers standing in for VMs.
/// </summary>
public class FrontDoorFixture : IAsyncLifetime
{
    public const string Domain = "box.localhost";
    public const string ControlHost = "warren.localhost";

    private WebApplication _app = null!;

    public string DataDirectory { get; } = Directory.CreateTempSubdirectory("warren-edge-http-").FullName;
    public string CaPath { get; private set; } = "";
    public int HttpsPort { get; private set; }
    public int HttpPort { get; private set; }
    internal TestUpstream Web { get; private set; } = null!;
    internal TestUpstream Pub { get; private set; } = null!;
    internal FakeDirectory Sites { get; } = new();
    internal FakeAccess Access { get; } = new();
    internal FakeLocator Locator { get; } = new();
    internal FakeTokens Tokens { get; } = new();
    internal ManualTimeProvider Time { get; } = new();
    internal FakeRunner Runner { get; } = new();
    internal FakeAccessRequests AccessRequests { get; } = new();
    internal FakeDashboard Dashboard { get; } = new();
    public int UnboundPort { get; } = TestUpstream.UnusedPort();
    public IServiceProvider Services => _app.Services;

    public async Task InitializeAsync()
    {
        Web = await TestUpstream.StartAsync("web");
        Pub = await TestUpstream.StartAsync("pub");

        Sites.Sites["web"] = new WebSite("vm-web", "web", People.Owner.UserId, Web.Port, IsPublic: false);
        Sites.Sites["pub"] = new WebSite("vm-pub", "pub", People.Owner.UserId, Pub.Port, IsPublic: true);
        Sites.Sites["stopped"] = new WebSite("vm-stopped", "stopped", People.Owner.UserId, 80, IsPublic: true);
        Sites.Sites["unbound"] = new WebSite("vm-unbound", "unbound", People.Owner.UserId, UnboundPort, IsPublic: true);
        Locator.Addresses["vm-web"] = Web.Address;
        Locator.Addresses["vm-pub"] = Pub.Address;
        Locator.Addresses["vm-unbound"] = IPAddress.Loopback;
        Access.Shares[("vm-web", People.Friend.UserId)] = true;

        foreach (var vm in new[] { "web", "pub", "stopped", "unbound" })
        {
            Tokens.Table[("tok-owner", $"v0@{vm}.{Domain}")] = TokenValidation.Valid(new TokenPrincipal(People.Owner, "fp-owner", Array.Empty<string>(), "{\"ci\":true}"));
            Tokens.Table[("tok-stranger", $"v0@{vm}.{Domain}")] = TokenValidation.Valid(new TokenPrincipal(People.Stranger, "fp-stranger", Array.Empty<string>(), null));
        }

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (Environment.GetEnvironmentVariable("WARREN_TEST_LOG") == "1")
            builder.Logging.AddConsole(); // to see the daemon's own account of a failing test
        builder.Services.AddSingleton<TimeProvider>(Time);
        builder.Services.AddSingleton<IWebSiteDirectory>(Sites);
        builder.Services.AddSingleton<IWebAccessService>(Access);
        builder.Services.AddSingleton<IWebUpstreamLocator>(Locator);
        builder.Services.AddSingleton<IWebTokenValidator>(Tokens);
        builder.Services.AddSingleton<IExecCommandRunner>(Runner);
        builder.Services.AddSingleton<IAccessRequestSender>(AccessRequests);
        builder.Services.AddSingleton<IWebDashboardSource>(Dashboard);
        builder.WebHost.ConfigureKestrel(ConfigureKestrel);
        builder.AddWarrenHttpFrontDoor(o =>
        {
            o.VmDomain = Domain;
            o.ControlHost = ControlHost;
            o.HttpEndpoints = new() { new IPEndPoint(IPAddress.Loopback, 0) };
            o.HttpsEndpoints = new() { new IPEndPoint(IPAddress.Loopback, 0) };
            o.Tls.DataDirectory = DataDirectory;
            o.ExecTimeout = TimeSpan.FromMilliseconds(300);
            // Off here: this clock only moves when a test says so, so a shared bucket would run dry.
            o.RequestsPerSecondPerSource = 0;
            ConfigureFrontDoor(o);
        });
        _app = builder.Build();
        _app.UseWarrenHttpFrontDoor();
        _app.Run(context =>
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return context.Response.WriteAsync("fallthrough");
        });
        await _app.StartAsync();

        // The main HTTPS port from the front door itself: with the native transport Kestrel does not listen on it
        // (its own listener there takes the connections the event loops hand over).
        HttpsPort = _app.Services.GetRequiredService<FrontDoorListeners>().BoundMainHttpsPorts().First();
        foreach (var address in _app.Urls)
        {
            if (Uri.TryCreate(address, UriKind.Absolute, out var url) && url.Scheme == "http" && url.Port > 0)
                HttpPort = url.Port;
        }
        CaPath = Path.Combine(DataDirectory, "tls", "ca.crt");
        Assert.True(File.Exists(CaPath));
        Assert.NotEqual(0, HttpsPort);
        Assert.NotEqual(0, HttpPort);
    }

    /// <summary>Kestrel settings of a derived fixture (limits, timeouts).</summary>
    protected virtual void ConfigureKestrel(Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions options)
    {
    }

    /// <summary>Option changes of a derived fixture, applied last.</summary>
    protected virtual void ConfigureFrontDoor(HttpFrontDoorOptions options)
    {
    }

    public async Task DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        await Web.DisposeAsync();
        await Pub.DisposeAsync();
        Directory.Delete(DataDirectory, recursive: true);
    }

    /// <summary>Runs curl against the front door with <paramref name="site"/>'s name resolved to loopback; the result is not judged here.</summary>
    internal async Task<ExternalTool.Result> CurlSiteAsync(string site, params string[] args)
    {
        var all = new List<string>
        {
            "-sS", "--max-time", "30", "--cacert", CaPath,
            "--resolve", $"{site}.{Domain}:{HttpsPort}:127.0.0.1",
        };
        all.AddRange(args);
        return await ExternalTool.RunAsync("curl", all);
    }

    public string Url(string vm, string path = "/", int? port = null) => $"https://{vm}.{Domain}:{port ?? HttpsPort}{path}";

    /// <summary>Logs <paramref name="user"/> in on a site with a one-time link; returns the <c>Cookie</c> header value.</summary>
    public async Task<string> LoginCookieAsync(WebUser user, string vm = "web")
    {
        var links = (ILoginLinkService)Services.GetService(typeof(ILoginLinkService))!;
        string secret = await links.IssueAsync(user, null, CancellationToken.None);
        using var client = CreateClient();
        var response = await client.GetAsync(Url(vm, $"/__exe.dev/auth?secret={Uri.EscapeDataString(secret)}&redirect=%2F"));
        Assert.Equal(System.Net.HttpStatusCode.SeeOther, response.StatusCode);
        var setCookie = response.Headers.GetValues("Set-Cookie").Single();
        return setCookie.Split(';')[0];
    }

    /// <summary>
    /// Opens a control-host login link as a browser does: GET shows the button (and sets the anti-forgery cookie), its
    /// POST logs in. Returns the POST's response (303 with <c>exe-auth</c> when the link was good).
    /// </summary>
    public async Task<HttpResponseMessage> OpenControlLoginLinkAsync(string link)
    {
        using var client = CreateClient();
        var page = await client.GetAsync(link);
        Assert.Equal(System.Net.HttpStatusCode.OK, page.StatusCode);
        string html = await page.Content.ReadAsStringAsync();
        string confirm = page.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("exe-login-confirm-", StringComparison.Ordinal)).Split(';')[0];
        string Field(string name) => System.Net.WebUtility.HtmlDecode(
            System.Text.RegularExpressions.Regex.Match(html, $"name=\"{name}\" value=\"([^\"]*)\"").Groups[1].Value);
        var post = new HttpRequestMessage(HttpMethod.Post, new Uri(new Uri(link), "/auth"))
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string>
            {
                ["secret"] = Field("secret"), ["redirect"] = Field("redirect"), ["form_token"] = Field("form_token"),
            }),
        };
        post.Headers.Add("Cookie", confirm);
        return await client.SendAsync(post);
    }

    /// <summary>A handler that connects every name to the front door on 127.0.0.1 and trusts only the dev CA.</summary>
    public SocketsHttpHandler CreateHandler()
    {
        var ca = X509CertificateLoader.LoadCertificateFromFile(CaPath);
        return new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            UseProxy = false,
            ConnectCallback = async (context, ct) =>
            {
                int port = context.DnsEndPoint.Port == HttpPort ? HttpPort : HttpsPort;
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
            SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                {
                    if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0 || certificate is null)
                        return false;
                    using var chain = new X509Chain();
                    chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                    chain.ChainPolicy.CustomTrustStore.Add(ca);
                    chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                    return chain.Build(new X509Certificate2(certificate));
                },
            },
        };
    }

    public HttpClient CreateClient() => new(CreateHandler()) { Timeout = TimeSpan.FromSeconds(60) };

    /// <summary>Runs the real curl against the front door: <c>--cacert</c> the dev CA, <c>--resolve</c> the VM names. Returns (status, body).</summary>
    public async Task<(int Status, string Body, string Headers)> CurlAsync(params string[] args)
    {
        var headersFile = Path.Combine(DataDirectory, $"curl-headers-{Guid.NewGuid():N}");
        var all = new List<string> { "-sS", "--max-time", "30", "--cacert", CaPath, "-D", headersFile, "-w", "\n%{http_code}" };
        foreach (var vm in new[] { "web", "pub", "stopped", "unbound", "nosuch" })
        {
            all.Add("--resolve");
            all.Add($"{vm}.{Domain}:{HttpsPort}:127.0.0.1");
            all.Add("--resolve");
            all.Add($"{vm}.{Domain}:{HttpPort}:127.0.0.1");
        }
        all.Add("--resolve");
        all.Add($"{ControlHost}:{HttpsPort}:127.0.0.1");
        all.AddRange(args);
        var result = await ExternalTool.RunAsync("curl", all);
        Assert.True(result.ExitCode == 0, $"curl exit {result.ExitCode}: {result.Stderr}");
        int split = result.Stdout.LastIndexOf('\n');
        string headers = File.Exists(headersFile) ? await File.ReadAllTextAsync(headersFile) : "";
        File.Delete(headersFile);
        return (int.Parse(result.Stdout[(split + 1)..]), result.Stdout[..split], headers);
    }
}

[CollectionDefinition(Name)]
public sealed class FrontDoorCollection : ICollectionFixture<FrontDoorFixture>
{
    public const string Name = "front door";
}
