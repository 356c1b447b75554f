using System.Buffers.Text;
using System.Text;

namespace Warren.Edge.Http.Forwarding;

/// <summary>Where one header field of a parsed response head lies in the receive buffer.</summary>
internal readonly record struct HeaderField(int NameStart, int NameLength, int ValueStart, int ValueLength);

/// <summary>The outcome of <see cref="Http1ResponseHead.TryParse"/>.</summary>
internal enum HeadParseStatus { Incomplete, Complete, Invalid }

/// <summary>
/// A VM's HTTP/1.x response head, parsed in place: the status, the framing facts the forwarder needs and the
/// positions of the header fields (names and values stay bytes in the caller's buffer until they are copied to
/// the client response). One instance is reused for every response on a connection.
/// </summary>
/// <remarks>
/// The VM is untrusted, so the grammar is RFC 9112's, strictly: a status line <c>HTTP/1.x SP 3DIGIT [SP reason]</c>
/// (§4), fields <c>token ":" OWS value OWS</c> with no whitespace before the colon (§5.1) and no obs-fold (§5.2 —
/// a proxy must reject or replace it; rejecting is the smaller surface), no NUL or bare CR anywhere. Lines end
/// in CRLF or a bare LF (§2.2 allows a recipient to accept LF). Framing (§6.3): Transfer-Encoding and
/// Content-Length together, a Transfer-Encoding other than exactly <c>chunked</c>, or Content-Length values that
/// disagree make the response invalid — each is a request-smuggling or desync vector between the VM and the
/// front door, and nginx refuses the same cases with 502.
/// </remarks>
internal sealed class Http1ResponseHead
{
    /// <summary>The most header bytes accepted from a VM (Kestrel accepts 32 KiB of request headers; nginx's proxy_buffer is 4–8 KiB).</summary>
    public const int MaxHeadBytes = 64 * 1024;

    /// <summary>The most header fields accepted in one response.</summary>
    public const int MaxHeaderCount = 256;

    private HeaderField[] _fields = new HeaderField[32];

    public int StatusCode { get; private set; }

    /// <summary>1 for HTTP/1.1, 0 for HTTP/1.0.</summary>
    public int MinorVersion { get; private set; }

    /// <summary>The Content-Length value, or -1 when there is none.</summary>
    public long ContentLength { get; private set; }

    /// <summary><c>Transfer-Encoding: chunked</c>.</summary>
    public bool Chunked { get; private set; }

    /// <summary>The Connection header lists <c>close</c>.</summary>
    public bool ConnectionClose { get; private set; }

    /// <summary>The Connection header lists <c>keep-alive</c> (only matters for HTTP/1.0).</summary>
    public bool ConnectionKeepAlive { get; private set; }

    /// <summary>The Connection header names a field other than close/keep-alive: that field is hop-by-hop too (RFC 9110 §7.6.1).</summary>
    public bool ConnectionNamesFields { get; private set; }

    /// <summary>The Connection header's value, to find the fields it names; valid only when <see cref="ConnectionNamesFields"/>.</summary>
    public HeaderField ConnectionField { get; private set; }

    public int HeaderCount { get; private set; }

    public ReadOnlySpan<HeaderField> Headers => _fields.AsSpan(0, HeaderCount);

    /// <summary>Whether the connection may carry another request after this response's body.</summary>
    public bool KeepAlive => !ConnectionClose && (MinorVersion == 1 || ConnectionKeepAlive);

    /// <summary>A 1xx response: another head follows.</summary>
    public bool IsInformational => StatusCode is >= 100 and < 200;

    /// <summary>
    /// Parses one head from the start of <paramref name="data"/>. <see cref="HeadParseStatus.Incomplete"/> means
    /// more bytes are needed (the caller enforces <see cref="MaxHeadBytes"/>); on <see cref="HeadParseStatus.Complete"/>
    /// <paramref name="consumed"/> is the head's length including the empty line.
    /// </summary>
    public HeadParseStatus TryParse(ReadOnlySpan<byte> data, out int consumed, out string? error)
    {
        consumed = 0;
        error = null;
        Reset();

        int lineEnd = data.IndexOf((byte)'\n');
        if (lineEnd < 0)
            return Incomplete(data, out error);
        if (!ParseStatusLine(Line(data, 0, lineEnd), out error))
            return HeadParseStatus.Invalid;

        int position = lineEnd + 1;
        while (true)
        {
            int relative = data[position..].IndexOf((byte)'\n');
            if (relative < 0)
                return Incomplete(data, out error);
            int end = position + relative;
            var line = Line(data, position, end);
            if (line.IsEmpty)
            {
                consumed = end + 1;
                if (consumed > MaxHeadBytes)
                    return Fail("response head too large", out error);
                return HeadParseStatus.Complete;
            }
            if (!ParseField(data, position, line.Length, out error))
                return HeadParseStatus.Invalid;
            position = end + 1;
        }
    }

    private static HeadParseStatus Incomplete(ReadOnlySpan<byte> data, out string? error)
    {
        if (data.Length >= MaxHeadBytes)
            return Fail("response head too large", out error);
        error = null;
        return HeadParseStatus.Incomplete;
    }

    private static HeadParseStatus Fail(string message, out string? error)
    {
        error = message;
        return HeadParseStatus.Invalid;
    }

    private void Reset()
    {
        StatusCode = 0;
        MinorVersion = 0;
        ContentLength = -1;
        Chunked = false;
        ConnectionClose = false;
        ConnectionKeepAlive = false;
        ConnectionNamesFields = false;
        ConnectionField = default;
        HeaderCount = 0;
    }

    /// <summary>The line from <paramref name="start"/> to the LF at <paramref name="lf"/>, without its CR.</summary>
    private static ReadOnlySpan<byte> Line(ReadOnlySpan<byte> data, int start, int lf)
    {
        int end = lf > start && data[lf - 1] == (byte)'\r' ? lf - 1 : lf;
        return data[start..end];
    }

    private bool ParseStatusLine(ReadOnlySpan<byte> line, out string? error)
    {
        error = "malformed status line";
        // HTTP/1.x SP 3DIGIT [SP reason-phrase] — RFC 9112 §4; the reason may be empty, and some servers omit the space.
        if (line.Length < 12 || !line.StartsWith("HTTP/1."u8) || line[8] != (byte)' ')
            return false;
        if (line[7] is not ((byte)'0' or (byte)'1'))
            return false;
        if (!IsDigit(line[9]) || !IsDigit(line[10]) || !IsDigit(line[11]) || line[9] == (byte)'0')
            return false;
        if (line.Length > 12 && (line[12] != (byte)' ' || !IsFieldText(line[13..])))
            return false;
        MinorVersion = line[7] - '0';
        StatusCode = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
        error = null;
        return true;
    }

    private bool ParseField(ReadOnlySpan<byte> data, int start, int length, out string? error)
    {
        var line = data.Slice(start, length);
        error = null;
        if (line[0] is (byte)' ' or (byte)'\t')
        {
            error = "obsolete line folding";
            return false;
        }
        int colon = line.IndexOf((byte)':');
        if (colon <= 0 || !IsToken(line[..colon]))
        {
            error = "malformed header field";
            return false;
        }
        var (valueStart, valueEnd) = ValueRange(line, colon);
        var name = line[..colon];
        var value = line[valueStart..valueEnd];
        if (!IsFieldText(value))
        {
            error = "invalid character in a header value";
            return false;
        }
        if (HeaderCount == MaxHeaderCount)
        {
            error = "too many header fields";
            return false;
        }
        if (HeaderCount == _fields.Length)
            Array.Resize(ref _fields, _fields.Length * 2);
        var field = new HeaderField(start, colon, start + valueStart, valueEnd - valueStart);
        _fields[HeaderCount++] = field;
        return Interpret(name, value, field, out error);
    }

    /// <summary>Records the framing and connection facts of one field.</summary>
    private bool Interpret(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, HeaderField field, out string? error)
    {
        error = null;
        if (name.Length == 14 && Ascii.EqualsIgnoreCase(name, "Content-Length"u8))
        {
            // RFC 9110 §8.6: repeated identical values may be accepted; anything else is unrecoverable.
            if (value.IsEmpty || value.Length > 18 || value.IndexOfAnyExceptInRange((byte)'0', (byte)'9') >= 0
                || !Utf8Parser.TryParse(value, out long parsed, out _)
                || (ContentLength >= 0 && ContentLength != parsed))
            {
                error = "invalid Content-Length";
                return false;
            }
            ContentLength = parsed;
        }
        else if (name.Length == 17 && Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8))
        {
            // Only "chunked" alone is framed here; other codings would have to be decoded first (nginx: 502 too).
            if (Chunked || !Ascii.EqualsIgnoreCase(value, "chunked"u8))
            {
                error = "unsupported Transfer-Encoding";
                return false;
            }
            Chunked = true;
        }
        else if (name.Length == 10 && Ascii.EqualsIgnoreCase(name, "Connection"u8))
        {
            foreach (var range in value.Split((byte)','))
            {
                var token = value[range].Trim(" \t"u8);
                if (Ascii.EqualsIgnoreCase(token, "close"u8))
                    ConnectionClose = true;
                else if (Ascii.EqualsIgnoreCase(token, "keep-alive"u8))
                    ConnectionKeepAlive = true;
                else if (!token.IsEmpty)
                {
                    ConnectionNamesFields = true;
                    ConnectionField = field;
                }
            }
        }
        if (Chunked && ContentLength >= 0)
        {
            error = "both Transfer-Encoding and Content-Length";
            return false;
        }
        return true;
    }

    /// <summary>Whether the Connection header names <paramref name="name"/> (so it must not be forwarded).</summary>
    public bool IsNamedByConnection(ReadOnlySpan<byte> buffer, ReadOnlySpan<byte> name)
    {
        if (!ConnectionNamesFields)
            return false;
        var value = buffer.Slice(ConnectionField.ValueStart, ConnectionField.ValueLength);
        foreach (var range in value.Split((byte)','))
        {
            if (Ascii.EqualsIgnoreCase(value[range].Trim(" \t"u8), name))
                return true;
        }
        return false;
    }

    private static bool IsDigit(byte b) => (uint)(b - '0') <= 9;

    /// <summary>Where a field line's value lies once the OWS around it is dropped (RFC 9110 §5.5), after the colon at <paramref name="colon"/>.</summary>
    internal static (int Start, int End) ValueRange(ReadOnlySpan<byte> line, int colon)
    {
        int start = colon + 1;
        int end = line.Length;
        while (start < end && line[start] is (byte)' ' or (byte)'\t')
            start++;
        while (end > start && line[end - 1] is (byte)' ' or (byte)'\t')
            end--;
        return (start, end);
    }

    /// <summary>tchar — RFC 9110 §5.6.2.</summary>
    internal static bool IsToken(ReadOnlySpan<byte> s)
    {
        foreach (byte b in s)
        {
            if (!IsTokenChar(b))
                return false;
        }
        return !s.IsEmpty;
    }

    internal static bool IsTokenChar(byte b) =>
        b is >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or >= (byte)'0' and <= (byte)'9'
        || b is (byte)'!' or (byte)'#' or (byte)'$' or (byte)'%' or (byte)'&' or (byte)'\'' or (byte)'*' or (byte)'+'
            or (byte)'-' or (byte)'.' or (byte)'^' or (byte)'_' or (byte)'`' or (byte)'|' or (byte)'~';

    /// <summary>field-content: HTAB, SP, VCHAR and obs-text — RFC 9110 §5.5. No NUL, CR, LF or other controls.</summary>
    internal static bool IsFieldText(ReadOnlySpan<byte> s)
    {
        foreach (byte b in s)
        {
            if (b < 0x20 && b != (byte)'\t' || b == 0x7F)
                return false;
        }
        return true;
    }
}
