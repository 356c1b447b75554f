using System.Text;
using Warren.Agent.Native;
using static Warren.Agent.Scp.ScpProtocol;

namespace Warren.Agent.Scp;

/// <summary>Ends the transfer: the connection is lost or the protocol cannot continue (a fatal error was sent).</summary>
internal sealed class ScpAbortException(string message) : Exception(message);

/// <summary>
/// <c>scp -t TARGET</c>: receives files (C records), directories (D … E, with -r) and times (T, with -p).
/// Hardened like OpenSSH's sink after CVE-2018-20685 / CVE-2019-6111: the peer's names are single path
/// components (no '/', not "." or "..", not empty, no NUL), so nothing is written outside TARGET; header lines
/// are bounded; mode and size are parsed strictly. Directory nesting is iterative (no recursion to exhaust).
/// </summary>
internal sealed unsafe class ScpSink(Stream input, Stream output, ScpOptions options)
{
    private readonly byte[] _line = new byte[MaxHeaderLength];
    private readonly byte[] _buffer = new byte[CopyBufferSize];
    private int _errors;

    /// <summary>A directory received with D, entered until its E.</summary>
    private sealed class Frame(string path, uint? restoreMode, Times? times)
    {
        public readonly string Path = path;
        public readonly uint? RestoreMode = restoreMode;
        public readonly Times? Times = times;
    }

    internal readonly record struct Times(long MTime, long MUsec, long ATime, long AUsec);

    /// <summary>Runs to EOF or a fatal error. 0 when every file arrived, 1 otherwise.</summary>
    public int Run(string target)
    {
        try
        {
            return Receive(target);
        }
        catch (ScpAbortException)
        {
            return 1;
        }
        catch (IOException)
        {
            return 1; // the peer went away while we were answering
        }
    }

    private int Receive(string target)
    {
        bool targetIsDir = Libc.Stat(target, out var tst) == 0 && tst.IsDirectory;
        if (options.TargetShouldBeDirectory && !targetIsDir)
        {
            SendError(output, $"{target}: Not a directory", fatal: true);
            return 1;
        }
        SendOk(output);

        var stack = new Stack<Frame>();
        Times? times = null;
        bool first = true;
        while (true)
        {
            int type = input.ReadByte();
            if (type < 0) return _errors > 0 ? 1 : 0;
            _line[0] = (byte)type;
            int len = ReadLine(input, _line, 1);
            if (len == -1) return 1; // lost connection mid-record
            if (len == -2) Abort("protocol error: control record too long");

            bool wasFirst = first;
            first = false;
            if (type is Warning or Fatal)
            {
                // The peer's own error (e.g. it could not read a file); it carries on unless fatal.
                if (type == Fatal) return 1;
                _errors++;
                continue;
            }
            var record = _line.AsSpan(0, len);
            if (type == 'E')
            {
                if (len != 1) Abort("protocol error: bad E record");
                if (stack.Count == 0)
                {
                    SendOk(output);
                    return _errors > 0 ? 1 : 0;
                }
                LeaveDirectory(stack.Pop());
                continue;
            }
            if (type == 'T')
            {
                times = ParseTimes(record[1..]);
                SendOk(output);
                continue;
            }
            if (type != 'C' && type != 'D')
            {
                // On the first record this is usually a shell's or rc file's chatter; either way we cannot go on.
                Abort(wasFirst ? "protocol error: " + Printable(record) : "protocol error: expected control record");
            }

            var (mode, size, name) = ParseHeader(record);
            bool inDir = stack.Count > 0 || targetIsDir;
            string dir = stack.Count > 0 ? stack.Peek().Path : target;
            string path = inDir ? (dir.EndsWith('/') ? dir + name : dir + "/" + name) : target;
            var fileTimes = times;
            times = null;
            if (type == 'D')
            {
                if (!options.Recursive) Abort("protocol error: received directory without -r");
                if (EnterDirectory(path, mode, fileTimes) is { } frame) stack.Push(frame);
            }
            else
            {
                ReceiveFile(path, mode, size, fileTimes);
            }
        }
    }

    private Frame? EnterDirectory(string path, uint mode, Times? times)
    {
        uint? restore = null;
        if (Libc.Stat(path, out var st) == 0)
        {
            if (!st.IsDirectory)
            {
                Warn($"{path}: {ErrnoMessage(Libc.ENOTDIR)}");
                return null;
            }
            if (options.PreserveTimes) Libc.Chmod(path, mode);
        }
        else
        {
            // Owner rwx while we fill it; the sent mode (less the umask without -p) once its E arrives.
            if (Libc.Mkdir(path, mode | 0x1C0) != 0)
            {
                Warn($"{path}: {ErrnoMessage(Libc.Errno)}");
                return null;
            }
            uint created = Libc.Stat(path, out var cst) == 0 ? cst.Mode & 0xFFF : mode | 0x1C0;
            uint wanted = options.PreserveTimes ? mode : created & mode;
            if (wanted != created) restore = wanted;
        }
        SendOk(output);
        return new Frame(path, restore, times);
    }

    private void LeaveDirectory(Frame frame)
    {
        string? error = null;
        if (frame.Times is { } t && SetTimes(frame.Path, -1, t) != 0)
            error = $"{frame.Path}: set times: {ErrnoMessage(Libc.Errno)}";
        if (frame.RestoreMode is { } m && Libc.Chmod(frame.Path, m) != 0)
            error ??= $"{frame.Path}: set mode: {ErrnoMessage(Libc.Errno)}";
        if (error != null) Warn(error);
        else SendOk(output);
    }

    private void ReceiveFile(string path, uint mode, long size, Times? times)
    {
        bool existed = Libc.Stat(path, out var before) == 0;
        int fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_CLOEXEC | Libc.O_NOCTTY, mode);
        if (fd < 0)
        {
            // The peer skips this file's data on an error reply.
            Warn($"{path}: {ErrnoMessage(Libc.Errno)}");
            return;
        }
        string? error = null;
        try
        {
            SendOk(output);
            long offset = 0;
            while (offset < size)
            {
                int want = (int)Math.Min(_buffer.Length, size - offset);
                int n = input.Read(_buffer, 0, want);
                if (n <= 0) throw new ScpAbortException("lost connection");
                if (error == null) error = WriteAll(fd, offset, n);
                offset += n;
            }
            if (error == null && (!existed || (before.Mode & StatBuf.S_IFMT) == StatBuf.S_IFREG) && Libc.FTruncate(fd, size) != 0)
                error = $"{path}: truncate: {ErrnoMessage(Libc.Errno)}";
            if (error == null && options.PreserveTimes && Libc.FChmod(fd, mode) != 0)
                error = $"{path}: set mode: {ErrnoMessage(Libc.Errno)}";
            if (error != null && !error.StartsWith(path, StringComparison.Ordinal)) error = $"{path}: {error}";
        }
        finally
        {
            Libc.Close(fd);
        }

        // The source ends the data with \0, or \1 when it could not read its file.
        ReadPeerStatus();
        if (error == null && times is { } t && SetTimes(path, -1, t) != 0)
            error = $"{path}: set times: {ErrnoMessage(Libc.Errno)}";
        if (error != null) Warn(error);
        else SendOk(output);
    }

    private string? WriteAll(int fd, long offset, int count)
    {
        fixed (byte* p = _buffer)
        {
            int done = 0;
            while (done < count)
            {
                nint w = Libc.PWrite(fd, p + done, (nuint)(count - done), offset + done);
                if (w < 0)
                {
                    if (Libc.Errno == Libc.EINTR) continue;
                    return ErrnoMessage(Libc.Errno);
                }
                if (w == 0) return ErrnoMessage(Libc.ENOSPC);
                done += (int)w;
            }
        }
        return null;
    }

    private static int SetTimes(string path, int fd, Times t)
    {
        Timespec* ts = stackalloc Timespec[2];
        ts[0] = new Timespec { Sec = t.ATime, Nsec = t.AUsec * 1000 };
        ts[1] = new Timespec { Sec = t.MTime, Nsec = t.MUsec * 1000 };
        return fd >= 0 ? Libc.FUtimens(fd, ts) : Libc.UtimensAt(Libc.AT_FDCWD, path, ts, 0);
    }

    private void ReadPeerStatus()
    {
        int b = input.ReadByte();
        if (b < 0) throw new ScpAbortException("lost connection");
        if (b == Ok) return;
        if (b is Warning or Fatal)
        {
            if (ReadLine(input, _line, 0) == -1) throw new ScpAbortException("lost connection");
            _errors++;
            if (b == Fatal) throw new ScpAbortException("peer aborted");
            return;
        }
        Abort("protocol error: bad status after file data");
    }

    private void Warn(string message)
    {
        _errors++;
        SendError(output, message);
    }

    private void Abort(string message)
    {
        SendError(output, message, fatal: true);
        throw new ScpAbortException(message);
    }

    /// <summary><c>C|D MODE SIZE NAME</c>: exactly four octal digits, decimal size within long, a single-component name.</summary>
    internal (uint Mode, long Size, string Name) ParseHeader(ReadOnlySpan<byte> record)
    {
        if (!TryParseHeader(record, out var mode, out var size, out var name, out var why)) Abort(why);
        return (mode, size, name);
    }

    internal static bool TryParseHeader(ReadOnlySpan<byte> record, out uint mode, out long size, out string name, out string why)
    {
        mode = 0; size = 0; name = ""; why = "";
        if (record.Length < 6) { why = "protocol error: short header"; return false; }
        for (int i = 1; i <= 4; i++)
        {
            byte c = record[i];
            if (c < '0' || c > '7') { why = "protocol error: bad mode"; return false; }
            mode = (mode << 3) | (uint)(c - '0');
        }
        if (record[5] != ' ') { why = "protocol error: mode not delimited"; return false; }
        int p = 6;
        if (p >= record.Length || !IsDigit(record[p])) { why = "protocol error: size not present"; return false; }
        long s = 0;
        while (p < record.Length && IsDigit(record[p]))
        {
            int d = record[p++] - '0';
            if (s > (long.MaxValue - d) / 10) { why = "protocol error: size out of range"; return false; }
            s = s * 10 + d;
        }
        if (p >= record.Length || record[p++] != ' ') { why = "protocol error: size not delimited"; return false; }
        var raw = record[p..];
        if (raw.IsEmpty || raw.IndexOf((byte)'/') >= 0 || raw.IndexOf((byte)0) >= 0
            || raw.SequenceEqual("."u8) || raw.SequenceEqual(".."u8))
        {
            why = "error: unexpected filename: " + Printable(raw);
            return false;
        }
        size = s;
        name = Encoding.UTF8.GetString(raw);
        return true;
    }

    /// <summary><c>T MTIME MUSEC ATIME AUSEC</c> (after the T): decimal seconds, microseconds 0–999999.</summary>
    private Times ParseTimes(ReadOnlySpan<byte> rest)
    {
        if (!TryParseTimes(rest, out var t)) Abort("protocol error: bad T record");
        return t;
    }

    internal static bool TryParseTimes(ReadOnlySpan<byte> rest, out Times times)
    {
        times = default;
        Span<long> v = stackalloc long[4];
        int p = 0;
        for (int f = 0; f < 4; f++)
        {
            if (p >= rest.Length || !IsDigit(rest[p])) return false;
            long x = 0;
            while (p < rest.Length && IsDigit(rest[p]))
            {
                int d = rest[p++] - '0';
                if (x > (long.MaxValue - d) / 10) return false;
                x = x * 10 + d;
            }
            v[f] = x;
            if (f < 3 && (p >= rest.Length || rest[p++] != ' ')) return false;
        }
        if (p != rest.Length) return false;
        if (v[1] > 999_999 || v[3] > 999_999) return false;
        times = new Times(v[0], v[1], v[2], v[3]);
        return true;
    }

    private static bool IsDigit(byte b) => b >= '0' && b <= '9';

    private static string Printable(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder();
        foreach (byte b in bytes.Length > 200 ? bytes[..200] : bytes)
            sb.Append(b >= 0x20 && b < 0x7f ? (char)b : '?');
        return sb.ToString();
    }
}
