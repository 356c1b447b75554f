using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Warren.Agent.Native;
using static Warren.Agent.Sftp.SftpConstants;

namespace Warren.Agent.Sftp;

/// <summary><c>sftp [-d DIR]</c>: an SFTP v3 server on stdin/stdout, as OpenSSH's sftp-server, running as the invoking user.</summary>
internal static class SftpMain
{
    public static int Run(string[] args)
    {
        string? start = null;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "-d" && i + 1 < args.Length) start = args[++i];
            // OpenSSH's sftp-server flags (-e, -l LEVEL, -f FACILITY, -u UMASK) are accepted and ignored.
            else if (args[i] is "-l" or "-f" or "-u" or "-P" or "-p") i++;
        }
        start ??= Environment.GetEnvironmentVariable("HOME");
        if (!string.IsNullOrEmpty(start)) Libc.Chdir(start);
        using var input = Console.OpenStandardInput();
        using var output = Console.OpenStandardOutput();
        return new SftpServer(input, output).Run();
    }
}

/// <summary>
/// The request loop. Single-threaded like OpenSSH's sftp-server: one request, one reply, in order.
/// Paths are the client's, relative to the working directory; no chroot (the VM is the boundary).
/// </summary>
internal sealed unsafe class SftpServer(Stream input, Stream output)
{
    private readonly Dictionary<uint, OpenHandle> _handles = new();
    private uint _nextHandle = 1;
    private bool _initialized;

    private sealed class OpenHandle
    {
        public int Fd = -1;
        public nint Dir;
        public string Path = "";
        public bool Append;
    }

    /// <summary>Serves until stdin closes. Returns 0 on a clean EOF, 1 on a framing error.</summary>
    public int Run()
    {
        var header = new byte[4];
        try
        {
            while (true)
            {
                if (!ReadExactly(header)) return 0;
                uint length = BinaryPrimitives.ReadUInt32BigEndian(header);
                // Check the peer's length before allocating (OpenSSH: "bad message" and exit).
                if (length == 0 || length > MaxPacketLength)
                {
                    Console.Error.Write($"warren-agent sftp: bad packet length {length}\n");
                    return 1;
                }
                var body = new byte[length];
                if (!ReadExactly(body)) return 1;
                Handle(body);
            }
        }
        finally
        {
            foreach (var h in _handles.Values) CloseHandle(h);
            _handles.Clear();
        }
    }

    private bool ReadExactly(byte[] buffer)
    {
        int read = 0;
        while (read < buffer.Length)
        {
            int n = input.Read(buffer, read, buffer.Length - read);
            if (n <= 0) return false;
            read += n;
        }
        return true;
    }

    private void Send(SftpWriter w)
    {
        output.Write(w.Complete().Span);
        output.Flush();
    }

    internal void Handle(ReadOnlySpan<byte> body)
    {
        if (!SftpRequest.TryParse(body, out var req, out var badId))
        {
            if (badId.HasValue) SendStatus(badId.Value, FxBadMessage, "bad message");
            return;
        }
        if (req.Type == Init)
        {
            _initialized = true;
            var w = new SftpWriter(VersionPacket, null);
            w.WriteUInt32(ProtocolVersion);
            foreach (var (name, version) in Extensions) { w.WriteString(name); w.WriteString(version); }
            Send(w);
            return;
        }
        if (!_initialized)
        {
            SendStatus(req.Id, FxFailure, "not initialised");
            return;
        }
        try
        {
            Dispatch(req);
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            SendStatus(req.Id, FxFailure, e.Message);
        }
    }

    /// <summary>Extensions announced in VERSION, with OpenSSH's version strings (PROTOCOL in openssh-portable).</summary>
    private static readonly (string, string)[] Extensions =
    [
        ("posix-rename@openssh.com", "1"),
        ("statvfs@openssh.com", "2"),
        ("fstatvfs@openssh.com", "2"),
        ("hardlink@openssh.com", "1"),
        ("fsync@openssh.com", "1"),
        ("limits@openssh.com", "1"),
        ("expand-path@openssh.com", "1"),
    ];

    private void Dispatch(SftpRequest req)
    {
        switch (req.Type)
        {
            case Open: DoOpen(req); break;
            case Close: DoClose(req); break;
            case Read: DoRead(req); break;
            case Write: DoWrite(req); break;
            case LStat: DoStat(req, Libc.LStat(req.Path, out var ls), ls); break;
            case Stat: DoStat(req, Libc.Stat(req.Path, out var st), st); break;
            case FStat:
                if (!TryGetFile(req, out var fh)) return;
                DoStat(req, Libc.FStat(fh.Fd, out var fs), fs);
                break;
            case SetStat: SendResult(req.Id, ApplyAttrs(req.Path, -1, req.Attrs)); break;
            case FSetStat:
                if (!TryGetFile(req, out var sh)) return;
                SendResult(req.Id, ApplyAttrs(null, sh.Fd, req.Attrs));
                break;
            case OpenDir: DoOpenDir(req); break;
            case ReadDir: DoReadDir(req); break;
            case Remove: SendResult(req.Id, Libc.Unlink(req.Path)); break;
            case MkDir: SendResult(req.Id, Libc.Mkdir(req.Path, req.Attrs.Permissions is { } p ? p & 0xFFF : 0x1FF)); break;
            case RmDir: SendResult(req.Id, Libc.Rmdir(req.Path)); break;
            case RealPath: DoRealPath(req, req.Path); break;
            case Rename: DoRename(req); break;
            case ReadLink: DoReadLink(req); break;
            // OpenSSH sends (and its sftp-server reads) SYMLINK's arguments as target, then link path,
            // the reverse of filexfer-02 §6.10; clients are OpenSSH, so we match it.
            case Symlink: SendResult(req.Id, Libc.Symlink(req.Path, req.Path2)); break;
            case SftpConstants.Extended: DoExtended(req); break;
            default: SendStatus(req.Id, FxOpUnsupported, "unsupported request"); break;
        }
    }

    private void DoOpen(SftpRequest req)
    {
        if (_handles.Count >= MaxOpenHandles) { SendStatus(req.Id, FxFailure, "too many open handles"); return; }
        int flags = (req.PFlags & (FxfRead | FxfWrite)) switch
        {
            FxfRead | FxfWrite => Libc.O_RDWR,
            FxfWrite => Libc.O_WRONLY,
            _ => Libc.O_RDONLY,
        };
        if ((req.PFlags & FxfAppend) != 0) flags |= Libc.O_APPEND;
        if ((req.PFlags & FxfCreat) != 0) flags |= Libc.O_CREAT;
        if ((req.PFlags & FxfTrunc) != 0) flags |= Libc.O_TRUNC;
        if ((req.PFlags & FxfExcl) != 0) flags |= Libc.O_EXCL;
        uint mode = req.Attrs.Permissions is { } p ? p & 0xFFF : 0x1B6; // 0666 before umask
        int fd = Libc.Open(req.Path, flags | Libc.O_CLOEXEC | Libc.O_NOCTTY, mode);
        if (fd < 0) { SendErrno(req.Id); return; }
        SendHandle(req.Id, new OpenHandle { Fd = fd, Path = req.Path, Append = (req.PFlags & FxfAppend) != 0 });
    }

    private void DoOpenDir(SftpRequest req)
    {
        if (_handles.Count >= MaxOpenHandles) { SendStatus(req.Id, FxFailure, "too many open handles"); return; }
        nint dir = Libc.OpenDir(req.Path);
        if (dir == 0) { SendErrno(req.Id); return; }
        SendHandle(req.Id, new OpenHandle { Dir = dir, Path = req.Path });
    }

    private void SendHandle(uint id, OpenHandle h)
    {
        uint key = _nextHandle++;
        _handles[key] = h;
        var w = new SftpWriter(SftpConstants.Handle, id);
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, key);
        w.WriteBytes(bytes);
        Send(w);
    }

    private bool TryGetHandle(SftpRequest req, out OpenHandle handle)
    {
        handle = null!;
        if (req.Handle.Length == 4 && _handles.TryGetValue(BinaryPrimitives.ReadUInt32BigEndian(req.Handle), out var h))
        {
            handle = h;
            return true;
        }
        SendStatus(req.Id, FxFailure, "invalid handle");
        return false;
    }

    private bool TryGetFile(SftpRequest req, out OpenHandle handle)
    {
        if (!TryGetHandle(req, out handle)) return false;
        if (handle.Fd >= 0) return true;
        SendStatus(req.Id, FxFailure, "not a file handle");
        return false;
    }

    private void DoClose(SftpRequest req)
    {
        if (!TryGetHandle(req, out var h)) return;
        _handles.Remove(BinaryPrimitives.ReadUInt32BigEndian(req.Handle));
        SendResult(req.Id, CloseHandle(h));
    }

    private static int CloseHandle(OpenHandle h)
    {
        if (h.Fd >= 0) { int rc = Libc.Close(h.Fd); h.Fd = -1; return rc; }
        if (h.Dir != 0) { int rc = Libc.CloseDir(h.Dir); h.Dir = 0; return rc; }
        return 0;
    }

    private void DoRead(SftpRequest req)
    {
        if (!TryGetFile(req, out var h)) return;
        if (req.Offset > long.MaxValue) { SendStatus(req.Id, FxFailure, "offset out of range"); return; }
        int length = (int)Math.Min(req.Length, MaxReadLength);
        var buffer = new byte[length];
        nint n;
        fixed (byte* p = buffer) n = Libc.PRead(h.Fd, p, (nuint)length, (long)req.Offset);
        if (n < 0) { SendErrno(req.Id); return; }
        if (n == 0 && length > 0) { SendStatus(req.Id, FxEof, "End of file"); return; }
        var w = new SftpWriter(Data, req.Id);
        w.WriteBytes(buffer.AsSpan(0, (int)n));
        Send(w);
    }

    private void DoWrite(SftpRequest req)
    {
        if (!TryGetFile(req, out var h)) return;
        if (req.Offset > long.MaxValue) { SendStatus(req.Id, FxFailure, "offset out of range"); return; }
        int done = 0;
        fixed (byte* p = req.Data)
        {
            while (done < req.Data.Length)
            {
                // With O_APPEND, Linux pwrite ignores the offset and appends, as SFTP's APPEND flag wants.
                nint n = Libc.PWrite(h.Fd, p + done, (nuint)(req.Data.Length - done), (long)req.Offset + done);
                if (n < 0)
                {
                    if (Libc.Errno == Libc.EINTR) continue;
                    SendErrno(req.Id);
                    return;
                }
                if (n == 0) { SendStatus(req.Id, FxFailure, "short write"); return; }
                done += (int)n;
            }
        }
        SendStatus(req.Id, FxOk, "Success");
    }

    private void DoStat(SftpRequest req, int rc, in StatBuf st)
    {
        if (rc != 0) { SendErrno(req.Id); return; }
        var w = new SftpWriter(SftpConstants.Attrs, req.Id);
        w.WriteAttrs(ToAttrs(st));
        Send(w);
    }

    internal static SftpAttrs ToAttrs(in StatBuf st) =>
        new((ulong)Math.Max(0, st.Size), st.Uid, st.Gid, st.Mode, (uint)st.ATimeSec, (uint)st.MTimeSec);

    private static int ApplyAttrs(string? path, int fd, SftpAttrs a)
    {
        if (a.Size is { } size)
        {
            if (size > long.MaxValue) return SetErrnoFailure();
            if ((fd >= 0 ? Libc.FTruncate(fd, (long)size) : Libc.Truncate(path!, (long)size)) != 0) return -1;
        }
        if (a.Permissions is { } perm && (fd >= 0 ? Libc.FChmod(fd, perm & 0xFFF) : Libc.Chmod(path!, perm & 0xFFF)) != 0) return -1;
        if (a.ATime is { } at && a.MTime is { } mt)
        {
            Timespec* times = stackalloc Timespec[2];
            times[0] = new Timespec { Sec = at };
            times[1] = new Timespec { Sec = mt };
            if ((fd >= 0 ? Libc.FUtimens(fd, times) : Libc.UtimensAt(Libc.AT_FDCWD, path!, times, 0)) != 0) return -1;
        }
        if (a.Uid is { } uid && a.Gid is { } gid && (fd >= 0 ? Libc.FChown(fd, uid, gid) : Libc.Chown(path!, uid, gid)) != 0) return -1;
        return 0;
    }

    private static int SetErrnoFailure()
    {
        Marshal.SetLastPInvokeError(Libc.EINVAL);
        return -1;
    }

    private void DoReadDir(SftpRequest req)
    {
        if (!TryGetHandle(req, out var h)) return;
        if (h.Dir == 0) { SendStatus(req.Id, FxFailure, "not a directory handle"); return; }
        var entries = new List<(string Name, StatBuf St)>();
        while (entries.Count < MaxNamesPerReaddir)
        {
            Marshal.SetLastPInvokeError(0);
            byte* e = Libc.ReadDir(h.Dir);
            if (e == null) break;
            string name = Libc.DirentName(e) ?? "";
            string full = h.Path.EndsWith('/') ? h.Path + name : h.Path + "/" + name;
            if (Libc.LStat(full, out var st) != 0) continue; // vanished since readdir
            entries.Add((name, st));
        }
        if (entries.Count == 0) { SendStatus(req.Id, FxEof, "End of file"); return; }
        var w = new SftpWriter(SftpConstants.Name, req.Id);
        w.WriteUInt32((uint)entries.Count);
        var names = UserNames.Instance;
        foreach (var (name, st) in entries)
        {
            w.WriteString(name);
            w.WriteString(LongName(name, st, names));
            w.WriteAttrs(ToAttrs(st));
        }
        Send(w);
    }

    /// <summary>An `ls -l` line like OpenSSH's ls_file(): mode, links, owner, group, size, date, name.</summary>
    internal static string LongName(string name, in StatBuf st, UserNames names)
    {
        var mode = new StringBuilder(10);
        mode.Append((st.Mode & StatBuf.S_IFMT) switch
        {
            StatBuf.S_IFDIR => 'd', StatBuf.S_IFLNK => 'l', 0x2000 => 'c', 0x6000 => 'b', 0x1000 => 'p', 0xC000 => 's', _ => '-',
        });
        string rwx = "rwxrwxrwx";
        for (int i = 0; i < 9; i++) mode.Append((st.Mode & (1u << (8 - i))) != 0 ? rwx[i] : '-');
        if ((st.Mode & 0x800) != 0) mode[3] = mode[3] == 'x' ? 's' : 'S';
        if ((st.Mode & 0x400) != 0) mode[6] = mode[6] == 'x' ? 's' : 'S';
        if ((st.Mode & 0x200) != 0) mode[9] = mode[9] == 'x' ? 't' : 'T';
        var mtime = DateTimeOffset.FromUnixTimeSeconds(st.MTimeSec).UtcDateTime;
        // Within six months: "Mon dd HH:MM"; else "Mon dd  YYYY" (as ls and OpenSSH do).
        string date = Math.Abs((DateTime.UtcNow - mtime).TotalDays) < 182
            ? mtime.ToString("MMM dd HH:mm", CultureInfo.InvariantCulture)
            : mtime.ToString("MMM dd  yyyy", CultureInfo.InvariantCulture);
        return string.Format(CultureInfo.InvariantCulture, "{0} {1,3} {2,-8} {3,-8} {4,8} {5} {6}",
            mode, st.NLink, names.User(st.Uid), names.Group(st.Gid), st.Size, date, name);
    }

    private void DoRealPath(SftpRequest req, string path)
    {
        if (path.Length == 0) path = ".";
        string resolved = Canonicalize(path);
        var w = new SftpWriter(SftpConstants.Name, req.Id);
        w.WriteUInt32(1);
        w.WriteString(resolved);
        w.WriteString(resolved);
        w.WriteAttrs(new SftpAttrs());
        Send(w);
    }

    /// <summary>
    /// Absolute path with ".", ".." and symlinks resolved as far as the path exists; a missing tail is
    /// kept lexically (OpenSSH's sftp-server likewise lets clients name files they are about to create).
    /// </summary>
    internal static string Canonicalize(string path)
    {
        string absolute = path.StartsWith('/') ? path : Path.Combine(Environment.CurrentDirectory, path);
        var parts = new List<string>();
        foreach (var part in absolute.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".") continue;
            if (part == "..") { if (parts.Count > 0) parts.RemoveAt(parts.Count - 1); continue; }
            parts.Add(part);
        }
        string lexical = "/" + string.Join('/', parts);
        try
        {
            var info = new FileInfo(lexical);
            if (info.Exists || Directory.Exists(lexical))
            {
                var target = info.ResolveLinkTarget(returnFinalTarget: true);
                if (target != null) return target.FullName;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return lexical;
    }

    private void DoRename(SftpRequest req)
    {
        // filexfer-02 §6.5: RENAME fails if the target exists (OpenSSH: link()+unlink(), falling back to
        // a stat check for filesystems without hard links). posix-rename@openssh.com replaces instead.
        if (Libc.LStat(req.Path2, out _) == 0) { SendStatus(req.Id, FxFailure, "target exists"); return; }
        SendResult(req.Id, Libc.Rename(req.Path, req.Path2));
    }

    private void DoReadLink(SftpRequest req)
    {
        const int LinkBufferBytes = 4096; // PATH_MAX on Linux
        var buffer = new byte[LinkBufferBytes];
        nint n;
        fixed (byte* p = buffer) n = Libc.ReadLink(req.Path, p, (nuint)buffer.Length);
        if (n < 0) { SendErrno(req.Id); return; }
        string target = Encoding.UTF8.GetString(buffer, 0, (int)n);
        var w = new SftpWriter(SftpConstants.Name, req.Id);
        w.WriteUInt32(1);
        w.WriteString(target);
        w.WriteString(target);
        w.WriteAttrs(new SftpAttrs());
        Send(w);
    }

    private void DoExtended(SftpRequest req)
    {
        switch (req.ExtensionName)
        {
            case "posix-rename@openssh.com":
                SendResult(req.Id, Libc.Rename(req.Path, req.Path2));
                break;
            case "hardlink@openssh.com":
                SendResult(req.Id, Libc.Link(req.Path, req.Path2));
                break;
            case "statvfs@openssh.com":
                SendStatVfs(req.Id, Libc.StatVfs(req.Path, out var vfs), vfs);
                break;
            case "fstatvfs@openssh.com":
                if (!TryGetFile(req, out var fh)) return;
                SendStatVfs(req.Id, Libc.FStatVfs(fh.Fd, out var fvfs), fvfs);
                break;
            case "fsync@openssh.com":
                if (!TryGetFile(req, out var sh)) return;
                SendResult(req.Id, Libc.FSync(sh.Fd));
                break;
            case "limits@openssh.com":
            {
                var w = new SftpWriter(ExtendedReply, req.Id);
                w.WriteUInt64(MaxPacketLength);
                w.WriteUInt64(MaxReadLength);
                w.WriteUInt64(MaxWriteLength);
                w.WriteUInt64(MaxOpenHandles);
                Send(w);
                break;
            }
            case "expand-path@openssh.com":
            {
                string p = req.Path;
                string home = Environment.GetEnvironmentVariable("HOME") ?? "/";
                if (p == "~") p = home;
                else if (p.StartsWith("~/", StringComparison.Ordinal)) p = home + p[1..];
                else if (p.StartsWith('~')) { SendStatus(req.Id, FxNoSuchFile, "unknown user"); return; }
                DoRealPath(req, p);
                break;
            }
            default:
                SendStatus(req.Id, FxOpUnsupported, "unsupported extension");
                break;
        }
    }

    private void SendStatVfs(uint id, int rc, in StatVfsBuf v)
    {
        if (rc != 0) { SendErrno(id); return; }
        // statvfs@openssh.com reply layout (PROTOCOL §4.4): eleven uint64s.
        const ulong StRdOnly = 1, StNoSuid = 2;
        var w = new SftpWriter(ExtendedReply, id);
        w.WriteUInt64(v.BSize); w.WriteUInt64(v.FrSize); w.WriteUInt64(v.Blocks); w.WriteUInt64(v.BFree);
        w.WriteUInt64(v.BAvail); w.WriteUInt64(v.Files); w.WriteUInt64(v.FFree); w.WriteUInt64(v.FAvail);
        w.WriteUInt64(v.Fsid); w.WriteUInt64(v.Flag & (StRdOnly | StNoSuid)); w.WriteUInt64(v.NameMax);
        Send(w);
    }

    private void SendResult(uint id, int rc)
    {
        if (rc == 0) SendStatus(id, FxOk, "Success");
        else SendErrno(id);
    }

    private void SendErrno(uint id)
    {
        int errno = Libc.Errno;
        var (code, message) = errno switch
        {
            Libc.ENOENT or Libc.ENOTDIR or Libc.EBADF or Libc.ELOOP or Libc.ENAMETOOLONG => (FxNoSuchFile, "No such file"),
            Libc.EPERM or Libc.EACCES or Libc.EROFS => (FxPermissionDenied, "Permission denied"),
            Libc.EINVAL => (FxBadMessage, "Bad message"),
            Libc.ENOSYS or Libc.ENOTSUP => (FxOpUnsupported, "Operation unsupported"),
            _ => (FxFailure, "Failure"),
        };
        SendStatus(id, code, code == FxFailure ? $"Failure (errno {errno})" : message);
    }

    private void SendStatus(uint id, uint code, string message)
    {
        var w = new SftpWriter(Status, id);
        w.WriteUInt32(code);
        w.WriteString(message);
        w.WriteString("en");
        Send(w);
    }
}

/// <summary>uid/gid → name from /etc/passwd and /etc/group (read once; the static agent has no NSS).</summary>
internal sealed class UserNames
{
    public static readonly UserNames Instance = new();
    private readonly Dictionary<uint, string> _users = Load("/etc/passwd");
    private readonly Dictionary<uint, string> _groups = Load("/etc/group");

    public string User(uint uid) => _users.TryGetValue(uid, out var n) ? n : uid.ToString(CultureInfo.InvariantCulture);
    public string Group(uint gid) => _groups.TryGetValue(gid, out var n) ? n : gid.ToString(CultureInfo.InvariantCulture);

    private static Dictionary<uint, string> Load(string path)
    {
        var map = new Dictionary<uint, string>();
        try
        {
            foreach (var line in File.ReadLines(path))
            {
                var f = line.Split(':');
                if (f.Length > 2 && uint.TryParse(f[2], out var id)) map.TryAdd(id, f[0]);
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return map;
    }
}
