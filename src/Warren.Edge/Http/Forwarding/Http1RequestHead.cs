namespace Warren.Edge.Http.Forwarding;

/// <summary>
/// A client's HTTP/1.1 request head as the connection-level lane (<see cref="Http1LaneRules"/>) reads it below Kestrel's HTTP layer:
/// parsed in place, and only in its plainest form. Anything else is not an error here — the connection goes to
/// Kestrel, whose parser answers it (400, 431…) — so this grammar may be narrower than RFC 9112 but never wider.
/// </summary>
/// <remarks>
/// Accepted: <c>token SP origin-form SP "HTTP/1.1" CRLF</c> (RFC 9112 §3; the target printable ASCII without
/// spaces, starting with <c>/</c>), then fields <c>token ":" OWS value OWS CRLF</c> with no whitespace before the
/// colon (§5.1), no obs-fold (§5.2), values of SP, HTAB and visible ASCII only, and lines ending in CRLF only
/// (a bare LF or CR is Kestrel's to judge: §2.2 leaves accepting it to the recipient, and a parser that disagrees
/// with Kestrel's about where a line ends is a smuggling vector). At most <see cref="MaxHeaderCount"/> fields.
/// </remarks>
internal sealed class Http1RequestHead
{
    /// <summary>The most fields accepted (Kestrel's default MaxRequestHeaderCount).</summary>
    public const int MaxHeaderCount = 100;

    /// <summary>The longest method token accepted.</summary>
    public const int MaxMethodLength = 16;

    private readonly HeaderField[] _fields = new HeaderField[MaxHeaderCount];

    /// <summary>The method is the head's first <see cref="MethodLength"/> bytes.</summary>
    public int MethodLength { get; private set; }

    public int TargetStart { get; private set; }

    public int TargetLength { get; private set; }

    public int HeaderCount { get; private set; }

    public ReadOnlySpan<HeaderField> Headers => _fields.AsSpan(0, HeaderCount);

    /// <summary><see cref="FindEnd"/>'s answer for bytes with a bare LF: not a head to wait on here.</summary>
    public const int NotPlain = -2;

    /// <summary>
    /// The end of the head (CRLF CRLF included) in <paramref name="data"/>; -1 when it has not all arrived;
    /// <see cref="NotPlain"/> when, before any CRLF CRLF, a line ends in a bare LF — Kestrel may take such a head
    /// as complete (RFC 9112 §2.2 lets a recipient accept LF), so waiting here for a CRLF CRLF would stall it.
    /// </summary>
    public static int FindEnd(ReadOnlySpan<byte> data)
    {
        int i = data.IndexOf("\r\n\r\n"u8);
        if (i >= 0)
            return i + 4;
        for (int lf = data.IndexOf((byte)'\n'); lf >= 0;)
        {
            if (lf == 0 || data[lf - 1] != (byte)'\r')
                return NotPlain;
            int next = data[(lf + 1)..].IndexOf((byte)'\n');
            lf = next < 0 ? -1 : lf + 1 + next;
        }
        return -1;
    }

    /// <summary>
    /// Parses <paramref name="head"/>, which must be exactly one head ending in CRLF CRLF (see <see cref="FindEnd"/>).
    /// False when it is not a plain HTTP/1.1 request head.
    /// </summary>
    public bool TryParse(ReadOnlySpan<byte> head)
    {
        MethodLength = TargetStart = TargetLength = HeaderCount = 0;
        if (head.Length < 4 || !head.EndsWith("\r\n\r\n"u8))
            return false;

        int lineEnd = head.IndexOf("\r\n"u8);
        if (!ParseRequestLine(head[..lineEnd]))
            return false;

        int position = lineEnd + 2;
        while (true)
        {
            int relative = head[position..].IndexOf("\r\n"u8);
            if (relative == 0)
                return position + 2 == head.Length;
            if (HeaderCount == MaxHeaderCount)
                return false;
            if (!ParseField(head, position, relative))
                return false;
            position += relative + 2;
        }
    }

    private bool ParseRequestLine(ReadOnlySpan<byte> line)
    {
        int methodEnd = line.IndexOf((byte)' ');
        if (methodEnd <= 0 || methodEnd > MaxMethodLength || !Http1ResponseHead.IsToken(line[..methodEnd]))
            return false;
        var rest = line[(methodEnd + 1)..];
        int targetEnd = rest.IndexOf((byte)' ');
        if (targetEnd <= 0 || rest[0] != (byte)'/' || !IsVisibleAscii(rest[..targetEnd]))
            return false;
        if (!rest[(targetEnd + 1)..].SequenceEqual("HTTP/1.1"u8))
            return false;
        MethodLength = methodEnd;
        TargetStart = methodEnd + 1;
        TargetLength = targetEnd;
        return true;
    }

    private bool ParseField(ReadOnlySpan<byte> head, int start, int length)
    {
        var line = head.Slice(start, length);
        int colon = line.IndexOf((byte)':');
        if (colon <= 0 || !Http1ResponseHead.IsToken(line[..colon]))
            return false;
        var (valueStart, valueEnd) = Http1ResponseHead.ValueRange(line, colon);
        foreach (byte b in line[valueStart..valueEnd])
        {
            if (b is < 0x20 and not (byte)'\t' or >= 0x7F)
                return false;
        }
        _fields[HeaderCount++] = new HeaderField(start, colon, start + valueStart, valueEnd - valueStart);
        return true;
    }

    private static bool IsVisibleAscii(ReadOnlySpan<byte> s)
    {
        foreach (byte b in s)
        {
            if (b is <= 0x20 or >= 0x7F)
                return false;
        }
        return true;
    }
}
