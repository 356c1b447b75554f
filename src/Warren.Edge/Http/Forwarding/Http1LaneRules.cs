using System.Buffers;
using System.Text;
using Microsoft.AspNetCore.WebUtilities;
using Warren.Edge.Http.Identity;

namespace Warren.Edge.Http.Forwarding;

/// <summary>What <see cref="Http1LaneRules.Inspect"/> learned of a request head it accepted.</summary>
internal readonly record struct LaneRequest(bool IsHead, bool CloseAfterResponse, int HostStart, int HostLength);

/// <summary>
/// What is the lane's own in the HTTP/1.1 core, driven by the native event loop (EventLoop/LaneConnection): which
/// requests the lane may answer itself (anonymous by <see cref="CredentialFields"/>), the VM's head from the client's
/// bytes (through <see cref="UpstreamHeadWriter"/>, the full path's writer too), and the client's response head and
/// pages written below Kestrel (the body's framing is <see cref="ResponseFraming"/>'s, shared with the full path).
/// </summary>
/// <remarks>
/// The lane once had a second driver, a Kestrel connection middleware for <c>Warren:Http:Transport=kestrel</c>. It
/// was removed: the native loops are the default wherever VMs run (Linux, OpenSSL 3), they cost 34–36 µs per proxied
/// request where that middleware cost 42 (docs/PERFORMANCE.md), and the Kestrel transport, a fallback, serves
/// every request on the full path, with the same answers.
/// </remarks>
internal static class Http1LaneRules
{
    /// <summary>A request head larger than this goes to Kestrel (whose limit is 32 KiB), which answers 431.</summary>
    public const int MaxHeadBytes = 16 * 1024;

    /// <summary>A flush to the client that does not drain within this ends the connection (a reader that stopped).</summary>
    public static readonly TimeSpan ResponseFlushTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// True for an anonymous GET or HEAD (no field <see cref="CredentialFields.IsCredential"/> names) without a body, upgrade or expectation, naming its host once, outside
    /// <c>/__exe.dev</c>: the requests whose whole answer is the VM's.
    /// </summary>
    public static bool Inspect(ReadOnlySpan<byte> head, Http1RequestHead parsed, out LaneRequest request)
    {
        request = default;
        if (!parsed.TryParse(head))
            return false;
        var method = head[..parsed.MethodLength];
        if (!method.SequenceEqual("GET"u8) && !method.SequenceEqual("HEAD"u8))
            return false;
        var target = head.Slice(parsed.TargetStart, parsed.TargetLength);
        if (target.Length >= SitePages.ExeDevPathPrefix.Length
            && Ascii.EqualsIgnoreCase(target[..SitePages.ExeDevPathPrefix.Length], SitePages.ExeDevPathPrefix))
            return false;

        bool close = false;
        HeaderField hostField = default;
        int hosts = 0;
        foreach (var field in parsed.Headers)
        {
            var name = head.Slice(field.NameStart, field.NameLength);
            var value = head.Slice(field.ValueStart, field.ValueLength);
            // A credential means a person who may see more than the public: the identity stage's own list decides.
            if (CredentialFields.IsCredential(name, value))
                return false;
            switch (name.Length)
            {
                case 4 when Ascii.EqualsIgnoreCase(name, "Host"u8):
                    hostField = field;
                    hosts++;
                    break;
                case 6 when Ascii.EqualsIgnoreCase(name, "Expect"u8):
                case 7 when Ascii.EqualsIgnoreCase(name, "Upgrade"u8):
                case 14 when Ascii.EqualsIgnoreCase(name, "Content-Length"u8):
                case 17 when Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8):
                    return false;
                case 10 when Ascii.EqualsIgnoreCase(name, "Connection"u8):
                    // close or keep-alive only: a Connection naming other fields would make those hop-by-hop too.
                    if (Ascii.EqualsIgnoreCase(value, "close"u8))
                        close = true;
                    else if (!Ascii.EqualsIgnoreCase(value, "keep-alive"u8))
                        return false;
                    break;
            }
        }
        if (hosts != 1 || hostField.ValueLength == 0)
            return false;
        request = new LaneRequest(method.Length == 4, close, hostField.ValueStart, hostField.ValueLength);
        return true;
    }

    /// <summary>The VM's request head from the client's bytes (<see cref="UpstreamHeadWriter"/>: the one writer of both paths).</summary>
    public static bool WriteUpstreamHead(ReadOnlySpan<byte> head, Http1RequestHead parsed, ReadOnlySpan<byte> host,
        ReadOnlySpan<byte> clientAddress, ByteBuffer upstream)
    {
        upstream.Clear();
        var writer = new UpstreamHeadWriter(upstream);
        writer.Start(head[..parsed.MethodLength], head.Slice(parsed.TargetStart, parsed.TargetLength), host);
        int forwardedFor = 0;
        foreach (var field in parsed.Headers)
        {
            var name = head.Slice(field.NameStart, field.NameLength);
            if (IsForwardedFor(name))
                forwardedFor++;
            // Cookie passes as it is: Inspect let through only heads without a login cookie. No Authorization either.
            writer.ClientField(name, head.Slice(field.NameStart, field.ValueStart + field.ValueLength - field.NameStart),
                removeAuthorization: false, passCookie: true);
        }
        writer.StartForwardedFor();
        for (int i = 0; forwardedFor > 0 && i < parsed.HeaderCount; i++)
        {
            var field = parsed.Headers[i];
            if (IsForwardedFor(head.Slice(field.NameStart, field.NameLength)))
                writer.ForwardedForEntry(head.Slice(field.ValueStart, field.ValueLength));
        }
        writer.ForwardedForPeer(clientAddress);
        writer.ProtoAndHost("https"u8, host);
        // Anonymous by Inspect: no identity fields; GET and HEAD without a body: no framing.
        return writer.End();
    }

    private static bool IsForwardedFor(ReadOnlySpan<byte> name) =>
        name.Length == 15 && Ascii.EqualsIgnoreCase(name, "X-Forwarded-For"u8);

    /// <summary>One of the front door's pages, as the full path writes it (<see cref="Pages"/>).</summary>
    public sealed record Page(int Status, byte[] Head, byte[] Body)
    {
        public static Page Of(int status, string title, string bodyHtml)
        {
            byte[] body = Encoding.UTF8.GetBytes(Pages.Render(title, bodyHtml));
            string head = $"HTTP/1.1 {status} {ReasonPhrases.GetReasonPhrase(status)}\r\nContent-Type: text/html; charset=utf-8\r\n"
                + string.Concat(Pages.HeaderFields.Select(f => $"{f.Name}: {f.Value}\r\n")) + $"Content-Length: {body.Length}\r\n";
            return new Page(status, Encoding.ASCII.GetBytes(head), body);
        }
    }

    public static readonly Page UnavailablePage = Page.Of(503, Pages.ServiceUnavailableTitle, Pages.ServiceUnavailableBody);
    public static readonly Page BadGatewayPage = Page.Of(502, Pages.BadGatewayTitle, Pages.BadGatewayBody);

    /// <summary>The page for a request that failed before the VM's response head: 502 for an invalid response, else 503.</summary>
    public static Page PageFor(ForwardOutcome outcome) => outcome == ForwardOutcome.BadResponse ? BadGatewayPage : UnavailablePage;

    public static void WritePage(IBufferWriter<byte> output, Page page, bool isHead, bool close, ResponseDate date)
    {
        output.Write(page.Head);
        output.Write(date.Line());
        if (close)
            output.Write("Connection: close\r\n"u8);
        output.Write("\r\n"u8);
        if (!isHead)
            output.Write(page.Body);
    }

    /// <summary>
    /// The client's response head: status line, the VM's fields without hop-by-hop ones (Set-Cookie without
    /// Domain, as on the other paths), then framing — the VM's Content-Length, else chunked — and a Date if the VM
    /// sent none (RFC 9110 §6.6.1: a recipient with a clock adds one).
    /// </summary>
    public static void WriteResponseHead(IBufferWriter<byte> output, Http1ResponseHead head, ReadOnlySpan<byte> bytes, bool bodyless, bool close, ResponseDate date)
    {
        output.Write(StatusLine(head.StatusCode));
        bool hasDate = false;
        foreach (var field in head.Headers)
        {
            var name = bytes.Slice(field.NameStart, field.NameLength);
            if (!ForwardedHeaderRules.IsRelayedResponseField(head, bytes, name))
                continue;
            hasDate |= name.Length == 4 && Ascii.EqualsIgnoreCase(name, "Date"u8);
            var value = bytes.Slice(field.ValueStart, field.ValueLength);
            output.Write(name);
            output.Write(": "u8);
            // The same rule as the other path (any case of "Domain"); a Set-Cookie is rare enough to take as a string.
            if (name.Length == 10 && Ascii.EqualsIgnoreCase(name, "Set-Cookie"u8))
                output.Write(Encoding.Latin1.GetBytes(HeaderParsing.RemoveDomainAttribute(Encoding.Latin1.GetString(value))));
            else
                output.Write(value);
            output.Write("\r\n"u8);
        }
        if (ResponseFraming.AnnouncedLength(head) is >= 0 and var length)
        {
            var span = output.GetSpan(40);
            "Content-Length: "u8.CopyTo(span);
            length.TryFormat(span[16..], out int digits, provider: System.Globalization.CultureInfo.InvariantCulture);
            span[16 + digits] = (byte)'\r';
            span[17 + digits] = (byte)'\n';
            output.Advance(18 + digits);
        }
        else if (!bodyless)
            output.Write("Transfer-Encoding: chunked\r\n"u8);
        if (!hasDate)
            output.Write(date.Line());
        if (close)
            output.Write("Connection: close\r\n"u8);
        output.Write("\r\n"u8);
    }

    private static readonly byte[]?[] s_statusLines = new byte[600][];

    private static ReadOnlySpan<byte> StatusLine(int status)
    {
        if ((uint)status >= (uint)s_statusLines.Length)
            return Encoding.ASCII.GetBytes($"HTTP/1.1 {status} \r\n");
        return s_statusLines[status] ??= Encoding.ASCII.GetBytes($"HTTP/1.1 {status} {ReasonPhrases.GetReasonPhrase(status)}\r\n");
    }
}

/// <summary>
/// The Host a lane connection's requests name, and the VM its default route leads to: kept while the connection
/// repeats its Host (it nearly always does), so the name is looked up once per connection, not per request.
/// </summary>
internal sealed class LaneHost
{
    private byte[] _bytes = [];
    private string? _vmName;
    private bool _vmNameKnown;

    /// <summary>The current request's Host value.</summary>
    public ReadOnlySpan<byte> Bytes => _bytes;

    /// <summary>The VM name of the last lookup (for logs), or null.</summary>
    public string? LastVmName => _vmName;

    public void Set(ReadOnlySpan<byte> value)
    {
        if (!value.SequenceEqual(_bytes))
        {
            _bytes = value.ToArray();
            _vmNameKnown = false;
        }
    }

    /// <summary>The VM name the Host names on its default route, or null.</summary>
    public string? VmName(LaneSites sites)
    {
        if (!_vmNameKnown)
        {
            _vmName = sites.DefaultRouteVmName(Encoding.ASCII.GetString(_bytes));
            _vmNameKnown = true;
        }
        return _vmName;
    }
}

/// <summary>
/// The <c>Date</c> field line for responses written below Kestrel (RFC 9110 §6.6.1), from the injected clock and
/// rebuilt when its second changes: one formatting a second, not one a response.
/// </summary>
internal sealed class ResponseDate(TimeProvider time)
{
    private sealed record DateLine(long Second, byte[] Bytes);

    private DateLine _line = new(long.MinValue, []);

    public byte[] Line()
    {
        var now = time.GetUtcNow();
        long second = now.ToUnixTimeSeconds();
        var line = Volatile.Read(ref _line);
        if (line.Second == second)
            return line.Bytes;
        // One object holds the second and its bytes, so a reader on another loop never pairs one with the other's.
        line = new DateLine(second, Encoding.ASCII.GetBytes("Date: " + now.ToString("r", System.Globalization.CultureInfo.InvariantCulture) + "\r\n"));
        Volatile.Write(ref _line, line);
        return line.Bytes;
    }
}
