using System.Runtime.InteropServices;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// The read side of a session's socket: an OpenSSL BIO whose read is a non-blocking <c>recv</c> on the fd, as
/// OpenSSL's own socket BIO does, that also records whether the socket was left empty (<see cref="Drained"/>: the
/// last recv returned fewer bytes than asked, or EAGAIN). With edge-triggered epoll that tells the event loop it
/// may wait for the next readiness event instead of spending a system call on the EAGAIN that would say so.
/// </summary>
/// <remarks>
/// Writes keep OpenSSL's socket BIO (or the hand-off's memory BIO). The callbacks run on the thread that called
/// SSL_read/SSL_accept and never throw. Semantics follow crypto/bio/bss_sock.c: EAGAIN sets the retry-read flags,
/// end of stream sets BIO_FLAGS_IN_EOF (which BIO_CTRL_EOF reports, so the record layer can tell a peer that closed
/// from one that has not written yet), other errors leave errno for SSL_get_error's SSL_ERROR_SYSCALL.
/// </remarks>
internal static unsafe class SocketReadBio
{
    private const int BIO_TYPE_DESCRIPTOR = 0x0100, BIO_TYPE_SOURCE_SINK = 0x0400;
    private const int BIO_FLAGS_READ = 0x01, BIO_FLAGS_RWS = 0x07, BIO_FLAGS_SHOULD_RETRY = 0x08, BIO_FLAGS_IN_EOF = 0x800;
    private const int BIO_CTRL_EOF = 2, BIO_CTRL_PUSH = 6, BIO_CTRL_POP = 7, BIO_CTRL_FLUSH = 11, BIO_C_GET_FD = 105;

    /// <summary>Per-session state the callbacks reach through BIO_get_data: native memory, freed with the session.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct State
    {
        public int Fd;
        public int Drained;
    }

    private static readonly nint s_method = CreateMethod();

    private static nint CreateMethod()
    {
        // A type of its own (BIO_get_new_index) that says it is a file descriptor, so SSL_get_rfd still answers.
        nint method = OpenSsl.BIO_meth_new(OpenSsl.BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "warren socket read");
        if (method == 0)
            throw new InvalidOperationException("BIO_meth_new failed: " + OpenSsl.DrainErrors());
        OpenSsl.BIO_meth_set_read(method, &Read);
        OpenSsl.BIO_meth_set_write(method, &Write);
        OpenSsl.BIO_meth_set_ctrl(method, &Ctrl);
        OpenSsl.BIO_meth_set_create(method, &Create);
        return method;
    }

    /// <summary>A new read BIO on <paramref name="fd"/> and the state it writes; the caller frees both (<see cref="FreeState"/> after SSL_free).</summary>
    public static nint Create(int fd, out nint state)
    {
        var s = (State*)NativeMemory.AllocZeroed((nuint)sizeof(State));
        s->Fd = fd;
        nint bio = OpenSsl.BIO_new(s_method);
        if (bio == 0)
        {
            NativeMemory.Free(s);
            throw new InvalidOperationException("BIO_new failed: " + OpenSsl.DrainErrors());
        }
        OpenSsl.BIO_set_data(bio, (nint)s);
        state = (nint)s;
        return bio;
    }

    /// <summary>True when the last read left the socket empty (a later arrival raises a new epoll event).</summary>
    public static bool Drained(nint state) => ((State*)state)->Drained != 0;

    public static void FreeState(nint state) => NativeMemory.Free((void*)state);

    [UnmanagedCallersOnly]
    private static int Read(nint bio, byte* buffer, int length)
    {
        OpenSsl.BIO_clear_flags(bio, BIO_FLAGS_RWS | BIO_FLAGS_SHOULD_RETRY);
        var state = (State*)OpenSsl.BIO_get_data(bio);
        if (state is null || length <= 0)
            return 0;
        int n = LinuxSockets.Receive(state->Fd, new Span<byte>(buffer, length));
        if (n > 0)
        {
            state->Drained = n < length ? 1 : 0;
            return n;
        }
        state->Drained = 1;
        if (n == 0)
        {
            OpenSsl.BIO_set_flags(bio, BIO_FLAGS_IN_EOF);
            return 0;
        }
        if (n == -1)
            OpenSsl.BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY); // EAGAIN: try again later
        return -1;
    }

    [UnmanagedCallersOnly]
    private static int Write(nint bio, byte* buffer, int length) => -1; // the write side is another BIO

    [UnmanagedCallersOnly]
    private static nint Ctrl(nint bio, int command, nint larg, nint parg)
    {
        switch (command)
        {
            case BIO_CTRL_EOF:
                return (OpenSsl.BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0) ? 1 : 0;
            case BIO_CTRL_FLUSH:
                return 1;
            case BIO_C_GET_FD:
                var state = (State*)OpenSsl.BIO_get_data(bio);
                if (state is null)
                    return -1;
                if (parg != 0)
                    *(int*)parg = state->Fd;
                return state->Fd;
            case BIO_CTRL_PUSH:
            case BIO_CTRL_POP:
            default:
                return 0;
        }
    }

    [UnmanagedCallersOnly]
    private static int Create(nint bio)
    {
        OpenSsl.BIO_set_init(bio, 1);
        return 1;
    }
}
