using System.Net;
using System.Text.RegularExpressions;
using Warren.Edge.Dns;
using Warren.Edge.Tests.Dns;
using Warren.Edge.Tests.Support;

namespace Warren.Edge.Tests.Smtp;

/// <summary>MX answers of the authoritative DNS server, read with the real <c>dig</c>.</summary>
public sealed class MailExchangeRecordTests : IAsyncLifetime
{
    private readonly FakeZoneSource _source = new();
    private DnsServer _server = null!;
    private DnsServer _withoutMail = null!;

    public async Task InitializeAsync()
    {
        _source.Slots["s001"] = IPAddress.Parse("127.0.1.1");
        _source.Vms["web"] = "s001";
        _source.Vms["overflow"] = null;
        _server = await StartAsync("warren.localhost");
        _withoutMail = await StartAsync(null);
    }

    private async Task<DnsServer> StartAsync(string? mailExchange)
    {
        var server = new DnsServer(new DnsServerOptions
        {
            Endpoint = new IPEndPoint(IPAddress.Loopback, 0),
            VmDomain = "box.localhost",
            ControlHost = "warren.localhost",
            ControlHostAddress = IPAddress.Parse("127.0.0.1"),
            MailExchangeHost = mailExchange,
        }, _source);
        await server.StartAsync(CancellationToken.None);
        return server;
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        await _withoutMail.DisposeAsync();
    }

    private static async Task<string> DigAsync(DnsServer server, string name, string type)
    {
        var r = await ExternalTool.RunAsync("dig", ["@127.0.0.1", "-p", server.LocalEndpoint!.Port.ToString(), "+time=5", "+tries=2", "+norecurse", name, type]);
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
        return r.Stdout;
    }

    private static void AssertRecord(string output, string owner, string type, string data) =>
        Assert.Matches(new Regex($@"(?im)^{Regex.Escape(owner)}\s+\d+\s+IN\s+{type}\s+{Regex.Escape(data)}\s*$"), output);

    [Fact]
    public async Task VmName_Mx_FollowsTheCnameToTheSlotsMx_WithTheExchangersAddress()
    {
        var output = await DigAsync(_server, "web.box.localhost", "MX");
        Assert.Contains("status: NOERROR", output);
        AssertRecord(output, "web.box.localhost.", "CNAME", "s001.box.localhost.");
        AssertRecord(output, "s001.box.localhost.", "MX", "10 warren.localhost.");
        AssertRecord(output, "warren.localhost.", "A", "127.0.0.1");
    }

    [Fact]
    public async Task VmWithoutSlot_Mx_IsTheControlHosts()
    {
        var output = await DigAsync(_server, "overflow.box.localhost", "MX");
        AssertRecord(output, "overflow.box.localhost.", "CNAME", "warren.localhost.");
        AssertRecord(output, "warren.localhost.", "MX", "10 warren.localhost.");
    }

    [Fact]
    public async Task A_Queries_CarryNoMx_AndUnknownNamesStayNxdomain()
    {
        var a = await DigAsync(_server, "web.box.localhost", "A");
        Assert.DoesNotContain("\tMX\t", a);
        var unknown = await DigAsync(_server, "nope.box.localhost", "MX");
        Assert.Contains("status: NXDOMAIN", unknown);
        var nested = await DigAsync(_server, "x.web.box.localhost", "MX");
        Assert.Contains("status: NXDOMAIN", nested);
    }

    [Fact]
    public async Task WithoutAMailExchanger_ThereIsNoMx()
    {
        var output = await DigAsync(_withoutMail, "web.box.localhost", "MX");
        AssertRecord(output, "web.box.localhost.", "CNAME", "s001.box.localhost.");
        Assert.DoesNotMatch(new Regex(@"(?m)^\S+\s+\d+\s+IN\s+MX\s"), output);
    }
}
