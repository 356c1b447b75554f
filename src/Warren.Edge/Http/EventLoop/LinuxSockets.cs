using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// The few libc calls the event loop makes itself (socket, epoll, send/recv on non-blocking descriptors), so that
/// a request costs system calls only — no SocketAsyncEventArgs, no pipes. Linux only (x64 and arm64).
/// </summary>
internal static unsafe class LinuxSockets
{
    private const string Libc = "libc";

    public const int AF_INET = 2, AF_INET6 = 10;
    public const int SOCK_STREAM = 1, SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1, SO_REUSEADDR = 2, SO_ERROR = 4, SO_REUSEPORT = 15;
    public const int IPPROTO_TCP = 6, TCP_NODELAY = 1, IPPROTO_IPV6 = 41, IPV6_V6ONLY = 26;
    public const int EAGAIN = 11, EINTR = 4, EINPROGRESS = 115;
    public const int MSG_NOSIGNAL = 0x4000, MSG_PEEK = 0x2, MSG_DONTWAIT = 0x40;
    public const int EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2;
    public const uint EPOLLIN = 0x1, EPOLLOUT = 0x4, EPOLLERR = 0x8, EPOLLHUP = 0x10, EPOLLRDHUP = 0x2000, EPOLLET = 1u << 31;
    private const int F_GETFL = 3, F_SETFL = 4, O_NONBLOCK = 0x800;

    /// <summary>Bytes per <c>struct epoll_event</c>: packed (12) on x86-64, naturally aligned (16) elsewhere.</summary>
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    public static bool IsSupported =>
        OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64;

    [DllImport(Libc, SetLastError = true)] private static extern int socket(int domain, int type, int protocol);
    [DllImport(Libc, SetLastError = true)] private static extern int setsockopt(int fd, int level, int name, void* value, int length);
    [DllImport(Libc, SetLastError = true)] private static extern int getsockopt(int fd, int level, int name, void* value, int* length);
    [DllImport(Libc, SetLastError = true)] private static extern int bind(int fd, byte* address, int length);
    [DllImport(Libc, SetLastError = true)] private static extern int listen(int fd, int backlog);
    [DllImport(Libc, SetLastError = true)] private static extern int accept4(int fd, byte* address, int* length, int flags);
    [DllImport(Libc, SetLastError = true)] private static extern int connect(int fd, byte* address, int length);
    [DllImport(Libc, SetLastError = true)] private static extern int getsockname(int fd, byte* address, int* length);
    [DllImport(Libc, SetLastError = true)] private static extern int fcntl(int fd, int command, int argument);
    [DllImport(Libc, SetLastError = true)] private static extern int close(int fd);
    [DllImport(Libc, SetLastError = true)] private static extern nint send(int fd, byte* buffer, nint length, int flags);
    [DllImport(Libc, SetLastError = true)] private static extern nint recv(int fd, byte* buffer, nint length, int flags);
    [DllImport(Libc, SetLastError = true)] private static extern int epoll_create1(int flags);
    [DllImport(Libc, SetLastError = true)] private static extern int epoll_ctl(int epoll, int operation, int fd, byte* ev);
    [DllImport(Libc, SetLastError = true)] private static extern int epoll_wait(int epoll, byte* events, int max, int timeoutMs);
    [DllImport(Libc, SetLastError = true)] private static extern int eventfd(uint initial, int flags);
    [DllImport(Libc, SetLastError = true)] private static extern nint write(int fd, byte* buffer, nint length);
    [DllImport(Libc, SetLastError = true)] private static extern nint read(int fd, byte* buffer, nint length);

    private static int Errno => Marshal.GetLastPInvokeError();

    private static SocketException Failure(string what) =>
        new(Errno is var errno and > 0 ? (int)SocketPalErrors.From(errno) : (int)SocketError.SocketError, $"{what} failed (errno {Errno})");

    /// <summary>A non-blocking listening socket on <paramref name="endpoint"/>; with <paramref name="reusePort"/> several
    /// loops listen on the same port and the kernel spreads connections over them.</summary>
    public static SafeDescriptor Listen(IPEndPoint endpoint, int backlog, bool reusePort)
    {
        int fd = socket(endpoint.AddressFamily == AddressFamily.InterNetworkV6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            throw Failure("socket");
        try
        {
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(int));
            if (reusePort && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(int)) != 0)
                throw Failure("SO_REUSEPORT");
            if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
            {
                // [::] means IPv6 only, as Kestrel binds it (IPv4 is a listener of its own).
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(int));
            }
            byte* address = stackalloc byte[28];
            int length = Write(endpoint, address);
            if (bind(fd, address, length) != 0)
                throw Failure($"bind {endpoint}");
            if (listen(fd, backlog) != 0)
                throw Failure("listen");
            return new SafeDescriptor(fd);
        }
        catch
        {
            close(fd);
            throw;
        }
    }

    /// <summary>
    /// The next pending connection (non-blocking, TCP_NODELAY) in <paramref name="accepted"/>, or why there is none:
    /// none waiting; that one failed before it was taken (the next may be fine); or the process or system is out of
    /// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM: accepting again at once would only spin).
    /// </summary>
    public static AcceptResult Accept(SafeDescriptor listener, out SafeDescriptor? accepted, out IPEndPoint? remote)
    {
        byte* address = stackalloc byte[28];
        int length = 28;
        accepted = null;
        remote = null;
        bool added = false;
        try
        {
            listener.DangerousAddRef(ref added);
            while (true)
            {
                int fd = accept4(listener.Number, address, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0)
                {
                    accepted = new SafeDescriptor(fd);
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int));
                    remote = Read(address);
                    return AcceptResult.Accepted;
                }
                int errno = Errno;
                if (errno == EINTR)
                    continue;
                return errno switch
                {
                    EAGAIN => AcceptResult.NoneWaiting,
                    24 or 23 or 105 or 12 => AcceptResult.Exhausted,
                    _ => AcceptResult.Failed, // ECONNABORTED, EPROTO, …: that connection is gone
                };
            }
        }
        finally
        {
            if (added)
                listener.DangerousRelease();
        }
    }

    /// <summary>Starts a non-blocking connect; <paramref name="pending"/> when the result comes later (EPOLLOUT, then <see cref="TakeError"/>).</summary>
    public static SafeDescriptor StartConnect(IPEndPoint endpoint, out bool pending)
    {
        int fd = socket(endpoint.AddressFamily == AddressFamily.InterNetworkV6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            throw Failure("socket");
        var descriptor = new SafeDescriptor(fd);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int));
        byte* address = stackalloc byte[28];
        int length = Write(endpoint, address);
        pending = false;
        if (connect(fd, address, length) == 0)
            return descriptor;
        if (Errno is EINPROGRESS or EINTR)
        {
            pending = true;
            return descriptor;
        }
        var failure = Failure($"connect {endpoint}");
        descriptor.Dispose();
        throw failure;
    }

    /// <summary>SO_ERROR: 0 when a pending connect succeeded.</summary>
    private static int TakeError(int fd)
    {
        int error = 0, length = sizeof(int);
        return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 ? error : Errno;
    }

    private static IPEndPoint? LocalEndPoint(int fd)
    {
        byte* address = stackalloc byte[28];
        int length = 28;
        return getsockname(fd, address, &length) == 0 ? Read(address) : null;
    }

    /// <summary>Bytes sent, 0 when the socket buffer is full (wait for EPOLLOUT), -1 when the connection is gone.</summary>
    private static int Send(int fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            while (true)
            {
                nint n = send(fd, p, data.Length, MSG_NOSIGNAL);
                if (n >= 0)
                    return (int)n;
                int errno = Errno;
                if (errno == EINTR)
                    continue;
                return errno == EAGAIN ? 0 : -1;
            }
        }
    }

    /// <summary>Bytes received; 0 at end of stream; -1 when nothing is waiting (EAGAIN); -2 when the connection failed.</summary>
    internal static int Receive(int fd, Span<byte> into)
    {
        fixed (byte* p = into)
        {
            while (true)
            {
                nint n = recv(fd, p, into.Length, 0);
                if (n >= 0)
                    return (int)n;
                int errno = Errno;
                if (errno == EINTR)
                    continue;
                return errno == EAGAIN ? -1 : -2;
            }
        }
    }

    /// <summary>
    /// Whether an idle connection is still clean: -1 when nothing is waiting (EAGAIN), else what a receive would
    /// return (0 at end of stream, bytes waiting, -2 for an error) — nothing is consumed (MSG_PEEK).
    /// </summary>
    private static int Peek(int fd)
    {
        byte probe;
        while (true)
        {
            nint n = recv(fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n >= 0)
                return (int)n;
            int errno = Errno;
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? -1 : -2;
        }
    }

    /// <summary>close(2), for <see cref="SafeDescriptor"/> alone (which calls it once).</summary>
    internal static int CloseDescriptor(int fd) => close(fd);

    /// <summary>SO_ERROR: 0 when a pending connect succeeded.</summary>
    public static int TakeError(SafeDescriptor fd)
    {
        bool added = false;
        try { fd.DangerousAddRef(ref added); return TakeError(fd.Number); }
        finally { if (added) fd.DangerousRelease(); }
    }

    public static IPEndPoint? LocalEndPoint(SafeDescriptor fd)
    {
        bool added = false;
        try { fd.DangerousAddRef(ref added); return LocalEndPoint(fd.Number); }
        finally { if (added) fd.DangerousRelease(); }
    }

    /// <summary>Bytes sent, 0 when the socket buffer is full (wait for EPOLLOUT), -1 when the connection is gone.</summary>
    public static int Send(SafeDescriptor fd, ReadOnlySpan<byte> data)
    {
        bool added = false;
        try { fd.DangerousAddRef(ref added); return Send(fd.Number, data); }
        finally { if (added) fd.DangerousRelease(); }
    }

    /// <summary>Bytes received; 0 at end of stream; -1 when nothing is waiting (EAGAIN); -2 when the connection failed.</summary>
    public static int Receive(SafeDescriptor fd, Span<byte> into)
    {
        bool added = false;
        try { fd.DangerousAddRef(ref added); return Receive(fd.Number, into); }
        finally { if (added) fd.DangerousRelease(); }
    }

    /// <summary>As <see cref="Peek(int)"/>: -1 when nothing is waiting, else what a receive would return, nothing consumed.</summary>
    public static int Peek(SafeDescriptor fd)
    {
        bool added = false;
        try { fd.DangerousAddRef(ref added); return Peek(fd.Number); }
        finally { if (added) fd.DangerousRelease(); }
    }

    public static SafeDescriptor CreateEpoll()
    {
        int fd = epoll_create1(0x80000 /* EPOLL_CLOEXEC */);
        return fd >= 0 ? new SafeDescriptor(fd) : throw Failure("epoll_create1");
    }

    /// <summary>Registers <paramref name="fd"/>; its events carry <paramref name="fd"/>'s number.</summary>
    public static void EpollAdd(SafeDescriptor epoll, SafeDescriptor fd, uint events)
    {
        byte* ev = stackalloc byte[16];
        *(uint*)ev = events;
        *(ulong*)(ev + (EpollEventSize == 12 ? 4 : 8)) = (ulong)fd.Number;
        bool addedEpoll = false, addedFd = false;
        try
        {
            epoll.DangerousAddRef(ref addedEpoll);
            fd.DangerousAddRef(ref addedFd);
            if (epoll_ctl(epoll.Number, EPOLL_CTL_ADD, fd.Number, ev) != 0)
                throw Failure("epoll_ctl add");
        }
        finally
        {
            if (addedFd)
                fd.DangerousRelease();
            if (addedEpoll)
                epoll.DangerousRelease();
        }
    }

    public static void EpollRemove(SafeDescriptor epoll, SafeDescriptor fd)
    {
        byte* ev = stackalloc byte[16];
        bool addedEpoll = false, addedFd = false;
        try
        {
            epoll.DangerousAddRef(ref addedEpoll);
            fd.DangerousAddRef(ref addedFd);
            epoll_ctl(epoll.Number, EPOLL_CTL_DEL, fd.Number, ev);
        }
        finally
        {
            if (addedFd)
                fd.DangerousRelease();
            if (addedEpoll)
                epoll.DangerousRelease();
        }
    }

    /// <summary>Waits for events into <paramref name="events"/> (<see cref="EpollEventSize"/> bytes each); the count, 0 on timeout or EINTR.</summary>
    public static int EpollWait(SafeDescriptor epoll, byte* events, int max, int timeoutMs)
    {
        bool added = false;
        try
        {
            epoll.DangerousAddRef(ref added);
            int n = epoll_wait(epoll.Number, events, max, timeoutMs);
            return n >= 0 ? n : 0;
        }
        finally
        {
            if (added)
                epoll.DangerousRelease();
        }
    }

    public static uint EventFlags(byte* events, int index) => *(uint*)(events + index * EpollEventSize);

    public static ulong EventData(byte* events, int index) => *(ulong*)(events + index * EpollEventSize + (EpollEventSize == 12 ? 4 : 8));

    public static SafeDescriptor CreateEventFd()
    {
        int fd = eventfd(0, 0x800 | 0x80000 /* EFD_NONBLOCK | EFD_CLOEXEC */);
        return fd >= 0 ? new SafeDescriptor(fd) : throw Failure("eventfd");
    }

    /// <summary>Wakes the loop waiting on <paramref name="eventFd"/> (any thread; a closed one is ignored: its loop has ended).</summary>
    public static void Signal(SafeDescriptor eventFd)
    {
        bool added = false;
        try
        {
            eventFd.DangerousAddRef(ref added);
            ulong one = 1;
            write(eventFd.Number, (byte*)&one, 8);
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (added)
                eventFd.DangerousRelease();
        }
    }

    public static void Drain(SafeDescriptor eventFd)
    {
        bool added = false;
        try
        {
            eventFd.DangerousAddRef(ref added);
            ulong value;
            read(eventFd.Number, (byte*)&value, 8);
        }
        finally
        {
            if (added)
                eventFd.DangerousRelease();
        }
    }

    private static int Write(IPEndPoint endpoint, byte* address)
    {
        new Span<byte>(address, 28).Clear();
        int port = endpoint.Port;
        if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
        {
            *(ushort*)address = AF_INET6;
            address[2] = (byte)(port >> 8);
            address[3] = (byte)port;
            endpoint.Address.TryWriteBytes(new Span<byte>(address + 8, 16), out _);
            *(uint*)(address + 24) = (uint)endpoint.Address.ScopeId;
            return 28;
        }
        *(ushort*)address = AF_INET;
        address[2] = (byte)(port >> 8);
        address[3] = (byte)port;
        endpoint.Address.TryWriteBytes(new Span<byte>(address + 4, 4), out _);
        return 16;
    }

    private static IPEndPoint? Read(byte* address)
    {
        int family = *(ushort*)address;
        int port = address[2] << 8 | address[3];
        if (family == AF_INET)
            return new IPEndPoint(new IPAddress(new ReadOnlySpan<byte>(address + 4, 4)), port);
        if (family == AF_INET6)
        {
            var ip = new IPAddress(new ReadOnlySpan<byte>(address + 8, 16), *(uint*)(address + 24));
            return new IPEndPoint(ip.IsIPv4MappedToIPv6 ? ip.MapToIPv4() : ip, port);
        }
        return null;
    }

    /// <summary>errno → SocketError for the few that matter in messages; the rest stay generic.</summary>
    private static class SocketPalErrors
    {
        public static SocketError From(int errno) => errno switch
        {
            98 => SocketError.AddressAlreadyInUse,
            99 => SocketError.AddressNotAvailable,
            111 => SocketError.ConnectionRefused,
            113 => SocketError.HostUnreachable,
            101 => SocketError.NetworkUnreachable,
            13 => SocketError.AccessDenied,
            24 => SocketError.TooManyOpenSockets,
            _ => SocketError.SocketError,
        };
    }
}

/// <summary>What <see cref="LinuxSockets.Accept"/> found.</summary>
internal enum AcceptResult
{
    Accepted,
    /// <summary>EAGAIN: nothing queued.</summary>
    NoneWaiting,
    /// <summary>That connection failed before it was taken; the next may be fine.</summary>
    Failed,
    /// <summary>Out of descriptors or memory: the connection stays queued.</summary>
    Exhausted,
}
