using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using CsCheck;
using Warren.Edge.Dns;
using Warren.Edge.Tests.Dns;

namespace Warren.Edge.Tests.Metadata;

/// <summary>The VM resolver and its relay: integration names answered locally, replies to relayed queries checked, no input throws.</summary>
public sealed class MetadataDnsRelayTests
{
    private static VmResolver Resolver(params IPEndPoint[] upstreams) =>
        new(new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp),
            new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp), "box.localhost", new DnsRelay(upstreams));

    private static DnsQuestion Question(byte[] query)
    {
        Assert.Equal(DnsParseStatus.Ok, DnsQueryParser.Parse(query, out var q));
        return q.Question!;
    }

    [Fact]
    public async Task IntegrationNames_ResolveToTheMetadataAddress_OthersAreNotAnsweredLocally()
    {
        var resolver = Resolver();
        var response = new byte[512];
        int n = await resolver.HandleAsync(DnsParserTests.Query("GitHub.Int.Box.Localhost", id: 7), response, udp: true, CancellationToken.None);
        Assert.True(n > 0);
        Assert.Equal(7, BinaryPrimitives.ReadUInt16BigEndian(response));
        Assert.Equal(1, BinaryPrimitives.ReadUInt16BigEndian(response.AsSpan(6)));
        Assert.Equal([169, 254, 169, 254], response.AsSpan(n - 4, 4).ToArray());
        Assert.True(resolver.IsIntegrationName("a.b.int.box.localhost"));
        Assert.False(resolver.IsIntegrationName("int.box.localhost"));
        Assert.False(resolver.IsIntegrationName("x.int.box.localhost.evil.example"));
        // No upstream at all: SERVFAIL, not silence and not an exception.
        n = await resolver.HandleAsync(DnsParserTests.Query("example.com", id: 9), response, udp: true, CancellationToken.None);
        Assert.Equal((int)DnsRcode.ServFail, response[3] & 0xF);
    }

    [Fact]
    public async Task Relay_IgnoresForgedReplies_AndReturnsTheOneThatAnswersTheQuery()
    {
        using var upstream = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        upstream.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var query = DnsParserTests.Query("probe.example", id: 0x4242);
        var serve = Task.Run(async () =>
        {
            var buffer = new byte[512];
            var r = await upstream.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0));
            var reply = buffer[..r.ReceivedBytes];
            reply[2] |= 0x80;
            var wrongId = (byte[])reply.Clone();
            wrongId[1] ^= 1;
            var otherName = DnsParserTests.Query("other.example", id: 0x4242);
            otherName[2] |= 0x80;
            await upstream.SendToAsync(wrongId, SocketFlags.None, r.RemoteEndPoint);
            await upstream.SendToAsync(otherName, SocketFlags.None, r.RemoteEndPoint);
            await upstream.SendToAsync(reply, SocketFlags.None, r.RemoteEndPoint);
        });
        var relay = new DnsRelay([(IPEndPoint)upstream.LocalEndPoint!]);
        var response = new byte[512];
        int n = await relay.RelayAsync(query, Question(query), udp: true, response, CancellationToken.None);
        await serve;
        Assert.Equal(query.Length, n);
        Assert.Equal(0x4242, BinaryPrimitives.ReadUInt16BigEndian(response));
        Assert.True(DnsRelay.IsReplyTo(response.AsSpan(0, n), 0x4242, Question(query)));
    }

    [Fact]
    public void AnyReplyBytes_AreCheckedWithoutThrowing_AndOnlyAMatchingReplyPasses()
    {
        var question = Question(DnsParserTests.Query("probe.example"));
        Gen.Byte.Array[0, 300].Sample(bytes =>
        {
            if (DnsRelay.IsReplyTo(bytes, 0x1234, question))
            {
                Assert.Equal(0x1234, BinaryPrimitives.ReadUInt16BigEndian(bytes));
                Assert.True((bytes[2] & 0x80) != 0);
            }
        }, iter: 50_000);
        // Mutations of a real reply: any that passes still carries the ID and the question.
        var reply = DnsParserTests.Query("probe.example");
        reply[2] |= 0x80;
        Gen.Select(Gen.Int[0, reply.Length - 1], Gen.Byte).Sample(t =>
        {
            var mutated = (byte[])reply.Clone();
            mutated[t.Item1] = t.Item2;
            if (DnsRelay.IsReplyTo(mutated, 0x1234, question))
            {
                int offset = 12;
                Assert.True(DnsQueryParser.TryReadQuestion(mutated, ref offset, out var echoed));
                Assert.Equal(question.Name, echoed.Name);
            }
        }, iter: 20_000);
    }

    [Fact]
    public void AnyQueryBytes_GetAnAnswerOrNothing_NeverAnException()
    {
        var resolver = Resolver();
        var response = new byte[DnsWire.MaxTcpMessageSize];
        Gen.OneOf(Gen.Byte.Array[0, 300], Gen.String.Select(s => DnsParserTests.Query(s.Replace('.', 'x') + ".int.box.localhost")))
            .Sample(bytes =>
            {
                // Queries for names outside int.<vm-domain> go to the relay, which has no upstream: SERVFAIL at once.
                int n = resolver.HandleAsync(bytes, response, udp: true, CancellationToken.None).AsTask().GetAwaiter().GetResult();
                Assert.InRange(n, 0, DnsWire.MaxUdpPayloadWithoutEdns);
            }, iter: 20_000);
    }

    [Theory]
    [InlineData("10.0.0.53", "10.0.0.53:53")]
    [InlineData("127.0.0.1:5300", "127.0.0.1:5300")]
    [InlineData("[::1]:53", "[::1]:53")]
    public void Upstreams_Parse(string text, string expected)
    {
        Assert.True(DnsRelay.TryParseUpstream(text, out var endpoint));
        Assert.Equal(expected, endpoint.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("dns.example")]
    [InlineData("10.0.0.1:99999")]
    public void BadUpstreams_AreRefused(string text) => Assert.False(DnsRelay.TryParseUpstream(text, out _));
}
