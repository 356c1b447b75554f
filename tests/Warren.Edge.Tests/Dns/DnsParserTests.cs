using System.Buffers.Binary;
using CsCheck;
using Warren.Edge.Dns;

namespace Warren.Edge.Tests.Dns;

public class DnsParserTests
{
    /// <summary>A query in wire form: header + question (+ optional raw tail).</summary>
    internal static byte[] Query(string name, ushort qtype = DnsWire.TypeA, ushort id = 0x1234, ushort flags = DnsWire.FlagRd, byte[]? tail = null, ushort arCount = 0)
    {
        var ms = new MemoryStream();
        Span<byte> header = stackalloc byte[DnsWire.HeaderSize];
        BinaryPrimitives.WriteUInt16BigEndian(header, id);
        BinaryPrimitives.WriteUInt16BigEndian(header[2..], flags);
        BinaryPrimitives.WriteUInt16BigEndian(header[4..], 1);
        BinaryPrimitives.WriteUInt16BigEndian(header[10..], arCount);
        ms.Write(header);
        ms.Write(EncodeName(name));
        Span<byte> fixedPart = stackalloc byte[DnsWire.QuestionFixedSize];
        BinaryPrimitives.WriteUInt16BigEndian(fixedPart, qtype);
        BinaryPrimitives.WriteUInt16BigEndian(fixedPart[2..], DnsWire.ClassIn);
        ms.Write(fixedPart);
        if (tail is not null)
            ms.Write(tail);
        return ms.ToArray();
    }

    internal static byte[] EncodeName(string name)
    {
        var ms = new MemoryStream();
        foreach (var label in name.Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            ms.WriteByte((byte)label.Length);
            ms.Write(System.Text.Encoding.ASCII.GetBytes(label));
        }
        ms.WriteByte(0);
        return ms.ToArray();
    }

    [Fact]
    public void WellFormedQuery_Parses_NameLowerCased_WireSpellingKept()
    {
        var status = DnsQueryParser.Parse(Query("Web.BOX.localhost"), out var q);
        Assert.Equal(DnsParseStatus.Ok, status);
        Assert.Equal("web.box.localhost", q.Question!.Name);
        Assert.Equal(EncodeName("Web.BOX.localhost"), q.Question.NameWire);
        Assert.Equal(0x1234, q.Id);
        Assert.True(q.RecursionDesired);
    }

    [Fact]
    public void EveryTruncation_IsDroppedOrFormErr_NeverOk()
    {
        var full = Query("web.box.localhost");
        for (int length = 0; length < full.Length; length++)
        {
            var status = DnsQueryParser.Parse(full.AsSpan(0, length), out _);
            Assert.True(length < DnsWire.HeaderSize ? status == DnsParseStatus.Drop : status == DnsParseStatus.FormErr, $"length {length}: {status}");
        }
    }

    [Fact]
    public void Response_IsDropped()
    {
        Assert.Equal(DnsParseStatus.Drop, DnsQueryParser.Parse(Query("a.box.localhost", flags: DnsWire.FlagQr), out _));
    }

    [Fact]
    public void NonQueryOpcode_IsNotImp()
    {
        ushort notify = 4 << DnsWire.OpcodeShift;
        Assert.Equal(DnsParseStatus.NotImp, DnsQueryParser.Parse(Query("a.box.localhost", flags: notify), out _));
    }

    [Fact]
    public void CompressionPointerToItself_IsRejected()
    {
        var msg = Query("x");
        // Replace the question name with a pointer to its own offset (12).
        var looped = msg[..DnsWire.HeaderSize].Concat(new byte[] { 0xC0, DnsWire.HeaderSize, 0, 1, 0, 1 }).ToArray();
        Assert.Equal(DnsParseStatus.FormErr, DnsQueryParser.Parse(looped, out _));
    }

    [Fact]
    public void CompressionPointerForward_IsRejected()
    {
        var msg = new byte[DnsWire.HeaderSize].Concat(new byte[] { 0xC0, 16, 0, 1, 0, 1, 1, (byte)'a', 0 }).ToArray();
        msg[5] = 1;
        Assert.Equal(DnsParseStatus.FormErr, DnsQueryParser.Parse(msg, out _));
    }

    [Fact]
    public void TwoPointerLoop_IsRejected()
    {
        // Offset 12: label "a" then pointer to 12 → loop through a label.
        var msg = new byte[DnsWire.HeaderSize].Concat(new byte[] { 1, (byte)'a', 0xC0, DnsWire.HeaderSize, 0, 1, 0, 1 }).ToArray();
        msg[5] = 1;
        Assert.Equal(DnsParseStatus.FormErr, DnsQueryParser.Parse(msg, out _));
    }

    [Fact]
    public void BackwardPointer_IsFollowed()
    {
        // Name "a" at 12 (inside what is the question), then an additional record whose owner points to 12.
        var q = Query("a.box.localhost", arCount: 1, tail: new byte[] { 0xC0, DnsWire.HeaderSize, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0 });
        Assert.Equal(DnsParseStatus.Ok, DnsQueryParser.Parse(q, out _));
    }

    [Fact]
    public void LabelLongerThan63_IsRejected_And63IsAccepted()
    {
        var ok = Query(new string('a', DnsWire.MaxLabelLength) + ".box.localhost");
        Assert.Equal(DnsParseStatus.Ok, DnsQueryParser.Parse(ok, out _));
        // A length octet of 64 has the 0b01 prefix: an extended label type we refuse.
        var bad = ok.ToArray();
        bad[DnsWire.HeaderSize] = DnsWire.MaxLabelLength + 1;
        Assert.Equal(DnsParseStatus.FormErr, DnsQueryParser.Parse(bad, out _));
    }

    [Fact]
    public void NameOf255Octets_IsAccepted_256IsRejected()
    {
        // 4 labels of 63 = 256 octets with lengths + root: too long; shrink the last label by one → 255.
        string Name(int lastLabel) => string.Join('.', new string('a', 63), new string('b', 63), new string('c', 63), new string('d', lastLabel));
        Assert.Equal(DnsWire.MaxNameLength, EncodeName(Name(61)).Length);
        Assert.Equal(DnsParseStatus.Ok, DnsQueryParser.Parse(Query(Name(61)), out _));
        Assert.Equal(DnsWire.MaxNameLength + 1, EncodeName(Name(62)).Length);
        Assert.Equal(DnsParseStatus.FormErr, DnsQueryParser.Parse(Query(Name(62)), out _));
    }

    [Fact]
    public void TwoOptRecords_AreFormErr()
    {
        byte[] opt = { 0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0 };
        var q = Query("a.box.localhost", arCount: 2, tail: opt.Concat(opt).ToArray());
        Assert.Equal(DnsParseStatus.FormErr, DnsQueryParser.Parse(q, out _));
    }

    [Fact]
    public void OptRecord_GivesPayloadSizeAndVersion()
    {
        byte[] opt = { 0, 0, 41, 0x10, 0x00, 0, 1, 0, 0, 0, 0 }; // 4096, version 1
        Assert.Equal(DnsParseStatus.Ok, DnsQueryParser.Parse(Query("a.box.localhost", arCount: 1, tail: opt), out var q));
        Assert.True(q.HasEdns);
        Assert.Equal(4096, q.EdnsUdpPayloadSize);
        Assert.Equal(1, q.EdnsVersion);
    }

    [Fact]
    public void RandomBytes_NeverThrow()
    {
        Gen.Byte.Array[0, 600].Sample(bytes => { DnsQueryParser.Parse(bytes, out _); }, iter: 20_000);
    }

    [Fact]
    public void MutatedQueries_NeverThrow_AndServerAlwaysAnswersWithinLimits()
    {
        var source = new FakeZoneSource();
        source.Slots["s001"] = System.Net.IPAddress.Parse("127.0.1.1");
        source.Vms["web"] = "s001";
        var server = new DnsServer(new DnsServerOptions(), source);
        var seed = Query("web.box.localhost");
        var response = new byte[DnsWire.MaxTcpMessageSize];
        Gen.Select(Gen.Int[0, seed.Length - 1].Array[1, 6], Gen.Byte.Array[6], Gen.Int[0, 40])
            .Sample((positions, values, extra) =>
            {
                var mutated = seed.Concat(new byte[extra]).ToArray();
                for (int i = 0; i < positions.Length; i++)
                    mutated[positions[i]] = values[i];
                int length = server.HandleAsync(mutated, response, udp: true, CancellationToken.None).AsTask().GetAwaiter().GetResult();
                Assert.InRange(length, 0, DnsWire.MaxUdpPayloadWithoutEdns);
                if (length > 0)
                    Assert.Equal(DnsParseStatus.Drop, DnsQueryParser.Parse(response.AsSpan(0, length), out _)); // QR set
            }, iter: 20_000);
    }

    [Fact]
    public void UdpAnswerOverLimit_IsTruncated_WithQuestionOnly()
    {
        var source = new FakeZoneSource();
        source.Slots["s001"] = System.Net.IPAddress.Parse("127.0.1.1");
        source.Vms["web"] = "s001";
        var server = new DnsServer(new DnsServerOptions(), source) { UdpLimitOverride = 60 };
        var query = Query("web.box.localhost");
        var response = new byte[DnsWire.MaxTcpMessageSize];
        int length = server.HandleAsync(query, response, udp: true, CancellationToken.None).AsTask().GetAwaiter().GetResult();
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(response.AsSpan(2));
        Assert.NotEqual(0, flags & DnsWire.FlagTc);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16BigEndian(response.AsSpan(4)));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(response.AsSpan(6)));
        Assert.Equal(query.Length, length);

        // The same query over TCP is not truncated.
        length = server.HandleAsync(query, response, udp: false, CancellationToken.None).AsTask().GetAwaiter().GetResult();
        flags = BinaryPrimitives.ReadUInt16BigEndian(response.AsSpan(2));
        Assert.Equal(0, flags & DnsWire.FlagTc);
        Assert.Equal(2, BinaryPrimitives.ReadUInt16BigEndian(response.AsSpan(6)));
    }
}
