using System.Net;
using System.Text.Json;
using CsCheck;
using Warren.Edge.Integrations;
using Warren.Edge.Tests.Http;
using Warren.Edge.Tests.Support;
using Warren.Platform.Integrations;
using Warren.Platform.Vms;

namespace Warren.Edge.Tests.Integrations;

/// <summary>
/// Requests to <c>NAME.int.&lt;vm-domain&gt;</c> with curl, through <see cref="IntegrationRequestHandler"/> to real
/// targets (exe.dev's docs: http-proxy, vm-to-vm, reflection).
/// </summary>
public sealed class IntegrationHandlerTests : IAsyncLifetime
{
    private const string Bearer = "sk-live-4e5f6a7b8c9d0e1f";
    private IntegrationHandlerFixture _f = null!;

    public async Task InitializeAsync() => _f = await IntegrationHandlerFixture.StartAsync();
    public async Task DisposeAsync() => await _f.DisposeAsync();

    private async Task<(Warren.Platform.Accounts.Account Account, VmRecord Vm)> UserWithVmAsync(string email, string vmName, params string[] tags)
    {
        var account = await _f.P.NewAccountAsync(email);
        var vm = await _f.P.Vms.CreateAsync(account.Id, new VmCreateRequest { Name = vmName, Tags = tags });
        return (account, vm);
    }

    private Task<ExternalTool.Result> CurlAsync(string integration, string pathAndQuery, params string[] extra)
        => ExternalTool.RunAsync("curl", [.. extra, "-w", "\n%{http_code}", .. _f.CurlTo(integration, pathAndQuery)]);

    private static (int Status, string Body) Split(ExternalTool.Result r)
    {
        int nl = r.Stdout.LastIndexOf('\n');
        return (int.Parse(r.Stdout[(nl + 1)..]), r.Stdout[..nl]);
    }

    [Fact]
    public async Task Curl_through_http_proxy_gets_the_bearer_injected_and_method_path_query_body_unchanged()
    {
        var (alice, vm) = await UserWithVmAsync("alice@example.com", "box1");
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest
        {
            Name = "api", Type = IntegrationType.HttpProxy, Target = _f.TargetUrl + "/base", Bearer = Bearer,
            Headers = ["X-Team:blue"], Attach = ["vm:box1"],
        });
        _f.Caller = _f.CallerFor(vm);

        var r = await CurlAsync("api", "/v1/items%2Fx?a=1&b=%2F&c", "-X", "POST", "--data-binary", "hello=world",
            "-H", "Authorization: Bearer guessed-by-the-vm", "-H", "X-Exedev-Email: forged@example.com", "-H", "X-Custom: 1",
            "-H", "X-Team: red", "-H", "Proxy-Authorization: Basic eDp5");
        var (status, body) = Split(r);
        Assert.True(status == 200, r.Stdout + r.Stderr);
        Assert.DoesNotContain(Bearer, body.Replace("\"authorization\":\"Bearer " + Bearer + "\"", ""));
        var seen = Assert.Single(_f.Target.Requests);
        Assert.Equal("POST", seen.Method);
        Assert.Equal("/base/v1/items%2Fx?a=1&b=%2F&c", seen.PathAndQuery);
        Assert.Equal("hello=world", seen.Body);
        Assert.Equal("Bearer " + Bearer, seen.Headers["authorization"]);
        Assert.Equal("blue", seen.Headers["x-team"]);
        Assert.Equal("1", seen.Headers["x-custom"]);
        Assert.Equal($"{RecordingHttpsTarget.HostName}:{_f.Target.Port}", seen.Headers["host"]);
        Assert.False(seen.Headers.ContainsKey("x-exedev-email"));
        Assert.False(seen.Headers.ContainsKey("proxy-authorization"));
    }

    [Fact]
    public async Task Basic_auth_comes_from_the_target_url_and_never_from_the_vm()
    {
        var (alice, vm) = await UserWithVmAsync("alice@example.com", "box1");
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest
        {
            Name = "basic", Type = IntegrationType.HttpProxy, Target = $"https://svc:p%40ss@{RecordingHttpsTarget.HostName}:{_f.Target.Port}/", Attach = ["auto:all"],
        });
        _f.Caller = _f.CallerFor(vm);
        var (status, _) = Split(await CurlAsync("basic", "/x"));
        Assert.Equal(200, status);
        Assert.Equal("Basic " + Convert.ToBase64String("svc:p@ss"u8.ToArray()), Assert.Single(_f.Target.Requests).Headers["authorization"]);
    }

    [Fact]
    public async Task Not_attached_is_403_and_detach_cuts_access_at_once()
    {
        var (alice, vm) = await UserWithVmAsync("alice@example.com", "box1");
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest { Name = "api", Type = IntegrationType.HttpProxy, Target = _f.TargetUrl, Bearer = Bearer });
        _f.Caller = _f.CallerFor(vm);
        var (before, body) = Split(await CurlAsync("api", "/"));
        Assert.Equal(403, before);
        Assert.Contains("not attached", body);

        await _f.Integrations.AttachAsync(alice.Id, "api", "vm:box1");
        Assert.Equal(200, Split(await CurlAsync("api", "/")).Status);
        await _f.Integrations.DetachAsync(alice.Id, "api", "vm:box1");
        Assert.Equal(403, Split(await CurlAsync("api", "/")).Status);
        Assert.Equal(403, Split(await CurlAsync("nosuch", "/")).Status);
        Assert.Single(_f.Target.Requests);
    }

    [Fact]
    public async Task A_tag_attachment_follows_tag_and_tag_d()
    {
        var (alice, vm) = await UserWithVmAsync("alice@example.com", "box1");
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest { Name = "api", Type = IntegrationType.HttpProxy, Target = _f.TargetUrl, Attach = ["tag:ci"] });
        _f.Caller = _f.CallerFor(vm);
        Assert.Equal(403, Split(await CurlAsync("api", "/")).Status);
        await _f.P.Vms.TagAsync(alice.Id, "box1", ["ci"]);
        Assert.Equal(200, Split(await CurlAsync("api", "/")).Status);
        await _f.P.Vms.UntagAsync(alice.Id, "box1", ["ci"]);
        Assert.Equal(403, Split(await CurlAsync("api", "/")).Status);
    }

    [Fact]
    public async Task Another_accounts_vm_cannot_use_an_integration_of_the_same_name()
    {
        var (alice, _) = await UserWithVmAsync("alice@example.com", "box1");
        var (_, malloryVm) = await UserWithVmAsync("mallory@example.com", "evil");
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest { Name = "api", Type = IntegrationType.HttpProxy, Target = _f.TargetUrl, Bearer = Bearer, Attach = ["auto:all"] });
        _f.Caller = _f.CallerFor(malloryVm);
        var (status, body) = Split(await CurlAsync("api", "/"));
        Assert.Equal(403, status);
        Assert.DoesNotContain(Bearer, body);
        Assert.Empty(_f.Target.Requests);
        // A caller claiming a VM of another account (the metadata server never does) is refused too.
        _f.Caller = _f.CallerFor(malloryVm) with { AccountId = alice.Id };
        Assert.Equal(403, Split(await CurlAsync("api", "/")).Status);
        Assert.Empty(_f.Target.Requests);
    }

    [Fact]
    public async Task A_dead_target_is_502_upstream_request_failed_without_the_target_name()
    {
        var (alice, vm) = await UserWithVmAsync("alice@example.com", "box1");
        // The name is pinned to loopback, where nothing listens on that port.
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest
        {
            Name = "dead", Type = IntegrationType.HttpProxy, Target = $"https://{RecordingHttpsTarget.HostName}:{TestUpstream.UnusedPort()}/", Attach = ["auto:all"],
        });
        _f.Caller = _f.CallerFor(vm);
        var (status, body) = Split(await CurlAsync("dead", "/"));
        Assert.Equal(502, status);
        Assert.Contains(IntegrationForwarder.UpstreamFailed, body);
        Assert.DoesNotContain("integ-target", body);
        Assert.DoesNotContain("127.0.0.1", body);
    }

    [Fact]
    public async Task Upstream_status_codes_and_headers_come_back()
    {
        var (alice, vm) = await UserWithVmAsync("alice@example.com", "box1");
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest { Name = "api", Type = IntegrationType.HttpProxy, Target = _f.TargetUrl, Attach = ["auto:all"] });
        _f.Caller = _f.CallerFor(vm);
        var r = await CurlAsync("api", "/status/418", "-i");
        Assert.Equal(418, Split(r).Status);
        Assert.Contains("X-Target: recording", r.Stdout, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task A_peer_call_carries_the_true_source_vm_and_no_token()
    {
        await using var backend = await TestUpstream.StartAsync("backend");
        var (alice, caller) = await UserWithVmAsync("alice@example.com", "frontend");
        var target = await _f.P.Vms.CreateAsync(alice.Id, new VmCreateRequest { Name = "backend" });
        await _f.P.Shares.SetPortAsync(alice.Id, "backend", backend.AltPort);
        _f.VmAddresses[target.Id] = backend.Address;
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest { Name = "be", Type = IntegrationType.HttpProxy, Peer = true, Target = "backend", Attach = ["vm:frontend"] });
        _f.Caller = _f.CallerFor(caller);

        var (status, body) = Split(await CurlAsync("be", "/hello?x=1", "-H", "X-Exedev-Source-Vm: backend", "-H", "Authorization: Bearer mine"));
        Assert.True(status == 200, body);
        using var doc = JsonDocument.Parse(body);
        var headers = doc.RootElement.GetProperty("headers");
        Assert.Equal("frontend", headers.GetProperty("x-exedev-source-vm").GetString());
        Assert.Equal("backend." + _f.P.Options.VmDomain, headers.GetProperty("host").GetString());
        Assert.Equal("/hello?x=1", doc.RootElement.GetProperty("path").GetString());
        Assert.False(headers.TryGetProperty("authorization", out _));
        var token = _f.Integrations.OpenSecrets((await _f.Integrations.FindAsync(alice.Id, "be"))!).PeerToken;
        Assert.NotNull(token);
        Assert.DoesNotContain(token!, body);
        // The target sees the identity its front door would add for the key's account.
        Assert.Equal("alice@example.com", headers.GetProperty("x-exedev-email").GetString());
        Assert.Equal(alice.Id, headers.GetProperty("x-exedev-userid").GetString());
    }

    [Fact]
    public async Task A_peer_call_whose_key_the_target_refuses_never_reaches_the_target()
    {
        await using var backend = await TestUpstream.StartAsync("backend");
        var (alice, caller) = await UserWithVmAsync("alice@example.com", "frontend");
        var target = await _f.P.Vms.CreateAsync(alice.Id, new VmCreateRequest { Name = "backend" });
        await _f.P.Shares.SetPortAsync(alice.Id, "backend", backend.AltPort);
        _f.VmAddresses[target.Id] = backend.Address;
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest { Name = "be", Type = IntegrationType.HttpProxy, Peer = true, Target = "backend", Attach = ["vm:frontend"] });
        _f.Caller = _f.CallerFor(caller);
        Assert.Equal(200, Split(await CurlAsync("be", "/")).Status);

        // The front door refuses tokens of an account whose address is not verified: so does the peer path.
        await _f.Db.WriteAsync(u => u.ExecuteAsync("UPDATE accounts SET email_verified = 0 WHERE id = @Id", new { alice.Id }));
        var (status, body) = Split(await CurlAsync("be", "/"));
        Assert.Equal(403, status);
        Assert.Contains(PeerAccessCheck.Refused, body);
    }

    [Fact]
    public async Task Reflection_serves_the_vms_own_metadata_and_only_the_selected_fields()
    {
        var (alice, vm) = await UserWithVmAsync("alice@example.com", "box1", "web", "prod");
        await _f.P.Vms.SetCommentAsync(alice.Id, "box1", "the box");
        _f.Caller = _f.CallerFor(vm);

        var root = JsonDocument.Parse(Split(await CurlAsync("reflection", "/")).Body).RootElement;
        Assert.Contains(root.GetProperty("paths").EnumerateArray(), p => p.GetProperty("path").GetString() == "/email");
        Assert.Equal("alice@example.com", JsonDocument.Parse(Split(await CurlAsync("reflection", "/email")).Body).RootElement.GetProperty("email").GetString());
        Assert.Equal(["prod", "web"], JsonDocument.Parse(Split(await CurlAsync("reflection", "/tags")).Body).RootElement.GetProperty("tags")
            .EnumerateArray().Select(t => t.GetString()!).Order().ToArray());
        Assert.Equal("the box", JsonDocument.Parse(Split(await CurlAsync("reflection", "/comment")).Body).RootElement.GetProperty("comment").GetString());
        var ints = JsonDocument.Parse(Split(await CurlAsync("reflection", "/integrations")).Body).RootElement.GetProperty("integrations");
        Assert.Equal("reflection", Assert.Single(ints.EnumerateArray()).GetProperty("name").GetString());
        Assert.Equal(403, Split(await CurlAsync("reflection", "/secrets")).Status);
        Assert.Equal(403, Split(await CurlAsync("reflection", "/email", "-X", "POST")).Status);

        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest { Name = "meta", Type = IntegrationType.Reflection, Fields = ["tags"], Attach = ["vm:box1"] });
        Assert.Equal(200, Split(await CurlAsync("meta", "/tags")).Status);
        Assert.Equal(403, Split(await CurlAsync("meta", "/email")).Status);
        var metaRoot = JsonDocument.Parse(Split(await CurlAsync("meta", "/")).Body).RootElement;
        Assert.Equal("/tags", Assert.Single(metaRoot.GetProperty("paths").EnumerateArray()).GetProperty("path").GetString());
    }

    [Fact]
    public async Task Any_path_and_query_reach_the_target_byte_for_byte()
    {
        var (alice, vm) = await UserWithVmAsync("alice@example.com", "box1");
        await _f.Integrations.AddAsync(alice, new IntegrationAddRequest { Name = "api", Type = IntegrationType.HttpProxy, Target = _f.TargetUrl, Attach = ["auto:all"] });
        _f.Caller = _f.CallerFor(vm);
        using var client = new HttpClient(new SocketsHttpHandler { ConnectCallback = async (_, ct) =>
        {
            var s = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            await s.ConnectAsync(new IPEndPoint(IPAddress.Loopback, _f.Port), ct);
            return new System.Net.Sockets.NetworkStream(s, ownsSocket: true);
        } });
        // Path and query made of unreserved characters and percent-escapes (RFC 3986 §2), which every hop keeps as sent.
        // Not %00: Kestrel, in front of the handler as in the metadata server, refuses a NUL in a path with 400.
        var segment = Gen.OneOf(Gen.Char["az09-._~"].Select(c => c.ToString()), Gen.Byte[1, 255].Select(b => "%" + b.ToString("X2")));
        var path = segment.Array[1, 12].Select(a => string.Concat(a)).Array[1, 4].Select(a => "/" + string.Join('/', a));
        var query = segment.Array[0, 12].Select(a => string.Concat(a));
        await Gen.Select(path, query).SampleAsync(async (p, q) =>
        {
            string target = q.Length == 0 ? p : p + "?" + q;
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri($"http://api.int.{_f.P.Options.VmDomain}{target}", new UriCreationOptions { DangerousDisablePathAndQueryCanonicalization = true }));
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var received = JsonSerializer.Deserialize<RecordingHttpsTarget.Received>(await response.Content.ReadAsStringAsync())!;
            Assert.Equal(target, received.PathAndQuery);
        }, iter: 60);
    }

    [Theory]
    [InlineData("127.0.0.1", false)]
    [InlineData("10.1.2.3", false)]
    [InlineData("172.20.0.1", false)]
    [InlineData("192.168.1.1", false)]
    [InlineData("169.254.169.254", false)]
    [InlineData("100.64.0.1", false)]
    [InlineData("0.0.0.0", false)]
    [InlineData("224.0.0.1", false)]
    [InlineData("::1", false)]
    [InlineData("fe80::1", false)]
    [InlineData("fd00::1", false)]
    [InlineData("::ffff:127.0.0.1", false)]
    [InlineData("93.184.216.34", true)]
    [InlineData("2606:2800:220:1::1", true)]
    public void Only_public_addresses_are_dialled_for_targets(string address, bool dialled)
        => Assert.Equal(dialled, IntegrationHttpClients.IsPublic(IPAddress.Parse(address)));
}
