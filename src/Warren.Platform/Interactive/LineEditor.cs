using System.Text;

namespace Warren.Platform.Interactive;

/// <summary>Tab-completion answer: the word at [<see cref="Start"/>, cursor) is replaced by a candidate.</summary>
public sealed record Completion(int Start, IReadOnlyList<string> Candidates);

/// <summary>
/// A small readline over a raw pty byte stream (the SSH session's channel data): the server is the
/// terminal's line discipline, so it echoes, edits and writes CRLF itself.
/// </summary>
/// <remarks>
/// Keys (ECMA-48 / xterm sequences as sent by common terminals):
/// printable text inserts; Backspace (0x7F, ^H) deletes left; Delete (ESC [3~) and ^D delete right
/// (^D on an empty line is end of input); ← → (ESC [D / ESC [C, ^B / ^F); Home/End (ESC [H / ESC [F,
/// ESC OH / ESC OF, ESC [1~ / ESC [4~, ^A / ^E); ↑ ↓ (ESC [A / ESC [B, ^P / ^N) walk history;
/// ^U kills to the start, ^K to the end, ^W the previous word; ^L clears the screen; ^C abandons the line;
/// Tab completes; Enter (CR, LF or CRLF) accepts.
/// The line is redrawn in full after each edit (no multi-line wrapping support; long lines scroll on the terminal).
/// </remarks>
public sealed class LineEditor
{
    /// <summary>Lines kept for ↑/↓ (bash's HISTSIZE default is 500).</summary>
    public const int MaxHistory = 500;

    /// <summary>Longest line accepted; further input is ignored (bounds memory per session).</summary>
    public const int MaxLineChars = 16 * 1024;

    /// <summary>Longest escape sequence parsed; longer ones are dropped (xterm's are at most ~8 bytes for these keys).</summary>
    private const int MaxEscapeBytes = 16;

    private const byte Esc = 0x1B;
    private static readonly Encoding s_utf8 = new UTF8Encoding(false, false);
    private const int ReadBufferBytes = 1024;

    private readonly Stream _input;
    private readonly Stream _output;
    private readonly Func<string, int, Completion?>? _complete;
    private readonly List<string> _history = new();
    private readonly byte[] _readBuffer = new byte[ReadBufferBytes];
    private int _readPos;
    private int _readLen;
    private bool _pendingLf;

    private StringBuilder _line = new();
    private int _cursor;
    private string _prompt = "";

    public LineEditor(Stream input, Stream output, Func<string, int, Completion?>? complete = null)
    {
        _input = input ?? throw new ArgumentNullException(nameof(input));
        _output = output ?? throw new ArgumentNullException(nameof(output));
        _complete = complete;
    }

    /// <summary>
    /// An editor over the same terminal that continues where this one stopped (typed-ahead input it has read but not
    /// used yet, history), with <paramref name="complete"/> for Tab. For a session that changes hands on one pty
    /// (the sign-up dialogue, then the shell): bytes a person typed ahead must not be lost in between.
    /// </summary>
    public LineEditor WithCompletion(Func<string, int, Completion?>? complete)
    {
        var next = new LineEditor(_input, _output, complete) { _pendingLf = _pendingLf };
        Array.Copy(_readBuffer, _readPos, next._readBuffer, 0, _readLen - _readPos);
        next._readLen = _readLen - _readPos;
        next._history.AddRange(_history);
        return next;
    }

    public IReadOnlyList<string> History => _history;

    /// <summary>Whether the last <see cref="ReadLineAsync"/> ended with ^C (its "" is then not an empty line).</summary>
    public bool LastLineInterrupted { get; private set; }

    /// <summary>Adds a line to history (skips empty lines and a repeat of the last entry).</summary>
    public void AddHistory(string line)
    {
        if (string.IsNullOrWhiteSpace(line)) return;
        if (_history.Count > 0 && _history[^1] == line) return;
        _history.Add(line);
        if (_history.Count > MaxHistory) _history.RemoveAt(0);
    }

    /// <summary>
    /// Shows <paramref name="prompt"/> and reads one line. Returns null at end of input (EOF, or ^D on an
    /// empty line), and "" when ^C abandons the line. Accepted lines are not added to history automatically.
    /// </summary>
    public async Task<string?> ReadLineAsync(string prompt, CancellationToken ct = default)
    {
        LastLineInterrupted = false;
        _prompt = prompt;
        _line = new StringBuilder();
        _cursor = 0;
        int historyIndex = _history.Count;
        string? stash = null;
        await WriteAsync(prompt, ct);
        while (true)
        {
            int b = await ReadByteAsync(ct);
            if (b < 0)
            {
                await WriteAsync("\r\n", ct);
                return null;
            }
            if (_pendingLf)
            {
                _pendingLf = false;
                if (b == '\n') continue;
            }
            switch (b)
            {
                case '\r':
                    _pendingLf = true;
                    await WriteAsync("\r\n", ct);
                    return _line.ToString();
                case '\n':
                    await WriteAsync("\r\n", ct);
                    return _line.ToString();
                case 0x03: // ^C
                    await WriteAsync("^C\r\n", ct);
                    LastLineInterrupted = true;
                    return "";
                case 0x04: // ^D
                    if (_line.Length == 0)
                    {
                        await WriteAsync("\r\n", ct);
                        return null;
                    }
                    if (_cursor < _line.Length) { _line.Remove(_cursor, 1); await RedrawAsync(ct); }
                    break;
                case 0x01: _cursor = 0; await RedrawAsync(ct); break;                // ^A
                case 0x05: _cursor = _line.Length; await RedrawAsync(ct); break;     // ^E
                case 0x02: if (_cursor > 0) { _cursor--; await RedrawAsync(ct); } break;             // ^B
                case 0x06: if (_cursor < _line.Length) { _cursor++; await RedrawAsync(ct); } break;  // ^F
                case 0x7F:
                case 0x08: // Backspace / ^H
                    if (_cursor > 0)
                    {
                        _line.Remove(_cursor - 1, 1);
                        _cursor--;
                        await RedrawAsync(ct);
                    }
                    break;
                case 0x15: // ^U
                    _line.Remove(0, _cursor);
                    _cursor = 0;
                    await RedrawAsync(ct);
                    break;
                case 0x0B: // ^K
                    _line.Length = _cursor;
                    await RedrawAsync(ct);
                    break;
                case 0x17: // ^W
                {
                    int start = _cursor;
                    while (start > 0 && _line[start - 1] == ' ') start--;
                    while (start > 0 && _line[start - 1] != ' ') start--;
                    _line.Remove(start, _cursor - start);
                    _cursor = start;
                    await RedrawAsync(ct);
                    break;
                }
                case 0x0C: // ^L
                    await WriteAsync("\x1b[H\x1b[2J", ct);
                    await RedrawAsync(ct);
                    break;
                case 0x10: // ^P
                    (historyIndex, stash) = await HistoryMoveAsync(historyIndex, -1, stash, ct);
                    break;
                case 0x0E: // ^N
                    (historyIndex, stash) = await HistoryMoveAsync(historyIndex, +1, stash, ct);
                    break;
                case '\t':
                    await CompleteAsync(ct);
                    break;
                case Esc:
                {
                    var key = await ReadEscapeAsync(ct);
                    switch (key)
                    {
                        case 'A': (historyIndex, stash) = await HistoryMoveAsync(historyIndex, -1, stash, ct); break;
                        case 'B': (historyIndex, stash) = await HistoryMoveAsync(historyIndex, +1, stash, ct); break;
                        case 'C': if (_cursor < _line.Length) { _cursor++; await RedrawAsync(ct); } break;
                        case 'D': if (_cursor > 0) { _cursor--; await RedrawAsync(ct); } break;
                        case 'H': _cursor = 0; await RedrawAsync(ct); break;
                        case 'F': _cursor = _line.Length; await RedrawAsync(ct); break;
                        case 'X': if (_cursor < _line.Length) { _line.Remove(_cursor, 1); await RedrawAsync(ct); } break;
                    }
                    break;
                }
                default:
                    if (b < 0x20) break; // other control characters are ignored
                    await InsertAsync(await DecodeCharsAsync((byte)b, ct), ct);
                    break;
            }
        }
    }

    private async Task<(int, string?)> HistoryMoveAsync(int index, int delta, string? stash, CancellationToken ct)
    {
        int next = index + delta;
        if (next < 0 || next > _history.Count) return (index, stash);
        if (index == _history.Count) stash = _line.ToString();
        string text = next == _history.Count ? stash ?? "" : _history[next];
        _line = new StringBuilder(text);
        _cursor = _line.Length;
        await RedrawAsync(ct);
        return (next, stash);
    }

    private async Task InsertAsync(string text, CancellationToken ct)
    {
        if (text.Length == 0 || _line.Length + text.Length > MaxLineChars) return;
        _line.Insert(_cursor, text);
        _cursor += text.Length;
        if (_cursor == _line.Length)
            await WriteAsync(text, ct); // appending: plain echo, no redraw
        else
            await RedrawAsync(ct);
    }

    private async Task CompleteAsync(CancellationToken ct)
    {
        if (_complete is null) return;
        Completion? result;
        try
        {
            result = _complete(_line.ToString(), _cursor);
        }
        catch (Exception) when (!ct.IsCancellationRequested)
        {
            return; // completion is best effort; never break the session over it
        }
        if (result is null || result.Candidates.Count == 0 || result.Start < 0 || result.Start > _cursor) return;
        string typed = _line.ToString(result.Start, _cursor - result.Start);
        if (result.Candidates.Count == 1)
        {
            string c = result.Candidates[0];
            _line.Remove(result.Start, _cursor - result.Start);
            string insert = c.EndsWith('=') ? c : c + " ";
            _line.Insert(result.Start, insert);
            _cursor = result.Start + insert.Length;
            await RedrawAsync(ct);
            return;
        }
        string common = CommonPrefix(result.Candidates);
        if (common.Length > typed.Length && common.StartsWith(typed, StringComparison.Ordinal))
        {
            _line.Remove(result.Start, _cursor - result.Start);
            _line.Insert(result.Start, common);
            _cursor = result.Start + common.Length;
            await RedrawAsync(ct);
            return;
        }
        await WriteAsync("\r\n" + string.Join("  ", result.Candidates) + "\r\n", ct);
        await RedrawAsync(ct);
    }

    private static string CommonPrefix(IReadOnlyList<string> items)
    {
        string p = items[0];
        foreach (var s in items)
        {
            int n = 0;
            while (n < p.Length && n < s.Length && p[n] == s[n]) n++;
            p = p[..n];
        }
        return p;
    }

    /// <summary>
    /// Reads the rest of an escape sequence; returns 'A'..'D' for arrows, 'H'/'F' for Home/End,
    /// 'X' for Delete, or '\0' for anything else (consumed and ignored).
    /// </summary>
    private async Task<char> ReadEscapeAsync(CancellationToken ct)
    {
        int b = await ReadByteAsync(ct);
        if (b < 0) return '\0';
        if (b is not ('[' or 'O'))
        {
            _readPos--; // a lone ESC: the next byte is an ordinary key
            return '\0';
        }
        bool ss3 = b == 'O';
        var param = new StringBuilder();
        for (int n = 0; n < MaxEscapeBytes; n++)
        {
            int c = await ReadByteAsync(ct);
            if (c < 0) return '\0';
            if (c is >= 0x40 and <= 0x7E) // final byte (ECMA-48 §5.4)
            {
                if (ss3) return c is 'A' or 'B' or 'C' or 'D' or 'H' or 'F' ? (char)c : '\0';
                if (c == '~')
                {
                    return param.ToString() switch
                    {
                        "1" or "7" => 'H',
                        "4" or "8" => 'F',
                        "3" => 'X',
                        _ => '\0',
                    };
                }
                return c is 'A' or 'B' or 'C' or 'D' or 'H' or 'F' ? (char)c : '\0';
            }
            param.Append((char)c);
        }
        return '\0';
    }

    /// <summary>
    /// Decodes one UTF-8 character starting with <paramref name="first"/> (RFC 3629 §4). A malformed
    /// sequence becomes U+FFFD; a byte that is not a continuation byte is kept for the next read.
    /// </summary>
    private async Task<string> DecodeCharsAsync(byte first, CancellationToken ct)
    {
        int needed = first switch
        {
            < 0x80 => 0,
            >= 0xC2 and <= 0xDF => 1,
            >= 0xE0 and <= 0xEF => 2,
            >= 0xF0 and <= 0xF4 => 3,
            _ => -1,
        };
        if (needed < 0) return "\uFFFD";
        var bytes = new byte[needed + 1];
        bytes[0] = first;
        for (int i = 1; i <= needed; i++)
        {
            int b = await ReadByteAsync(ct);
            if (b < 0) return "\uFFFD";
            if ((b & 0xC0) != 0x80)
            {
                _readPos--; // not a continuation byte: leave it for the next key
                return "\uFFFD";
            }
            bytes[i] = (byte)b;
        }
        string decoded = s_utf8.GetString(bytes);
        // Overlong or surrogate encodings decode to U+FFFD (possibly several); keep one.
        return decoded.Contains('\uFFFD') ? "\uFFFD" : decoded;
    }

    private async Task RedrawAsync(CancellationToken ct)
    {
        var sb = new StringBuilder();
        sb.Append('\r').Append(_prompt).Append(_line).Append("\x1b[K");
        int back = _line.Length - _cursor;
        if (back > 0) sb.Append("\x1b[").Append(back).Append('D');
        await WriteAsync(sb.ToString(), ct);
    }

    private async Task<int> ReadByteAsync(CancellationToken ct)
    {
        if (_readPos >= _readLen)
        {
            _readLen = await _input.ReadAsync(_readBuffer, ct);
            _readPos = 0;
            if (_readLen <= 0) { _readLen = 0; return -1; }
        }
        return _readBuffer[_readPos++];
    }

    private async Task WriteAsync(string s, CancellationToken ct)
    {
        await _output.WriteAsync(Encoding.UTF8.GetBytes(s), ct);
        await _output.FlushAsync(ct);
    }
}
