using System.Runtime.InteropServices;
using Warren.Agent.Native;

namespace Warren.Agent.Serve;

/// <summary>
/// An eventfd that, once set, stays readable: every poll() that includes it returns, now and later. A session
/// sets it when it is over, to wake its threads wherever they wait (a blocking read() cannot be woken; a poll() can).
/// </summary>
internal sealed unsafe class WakeEvent : IDisposable
{
    private volatile bool _set;

    public int Fd { get; }

    public WakeEvent()
    {
        Fd = Libc.EventFd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (Fd < 0) throw new IOException($"eventfd: errno {Libc.Errno}");
    }

    public bool IsSet => _set;

    public void Set()
    {
        _set = true;
        ulong one = 1;
        Libc.Write(Fd, (byte*)&one, sizeof(ulong));
    }

    public void Dispose() => Libc.Close(Fd);
}

/// <summary>How a write of session input ended.</summary>
internal enum WriteOutcome
{
    /// <summary>Everything was written.</summary>
    Written,
    /// <summary>The reader is gone (EPIPE, EIO, reset): further input for it is discarded.</summary>
    TargetGone,
    /// <summary>The host hung up while the target was not reading.</summary>
    HostGone,
    /// <summary>The session ended while the target was not reading.</summary>
    Cancelled,
}

/// <summary>Raw descriptor I/O for sessions: our ends are O_NONBLOCK, and waits are poll()s that a <see cref="WakeEvent"/> can end.</summary>
internal static unsafe class FdIo
{
    /// <summary>
    /// Capacity a session pipe grows to (F_SETPIPE_SZ) once it is seen full: a whole frame fits, and bulk transfers
    /// ran about 1.8 times faster than with the default 64 KiB. Pipes grow only then, not at creation, because pipe
    /// pages are accounted per uid (for root in a container without a user namespace: the host's root), and past
    /// pipe-user-pages-soft every new pipe of an unprivileged process shrinks to two pages.
    /// </summary>
    public const int GrownPipeBytes = Frame.MaxPayload;

    /// <summary>The kernel's default pipe capacity: a read of this much found the pipe full.</summary>
    public const int DefaultPipeBytes = 64 * 1024;

    /// <summary>Best effort: a pipe that stays small only costs speed.</summary>
    public static void GrowPipe(int fd) => Libc.Fcntl(fd, Libc.F_SETPIPE_SZ, GrownPipeBytes);

    public static void SetNonBlocking(int fd)
    {
        int flags = Libc.Fcntl(fd, Libc.F_GETFL, 0);
        if (flags >= 0) Libc.Fcntl(fd, Libc.F_SETFL, flags | Libc.O_NONBLOCK);
    }

    /// <summary>A pipe with both ends O_CLOEXEC: only the dup2'ed copy reaches a child.</summary>
    public static (int Read, int Write) Pipe()
    {
        int* fds = stackalloc int[2];
        if (Libc.Pipe2(fds, Libc.O_CLOEXEC) != 0) throw new IOException($"pipe2: errno {Libc.Errno}");
        return (fds[0], fds[1]);
    }

    public static void CloseIfOpen(ref int fd)
    {
        if (fd >= 0) Libc.Close(fd);
        fd = -1;
    }

    /// <summary>Waits until <paramref name="fd"/> is readable (or hung up); false on timeout.</summary>
    public static bool WaitReadable(int fd, int timeoutMs)
    {
        var p = new PollFd { Fd = fd, Events = Libc.POLLIN };
        while (true)
        {
            int rc = Libc.Poll(&p, 1, timeoutMs);
            if (rc >= 0) return rc > 0;
            if (Libc.Errno != Libc.EINTR) return true; // let the read report the problem
        }
    }

    /// <summary>
    /// Writes all of <paramref name="data"/> to the non-blocking <paramref name="fd"/>. While the target is full it
    /// polls it together with the host socket (hang-up) and <paramref name="cancel"/>, so a command that never
    /// reads its input cannot pin the session once the host or the session is gone.
    /// </summary>
    public static WriteOutcome WriteAll(int fd, ReadOnlySpan<byte> data, int hostSocketFd, WakeEvent cancel)
    {
        bool notAPipe = false;
        return WriteAll(fd, data, hostSocketFd, cancel, ref notAPipe);
    }

    /// <summary>As above, for a pipe: the first time it is full (while <paramref name="mayGrowPipe"/>) it is grown instead of waited on.</summary>
    public static WriteOutcome WriteAll(int fd, ReadOnlySpan<byte> data, int hostSocketFd, WakeEvent cancel, ref bool mayGrowPipe)
    {
        PollFd* fds = stackalloc PollFd[3];
        fixed (byte* start = data)
        {
            byte* p = start;
            nint left = data.Length;
            while (left > 0)
            {
                nint n = Libc.Write(fd, p, (nuint)left);
                if (n > 0) { p += n; left -= n; continue; }
                int errno = Libc.Errno;
                if (n < 0 && errno == Libc.EINTR) continue;
                if (n < 0 && errno != Libc.EAGAIN) return WriteOutcome.TargetGone;
                if (mayGrowPipe)
                {
                    mayGrowPipe = false;
                    GrowPipe(fd);
                    continue;
                }
                fds[0] = new PollFd { Fd = fd, Events = Libc.POLLOUT };
                fds[1] = new PollFd { Fd = hostSocketFd, Events = Libc.POLLRDHUP };
                fds[2] = new PollFd { Fd = cancel.Fd, Events = Libc.POLLIN };
                if (Libc.Poll(fds, 3, -1) < 0) continue; // EINTR
                if (fds[2].REvents != 0) return WriteOutcome.Cancelled;
                if (fds[1].REvents != 0) return WriteOutcome.HostGone;
                // POLLOUT, or POLLERR/POLLHUP: the next write says which.
            }
        }
        return WriteOutcome.Written;
    }
}

/// <summary>A pseudo-terminal: the master (O_NONBLOCK, kept by serve) and the slave (given to the child, then closed here).</summary>
internal sealed unsafe class Pty : IDisposable
{
    private int _master = -1, _slave = -1;

    public int Master => _master;
    public int Slave => _slave;

    public Pty(uint columns, uint rows)
    {
        _master = Libc.Open("/dev/ptmx", Libc.O_RDWR | Libc.O_NOCTTY | Libc.O_CLOEXEC | Libc.O_NONBLOCK, 0);
        if (_master < 0) throw new IOException($"/dev/ptmx: errno {Libc.Errno}");
        try
        {
            int unlock = 0;
            if (Libc.IoctlArg(_master, Libc.TIOCSPTLCK, (nint)(&unlock)) != 0) throw new IOException($"unlockpt: errno {Libc.Errno}");
            _slave = Libc.IoctlArg(_master, Libc.TIOCGPTPEER, Libc.O_RDWR | Libc.O_NOCTTY | Libc.O_CLOEXEC);
            if (_slave < 0)
            {
                // Kernels before 4.13: by name.
                int number;
                if (Libc.IoctlArg(_master, Libc.TIOCGPTN, (nint)(&number)) != 0) throw new IOException($"ptsname: errno {Libc.Errno}");
                _slave = Libc.Open($"/dev/pts/{number}", Libc.O_RDWR | Libc.O_NOCTTY | Libc.O_CLOEXEC, 0);
                if (_slave < 0) throw new IOException($"/dev/pts/{number}: errno {Libc.Errno}");
            }
            if (columns != 0 || rows != 0) Resize(columns, rows);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>TIOCSWINSZ on the master (the kernel sends SIGWINCH to the foreground process group).</summary>
    public void Resize(uint columns, uint rows)
    {
        var size = new WinSize { Columns = (ushort)Math.Min(columns, ushort.MaxValue), Rows = (ushort)Math.Min(rows, ushort.MaxValue) };
        Libc.Ioctl(_master, Libc.TIOCSWINSZ, &size);
    }

    /// <summary>After the spawn: only the child may hold the slave, or the master never reports EIO when it ends.</summary>
    public void CloseSlave() => FdIo.CloseIfOpen(ref _slave);

    public void Dispose()
    {
        FdIo.CloseIfOpen(ref _slave);
        FdIo.CloseIfOpen(ref _master);
    }
}

/// <summary>
/// Copies one source (stdout or stderr pipe, pty master, TCP socket) to the host as frames of one type, on its
/// own thread. Reads go straight into a native buffer behind a reserved header, so each read becomes exactly
/// one send. Ends at EOF (EIO on a pty master), at a read error, when the host is gone, or on the session's
/// cancel event; with a drain trigger (pty) it also ends once the trigger fired and the source was quiet for
/// <see cref="PtyDrainQuietMs"/> ms.
/// </summary>
internal sealed unsafe class OutputPump
{
    /// <summary>After the command exited, a pty whose slave is still held by someone else is read until this long without data.</summary>
    public const int PtyDrainQuietMs = 200;

    private readonly int _fd;
    private readonly byte _frameType;
    private readonly FrameWriter _writer;
    private readonly WakeEvent _cancel;
    private readonly WakeEvent? _drainTrigger;
    private bool _mayGrowPipe;

    /// <param name="growPipeWhenFull">The source is a pipe to grow (<see cref="FdIo.GrownPipeBytes"/>) once a read finds it full.</param>
    public OutputPump(int fd, byte frameType, FrameWriter writer, WakeEvent cancel, WakeEvent? drainTrigger = null, bool growPipeWhenFull = false)
    {
        _mayGrowPipe = growPipeWhenFull;
        _fd = fd;
        _frameType = frameType;
        _writer = writer;
        _cancel = cancel;
        _drainTrigger = drainTrigger;
    }

    /// <summary>True when the source reached its end (EOF, or EIO on a pty) rather than being abandoned.</summary>
    public bool ReachedEof { get; private set; }

    public void Run()
    {
        byte* frame = (byte*)NativeMemory.Alloc(Frame.HeaderBytes + Frame.MaxPayload);
        try
        {
            byte* payload = frame + Frame.HeaderBytes;
            long drainUntil = 0; // non-zero once draining: the end of the current quiet window
            PollFd* fds = stackalloc PollFd[3];
            while (true)
            {
                nint n = Libc.Read(_fd, payload, Frame.MaxPayload);
                if (n > 0)
                {
                    if (_mayGrowPipe && n >= FdIo.DefaultPipeBytes)
                    {
                        _mayGrowPipe = false;
                        FdIo.GrowPipe(_fd);
                    }
                    if (!_writer.SendInPlace(frame, _frameType, (int)n)) return;
                    if (drainUntil != 0) drainUntil = Environment.TickCount64 + PtyDrainQuietMs;
                    continue;
                }
                int errno = Libc.Errno;
                if (n == 0 || errno == Libc.EIO) { ReachedEof = true; return; }
                if (errno == Libc.EINTR) continue;
                if (errno != Libc.EAGAIN) return;

                fds[0] = new PollFd { Fd = _fd, Events = Libc.POLLIN };
                fds[1] = new PollFd { Fd = _cancel.Fd, Events = Libc.POLLIN };
                // Poll the trigger only until it fired: it stays readable.
                fds[2] = new PollFd { Fd = _drainTrigger != null && drainUntil == 0 ? _drainTrigger.Fd : -1, Events = Libc.POLLIN };
                int timeout = drainUntil == 0 ? -1 : (int)Math.Max(0, drainUntil - Environment.TickCount64);
                int rc = Libc.Poll(fds, 3, timeout);
                if (rc < 0) continue; // EINTR
                if (fds[1].REvents != 0) return;
                if (rc == 0) { ReachedEof = true; return; } // quiet for the whole drain window
                if (fds[2].REvents != 0) drainUntil = Environment.TickCount64 + PtyDrainQuietMs;
            }
        }
        finally
        {
            NativeMemory.Free(frame);
        }
    }
}
