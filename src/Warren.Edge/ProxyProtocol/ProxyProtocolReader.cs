using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Warren.Edge.ProxyProtocol;

/// <summary>
/// Reads a PROXY protocol v1 or v2 header (haproxy proxy-protocol.txt) from the start of a
/// stream, consuming exactly the header's bytes: what follows (the SSH or TLS stream)
/// is left unread.
/// </summary>
public static class ProxyProtocolReader
{
    /// <summary>§2.1: "a 108-byte buffer is always enough to store all the line and a trailing zero" → 107 bytes incl. CRLF.</summary>
    public const int V1MaxLength = 107;

    /// <summary>§2.1: the shortest valid line is "PROXY UNKNOWN\r\n" (15 bytes).</summary>
    public const int V1MinLength = 15;

    /// <summary>§2.2: the 12-byte v2 signature.</summary>
    public static ReadOnlySpan<byte> V2Signature => [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    /// <summary>§2.1: the v1 line starts with "PROXY" and a single space.</summary>
    public static ReadOnlySpan<byte> V1Prefix => "PROXY "u8;

    /// <summary>§2.2: signature (12) + ver_cmd (1) + fam (1) + len (2).</summary>
    public const int V2FixedLength = 16;

    /// <summary>§2.2 field offsets: ver_cmd is the 13th byte, fam the 14th, len the 15th–16th (big-endian).</summary>
    internal const int V2VerCmdOffset = 12, V2FamilyOffset = 13, V2LengthOffset = 14;

    /// <summary>§2.2: the version nibble of the 13th byte must be 0x2.</summary>
    private const int V2Version = 0x2;
    private const int V2CommandLocal = 0x0;
    private const int V2CommandProxy = 0x1;

    /// <summary>§2.2 fam byte: TCP over IPv4 (0x11), TCP over IPv6 (0x21), UNSPEC (0x00), UNIX stream (0x31).</summary>
    private const byte FamilyUnspec = 0x00, FamilyTcp4 = 0x11, FamilyTcp6 = 0x21, FamilyUnixStream = 0x31;

    /// <summary>§2.2 address block sizes: IPv4 4+4+2+2, IPv6 16+16+2+2.</summary>
    private const int V2Inet4AddressLength = 12, V2Inet6AddressLength = 36;

    private const int Ipv4Bytes = 4, Ipv6Bytes = 16;

    /// <summary>Scratch size for discarding TLV bytes; also holds the largest address block (36) and the v1 line.</summary>
    private const int BufferLength = V1MaxLength + 1;

    /// <summary>
    /// Reads a header that must be present. Returns the addresses, or null for a v2 LOCAL
    /// command, v1 "UNKNOWN", or a v2 UNSPEC/UNIX address family (use the socket's own
    /// endpoints then, §2.1/§2.2). Throws <see cref="ProxyProtocolException"/> for everything
    /// else, including timeouts; <see cref="OperationCanceledException"/> only for <paramref name="cancellationToken"/>.
    /// </summary>
    public static async Task<ProxyHeader?> ReadAsync(Stream stream, ProxyProtocolOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(options);
        return await WithTimeoutAsync(options, cancellationToken, async token =>
        {
            var buf = new byte[BufferLength];
            // 12 bytes never over-read a valid header: v1 is at least 15 bytes, v2 at least 16.
            await ReadExactAsync(stream, buf.AsMemory(0, V2Signature.Length), token).ConfigureAwait(false);
            if (!TryClassify(buf.AsSpan(0, V2Signature.Length), out _))
                throw Fail(ProxyProtocolError.Missing, "connection did not start with a PROXY protocol header");
            return await ReadRestAsync(stream, buf, V2Signature.Length, options, token).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    /// <summary>
    /// Reads a header if the connection starts with one. Bytes read that turn out not to be
    /// a header are handed back through the returned stream, so nothing is lost. Waits for the
    /// peer's first bytes: use only for client-speaks-first protocols (SSH, TLS, HTTP).
    /// </summary>
    public static async Task<(ProxyHeader? Header, bool HeaderPresent, Stream Stream)> ReadOptionalAsync(
        Stream stream, ProxyProtocolOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(options);
        return await WithTimeoutAsync(options, cancellationToken, async token =>
        {
            var buf = new byte[BufferLength];
            int have = 0;
            // Read one byte at a time until the bytes either cannot start a header or
            // complete a signature: this never consumes more than we can hand back.
            while (true)
            {
                int n = await stream.ReadAsync(buf.AsMemory(have, 1), token).ConfigureAwait(false);
                if (n == 0)
                    return ((ProxyHeader?)null, false, (Stream)new PrefixedStream(buf.AsSpan(0, have).ToArray(), stream));
                have++;
                var seen = buf.AsSpan(0, have);
                bool maybeV1 = options.AllowV1 && IsPrefix(seen, V1Prefix);
                bool maybeV2 = options.AllowV2 && IsPrefix(seen, V2Signature);
                if (!maybeV1 && !maybeV2)
                    return (null, false, new PrefixedStream(seen.ToArray(), stream));
                if (have == V1Prefix.Length && maybeV1) break;
                if (have == V2Signature.Length && maybeV2) break;
            }
            var header = await ReadRestAsync(stream, buf, have, options, token).ConfigureAwait(false);
            return (header, true, stream);
        }).ConfigureAwait(false);
    }

    /// <summary>True when <paramref name="seen"/> is a prefix of <paramref name="signature"/> or vice versa.</summary>
    private static bool IsPrefix(ReadOnlySpan<byte> seen, ReadOnlySpan<byte> signature)
        => seen.Length <= signature.Length ? signature.StartsWith(seen) : seen.StartsWith(signature);

    private static bool TryClassify(ReadOnlySpan<byte> first, out int version)
    {
        version = first.StartsWith(V2Signature) ? 2 : first.StartsWith(V1Prefix) ? 1 : 0;
        return version != 0;
    }

    /// <summary>Continues after <paramref name="have"/> bytes that start a v1 or v2 signature.</summary>
    private static async Task<ProxyHeader?> ReadRestAsync(Stream stream, byte[] buf, int have, ProxyProtocolOptions options, CancellationToken token)
    {
        if (have >= V2Signature.Length && buf.AsSpan(0, V2Signature.Length).SequenceEqual(V2Signature))
        {
            if (!options.AllowV2) throw Fail(ProxyProtocolError.Unsupported, "PROXY protocol v2 is not enabled");
            return await ReadV2Async(stream, buf, have, options, token).ConfigureAwait(false);
        }
        if (have >= V1Prefix.Length && buf.AsSpan(0, V1Prefix.Length).SequenceEqual(V1Prefix))
        {
            if (!options.AllowV1) throw Fail(ProxyProtocolError.Unsupported, "PROXY protocol v1 is not enabled");
            return await ReadV1Async(stream, buf, have, token).ConfigureAwait(false);
        }
        throw Fail(ProxyProtocolError.Missing, "connection did not start with a PROXY protocol header");
    }

    private static async Task<ProxyHeader?> ReadV1Async(Stream stream, byte[] buf, int have, CancellationToken token)
    {
        // Read in steps that cannot pass the CRLF: if the last byte is not CR at least
        // "\r\n" (2 bytes) remains, if it is CR exactly "\n" (1 byte) remains.
        while (true)
        {
            var line = buf.AsSpan(0, have);
            int lf = line.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                if (lf != have - 1 || lf == 0 || line[lf - 1] != '\r')
                    throw Fail(ProxyProtocolError.Malformed, "v1 header has a bare LF");
                return ParseV1(line[..(lf - 1)]);
            }
            int need = line[^1] == '\r' ? 1 : 2;
            if (have + need > V1MaxLength)
                throw Fail(ProxyProtocolError.TooLong, $"v1 header longer than {V1MaxLength} bytes");
            await ReadExactAsync(stream, buf.AsMemory(have, need), token).ConfigureAwait(false);
            have += need;
        }
    }

    /// <summary>Parses "PROXY TCP4|TCP6|UNKNOWN ..." without the CRLF (§2.1).</summary>
    internal static ProxyHeader? ParseV1(ReadOnlySpan<byte> line)
    {
        foreach (var b in line)
            if (b < 0x20 || b > 0x7e) throw Fail(ProxyProtocolError.Malformed, "v1 header contains non-printable bytes");
        var text = Encoding.ASCII.GetString(line);
        var parts = text.Split(' ');
        if (parts.Length < 2 || parts[0] != "PROXY") throw Fail(ProxyProtocolError.Malformed, "v1 header does not start with PROXY");
        switch (parts[1])
        {
            case "UNKNOWN":
                // §2.1: "the receiver must ignore anything presented before the CRLF".
                return null;
            case "TCP4":
            case "TCP6":
                var family = parts[1] == "TCP4" ? AddressFamily.InterNetwork : AddressFamily.InterNetworkV6;
                if (parts.Length != 6) throw Fail(ProxyProtocolError.Malformed, "v1 header needs exactly four fields after the protocol");
                if (!TryParseAddress(parts[2], family, out var src) || !TryParseAddress(parts[3], family, out var dst))
                    throw Fail(ProxyProtocolError.Malformed, "v1 header has an invalid address");
                if (!TryParsePort(parts[4], out var sport) || !TryParsePort(parts[5], out var dport))
                    throw Fail(ProxyProtocolError.Malformed, "v1 header has an invalid port");
                return new ProxyHeader(new IPEndPoint(src, sport), new IPEndPoint(dst, dport), 1);
            default:
                throw Fail(ProxyProtocolError.Unsupported, "v1 header has an unknown protocol");
        }
    }

    private static bool TryParseAddress(string s, AddressFamily family, [NotNullWhen(true)] out IPAddress? address)
    {
        address = null;
        if (family == AddressFamily.InterNetwork)
        {
            // Strict dotted quad: IPAddress.TryParse also accepts "1", "0x7f.1" and octal forms.
            var octets = s.Split('.');
            if (octets.Length != Ipv4Bytes) return false;
            var bytes = new byte[Ipv4Bytes];
            for (int i = 0; i < Ipv4Bytes; i++)
            {
                var o = octets[i];
                const int MaxOctetDigits = 3;
                if (o.Length is 0 or > MaxOctetDigits || (o.Length > 1 && o[0] == '0')) return false;
                int v = 0;
                foreach (var c in o)
                {
                    if (c is < '0' or > '9') return false;
                    v = v * 10 + (c - '0');
                }
                if (v > byte.MaxValue) return false;
                bytes[i] = (byte)v;
            }
            address = new IPAddress(bytes);
            return true;
        }
        foreach (var c in s)
            if (!(char.IsAsciiHexDigit(c) || c is ':' or '.')) return false; // no zone ids, no brackets
        return IPAddress.TryParse(s, out address) && address.AddressFamily == AddressFamily.InterNetworkV6;
    }

    private static bool TryParsePort(string s, out int port)
    {
        port = 0;
        const int MaxPortDigits = 5;
        if (s.Length is 0 or > MaxPortDigits || (s.Length > 1 && s[0] == '0')) return false;
        foreach (var c in s)
        {
            if (c is < '0' or > '9') return false;
            port = port * 10 + (c - '0');
        }
        return port <= IPEndPoint.MaxPort;
    }

    private static async Task<ProxyHeader?> ReadV2Async(Stream stream, byte[] buf, int have, ProxyProtocolOptions options, CancellationToken token)
    {
        await ReadExactAsync(stream, buf.AsMemory(have, V2FixedLength - have), token).ConfigureAwait(false);
        byte verCmd = buf[V2VerCmdOffset], fam = buf[V2FamilyOffset];
        int length = BinaryPrimitives.ReadUInt16BigEndian(buf.AsSpan(V2LengthOffset, sizeof(ushort)));
        const int NibbleBits = 4, LowNibble = 0x0F;
        if (verCmd >> NibbleBits != V2Version) throw Fail(ProxyProtocolError.Unsupported, "v2 header has an unknown version");
        int command = verCmd & LowNibble;
        if (command is not (V2CommandLocal or V2CommandProxy)) throw Fail(ProxyProtocolError.Unsupported, "v2 header has an unknown command");
        // Check the peer's length against the cap before reading (and discarding) anything.
        if (length > options.MaxV2PayloadBytes) throw Fail(ProxyProtocolError.TooLong, $"v2 header longer than {options.MaxV2PayloadBytes} bytes");

        if (command == V2CommandLocal)
        {
            // §2.2: LOCAL — "the receiver must ... use the real connection endpoints and discard the protocol block including the family".
            await SkipAsync(stream, buf, length, token).ConfigureAwait(false);
            return null;
        }

        int addressLength;
        switch (fam)
        {
            case FamilyTcp4: addressLength = V2Inet4AddressLength; break;
            case FamilyTcp6: addressLength = V2Inet6AddressLength; break;
            case FamilyUnspec:
            case FamilyUnixStream:
                // UNSPEC: "the receiver should ignore address information"; AF_UNIX carries no IP endpoint.
                await SkipAsync(stream, buf, length, token).ConfigureAwait(false);
                return null;
            default:
                throw Fail(ProxyProtocolError.Unsupported, "v2 header has an unsupported address family or transport");
        }
        if (length < addressLength) throw Fail(ProxyProtocolError.Malformed, "v2 length shorter than its address block");
        await ReadExactAsync(stream, buf.AsMemory(0, addressLength), token).ConfigureAwait(false);
        var header = ParseV2Addresses(buf.AsSpan(0, addressLength), fam == FamilyTcp4 ? Ipv4Bytes : Ipv6Bytes);
        // TLVs (§2.2.x) are skipped, not interpreted.
        await SkipAsync(stream, buf, length - addressLength, token).ConfigureAwait(false);
        return header;
    }

    private static ProxyHeader ParseV2Addresses(ReadOnlySpan<byte> block, int addressBytes)
    {
        var src = new IPAddress(block[..addressBytes]);
        var dst = new IPAddress(block.Slice(addressBytes, addressBytes));
        int sport = BinaryPrimitives.ReadUInt16BigEndian(block.Slice(2 * addressBytes, sizeof(ushort)));
        int dport = BinaryPrimitives.ReadUInt16BigEndian(block.Slice(2 * addressBytes + sizeof(ushort), sizeof(ushort)));
        return new ProxyHeader(new IPEndPoint(src, sport), new IPEndPoint(dst, dport), 2);
    }

    private static async Task SkipAsync(Stream stream, byte[] scratch, int count, CancellationToken token)
    {
        while (count > 0)
        {
            int n = Math.Min(count, scratch.Length);
            await ReadExactAsync(stream, scratch.AsMemory(0, n), token).ConfigureAwait(false);
            count -= n;
        }
    }

    private static async Task ReadExactAsync(Stream stream, Memory<byte> buffer, CancellationToken token)
    {
        int n = await stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, token).ConfigureAwait(false);
        if (n < buffer.Length) throw Fail(ProxyProtocolError.Truncated, "connection closed inside the PROXY protocol header");
    }

    private static async Task<T> WithTimeoutAsync<T>(ProxyProtocolOptions options, CancellationToken cancellationToken, Func<CancellationToken, Task<T>> body)
    {
        using var timeout = new CancellationTokenSource(options.HeaderTimeout, options.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            return await body(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw Fail(ProxyProtocolError.Timeout, "PROXY protocol header not received in time");
        }
        catch (ProxyProtocolException)
        {
            throw;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException)
        {
            throw new ProxyProtocolException(ProxyProtocolError.IoError, "stream failed while reading the PROXY protocol header", e);
        }
    }

    internal static ProxyProtocolException Fail(ProxyProtocolError error, string message) => new(error, "PROXY protocol: " + message);
}
