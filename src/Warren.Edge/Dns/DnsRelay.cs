using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Warren.Edge.Dns;

/// <summary>
/// Passes a query on to upstream resolvers unchanged and hands back the first reply that answers it. Each UDP query
/// goes out from a fresh socket (a random source port, RFC 5452 §9.2) and a reply counts only when it comes from that
/// upstream and echoes the query's ID and question (RFC 5452 §4); anything else is ignored, so a forged or stray
/// datagram never reaches the VM. Upstreams are tried in order, each for <see cref="AttemptTimeout"/>.
/// </summary>
public sealed class DnsRelay(IReadOnlyList<IPEndPoint> upstreams)
{
    public static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(2);
    /// <summary>Stray datagrams one attempt ignores before giving up on that upstream.</summary>
    public const int MaxIgnoredReplies = 8;

    public IReadOnlyList<IPEndPoint> Upstreams => upstreams;

    /// <summary>The reply's length in <paramref name="response"/>, or 0 when no upstream answered.</summary>
    internal async ValueTask<int> RelayAsync(ReadOnlyMemory<byte> query, DnsQuestion question, bool udp, Memory<byte> response, CancellationToken ct)
    {
        foreach (var upstream in upstreams)
        {
            using var attempt = CancellationTokenSource.CreateLinkedTokenSource(ct);
            attempt.CancelAfter(AttemptTimeout);
            try
            {
                int length = udp
                    ? await RelayUdpAsync(upstream, query, question, response, attempt.Token).ConfigureAwait(false)
                    : await RelayTcpAsync(upstream, query, question, response, attempt.Token).ConfigureAwait(false);
                if (length > 0) return length;
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested) { }
            catch (SocketException) { }
            catch (IOException) { }
        }
        return 0;
    }

    private static async ValueTask<int> RelayUdpAsync(IPEndPoint upstream, ReadOnlyMemory<byte> query, DnsQuestion question, Memory<byte> response, CancellationToken ct)
    {
        using var socket = new Socket(upstream.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        await socket.ConnectAsync(upstream, ct).ConfigureAwait(false);
        await socket.SendAsync(query, SocketFlags.None, ct).ConfigureAwait(false);
        ushort id = BinaryPrimitives.ReadUInt16BigEndian(query.Span);
        for (int i = 0; i < MaxIgnoredReplies; i++)
        {
            // A connected UDP socket only receives from its peer.
            int received = await socket.ReceiveAsync(response, SocketFlags.None, ct).ConfigureAwait(false);
            if (IsReplyTo(response.Span[..received], id, question)) return received;
        }
        return 0;
    }

    private static async ValueTask<int> RelayTcpAsync(IPEndPoint upstream, ReadOnlyMemory<byte> query, DnsQuestion question, Memory<byte> response, CancellationToken ct)
    {
        using var socket = new Socket(upstream.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(upstream, ct).ConfigureAwait(false);
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        byte[] prefix = new byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(prefix, (ushort)query.Length);
        await stream.WriteAsync(prefix, ct).ConfigureAwait(false);
        await stream.WriteAsync(query, ct).ConfigureAwait(false);
        await stream.ReadExactlyAsync(prefix, ct).ConfigureAwait(false);
        int length = BinaryPrimitives.ReadUInt16BigEndian(prefix);
        if (length > response.Length) return 0;
        await stream.ReadExactlyAsync(response[..length], ct).ConfigureAwait(false);
        return IsReplyTo(response.Span[..length], BinaryPrimitives.ReadUInt16BigEndian(query.Span), question) ? length : 0;
    }

    /// <summary>
    /// A well-formed response header (QR set, an ordinary OPCODE) with the query's ID and exactly its question (name
    /// compared case-insensitively, RFC 4343). Never throws, whatever the bytes.
    /// </summary>
    internal static bool IsReplyTo(ReadOnlySpan<byte> reply, ushort id, DnsQuestion question)
    {
        if (reply.Length < DnsWire.HeaderSize) return false;
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(reply[2..]);
        if ((flags & DnsWire.FlagQr) == 0 || ((flags >> DnsWire.OpcodeShift) & DnsWire.OpcodeMask) != DnsWire.OpcodeQuery) return false;
        if (BinaryPrimitives.ReadUInt16BigEndian(reply) != id || BinaryPrimitives.ReadUInt16BigEndian(reply[4..]) != 1) return false;
        int offset = DnsWire.HeaderSize;
        if (!DnsQueryParser.TryReadQuestion(reply, ref offset, out var echoed)) return false;
        return echoed.QType == question.QType && echoed.QClass == question.QClass && echoed.Name == question.Name;
    }

    /// <summary>Parses <c>IP</c> or <c>IP:PORT</c> (IPv6 as <c>[IP]:PORT</c>); port 53 when none is given.</summary>
    public static bool TryParseUpstream(string? text, out IPEndPoint endpoint)
    {
        endpoint = null!;
        var t = (text ?? "").Trim();
        if (IPAddress.TryParse(t, out var bare) && !t.StartsWith('['))
        {
            endpoint = new IPEndPoint(bare, 53);
            return true;
        }
        if (IPEndPoint.TryParse(t, out var parsed) && parsed.Port is > 0 and <= ushort.MaxValue)
        {
            endpoint = parsed.Port == 0 ? new IPEndPoint(parsed.Address, 53) : parsed;
            return true;
        }
        return false;
    }

    public override string ToString() => string.Join(", ", upstreams.Select(u => u.ToString()));
}
