using System.Globalization;
using System.Text;
using Warren.Agent.Native;
using static Warren.Agent.Scp.ScpProtocol;

namespace Warren.Agent.Scp;

/// <summary>
/// <c>scp -f SOURCE...</c>: sends files (C records), directories with -r (D … E) and times with -p (T),
/// waiting for the sink's acknowledgement after each record, as OpenSSH's source does.
/// </summary>
internal sealed unsafe class ScpSource(Stream input, Stream output, ScpOptions options)
{
    private readonly byte[] _buffer = new byte[CopyBufferSize];
    private readonly byte[] _line = new byte[MaxHeaderLength];
    private int _errors;

    public int Run(string[] paths)
    {
        try
        {
            // The sink speaks first: \0 once it is ready.
            ReadResponse();
            foreach (var p in paths) Send(p);
            return _errors > 0 ? 1 : 0;
        }
        catch (ScpAbortException)
        {
            return 1;
        }
        catch (IOException)
        {
            return 1;
        }
    }

    private void Send(string path)
    {
        string p = path.Length > 1 ? path.TrimEnd('/') : path;
        if (p.Length == 0) p = "/";
        if (p.Contains('\n'))
        {
            Warn($"{Printable(p)}: skipping, filename contains a newline");
            return;
        }
        if (Libc.Stat(p, out var st) != 0)
        {
            Warn($"{p}: {ErrnoMessage(Libc.Errno)}");
            return;
        }
        int slash = p.LastIndexOf('/');
        string name = slash >= 0 && p.Length > 1 ? p[(slash + 1)..] : p;
        if (st.IsDirectory)
        {
            if (options.Recursive) SendDirectory(p, name, st);
            else Warn($"{p}: not a regular file");
        }
        else if ((st.Mode & StatBuf.S_IFMT) == StatBuf.S_IFREG)
        {
            SendFile(p, name);
        }
        else
        {
            Warn($"{p}: not a regular file");
        }
    }

    private void SendFile(string path, string name)
    {
        int fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NOCTTY, 0);
        if (fd < 0)
        {
            Warn($"{path}: {ErrnoMessage(Libc.Errno)}");
            return;
        }
        try
        {
            if (Libc.FStat(fd, out var st) != 0)
            {
                Warn($"{path}: {ErrnoMessage(Libc.Errno)}");
                return;
            }
            if (options.PreserveTimes && !SendRecord(TimesRecord(st))) return;
            long size = st.Size;
            if (!SendRecord(Header('C', st.Mode, size, name))) return;

            // Exactly `size` bytes follow whatever happens: a read error or a shrinking file is padded with zeros.
            string? error = null;
            long offset = 0;
            while (offset < size)
            {
                int want = (int)Math.Min(_buffer.Length, size - offset);
                int n = 0;
                if (error == null)
                {
                    fixed (byte* b = _buffer)
                    {
                        while (n < want)
                        {
                            nint r = Libc.PRead(fd, b + n, (nuint)(want - n), offset + n);
                            if (r < 0 && Libc.Errno == Libc.EINTR) continue;
                            if (r < 0) { error = $"{path}: {ErrnoMessage(Libc.Errno)}"; break; }
                            if (r == 0) { error = $"{path}: file shrank while being sent"; break; }
                            n += (int)r;
                        }
                    }
                }
                if (n < want) _buffer.AsSpan(n, want - n).Clear();
                output.Write(_buffer, 0, want);
                offset += want;
            }
            if (error == null) SendOk(output);
            else Warn(error);
            ReadResponse();
        }
        finally
        {
            Libc.Close(fd);
        }
    }

    private void SendDirectory(string path, string name, StatBuf st)
    {
        if (options.PreserveTimes && !SendRecord(TimesRecord(st))) return;
        if (!SendRecord(Header('D', st.Mode, 0, name))) return;

        // List first and close the directory, so deep trees don't hold a descriptor per level.
        var children = new List<string>();
        nint dir = Libc.OpenDir(path);
        if (dir == 0)
        {
            Warn($"{path}: {ErrnoMessage(Libc.Errno)}");
        }
        else
        {
            try
            {
                while (Libc.DirentName(Libc.ReadDir(dir)) is { } child)
                {
                    if (child is "." or "..") continue;
                    children.Add(child);
                }
            }
            finally
            {
                Libc.CloseDir(dir);
            }
        }
        string prefix = path.EndsWith('/') ? path : path + "/";
        foreach (var child in children) Send(prefix + child);
        SendRecord("E\n"u8.ToArray());
    }

    private static byte[] Header(char type, uint mode, long size, string name) =>
        Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture,
            $"{type}{Convert.ToString(mode & 0xDFF, 8).PadLeft(4, '0')} {size} {name}\n"));

    private static byte[] TimesRecord(StatBuf st) =>
        Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture,
            $"T{Math.Max(0, st.MTimeSec)} 0 {Math.Max(0, st.ATimeSec)} 0\n"));

    /// <summary>Sends a record and waits for the sink's answer: true on \0, false on a \1 warning.</summary>
    private bool SendRecord(byte[] record)
    {
        output.Write(record);
        output.Flush();
        return ReadResponse();
    }

    /// <summary>The sink's answer: \0 (true), \1 message (false, counted as an error), \2 message or EOF (abort).</summary>
    private bool ReadResponse()
    {
        int b = input.ReadByte();
        if (b < 0) throw new ScpAbortException("lost connection");
        if (b == Ok) return true;
        // \1 / \2 carry a message line; anything else is a sink talking nonsense (OpenSSH reads it as a message too).
        int len = ReadLine(input, _line, 0);
        if (len == -1) throw new ScpAbortException("lost connection");
        _errors++;
        if (b == Warning) return false;
        throw new ScpAbortException("sink aborted");
    }

    private void Warn(string message)
    {
        _errors++;
        SendError(output, message);
    }

    private static string Printable(string s) => s.Replace('\n', '?');
}
