using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Warren.Edge.Dns;
using Warren.Edge.Tests.Support;

namespace Warren.Edge.Tests.Dns;

/// <summary>The DNS server on 127.0.0.1 driven by the real <c>dig</c>.</summary>
public sealed class DnsServerDigTests : IAsyncLifetime
{
    private readonly FakeZoneSource _source = new();
    private DnsServer _server = null!;
    private int _port;

    public async Task InitializeAsync()
    {
        _source.Slots["s001"] = IPAddress.Parse("127.0.1.1");
        _source.Slots["s002"] = IPAddress.Parse("127.0.1.2");
        _source.Vms["web"] = "s001";
        _source.Vms["api"] = "s002";
        _source.Vms["overflow"] = null;
        _server = new DnsServer(new DnsServerOptions
        {
            Endpoint = new IPEndPoint(IPAddress.Loopback, 0),
            VmDomain = "box.localhost",
            ControlHost = "warren.localhost",
            ControlHostAddress = IPAddress.Parse("127.0.0.1"),
        }, _source);
        await _server.StartAsync(CancellationToken.None);
        _port = _server.LocalEndpoint!.Port;
    }

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private async Task<string> DigAsync(params string[] args)
    {
        var all = new List<string> { "@127.0.0.1", "-p", _port.ToString(), "+time=5", "+tries=2", "+norecurse" };
        all.AddRange(args);
        var result = await ExternalTool.RunAsync("dig", all);
        Assert.True(result.ExitCode == 0, $"dig failed: {result.Stdout}{result.Stderr}");
        return result.Stdout;
    }

    private static void AssertStatus(string output, string status) =>
        Assert.Matches(new Regex($@"status: {status}\b"), output);

    private static void AssertRecord(string output, string owner, string type, string data) =>
        Assert.Matches(new Regex($@"(?im)^{Regex.Escape(owner)}\s+\d+\s+IN\s+{type}\s+{Regex.Escape(data)}\s*$"), output);

    private static bool HasFlag(string output, string flag) =>
        Regex.Match(output, @"flags: ([a-z ]+);").Groups[1].Value.Split(' ').Contains(flag);

    [Fact]
    public async Task VmName_GivesCnameChainToSlot_Udp()
    {
        var output = await DigAsync("web.box.localhost", "A");
        AssertStatus(output, "NOERROR");
        Assert.True(HasFlag(output, "aa"), output);
        AssertRecord(output, "web.box.localhost.", "CNAME", "s001.box.localhost.");
        AssertRecord(output, "s001.box.localhost.", "A", "127.0.1.1");
        Assert.Matches(new Regex(@"(?m)^web\.box\.localhost\.\s+30\s"), output);
    }

    [Fact]
    public async Task VmName_GivesCnameChain_Tcp()
    {
        var output = await DigAsync("+tcp", "api.box.localhost", "A");
        AssertStatus(output, "NOERROR");
        AssertRecord(output, "api.box.localhost.", "CNAME", "s002.box.localhost.");
        AssertRecord(output, "s002.box.localhost.", "A", "127.0.1.2");
    }

    [Fact]
    public async Task Names_AreCaseInsensitive_AndQuestionCaseIsEchoed()
    {
        var output = await DigAsync("WeB.BoX.LocalHost", "A");
        AssertStatus(output, "NOERROR");
        AssertRecord(output, "WeB.BoX.LocalHost.", "CNAME", "s001.box.localhost.");
    }

    [Fact]
    public async Task VmWithoutSlot_PointsAtControlHost()
    {
        var output = await DigAsync("overflow.box.localhost", "A");
        AssertRecord(output, "overflow.box.localhost.", "CNAME", "warren.localhost.");
        AssertRecord(output, "warren.localhost.", "A", "127.0.0.1");
    }

    [Fact]
    public async Task SlotName_GivesA()
    {
        var output = await DigAsync("s002.box.localhost", "A");
        AssertStatus(output, "NOERROR");
        AssertRecord(output, "s002.box.localhost.", "A", "127.0.1.2");
    }

    [Fact]
    public async Task UnknownName_IsNxDomainWithSoa()
    {
        var output = await DigAsync("nosuchvm.box.localhost", "A");
        AssertStatus(output, "NXDOMAIN");
        Assert.True(HasFlag(output, "aa"), output);
        Assert.Matches(new Regex(@"(?m)^box\.localhost\.\s+\d+\s+IN\s+SOA\s+warren\.localhost\. hostmaster\.box\.localhost\. \d+ 3600 600 1209600 30"), output);
    }

    [Fact]
    public async Task DeeperName_IsNxDomain()
    {
        AssertStatus(await DigAsync("x.web.box.localhost", "A"), "NXDOMAIN");
    }

    [Fact]
    public async Task OutsideName_IsRefused_WithoutAa()
    {
        var output = await DigAsync("example.com", "A");
        AssertStatus(output, "REFUSED");
        Assert.False(HasFlag(output, "aa"), output);
    }

    [Fact]
    public async Task Apex_HasSoaAndNs()
    {
        var soa = await DigAsync("box.localhost", "SOA");
        AssertStatus(soa, "NOERROR");
        Assert.Matches(new Regex(@"(?m)^box\.localhost\.\s+30\s+IN\s+SOA\s+warren\.localhost\."), soa);
        var ns = await DigAsync("+tcp", "box.localhost", "NS");
        AssertRecord(ns, "box.localhost.", "NS", "warren.localhost.");
    }

    [Fact]
    public async Task ControlHost_HasA()
    {
        var output = await DigAsync("warren.localhost", "A");
        AssertStatus(output, "NOERROR");
        Assert.True(HasFlag(output, "aa"), output);
        AssertRecord(output, "warren.localhost.", "A", "127.0.0.1");
    }

    [Fact]
    public async Task OtherType_OnVm_IsCnameOnly_OnSlot_IsNoData()
    {
        var aaaa = await DigAsync("s001.box.localhost", "AAAA");
        AssertStatus(aaaa, "NOERROR");
        Assert.Matches(new Regex(@"ANSWER: 0,"), aaaa);
        Assert.Matches(new Regex(@"AUTHORITY: 1,"), aaaa);
    }

    [Fact]
    public async Task Answers_FollowTheSource_Immediately()
    {
        AssertStatus(await DigAsync("fresh.box.localhost", "A"), "NXDOMAIN");
        _source.Vms["fresh"] = "s002";
        AssertRecord(await DigAsync("fresh.box.localhost", "A"), "fresh.box.localhost.", "CNAME", "s002.box.localhost.");
        _source.Vms.TryRemove("fresh", out _);
        AssertStatus(await DigAsync("fresh.box.localhost", "A"), "NXDOMAIN");
    }

    [Fact]
    public async Task WithoutEdns_Answers()
    {
        var output = await DigAsync("+noedns", "web.box.localhost", "A");
        AssertRecord(output, "s001.box.localhost.", "A", "127.0.1.1");
    }

    [Fact]
    public async Task FuzzedPackets_OverUdpAndTcp_NeverStopTheServer()
    {
        var random = new Random(20261122);
        var seed = DnsParserTests.Query("web.box.localhost");
        using (var udp = new UdpClient(AddressFamily.InterNetwork))
        {
            for (int i = 0; i < 2000; i++)
            {
                byte[] packet = i % 3 == 0 ? RandomBytes(random, random.Next(0, 700)) : Mutate(random, seed);
                await udp.SendAsync(packet, new IPEndPoint(IPAddress.Loopback, _port));
            }
        }
        for (int i = 0; i < 50; i++)
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(IPAddress.Loopback, _port);
            var stream = tcp.GetStream();
            byte[] packet = Mutate(random, seed);
            // Half the time a lying length prefix, then close.
            int claimed = i % 2 == 0 ? packet.Length : random.Next(0, ushort.MaxValue + 1);
            await stream.WriteAsync(new[] { (byte)(claimed >> 8), (byte)claimed });
            await stream.WriteAsync(packet);
        }
        var output = await DigAsync("web.box.localhost", "A");
        AssertRecord(output, "s001.box.localhost.", "A", "127.0.1.1");
        output = await DigAsync("+tcp", "web.box.localhost", "A");
        AssertRecord(output, "s001.box.localhost.", "A", "127.0.1.1");
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    private static byte[] Mutate(Random random, byte[] seed)
    {
        var copy = seed.ToArray();
        int flips = random.Next(1, 6);
        for (int i = 0; i < flips; i++)
            copy[random.Next(copy.Length)] = (byte)random.Next(256);
        return copy;
    }
}
