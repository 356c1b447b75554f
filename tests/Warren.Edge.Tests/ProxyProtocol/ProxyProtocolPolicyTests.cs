using System.Net;
using System.Text;
using Warren.Edge.ProxyProtocol;
using Xunit;

namespace Warren.Edge.Tests.ProxyProtocol;

public class ProxyProtocolPolicyTests
{
    private static readonly IPEndPoint s_proxy = IPEndPoint.Parse("10.1.2.3:50000");
    private static readonly IPEndPoint s_stranger = IPEndPoint.Parse("203.0.113.66:50000");
    private static readonly IPEndPoint s_local = IPEndPoint.Parse("10.0.0.5:2222");
    private static readonly byte[] s_ssh = "SSH-2.0-OpenSSH_9.2\r\n"u8.ToArray();
    private static readonly ProxyHeader s_header = new(IPEndPoint.Parse("198.51.100.1:40000"), IPEndPoint.Parse("127.0.1.4:2222"), 1);

    private static ProxyProtocolPolicy Policy(ProxyProtocolMode mode = ProxyProtocolMode.Require)
        => ProxyProtocolPolicy.Parse(["10.0.0.0/8", "2001:db8::/32"], mode);

    private static async Task<byte[]> ReadToEnd(Stream s)
    {
        var ms = new MemoryStream();
        await s.CopyToAsync(ms);
        return ms.ToArray();
    }

    [Fact]
    public void ModeFor_TrustedCidrs()
    {
        var p = Policy();
        Assert.Equal(ProxyProtocolMode.Require, p.ModeFor(IPAddress.Parse("10.255.0.1")));
        Assert.Equal(ProxyProtocolMode.Require, p.ModeFor(IPAddress.Parse("::ffff:10.0.0.1")));
        Assert.Equal(ProxyProtocolMode.Require, p.ModeFor(IPAddress.Parse("2001:db8::7")));
        Assert.Equal(ProxyProtocolMode.Refuse, p.ModeFor(IPAddress.Parse("11.0.0.1")));
        Assert.Equal(ProxyProtocolMode.Refuse, ProxyProtocolPolicy.Disabled.ModeFor(IPAddress.Loopback));
        Assert.Equal(ProxyProtocolMode.Require, ProxyProtocolPolicy.Parse(["127.0.0.1"]).ModeFor(IPAddress.Loopback));
        Assert.Throws<FormatException>(() => ProxyProtocolPolicy.Parse(["10.0.0.0/99"]));
    }

    [Fact]
    public async Task Trusted_Require_BelievesHeader()
    {
        var input = new MemoryStream([.. ProxyProtocolWriter.WriteV1(s_header), .. s_ssh]);
        var c = await Policy().AcceptAsync(input, s_proxy, s_local, ProxyProtocolOptions.Default, CancellationToken.None);
        Assert.Equal(s_header.Source, c.RemoteEndPoint);
        Assert.Equal(s_header.Destination, c.LocalEndPoint);
        Assert.Equal(s_ssh, await ReadToEnd(c.Stream));
    }

    [Fact]
    public async Task Trusted_Require_LocalCommandKeepsSocketEndpoints()
    {
        var input = new MemoryStream([.. ProxyProtocolWriter.WriteV2(null), .. s_ssh]);
        var c = await Policy().AcceptAsync(input, s_proxy, s_local, ProxyProtocolOptions.Default, CancellationToken.None);
        Assert.Equal(s_proxy, c.RemoteEndPoint);
        Assert.Equal(s_local, c.LocalEndPoint);
        Assert.Null(c.Header);
    }

    [Fact]
    public async Task Trusted_Require_MissingHeader_Throws()
    {
        var e = await Assert.ThrowsAsync<ProxyProtocolException>(() =>
            Policy().AcceptAsync(new MemoryStream(s_ssh), s_proxy, s_local, ProxyProtocolOptions.Default, CancellationToken.None));
        Assert.Equal(ProxyProtocolError.Missing, e.Error);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Trusted_Optional_WithAndWithoutHeader(bool sendHeader)
    {
        byte[] bytes = sendHeader ? [.. ProxyProtocolWriter.WriteV2(s_header with { Version = 2 }), .. s_ssh] : s_ssh;
        var c = await Policy(ProxyProtocolMode.Optional).AcceptAsync(new DribbleStream(bytes), s_proxy, s_local, ProxyProtocolOptions.Default, CancellationToken.None);
        Assert.Equal(sendHeader ? s_header.Source : s_proxy, c.RemoteEndPoint);
        Assert.Equal(s_ssh, await ReadToEnd(c.Stream));
    }

    [Fact]
    public async Task Trusted_Optional_ReplaysLookalikePrefix()
    {
        // "PROX" then not a header: every byte must still reach the application.
        var bytes = "PROXIMITY"u8.ToArray();
        var c = await Policy(ProxyProtocolMode.Optional).AcceptAsync(new DribbleStream(bytes), s_proxy, s_local, ProxyProtocolOptions.Default, CancellationToken.None);
        Assert.Null(c.Header);
        Assert.Equal(bytes, await ReadToEnd(c.Stream));
    }

    /// <summary>GHSA-4w53-6jvp-gg52: a header from a peer outside the trusted networks disconnects it.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Untrusted_SendingHeader_IsDisconnectedNotBelieved(int version)
    {
        var header = version == 1 ? ProxyProtocolWriter.WriteV1(s_header) : ProxyProtocolWriter.WriteV2(s_header);
        foreach (var stream in new Stream[] { new MemoryStream([.. header, .. s_ssh]), new DribbleStream([.. header, .. s_ssh]) })
        {
            var c = await Policy().AcceptAsync(stream, s_stranger, s_local, ProxyProtocolOptions.Default, CancellationToken.None);
            Assert.Equal(s_stranger, c.RemoteEndPoint);
            Assert.Equal(s_local, c.LocalEndPoint);
            var e = await Assert.ThrowsAsync<ProxyProtocolException>(() => ReadToEnd(c.Stream));
            Assert.Equal(ProxyProtocolError.Untrusted, e.Error);
        }
    }

    [Theory]
    [InlineData("SSH-2.0-OpenSSH_9.2\r\n")]
    [InlineData("POST / HTTP/1.1\r\n\r\n")]
    [InlineData("PROXIMITY")]
    [InlineData("PROXY")]
    [InlineData("\r\n\r\n")]
    public async Task Untrusted_OrdinaryTraffic_PassesThroughUnchanged(string text)
    {
        var bytes = Encoding.ASCII.GetBytes(text);
        foreach (var stream in new Stream[] { new MemoryStream(bytes), new DribbleStream(bytes) })
        {
            var c = await ProxyProtocolPolicy.Disabled.AcceptAsync(stream, s_stranger, s_local, ProxyProtocolOptions.Default, CancellationToken.None);
            Assert.Equal(bytes, await ReadToEnd(c.Stream));
        }
    }
}
