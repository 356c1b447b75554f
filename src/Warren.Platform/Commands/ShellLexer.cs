using System.Text;

namespace Warren.Platform.Commands;

/// <summary>
/// Splits a command line into argv with POSIX-shell-like quoting, for
/// <c>ssh host 'new --name=x'</c> exec strings and POST /exec bodies.
/// </summary>
/// <remarks>
/// Follows the quoting rules of POSIX.1-2017 XCU §2.2 (Quoting) and nothing else:
/// <list type="bullet">
/// <item>Unquoted blanks (space, tab, CR, LF) separate words.</item>
/// <item>A backslash outside quotes keeps the next character literally; backslash-newline is removed (line continuation).</item>
/// <item>Single quotes keep everything literally up to the next single quote.</item>
/// <item>Inside double quotes a backslash escapes only <c>$ ` " \</c> and newline (§2.2.3); other backslashes stay.</item>
/// <item>Adjacent quoted and unquoted parts join into one word; <c>''</c> makes an empty word.</item>
/// </list>
/// There is no expansion of any kind (variables, globs, tilde, command substitution), no
/// comments and no operators: <c>$HOME</c>, <c>*</c>, <c>#</c>, <c>;</c> and <c>|</c> are ordinary characters.
/// Never throws; malformed input gives an error message.
/// </remarks>
public static class ShellLexer
{
    /// <summary>Characters that never need quoting (a conservative set, like Python's shlex.quote).</summary>
    private const string SafeChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-";

    public static bool TrySplit(string line, out List<string> argv, out string? error)
    {
        ArgumentNullException.ThrowIfNull(line);
        argv = new List<string>();
        error = null;
        var word = new StringBuilder();
        bool inWord = false;
        int i = 0;
        while (i < line.Length)
        {
            char c = line[i];
            switch (c)
            {
                case ' ' or '\t' or '\r' or '\n':
                    if (inWord) { argv.Add(word.ToString()); word.Clear(); inWord = false; }
                    i++;
                    break;
                case '\\':
                    if (i + 1 >= line.Length)
                    {
                        error = "invalid command syntax: trailing backslash";
                        argv.Clear();
                        return false;
                    }
                    if (line[i + 1] == '\n') { i += 2; break; }
                    word.Append(line[i + 1]);
                    inWord = true;
                    i += 2;
                    break;
                case '\'':
                {
                    int end = line.IndexOf('\'', i + 1);
                    if (end < 0)
                    {
                        error = "invalid command syntax: unterminated single quote";
                        argv.Clear();
                        return false;
                    }
                    word.Append(line, i + 1, end - i - 1);
                    inWord = true;
                    i = end + 1;
                    break;
                }
                case '"':
                {
                    i++;
                    bool closed = false;
                    while (i < line.Length)
                    {
                        char d = line[i];
                        if (d == '"') { closed = true; i++; break; }
                        if (d == '\\' && i + 1 < line.Length)
                        {
                            char n = line[i + 1];
                            if (n is '$' or '`' or '"' or '\\') { word.Append(n); i += 2; continue; }
                            if (n == '\n') { i += 2; continue; }
                        }
                        word.Append(d);
                        i++;
                    }
                    if (!closed)
                    {
                        error = "invalid command syntax: unterminated double quote";
                        argv.Clear();
                        return false;
                    }
                    inWord = true;
                    break;
                }
                default:
                    word.Append(c);
                    inWord = true;
                    i++;
                    break;
            }
        }
        if (inWord) argv.Add(word.ToString());
        return true;
    }

    /// <summary>Quotes one argument so that <see cref="TrySplit"/> (or /bin/sh) gives it back unchanged.</summary>
    public static string Quote(string arg)
    {
        ArgumentNullException.ThrowIfNull(arg);
        if (arg.Length > 0 && arg.AsSpan().IndexOfAnyExcept(SafeChars) < 0) return arg;
        return "'" + arg.Replace("'", "'\\''") + "'";
    }

    /// <summary>Quotes and joins argv into one command line.</summary>
    public static string Join(IEnumerable<string> argv) => string.Join(' ', argv.Select(Quote));
}
