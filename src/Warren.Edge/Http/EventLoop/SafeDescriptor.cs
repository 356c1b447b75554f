using Microsoft.Win32.SafeHandles;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// A Linux file descriptor the event loop owns (a socket, the epoll instance, the wake-up eventfd), closed exactly
/// once. A descriptor number is reused by the kernel as soon as it is closed, so a second close(2) of a stale
/// number closes someone else's file; a SafeHandle closes once, and not while a call on another thread still
/// holds it (<see cref="SafeHandle.DangerousAddRef"/>, which every <see cref="LinuxSockets"/> call takes).
/// </summary>
internal sealed class SafeDescriptor : SafeHandleMinusOneIsInvalid
{
    public SafeDescriptor(int fd) : base(ownsHandle: true)
    {
        SetHandle(fd);
        Number = fd;
    }

    /// <summary>
    /// The descriptor's number while it is open: the key of the loop's owner table and of epoll events. Never
    /// passed to a system call after the handle is closed (the loop forgets it first).
    /// </summary>
    public int Number { get; }

    /// <summary>
    /// Gives the descriptor to a <see cref="System.Net.Sockets.Socket"/> (Kestrel's side of a hand-off), which
    /// closes it from then on; this handle no longer does.
    /// </summary>
    public System.Net.Sockets.Socket TransferToSocket()
    {
        var socket = new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(handle, ownsHandle: true));
        SetHandleAsInvalid();
        return socket;
    }

    protected override bool ReleaseHandle() => LinuxSockets.CloseDescriptor((int)handle) == 0;
}
