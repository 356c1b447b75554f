using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using CsCheck;
using Warren.Edge.ProxyProtocol;
using Xunit;

namespace Warren.Edge.Tests.ProxyProtocol;

public class ProxyProtocolReaderTests
{
    private static readonly byte[] s_after = "SSH-2.0-OpenSSH_9.2\r\n"u8.ToArray();
    private static readonly ProxyProtocolOptions s_options = ProxyProtocolOptions.Default;

    private static async Task<(ProxyHeader? Header, byte[] Remaining)> ReadAll(byte[] input, ProxyProtocolOptions? options = null)
    {
        var s = new DribbleStream(input);
        var h = await ProxyProtocolReader.ReadAsync(s, options ?? s_options, CancellationToken.None);
        return (h, s.Rest);
    }

    private static async Task<ProxyProtocolError> Error(byte[] input, ProxyProtocolOptions? options = null)
    {
        var e = await Assert.ThrowsAsync<ProxyProtocolException>(() => ReadAll(input, options));
        return e.Error;
    }

    private static byte[] Ascii(string s) => Encoding.ASCII.GetBytes(s);

    [Theory]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.7 56324 2222\r\n", "192.0.2.1:56324", "198.51.100.7:2222")]
    [InlineData("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", "255.255.255.255:65535", "255.255.255.255:65535")]
    [InlineData("PROXY TCP6 2001:db8::1 ::ffff:127.0.1.1 1 0\r\n", "[2001:db8::1]:1", "[::ffff:127.0.1.1]:0")]
    [InlineData("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")]
    public async Task V1_Parses_AndLeavesTheRestUnread(string line, string src, string dst)
    {
        var (h, rest) = await ReadAll([.. Ascii(line), .. s_after]);
        Assert.NotNull(h);
        Assert.Equal(IPEndPoint.Parse(src), h.Source);
        Assert.Equal(IPEndPoint.Parse(dst), h.Destination);
        Assert.Equal(1, h.Version);
        Assert.Equal(s_after, rest);
    }

    [Theory]
    [InlineData("PROXY UNKNOWN\r\n")]
    [InlineData("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")]
    public async Task V1_Unknown_ReturnsNull(string line)
    {
        var (h, rest) = await ReadAll([.. Ascii(line), .. s_after]);
        Assert.Null(h);
        Assert.Equal(s_after, rest);
    }

    [Fact]
    public async Task V1_LongestLine_IsAccepted_OneMoreIsTooLong()
    {
        var prefix = "PROXY UNKNOWN ";
        var exact = prefix + new string('x', ProxyProtocolReader.V1MaxLength - prefix.Length - 2) + "\r\n";
        Assert.Equal(ProxyProtocolReader.V1MaxLength, exact.Length);
        Assert.Null((await ReadAll(Ascii(exact))).Header);
        var tooLong = prefix + new string('x', ProxyProtocolReader.V1MaxLength + 1 - prefix.Length - 2) + "\r\n";
        Assert.Equal(ProxyProtocolError.TooLong, await Error(Ascii(tooLong)));
    }

    [Theory]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.7 56324 2222\n")]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.7 56324 65536\r\n")]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.7 056324 2222\r\n")]
    [InlineData("PROXY TCP4 192.0.2.1  198.51.100.7 56324 2222\r\n")]
    [InlineData("PROXY TCP4 192.0.2.01 198.51.100.7 56324 2222\r\n")]
    [InlineData("PROXY TCP4 192.0.2 198.51.100.7 56324 2222\r\n")]
    [InlineData("PROXY TCP4 256.0.2.1 198.51.100.7 56324 2222\r\n")]
    [InlineData("PROXY TCP4 2001:db8::1 198.51.100.7 56324 2222\r\n")]
    [InlineData("PROXY TCP6 192.0.2.1 2001:db8::2 56324 2222\r\n")]
    [InlineData("PROXY TCP6 fe80::1%eth0 2001:db8::2 56324 2222\r\n")]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.7 -1 2222\r\n")]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.7 1 2222 extra\r\n")]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.7 1\r\n")]
    [InlineData("PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r2\r\n")]
    public async Task V1_Malformed_IsRejected(string line)
    {
        var e = await Error(Ascii(line));
        Assert.True(e is ProxyProtocolError.Malformed or ProxyProtocolError.Truncated, e.ToString());
    }

    [Fact]
    public async Task V1_UnknownProtocol_IsUnsupported()
        => Assert.Equal(ProxyProtocolError.Unsupported, await Error(Ascii("PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n")));

    [Fact]
    public async Task NoHeader_IsMissing()
        => Assert.Equal(ProxyProtocolError.Missing, await Error(s_after));

    [Fact]
    public async Task V2_Tcp4_WithTlvs()
    {
        var tlvs = new byte[] { 0x04, 0x00, 0x03, 0xAA, 0xBB, 0xCC, 0x01, 0x00, 0x02, (byte)'h', (byte)'2' };
        var h = new ProxyHeader(IPEndPoint.Parse("203.0.113.9:40000"), IPEndPoint.Parse("127.0.1.3:2222"), 2);
        var (read, rest) = await ReadAll([.. ProxyProtocolWriter.WriteV2(h, tlvs), .. s_after]);
        Assert.Equal(h, read);
        Assert.Equal(s_after, rest);
    }

    [Fact]
    public async Task V2_Local_ReturnsNull_AndSkipsPayload()
    {
        var bytes = ProxyProtocolWriter.WriteV2(null, [1, 0, 1, 9]);
        Assert.Equal(0x20, bytes[12]);
        var (h, rest) = await ReadAll([.. bytes, .. s_after]);
        Assert.Null(h);
        Assert.Equal(s_after, rest);
    }

    [Theory]
    [InlineData(0x00, 0)]
    [InlineData(0x31, 216)]
    public async Task V2_UnspecAndUnix_ReturnNull(byte family, int length)
    {
        var bytes = V2Raw(0x21, family, new byte[length]);
        var (h, rest) = await ReadAll([.. bytes, .. s_after]);
        Assert.Null(h);
        Assert.Equal(s_after, rest);
    }

    [Theory]
    [InlineData(0x11, 0x12)] // UDP over IPv4
    [InlineData(0x21, 0x22)] // UDP over IPv6
    [InlineData(0x21, 0x41)] // unknown family
    [InlineData(0x22, 0x11)] // unknown command
    [InlineData(0x11, 0x11)] // version 1 in a v2 header
    public async Task V2_UnsupportedCombinations_AreRejected(byte verCmd, byte family)
        => Assert.Equal(ProxyProtocolError.Unsupported, await Error(V2Raw(verCmd, family, new byte[36])));

    [Fact]
    public async Task V2_LengthShorterThanAddressBlock_IsMalformed()
        => Assert.Equal(ProxyProtocolError.Malformed, await Error(V2Raw(0x21, 0x21, new byte[35])));

    [Fact]
    public async Task V2_LengthAboveCap_IsRejectedBeforeReading()
    {
        var options = new ProxyProtocolOptions { MaxV2PayloadBytes = 64 };
        // Only the 16 fixed bytes are supplied: a reader that tried to consume the payload would see Truncated.
        var header = V2Raw(0x21, 0x11, new byte[options.MaxV2PayloadBytes + 1])[..ProxyProtocolReader.V2FixedLength];
        Assert.Equal(ProxyProtocolError.TooLong, await Error(header, options));
        var atCap = V2Raw(0x21, 0x11, new byte[options.MaxV2PayloadBytes]);
        Assert.NotNull((await ReadAll(atCap, options)).Header);
    }

    [Fact]
    public async Task V2_MaxLengthField_IsRejected()
    {
        var header = V2Raw(0x21, 0x11, [])[..ProxyProtocolReader.V2FixedLength];
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(14), ushort.MaxValue);
        Assert.Equal(ProxyProtocolError.TooLong, await Error(header));
    }

    [Fact]
    public async Task VersionsCanBeDisabled()
    {
        var v1 = ProxyProtocolWriter.WriteV1(null);
        var v2 = ProxyProtocolWriter.WriteV2(null);
        Assert.Equal(ProxyProtocolError.Unsupported, await Error(v1, new ProxyProtocolOptions { AllowV1 = false }));
        Assert.Equal(ProxyProtocolError.Unsupported, await Error(v2, new ProxyProtocolOptions { AllowV2 = false }));
    }

    [Fact]
    public async Task Timeout_IsReportedAsProxyProtocolError()
    {
        var clock = new ManualTimeProvider();
        var options = new ProxyProtocolOptions { TimeProvider = clock };
        var read = ProxyProtocolReader.ReadAsync(new SilentStream(), options, CancellationToken.None);
        Assert.False(read.IsCompleted);
        clock.Advance(ProxyProtocolOptions.DefaultHeaderTimeout);
        var e = await Assert.ThrowsAsync<ProxyProtocolException>(() => read);
        Assert.Equal(ProxyProtocolError.Timeout, e.Error);
    }

    [Fact]
    public async Task CallerCancellation_IsOperationCanceled()
    {
        using var cts = new CancellationTokenSource();
        var read = ProxyProtocolReader.ReadAsync(new SilentStream(), s_options, cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read);
    }

    private static readonly byte[][] s_validHeaders =
    [
        Encoding.ASCII.GetBytes("PROXY TCP4 192.0.2.1 198.51.100.7 56324 2222\r\n"),
        Encoding.ASCII.GetBytes("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
        Encoding.ASCII.GetBytes("PROXY UNKNOWN\r\n"),
        ProxyProtocolWriter.WriteV2(new ProxyHeader(IPEndPoint.Parse("192.0.2.1:1"), IPEndPoint.Parse("192.0.2.2:2"), 2)),
        ProxyProtocolWriter.WriteV2(new ProxyHeader(IPEndPoint.Parse("[2001:db8::1]:1"), IPEndPoint.Parse("[2001:db8::2]:2"), 2), [1, 0, 0]),
        ProxyProtocolWriter.WriteV2(null),
    ];

    public static TheoryData<byte[]> ValidHeaders => new(s_validHeaders);

    [Theory]
    [MemberData(nameof(ValidHeaders))]
    public async Task TruncatedByOne_IsTruncatedOrMissing(byte[] header)
    {
        for (int n = 0; n < header.Length; n++)
        {
            var e = await Error(header[..n]);
            Assert.True(e is ProxyProtocolError.Truncated or ProxyProtocolError.Missing, $"{n}: {e}");
        }
        await ReadAll(header);
    }

    private static Gen<IPEndPoint> GenEndPoint(bool v6) =>
        Gen.Select(Gen.Byte.Array[v6 ? 16 : 4], Gen.Int[0, IPEndPoint.MaxPort], (b, p) => new IPEndPoint(new IPAddress(b), p));

    private static readonly Gen<ProxyHeader> s_genHeader =
        Gen.Bool.SelectMany(v6 => Gen.Select(GenEndPoint(v6), GenEndPoint(v6), (s, d) => new ProxyHeader(s, d, 0)));

    [Fact]
    public void RoundTrip_GeneratedHeaders()
    {
        Gen.Select(s_genHeader, Gen.Byte.Array[0, 300], Gen.Bool).Sample(t =>
        {
            var (h, tlvs, v2) = t;
            var bytes = v2 ? ProxyProtocolWriter.WriteV2(h, tlvs) : ProxyProtocolWriter.WriteV1(h);
            var (read, rest) = ReadAll([.. bytes, .. s_after]).GetAwaiter().GetResult();
            Assert.Equal(h with { Version = v2 ? 2 : 1 }, read);
            Assert.Equal(s_after, rest);
        }, iter: 1000);
    }

    [Fact]
    public void Fuzz_RandomAndMutatedInput_OnlyProxyProtocolException()
    {
        void Check(byte[] input)
        {
            try { ReadAll(input).GetAwaiter().GetResult(); }
            catch (ProxyProtocolException) { }
        }
        Gen.Byte.Array[0, 200].Sample(Check, iter: 3000);
        var seeds = s_validHeaders;
        Gen.Select(Gen.Int[0, seeds.Length - 1], Gen.Int[0, 1000].Array[4], Gen.Byte.Array[4], Gen.Int[0, 2]).Sample(t =>
        {
            var (i, pos, val, mode) = t;
            var b = (byte[])seeds[i].Clone();
            if (mode == 0) for (int k = 0; k < 4; k++) b[pos[k] % b.Length] = val[k];
            else if (mode == 1) b = b[..(pos[0] % b.Length)];
            else b = [.. b, .. val];
            Check(b);
            Check([.. b, .. s_after]);
        }, iter: 3000);
        // Prefixes that pass the signature checks, followed by random bytes.
        Gen.Byte.Array[0, 120].Sample(tail =>
        {
            Check([.. "PROXY "u8, .. tail]);
            Check([.. "PROXY TCP4 "u8, .. tail]);
            Check([.. ProxyProtocolReader.V2Signature, .. tail]);
        }, iter: 3000);
    }

    [Fact]
    public async Task RealSocket_HeaderAndPayloadInOneWrite_NoOverRead()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        using var server = await listener.AcceptTcpClientAsync();

        var h = new ProxyHeader(IPEndPoint.Parse("198.51.100.20:61000"), IPEndPoint.Parse("127.0.1.2:2222"), 2);
        await client.GetStream().WriteAsync((byte[])[.. ProxyProtocolWriter.WriteV2(h, [0xEE, 0, 1, 7]), .. s_after]);

        var stream = server.GetStream();
        var read = await ProxyProtocolReader.ReadAsync(stream, s_options, CancellationToken.None);
        Assert.Equal(h, read);
        var rest = new byte[s_after.Length];
        await stream.ReadExactlyAsync(rest);
        Assert.Equal(s_after, rest);
    }

    /// <summary>Hand-built v2 header: signature, ver_cmd, fam, len, payload.</summary>
    internal static byte[] V2Raw(byte verCmd, byte family, byte[] payload)
    {
        var b = new byte[ProxyProtocolReader.V2FixedLength + payload.Length];
        ProxyProtocolReader.V2Signature.CopyTo(b);
        b[12] = verCmd;
        b[13] = family;
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(14), (ushort)payload.Length);
        payload.CopyTo(b, ProxyProtocolReader.V2FixedLength);
        return b;
    }
}
