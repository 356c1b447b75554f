namespace Warren.Edge.Http.Forwarding;

/// <summary>The outcome of one <see cref="ChunkedBodyDecoder.Decode"/> step.</summary>
internal enum ChunkStatus
{
    /// <summary>All input was framing; feed more.</summary>
    NeedMore,
    /// <summary>A run of body bytes was found (it may be followed by more framing in the same input).</summary>
    Data,
    /// <summary>The last chunk and the trailer section have been read; the message ends here.</summary>
    Done,
    Invalid,
}

/// <summary>
/// Decodes <c>Transfer-Encoding: chunked</c> (RFC 9112 §7.1) incrementally, byte-exact about where the message
/// ends, so a pooled upstream connection is only reused when the response ended exactly at a chunk boundary.
/// </summary>
/// <remarks>
/// Chunk extensions are skipped (bounded), trailer fields are read and dropped (bounded; they are not forwarded).
/// Size and data lines need CRLF — a lenient LF here is what lets two parsers disagree on where a body ends.
/// </remarks>
internal struct ChunkedBodyDecoder
{
    /// <summary>The most bytes of one chunk's extensions, and of the whole trailer section.</summary>
    public const int MaxExtensionBytes = 4096;
    public const int MaxTrailerBytes = 16 * 1024;

    private enum State { Size, Extension, SizeLf, Data, DataCr, DataLf, TrailerLineStart, TrailerLine, TrailerLf, LastLf, Done }

    private State _state;
    private long _remaining;
    private int _digits;
    private int _sideBytes;

    public readonly bool IsDone => _state == State.Done;

    /// <summary>
    /// Consumes framing from <paramref name="input"/> until a run of body bytes, the end of the message or the end
    /// of the input. On <see cref="ChunkStatus.Data"/>, <paramref name="dataStart"/>/<paramref name="dataLength"/>
    /// locate the run inside <paramref name="input"/> and <paramref name="consumed"/> includes it.
    /// </summary>
    public ChunkStatus Decode(ReadOnlySpan<byte> input, out int consumed, out int dataStart, out int dataLength)
    {
        dataStart = 0;
        dataLength = 0;
        int i = 0;
        while (i < input.Length)
        {
            byte b = input[i];
            switch (_state)
            {
                case State.Size:
                    int digit = HexValue(b);
                    if (digit >= 0)
                    {
                        // 15 hex digits keep the size below 2^60: no overflow, and far beyond any real body.
                        if (++_digits > 15)
                            return Invalid(i, out consumed);
                        _remaining = (_remaining << 4) | (uint)digit;
                        i++;
                        break;
                    }
                    if (_digits == 0)
                        return Invalid(i, out consumed);
                    if (b == (byte)'\r')
                        _state = State.SizeLf;
                    else if (b is (byte)';' or (byte)' ' or (byte)'\t')
                    {
                        _state = State.Extension;
                        _sideBytes = 0;
                    }
                    else
                        return Invalid(i, out consumed);
                    i++;
                    break;

                case State.Extension:
                    // chunk-ext is skipped up to its CR; any other control byte is refused.
                    if (b == (byte)'\r')
                        _state = State.SizeLf;
                    else if (b < 0x20 && b != (byte)'\t' || b == 0x7F || ++_sideBytes > MaxExtensionBytes)
                        return Invalid(i, out consumed);
                    i++;
                    break;

                case State.SizeLf:
                    if (b != (byte)'\n')
                        return Invalid(i, out consumed);
                    i++;
                    _digits = 0;
                    if (_remaining == 0)
                    {
                        _state = State.TrailerLineStart;
                        _sideBytes = 0;
                    }
                    else
                        _state = State.Data;
                    break;

                case State.Data:
                    int run = (int)Math.Min(_remaining, input.Length - i);
                    _remaining -= run;
                    if (_remaining == 0)
                        _state = State.DataCr;
                    dataStart = i;
                    dataLength = run;
                    consumed = i + run;
                    return ChunkStatus.Data;

                case State.DataCr:
                    if (b != (byte)'\r')
                        return Invalid(i, out consumed);
                    _state = State.DataLf;
                    i++;
                    break;

                case State.DataLf:
                    if (b != (byte)'\n')
                        return Invalid(i, out consumed);
                    _state = State.Size;
                    i++;
                    break;

                case State.TrailerLineStart:
                    if (b == (byte)'\r')
                    {
                        _state = State.LastLf;
                        i++;
                        break;
                    }
                    _state = State.TrailerLine;
                    goto case State.TrailerLine;

                case State.TrailerLine:
                    if (b == (byte)'\r')
                        _state = State.TrailerLf;
                    else if (b < 0x20 && b != (byte)'\t' || b == 0x7F)
                        return Invalid(i, out consumed);
                    if (++_sideBytes > MaxTrailerBytes)
                        return Invalid(i, out consumed);
                    i++;
                    break;

                case State.TrailerLf:
                    if (b != (byte)'\n')
                        return Invalid(i, out consumed);
                    _state = State.TrailerLineStart;
                    i++;
                    break;

                case State.LastLf:
                    if (b != (byte)'\n')
                        return Invalid(i, out consumed);
                    _state = State.Done;
                    consumed = i + 1;
                    return ChunkStatus.Done;

                case State.Done:
                    consumed = i;
                    return ChunkStatus.Done;
            }
        }
        consumed = i;
        return _state == State.Done ? ChunkStatus.Done : ChunkStatus.NeedMore;
    }

    private static ChunkStatus Invalid(int at, out int consumed)
    {
        consumed = at;
        return ChunkStatus.Invalid;
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };
}
