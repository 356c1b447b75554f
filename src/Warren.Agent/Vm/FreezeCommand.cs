using Warren.Agent.Native;

namespace Warren.Agent.Vm;

/// <summary>
/// <c>freeze [MOUNTPOINT…]</c> and <c>thaw [MOUNTPOINT…]</c> (default <c>/</c> and <c>/data</c>): the FIFREEZE and FITHAW
/// ioctls (what fsfreeze(8) does; Linux Documentation/filesystems/vfs "freeze_fs"): the filesystem is flushed and new
/// writes block until thawed, so the host can take a point-in-time copy of the disks that is clean, not merely
/// crash-consistent. Freezing goes in the given order and thawing in the reverse; a mount point already in the wanted
/// state (EBUSY from FIFREEZE, EINVAL from FITHAW) counts as done, so a repeated thaw after a failed copy is harmless.
/// </summary>
internal static class FreezeCommand
{
    /// <summary>_IOWR('X', 119, int) and _IOWR('X', 120, int) in &lt;linux/fs.h&gt;.</summary>
    private const nuint FIFREEZE = 0xC0045877;
    private const nuint FITHAW = 0xC0045878;
    private const int EBUSY = 16, EINVAL = 22;

    public static int Freeze(string[] args)
    {
        var mountPoints = args.Length > 0 ? args : ["/", "/data"];
        foreach (var mountPoint in mountPoints)
        {
            if (Ioctl(mountPoint, FIFREEZE, EBUSY)) continue;
            // Leave nothing half-frozen: a guest stuck with a frozen root would hang every writer.
            foreach (var frozen in mountPoints.TakeWhile(m => m != mountPoint).Reverse()) Ioctl(frozen, FITHAW, EINVAL);
            return 1;
        }
        return 0;
    }

    public static int Thaw(string[] args)
    {
        var mountPoints = args.Length > 0 ? args : ["/", "/data"];
        int failures = 0;
        foreach (var mountPoint in mountPoints.Reverse())
            if (!Ioctl(mountPoint, FITHAW, EINVAL)) failures++;
        return failures == 0 ? 0 : 1;
    }

    private static bool Ioctl(string mountPoint, nuint request, int alreadyErrno)
    {
        int fd = Libc.Open(mountPoint, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            Console.Error.Write($"warren-agent: {mountPoint}: open failed (errno {Libc.Errno})\n");
            return false;
        }
        try
        {
            if (Libc.IoctlArg(fd, request, 0) == 0) return true;
            int errno = Libc.Errno;
            if (errno == alreadyErrno) return true;
            Console.Error.Write($"warren-agent: {mountPoint}: {(request == FIFREEZE ? "freeze" : "thaw")} failed (errno {errno})\n");
            return false;
        }
        finally
        {
            Libc.Close(fd);
        }
    }
}
