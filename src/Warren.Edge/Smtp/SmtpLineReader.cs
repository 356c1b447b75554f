namespace Warren.Edge.Smtp;

/// <summary>What <see cref="SmtpLineReader.ReadLineAsync"/> found.</summary>
public enum SmtpLineStatus
{
    /// <summary>A line ending in CRLF; <see cref="SmtpLineReader.Line"/> holds it without the CRLF.</summary>
    Line,

    /// <summary>The line was longer than allowed; it was read to its end and dropped.</summary>
    TooLong,

    /// <summary>An LF without the CR before it (RFC 5321 §2.3.8: only CRLF ends a line).</summary>
    BareLineFeed,

    /// <summary>The peer closed the connection (a partial last line is dropped).</summary>
    EndOfStream,
}

/// <summary>
/// Reads CRLF-terminated lines from a stream into one fixed buffer: memory per connection is bounded whatever
/// the peer sends. Before it waits for more bytes from the network it calls <see cref="BeforeWait"/>, which the
/// session uses to flush buffered replies (RFC 2920 §3.1: replies may be held while pipelined commands are
/// still buffered, never while the server waits for input).
/// </summary>
public sealed class SmtpLineReader
{
    private readonly byte[] _buffer;
    private int _start;
    private int _end;
    private Stream _stream;

    public SmtpLineReader(Stream stream, int bufferSize = 4096)
    {
        _stream = stream;
        _buffer = new byte[bufferSize];
    }

    /// <summary>The last line read (valid until the next read).</summary>
    public ReadOnlyMemory<byte> Line { get; private set; }

    /// <summary>Bytes received and not yet returned as lines.</summary>
    public int Buffered => _end - _start;

    public Func<CancellationToken, ValueTask>? BeforeWait { get; set; }

    /// <summary>
    /// Reads from <paramref name="stream"/> from now on. Bytes already buffered are dropped: after STARTTLS
    /// nothing sent in the clear may be taken as if it came over TLS (RFC 3207 §4.2).
    /// </summary>
    public void SwitchTo(Stream stream)
    {
        _stream = stream;
        _start = _end = 0;
    }

    /// <summary>Reads one line of at most <paramref name="maxBytes"/> octets, CRLF included.</summary>
    public async ValueTask<SmtpLineStatus> ReadLineAsync(int maxBytes, CancellationToken ct)
    {
        bool discarding = false;
        while (true)
        {
            int lf = _buffer.AsSpan(_start, _end - _start).IndexOf((byte)'\n');
            if (lf >= 0)
            {
                int lineEnd = _start + lf; // index of LF
                bool crlf = lf > 0 && _buffer[lineEnd - 1] == (byte)'\r';
                int contentLength = crlf ? lf - 1 : lf;
                Line = _buffer.AsMemory(_start, contentLength);
                _start = lineEnd + 1;
                if (discarding || lf + 1 > maxBytes) return SmtpLineStatus.TooLong;
                return crlf ? SmtpLineStatus.Line : SmtpLineStatus.BareLineFeed;
            }
            if (_end - _start >= maxBytes)
            {
                // Over the limit without an end in sight: keep only the last byte (it may be the CR of CRLF).
                discarding = true;
                _buffer[0] = _buffer[_end - 1];
                _start = 0;
                _end = 1;
            }
            else if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            if (BeforeWait is { } flush) await flush(ct).ConfigureAwait(false);
            int n = await _stream.ReadAsync(_buffer.AsMemory(_end), ct).ConfigureAwait(false);
            if (n == 0)
            {
                Line = ReadOnlyMemory<byte>.Empty;
                return SmtpLineStatus.EndOfStream;
            }
            _end += n;
        }
    }
}
