using System.Runtime.InteropServices;

namespace Warren.Agent.Native;

/// <summary>
/// The libc calls the agent makes. Bound at link time (DirectPInvoke in the csproj) so the
/// statically linked executable needs no loader. Struct layouts are Linux x86-64 (the only
/// target scripts/build-images.sh publishes); see struct stat in &lt;bits/struct_stat.h&gt;.
/// </summary>
internal static unsafe partial class Libc
{
    private const string Lib = "libc";

    // <bits/waitflags.h>, <sys/prctl.h>, <fcntl.h> values on Linux.
    public const int WNOHANG = 1;
    public const int PR_SET_CHILD_SUBREAPER = 36;
    public const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0x40, O_EXCL = 0x80,
        O_NOCTTY = 0x100, O_TRUNC = 0x200, O_APPEND = 0x400, O_CLOEXEC = 0x80000;
    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;

    // errno values the agent checks (SFTP status mapping, session I/O) (<asm-generic/errno-base.h>).
    public const int EPERM = 1, ENOENT = 2, EINTR = 4, EIO = 5, EBADF = 9, ECHILD = 10, EAGAIN = 11, EACCES = 13,
        EEXIST = 17, ENOTDIR = 20, EISDIR = 21, EINVAL = 22, ENOSPC = 28, EROFS = 30, ENAMETOOLONG = 36,
        ENOSYS = 38, ENOTEMPTY = 39, ELOOP = 40, ENOTSUP = 95, EPIPE = 32, ENOTTY = 25;

    public static int Errno => Marshal.GetLastPInvokeError();

    [LibraryImport(Lib, EntryPoint = "getpid")] public static partial int GetPid();
    [LibraryImport(Lib, EntryPoint = "getuid")] public static partial uint GetUid();
    [LibraryImport(Lib, EntryPoint = "getgid")] public static partial uint GetGid();
    [LibraryImport(Lib, EntryPoint = "kill", SetLastError = true)] public static partial int Kill(int pid, int sig);
    [LibraryImport(Lib, EntryPoint = "waitpid", SetLastError = true)] public static partial int WaitPid(int pid, out int status, int options);
    [LibraryImport(Lib, EntryPoint = "prctl", SetLastError = true)] public static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);
    [LibraryImport(Lib, EntryPoint = "setsid", SetLastError = true)] public static partial int SetSid();
    [LibraryImport(Lib, EntryPoint = "setuid", SetLastError = true)] public static partial int SetUid(uint uid);
    [LibraryImport(Lib, EntryPoint = "setgid", SetLastError = true)] public static partial int SetGid(uint gid);
    [LibraryImport(Lib, EntryPoint = "setgroups", SetLastError = true)] public static partial int SetGroups(nuint size, uint* list);
    [LibraryImport(Lib, EntryPoint = "execve", SetLastError = true)] public static partial int Execve(byte* path, byte** argv, byte** envp);
    [LibraryImport(Lib, EntryPoint = "posix_spawn")] public static partial int PosixSpawn(out int pid, byte* path, void* fileActions, void* attr, byte** argv, byte** envp);
    [LibraryImport(Lib, EntryPoint = "signal")] public static partial nint Signal(int signum, nint handler);
    public const int SIGCHLD = 17;
    public const nint SIG_DFL = 0;
    [LibraryImport(Lib, EntryPoint = "isatty")] public static partial int IsATty(int fd);
    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)] public static partial int Ioctl(int fd, nuint request, WinSize* arg);
    /// <summary>TIOCGWINSZ on Linux (&lt;asm-generic/ioctls.h&gt;).</summary>
    public const nuint TIOCGWINSZ = 0x5413;
    /// <summary>TIOCSWINSZ on Linux (&lt;asm-generic/ioctls.h&gt;).</summary>
    public const nuint TIOCSWINSZ = 0x5414;
    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)] public static partial int IoctlArg(int fd, nuint request, nint arg);
    /// <summary>TIOCSCTTY (arg 0): make the terminal on fd the caller's controlling terminal.</summary>
    public const nuint TIOCSCTTY = 0x540E;
    /// <summary>TIOCSPTLCK (arg int*): lock (1) or unlock (0) a pty slave.</summary>
    public const nuint TIOCSPTLCK = 0x40045431;
    /// <summary>TIOCGPTN (arg int*): the pty's number N in /dev/pts/N.</summary>
    public const nuint TIOCGPTN = 0x80045430;
    /// <summary>TIOCGPTPEER (arg open flags, Linux 4.13+): opens the slave of a pty master without a path lookup.</summary>
    public const nuint TIOCGPTPEER = 0x5441;
    [LibraryImport(Lib, EntryPoint = "waitid", SetLastError = true)] public static partial int WaitId(int idType, int id, byte* info, int options);
    /// <summary>waitid(2) values: wait for one pid; for exited children; leave the child waitable (no reap).</summary>
    public const int P_PID = 1, WEXITED = 4, WNOWAIT = 0x01000000;
    /// <summary>sizeof(siginfo_t) on Linux.</summary>
    public const int SigInfoBytes = 128;
    [LibraryImport(Lib, EntryPoint = "sigprocmask", SetLastError = true)] public static partial int SigProcMask(int how, byte* set, byte* oldSet);
    public const int SIG_SETMASK = 2;
    /// <summary>sizeof(sigset_t) in glibc (1024 bits; the kernel uses the first 64).</summary>
    public const int SigSetBytes = 128;
    public const int SIGHUP = 1, SIGPIPE = 13, SIGUSR1 = 10, SIGUSR2 = 12;
    public const int SIGINT = 2, SIGTERM = 15;
    public const nint SIG_IGN = 1;
    [LibraryImport(Lib, EntryPoint = "umask")] public static partial uint Umask(uint mask);
    [LibraryImport(Lib, EntryPoint = "syscall", SetLastError = true)] public static partial nint Syscall(nint number, nint a1, nint a2, nint a3, nint a4);
    /// <summary>rt_sigaction on x86-64; struct kernel_sigaction is handler, flags, restorer, 8-byte mask.</summary>
    public const nint SYS_rt_sigaction = 13;
    public const int KernelSigActionBytes = 32, KernelSigSetBytes = 8;
    /// <summary>The highest signal number on Linux (SIGRTMAX, _NSIG - 1).</summary>
    public const int LastSignal = 64;
    [LibraryImport(Lib, EntryPoint = "getrlimit", SetLastError = true)] public static partial int GetRLimit(int resource, RLimit* limit);
    [LibraryImport(Lib, EntryPoint = "setrlimit", SetLastError = true)] public static partial int SetRLimit(int resource, RLimit* limit);
    public const int RLIMIT_NOFILE = 7;
    [LibraryImport(Lib, EntryPoint = "chdir", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Chdir(string path);
    [LibraryImport(Lib, EntryPoint = "sethostname", SetLastError = true)] public static partial int SetHostname(byte* name, nuint len);
    [LibraryImport(Lib, EntryPoint = "mount", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Mount(string source, string target, string type, ulong flags, string? data);
    [LibraryImport(Lib, EntryPoint = "sync")] public static partial void Sync();
    [LibraryImport(Lib, EntryPoint = "reboot", SetLastError = true)] public static partial int Reboot(int command);
    /// <summary>setpriority(2): with PRIO_PROCESS and who 0, Linux sets the calling thread's nice value (its children inherit it).</summary>
    [LibraryImport(Lib, EntryPoint = "setpriority", SetLastError = true)] public static partial int SetPriority(int which, int who, int prio);
    public const int PRIO_PROCESS = 0;

    // Files.
    [LibraryImport(Lib, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Open(string path, int flags, uint mode);
    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)] public static partial int Close(int fd);
    [LibraryImport(Lib, EntryPoint = "pread", SetLastError = true)] public static partial nint PRead(int fd, byte* buf, nuint count, long offset);
    [LibraryImport(Lib, EntryPoint = "pwrite", SetLastError = true)] public static partial nint PWrite(int fd, byte* buf, nuint count, long offset);
    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)] public static partial nint Write(int fd, byte* buf, nuint count);
    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)] public static partial nint Read(int fd, byte* buf, nuint count);
    [LibraryImport(Lib, EntryPoint = "pipe2", SetLastError = true)] public static partial int Pipe2(int* fds, int flags);
    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)] public static partial int Fcntl(int fd, int cmd, int arg);
    /// <summary>fcntl(2) commands: get/set file status flags; set a pipe's capacity.</summary>
    public const int F_GETFD = 1, F_GETFL = 3, F_SETFL = 4, F_SETPIPE_SZ = 1031;
    public const int O_NONBLOCK = 0x800;
    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)] public static partial int EventFd(uint initialValue, int flags);
    public const int EFD_NONBLOCK = 0x800, EFD_CLOEXEC = 0x80000;
    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)] public static partial int Poll(PollFd* fds, nuint count, int timeoutMs);
    /// <summary>poll(2) events (&lt;bits/poll.h&gt;); POLLRDHUP: the peer shut down its sending side.</summary>
    public const short POLLIN = 0x1, POLLOUT = 0x4, POLLERR = 0x8, POLLHUP = 0x10, POLLNVAL = 0x20, POLLRDHUP = 0x2000;
    [LibraryImport(Lib, EntryPoint = "lseek", SetLastError = true)] public static partial long LSeek(int fd, long offset, int whence);
    [LibraryImport(Lib, EntryPoint = "fsync", SetLastError = true)] public static partial int FSync(int fd);
    [LibraryImport(Lib, EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Stat(string path, out StatBuf buf);
    [LibraryImport(Lib, EntryPoint = "lstat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int LStat(string path, out StatBuf buf);
    [LibraryImport(Lib, EntryPoint = "fstat", SetLastError = true)] public static partial int FStat(int fd, out StatBuf buf);
    [LibraryImport(Lib, EntryPoint = "chmod", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Chmod(string path, uint mode);
    [LibraryImport(Lib, EntryPoint = "fchmod", SetLastError = true)] public static partial int FChmod(int fd, uint mode);
    [LibraryImport(Lib, EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Chown(string path, uint uid, uint gid);
    [LibraryImport(Lib, EntryPoint = "fchown", SetLastError = true)] public static partial int FChown(int fd, uint uid, uint gid);
    [LibraryImport(Lib, EntryPoint = "truncate", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Truncate(string path, long length);
    [LibraryImport(Lib, EntryPoint = "ftruncate", SetLastError = true)] public static partial int FTruncate(int fd, long length);
    [LibraryImport(Lib, EntryPoint = "utimensat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int UtimensAt(int dirfd, string path, Timespec* times, int flags);
    [LibraryImport(Lib, EntryPoint = "futimens", SetLastError = true)] public static partial int FUtimens(int fd, Timespec* times);
    [LibraryImport(Lib, EntryPoint = "mkdir", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Mkdir(string path, uint mode);
    [LibraryImport(Lib, EntryPoint = "rmdir", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Rmdir(string path);
    [LibraryImport(Lib, EntryPoint = "unlink", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Unlink(string path);
    [LibraryImport(Lib, EntryPoint = "rename", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Rename(string from, string to);
    [LibraryImport(Lib, EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Link(string from, string to);
    [LibraryImport(Lib, EntryPoint = "symlink", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int Symlink(string target, string linkPath);
    [LibraryImport(Lib, EntryPoint = "readlink", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial nint ReadLink(string path, byte* buf, nuint size);
    [LibraryImport(Lib, EntryPoint = "opendir", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial nint OpenDir(string path);
    [LibraryImport(Lib, EntryPoint = "readdir", SetLastError = true)] public static partial byte* ReadDir(nint dir);
    [LibraryImport(Lib, EntryPoint = "closedir", SetLastError = true)] public static partial int CloseDir(nint dir);
    [LibraryImport(Lib, EntryPoint = "statvfs", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)] public static partial int StatVfs(string path, out StatVfsBuf buf);
    [LibraryImport(Lib, EntryPoint = "fstatvfs", SetLastError = true)] public static partial int FStatVfs(int fd, out StatVfsBuf buf);

    /// <summary>Offset of d_name in struct dirent on x86-64 (d_ino 8, d_off 8, d_reclen 2, d_type 1).</summary>
    public const int DirentNameOffset = 19;

    public static string? DirentName(byte* entry)
    {
        if (entry == null) return null;
        return Marshal.PtrToStringUTF8((nint)(entry + DirentNameOffset));
    }

    public static bool WIfExited(int status) => (status & 0x7f) == 0;
    public static int WExitStatus(int status) => (status >> 8) & 0xff;
    public static bool WIfSignaled(int status) => (status & 0x7f) != 0 && (status & 0x7f) != 0x7f;
    public static int WTermSig(int status) => status & 0x7f;

    /// <summary>An argv/envp block: NUL-terminated UTF-8 strings and a NULL-terminated pointer array, in one allocation.</summary>
    public sealed class CStringArray : IDisposable
    {
        private readonly nint[] _strings;
        public readonly byte** Pointer;

        public CStringArray(IReadOnlyList<string> items)
        {
            _strings = new nint[items.Count];
            Pointer = (byte**)NativeMemory.AllocZeroed((nuint)(items.Count + 1), (nuint)sizeof(nint));
            for (int i = 0; i < items.Count; i++)
            {
                _strings[i] = Marshal.StringToCoTaskMemUTF8(items[i]);
                Pointer[i] = (byte*)_strings[i];
            }
        }

        public void Dispose()
        {
            foreach (var s in _strings) Marshal.FreeCoTaskMem(s);
            NativeMemory.Free(Pointer);
        }
    }
}

/// <summary>struct stat on Linux x86-64 (144 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 144)]
internal struct StatBuf
{
    [FieldOffset(0)] public ulong Dev;
    [FieldOffset(8)] public ulong Ino;
    [FieldOffset(16)] public ulong NLink;
    [FieldOffset(24)] public uint Mode;
    [FieldOffset(28)] public uint Uid;
    [FieldOffset(32)] public uint Gid;
    [FieldOffset(48)] public long Size;
    [FieldOffset(72)] public long ATimeSec;
    [FieldOffset(88)] public long MTimeSec;

    public const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000;
    public readonly bool IsDirectory => (Mode & S_IFMT) == S_IFDIR;
}

/// <summary>struct statvfs on Linux x86-64 (112 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 112)]
internal struct StatVfsBuf
{
    [FieldOffset(0)] public ulong BSize;
    [FieldOffset(8)] public ulong FrSize;
    [FieldOffset(16)] public ulong Blocks;
    [FieldOffset(24)] public ulong BFree;
    [FieldOffset(32)] public ulong BAvail;
    [FieldOffset(40)] public ulong Files;
    [FieldOffset(48)] public ulong FFree;
    [FieldOffset(56)] public ulong FAvail;
    [FieldOffset(64)] public ulong Fsid;
    [FieldOffset(72)] public ulong Flag;
    [FieldOffset(80)] public ulong NameMax;
}

/// <summary>struct rlimit (&lt;sys/resource.h&gt;).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RLimit
{
    public ulong Current;
    public ulong Maximum;
}

/// <summary>struct pollfd (&lt;sys/poll.h&gt;).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PollFd
{
    public int Fd;
    public short Events;
    public short REvents;
}

/// <summary>struct winsize (&lt;asm-generic/termios.h&gt;).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct WinSize
{
    public ushort Rows;
    public ushort Columns;
    public ushort XPixels;
    public ushort YPixels;
}

[StructLayout(LayoutKind.Sequential)]
internal struct Timespec
{
    public long Sec;
    public long Nsec;
}
