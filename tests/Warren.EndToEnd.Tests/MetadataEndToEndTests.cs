using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// A daemon whose VM resolver relays to the test's own DNS server (<see cref="UpstreamDns"/>, which knows
/// <c>probe.upstream.test</c>), mailing through a loopback SMTP sink, with the owner's busybox VM "meta-a".
/// </summary>
public sealed class MetadataFixture : MailingSiteFixture
{
    public const string Site = "meta-a";
    public UpstreamDnsStub UpstreamDns { get; } = new();
    protected override string SiteName => Site;
    protected override string SiteContent => "metadata site";
    protected override string OwnerEmail => "meta-owner@example.com";
    protected override Dictionary<string, string> ExtraConfig => new()
    {
        ["Warren:Network:VmDnsUpstreams:0"] = $"127.0.0.1:{UpstreamDns.Port}",
    };

    public new async Task DisposeAsync()
    {
        await base.DisposeAsync();
        UpstreamDns.Dispose();
    }
}

/// <summary>
/// The metadata service, VM DNS and the email gateway through the real daemon and real VMs (Docker runtime): busybox
/// wget and nslookup inside the VM, and curl/dig run by the host inside a VM's network namespace (nsenter -n: the
/// packets leave from the VM's own interface and address, exactly as the VM's would, with full control of that
/// interface — more than a VM has). A second account's VM never gets the first one's identity or recipients.
/// </summary>
public sealed class MetadataEndToEndTests(MetadataFixture fixture) : IClassFixture<MetadataFixture>
{
    private static readonly TimeSpan MailWait = TimeSpan.FromSeconds(60);
    private WarrenDaemon Daemon => fixture.Daemon;
    private SshUser Owner => fixture.Owner;

    private Task<ProcessResult> InVmAsync(SshUser user, string vm, string script) =>
        user.VmAsync(Daemon.SlotAddresses[0], script, user: "vm+" + vm);

    private static Task<ProcessResult> Run(string program, params string[] args) => ProcessRunner.RunAsync(ProcessRunner.Require(program), args);

    /// <summary>The host pid of the VM's container (its network namespace).</summary>
    private async Task<string> VmPidAsync(string vm)
    {
        string instance = File.ReadAllText(Path.Combine(Daemon.DataDirectory, "instance-id")).Trim();
        var ps = await Run("docker", "ps", "-q", "--filter", "label=warren.instance=" + instance, "--filter", "label=warren.vm-name=" + vm);
        string id = ps.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Single();
        var pid = await Run("docker", "inspect", "-f", "{{.State.Pid}}", id);
        return pid.Stdout.Trim();
    }

    private async Task<string> VmAddressAsync(string pid)
    {
        var r = await Run("nsenter", "-t", pid, "-n", "ip", "-4", "-o", "addr", "show", "dev", "eth0");
        Assert.True(r.ExitCode == 0, r.ToString());
        // "2: eth0    inet 10.231.0.6/30 brd ..."
        var token = r.Stdout.Split(' ', StringSplitOptions.RemoveEmptyEntries).SkipWhile(t => t != "inet").Skip(1).First();
        return token.Split('/')[0];
    }

    /// <summary>curl run in the VM's network namespace: status line and body.</summary>
    private static async Task<(int Status, string Body)> CurlInVmNetAsync(string pid, params string[] args)
    {
        var r = await Run("nsenter", ["-t", pid, "-n", "curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", .. args]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int cut = r.Stdout.LastIndexOf('\n');
        return (int.Parse(r.Stdout[(cut + 1)..].Trim()), r.Stdout[..cut]);
    }

    /// <summary>The metadata listener's host port, from the daemon's start-up log line.</summary>
    private int MetadataPort()
    {
        var m = System.Text.RegularExpressions.Regex.Match(Daemon.Log, @"metadata service listening on port (\d+)");
        Assert.True(m.Success, Daemon.Log);
        return int.Parse(m.Groups[1].Value);
    }

    /// <summary>The host's address on a VM's /30: the VM's address minus one.</summary>
    private static string Gateway(string vmAddress)
    {
        var bytes = IPAddress.Parse(vmAddress).GetAddressBytes();
        bytes[3]--;
        return new IPAddress(bytes).ToString();
    }

    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement;

    private async Task<SshUser> NewAccountWithVmAsync(string email, string vm)
    {
        var user = await Daemon.CreateUserAsync(email);
        var r = await user.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
        Assert.True(r.ExitCode == 0, r.ToString());
        return user;
    }

    [Fact]
    public async Task Metadata_FromInsideTheVm_NamesTheVm_AndFollowsRename()
    {
        var r = await InVmAsync(Owner, MetadataFixture.Site, "wget -qO- http://169.254.169.254/");
        Assert.True(r.ExitCode == 0, r + "\ndaemon: " + Daemon.Log);
        var identity = Json(r.Stdout);
        Assert.Equal(MetadataFixture.Site, identity.GetProperty("name").GetString());
        string pid = await VmPidAsync(MetadataFixture.Site);
        Assert.Equal(await VmAddressAsync(pid), identity.GetProperty("source_ip").GetString());

        // Unknown paths and methods: JSON errors, never a crash.
        var missing = await CurlInVmNetAsync(pid, "http://169.254.169.254/latest/meta-data/");
        Assert.Equal(404, missing.Status);
        Assert.Equal("not found", Json(missing.Body).GetProperty("error").GetString());
        var post = await CurlInVmNetAsync(pid, "-X", "POST", "http://169.254.169.254/");
        Assert.Equal(405, post.Status);
        // An integration the VM's account has not attached (integrations are served: the handler answers 403).
        var integration = await CurlInVmNetAsync(pid, "-H", "Host: github.int.box.localhost", "http://169.254.169.254/");
        Assert.Equal(403, integration.Status);
        Assert.Contains("not attached", Json(integration.Body).GetProperty("error").GetString());
        // Too many headers: refused by the listener's limits, and the service still answers afterwards.
        var headers = Enumerable.Range(0, 100).SelectMany(i => new[] { "-H", $"X-Fill-{i}: {i}" }).ToArray();
        var flooded = await CurlInVmNetAsync(pid, [.. headers, "http://169.254.169.254/"]);
        Assert.Equal(431, flooded.Status);

        // Rename: the next request carries the new name.
        var vm = "meta-ren";
        var created = await Owner.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
        Assert.True(created.ExitCode == 0, created.ToString());
        var before = await InVmAsync(Owner, vm, "wget -qO- http://169.254.169.254/");
        Assert.Equal(vm, Json(before.Stdout).GetProperty("name").GetString());
        var renamed = await Owner.ControlAsync($"rename {vm} meta-ren2");
        Assert.True(renamed.ExitCode == 0, renamed.ToString());
        var after = await InVmAsync(Owner, "meta-ren2", "wget -qO- http://169.254.169.254/");
        Assert.True(after.ExitCode == 0, after.ToString());
        Assert.Equal("meta-ren2", Json(after.Stdout).GetProperty("name").GetString());
    }

    [Fact]
    public async Task AVmThatTakesAnotherVmsAddress_NeverGetsItsIdentity()
    {
        await NewAccountWithVmAsync("meta-other@example.com", "meta-b");
        string pidA = await VmPidAsync(MetadataFixture.Site);
        string pidB = await VmPidAsync("meta-b");
        string addressB = await VmAddressAsync(pidB);

        // Account B's VM sees itself.
        var b = await CurlInVmNetAsync(pidB, "http://169.254.169.254/");
        Assert.Equal(200, b.Status);
        Assert.Equal("meta-b", Json(b.Body).GetProperty("name").GetString());

        // The listener's own port, straight at the host's address on A's bridge: B's packets arrive on B's bridge, where
        // that address is not B's gateway, so they are rejected; at B's own gateway B is B. From the host (not a VM
        // bridge) the port is closed too.
        int port = MetadataPort();
        string gatewayA = Gateway(await VmAddressAsync(pidA));
        string gatewayB = Gateway(addressB);
        var direct = await Run("nsenter", "-t", pidB, "-n", "curl", "-sS", "--max-time", "5", $"http://{gatewayA}:{port}/");
        Assert.NotEqual(0, direct.ExitCode);
        Assert.DoesNotContain(MetadataFixture.Site, direct.Stdout);
        var ownGateway = await CurlInVmNetAsync(pidB, $"http://{gatewayB}:{port}/");
        Assert.Equal("meta-b", Json(ownGateway.Body).GetProperty("name").GetString());
        var fromHost = await Run("curl", "-sS", "--max-time", "3", $"http://{gatewayA}:{port}/");
        Assert.NotEqual(0, fromHost.ExitCode);

        // A VM cannot change its address or send raw packets at all (no CAP_NET_ADMIN, no CAP_NET_RAW) ...
        var ipAdd = await InVmAsync(Owner, MetadataFixture.Site, $"ip addr add {addressB}/32 dev eth0; echo exit=$?");
        Assert.Contains("exit=2", ipAdd.Stdout + ipAdd.Stderr);
        Assert.Contains("Operation not permitted", ipAdd.Stdout + ipAdd.Stderr);
        var raw = await InVmAsync(Owner, MetadataFixture.Site, "arping -c 1 -w 1 -I eth0 169.254.169.254; echo exit=$?");
        Assert.DoesNotContain("exit=0", raw.Stdout);
        Assert.Contains("Operation not permitted", raw.Stdout + raw.Stderr);

        // ... so the host does it for it: B's address on A's interface, and requests sent from it.
        var add = await Run("nsenter", "-t", pidA, "-n", "ip", "addr", "add", addressB + "/32", "dev", "eth0");
        Assert.True(add.ExitCode == 0, add.ToString());
        try
        {
            var forged = await Run("nsenter", "-t", pidA, "-n", "curl", "-sS", "--max-time", "5", "--interface", addressB, "http://169.254.169.254/");
            // The request arrives on A's bridge, so it is A's (the reply to B's address goes to B, which never asked,
            // so the connection fails); it is never answered as B.
            Assert.DoesNotContain("\"meta-b\"", forged.Stdout);
            if (forged.ExitCode == 0)
                Assert.Equal(MetadataFixture.Site, Json(forged.Stdout).GetProperty("name").GetString());
            var own = await CurlInVmNetAsync(pidA, "http://169.254.169.254/");
            Assert.Equal(MetadataFixture.Site, Json(own.Body).GetProperty("name").GetString());
        }
        finally
        {
            await Run("nsenter", "-t", pidA, "-n", "ip", "addr", "del", addressB + "/32", "dev", "eth0");
        }
    }

    [Fact]
    public async Task VmDns_AnswersIntegrationNames_AndRelaysTheRest()
    {
        // Inside the VM: busybox nslookup through the VM's configured resolver.
        var integration = await InVmAsync(Owner, MetadataFixture.Site, "nslookup github.int.box.localhost");
        Assert.True(integration.ExitCode == 0, integration + "\ndaemon: " + Daemon.Log);
        Assert.Contains("169.254.169.254", integration.Stdout);
        var upstream = await InVmAsync(Owner, MetadataFixture.Site, "nslookup probe.upstream.test");
        Assert.True(upstream.ExitCode == 0, upstream.ToString());
        Assert.Contains(UpstreamDnsStub.ProbeAddress, upstream.Stdout);

        // dig from the VM's network namespace straight at the metadata address, over UDP and TCP.
        string pid = await VmPidAsync(MetadataFixture.Site);
        foreach (var transport in new[] { "+notcp", "+tcp" })
        {
            var a = await Run("nsenter", "-t", pid, "-n", "dig", "@169.254.169.254", transport, "+short", "+time=3", "+tries=2", "Some-Thing.INT.box.localhost");
            Assert.Equal("169.254.169.254", a.Stdout.Trim());
            var relayed = await Run("nsenter", "-t", pid, "-n", "dig", "@169.254.169.254", transport, "+short", "+time=3", "+tries=2", "probe.upstream.test");
            Assert.Equal(UpstreamDnsStub.ProbeAddress, relayed.Stdout.Trim());
            var nx = await Run("nsenter", "-t", pid, "-n", "dig", "@169.254.169.254", transport, "+time=3", "+tries=2", "missing.upstream.test");
            Assert.Contains("status: NXDOMAIN", nx.Stdout);
        }
        // AAAA for an integration: no error, no address (VMs have no IPv6).
        var aaaa = await Run("nsenter", "-t", pid, "-n", "dig", "@169.254.169.254", "+time=3", "AAAA", "x.int.box.localhost");
        Assert.Contains("status: NOERROR", aaaa.Stdout);
        Assert.Contains("ANSWER: 0", aaaa.Stdout);
    }

    [Fact]
    public async Task EmailGateway_DeliversToTheOwnerAndShares_RefusesStrangers()
    {
        string site = MetadataFixture.Site;
        var sent = await InVmAsync(Owner, site,
            "wget -qO- --header 'Content-Type: application/json' --post-data '{\"to\":\"meta-owner@example.com\",\"subject\":\"Build Complete\",\"body\":\"hello from meta-a\"}' http://169.254.169.254/gateway/email/send");
        Assert.True(sent.ExitCode == 0, sent + "\ndaemon: " + Daemon.Log);
        Assert.True(Json(sent.Stdout).GetProperty("success").GetBoolean());
        var mail = await fixture.Mail.NextContainingAsync("hello from meta-a", MailWait);
        Assert.True(mail is not null, "no mail arrived\ndaemon: " + Daemon.Log);
        Assert.Contains("meta-owner@example.com", mail);
        Assert.Contains("Build Complete", mail);

        string pid = await VmPidAsync(site);
        const string url = "http://169.254.169.254/gateway/email/send";
        var stranger = await CurlInVmNetAsync(pid, "-H", "Content-Type: application/json", "--data", "{\"to\":\"someone@elsewhere.example\",\"subject\":\"s\",\"body\":\"b\"}", url);
        Assert.Equal(403, stranger.Status);
        Assert.StartsWith("recipient not allowed", Json(stranger.Body).GetProperty("error").GetString());
        var broken = await CurlInVmNetAsync(pid, "--data", "{\"to\":", url);
        Assert.Equal(400, broken.Status);
        Assert.True(Json(broken.Body).TryGetProperty("error", out _));
        var missing = await CurlInVmNetAsync(pid, "--data", "{\"to\":\"meta-owner@example.com\"}", url);
        Assert.Equal(400, missing.Status);
        Assert.Equal("subject is required", Json(missing.Body).GetProperty("error").GetString());
        var get = await CurlInVmNetAsync(pid, url);
        Assert.Equal(405, get.Status);
        string bigFile = Path.Combine(Daemon.DataDirectory, "big-body.json");
        File.WriteAllText(bigFile, "{\"to\":\"meta-owner@example.com\",\"subject\":\"s\",\"body\":\"" + new string('x', 300_000) + "\"}");
        var huge = await CurlInVmNetAsync(pid, "-H", "Expect:", "--data-binary", "@" + bigFile, url);
        Assert.Equal(413, huge.Status);

        // A second account's VM may not mail the first account's owner ...
        var other = await NewAccountWithVmAsync("meta-second@example.com", "meta-c");
        string pidC = await VmPidAsync("meta-c");
        var cross = await CurlInVmNetAsync(pidC, "--data", "{\"to\":\"meta-owner@example.com\",\"subject\":\"s\",\"body\":\"b\"}", url);
        Assert.Equal(403, cross.Status);

        // ... but once the owner shares meta-a with that account, meta-a may mail it.
        var share = await Owner.ControlAsync($"share add {site} meta-second@example.com");
        Assert.True(share.ExitCode == 0, share.ToString());
        var shared = await CurlInVmNetAsync(pid, "--data", "{\"to\":\"meta-second@example.com\",\"subject\":\"for the share\",\"body\":\"shared hello\",\"reply_to\":\"meta-owner@example.com\"}", url);
        Assert.Equal(200, shared.Status);
        var sharedMail = await fixture.Mail.NextContainingAsync("shared hello", MailWait);
        Assert.True(sharedMail is not null, "no mail arrived\ndaemon: " + Daemon.Log);
        Assert.Contains("Reply-To: meta-owner@example.com", sharedMail);
    }
}

/// <summary>
/// The test's own upstream resolver (UDP and TCP on loopback): <c>probe.upstream.test</c> A → <see cref="ProbeAddress"/>,
/// anything else NXDOMAIN. Hand-written wire format (RFC 1035 §4.1) so the relay is tested against an independent
/// implementation.
/// </summary>
public sealed class UpstreamDnsStub : IDisposable
{
    public const string ProbeAddress = "192.0.2.77";
    private readonly Socket _udp = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    private readonly TcpListener _tcp;
    private readonly CancellationTokenSource _stop = new();

    public UpstreamDnsStub()
    {
        _udp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        Port = ((IPEndPoint)_udp.LocalEndPoint!).Port;
        _tcp = new TcpListener(IPAddress.Loopback, Port);
        _tcp.Start();
        _ = UdpLoopAsync();
        _ = TcpLoopAsync();
    }

    public int Port { get; }

    private async Task UdpLoopAsync()
    {
        var buffer = new byte[4096];
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                var r = await _udp.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), _stop.Token);
                if (Answer(buffer.AsSpan(0, r.ReceivedBytes)) is { } answer)
                    await _udp.SendToAsync(answer, SocketFlags.None, r.RemoteEndPoint);
            }
            catch (Exception) when (_stop.IsCancellationRequested) { return; }
            catch (SocketException) { }
        }
    }

    private async Task TcpLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                using var client = await _tcp.AcceptTcpClientAsync(_stop.Token);
                var stream = client.GetStream();
                var prefix = new byte[2];
                await stream.ReadExactlyAsync(prefix, _stop.Token);
                var query = new byte[BinaryPrimitives.ReadUInt16BigEndian(prefix)];
                await stream.ReadExactlyAsync(query, _stop.Token);
                if (Answer(query) is { } answer)
                {
                    BinaryPrimitives.WriteUInt16BigEndian(prefix, (ushort)answer.Length);
                    await stream.WriteAsync(prefix, _stop.Token);
                    await stream.WriteAsync(answer, _stop.Token);
                }
            }
            catch (Exception) when (_stop.IsCancellationRequested) { return; }
            catch (Exception e) when (e is IOException or SocketException) { }
        }
    }

    private static byte[]? Answer(ReadOnlySpan<byte> query)
    {
        if (query.Length < 12) return null;
        int offset = 12;
        var labels = new List<string>();
        while (offset < query.Length && query[offset] != 0)
        {
            int n = query[offset];
            if (n > 63 || offset + 1 + n > query.Length) return null;
            labels.Add(Encoding.ASCII.GetString(query.Slice(offset + 1, n)).ToLowerInvariant());
            offset += 1 + n;
        }
        int questionEnd = offset + 5;
        if (questionEnd > query.Length) return null;
        ushort qtype = BinaryPrimitives.ReadUInt16BigEndian(query[(offset + 1)..]);
        bool known = string.Join('.', labels) == "probe.upstream.test";
        bool probe = known && qtype == 1;
        var answer = new List<byte>();
        answer.AddRange(query[..2].ToArray());
        answer.AddRange(new byte[] { 0x81, (byte)(known ? 0x80 : 0x83) }); // QR RD, RA, NOERROR (no AAAA: empty) or NXDOMAIN
        answer.AddRange(new byte[] { 0, 1, 0, (byte)(probe ? 1 : 0), 0, 0, 0, 0 });
        answer.AddRange(query[12..questionEnd].ToArray());
        if (probe)
        {
            answer.AddRange(new byte[] { 0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4 });
            answer.AddRange(IPAddress.Parse(ProbeAddress).GetAddressBytes());
        }
        return answer.ToArray();
    }

    public void Dispose()
    {
        _stop.Cancel();
        _udp.Dispose();
        _tcp.Stop();
    }
}
