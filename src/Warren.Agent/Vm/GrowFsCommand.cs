using Warren.Agent.Native;

namespace Warren.Agent.Vm;

/// <summary>
/// <c>grow-fs [MOUNTPOINT…]</c> (default <c>/</c> and <c>/data</c>): grows each mounted ext4 filesystem to the size of
/// its disk, online, with the EXT4_IOC_RESIZE_FS ioctl (what resize2fs does on a mounted filesystem; Linux
/// Documentation/filesystems/ext4 "online resize"), so images need no e2fsprogs. The runtime gives a VM disks larger
/// than the image's filesystem, and grows them later (qemu-img resize, QMP block_resize); <c>init --vm</c> runs this at
/// every boot. A filesystem already that size is left alone; shrinking is never attempted (the kernel refuses it).
/// </summary>
internal static class GrowFsCommand
{
    /// <summary>_IOW('f', 16, __u64) in &lt;linux/ext4.h&gt;.</summary>
    private const nuint EXT4_IOC_RESIZE_FS = 0x40086610;
    private const int SectorBytes = 512;

    public static int Run(string[] args)
    {
        var mountPoints = args.Length > 0 ? args : ["/", "/data"];
        int failures = 0;
        foreach (var mountPoint in mountPoints)
            if (!Grow(mountPoint)) failures++;
        return failures == 0 ? 0 : 1;
    }

    public static unsafe bool Grow(string mountPoint)
    {
        string? device = MountedDevice(mountPoint);
        if (device == null || !device.StartsWith("/dev/", StringComparison.Ordinal))
        {
            Log($"{mountPoint}: no block device mounted there");
            return false;
        }
        if (Libc.StatVfs(mountPoint, out var fs) != 0 || fs.BSize == 0)
        {
            Log($"{mountPoint}: statvfs failed (errno {Libc.Errno})");
            return false;
        }
        long sectors;
        try { sectors = long.Parse(File.ReadAllText($"/sys/class/block/{Path.GetFileName(device)}/size").Trim(), System.Globalization.CultureInfo.InvariantCulture); }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            Log($"{mountPoint}: size of {device} unknown ({e.Message})");
            return false;
        }
        ulong blocks = (ulong)(sectors * SectorBytes) / fs.BSize;
        int fd = Libc.Open(mountPoint, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            Log($"{mountPoint}: open failed (errno {Libc.Errno})");
            return false;
        }
        try
        {
            // Same size: the kernel returns at once. Smaller (never asked for): EINVAL.
            if (Libc.IoctlArg(fd, EXT4_IOC_RESIZE_FS, (nint)(&blocks)) != 0)
            {
                Log($"{mountPoint}: resize to {blocks} blocks failed (errno {Libc.Errno})");
                return false;
            }
            return true;
        }
        finally
        {
            Libc.Close(fd);
        }
    }

    /// <summary>The source of the last mount on <paramref name="mountPoint"/> in /proc/self/mounts (the one in effect).</summary>
    private static string? MountedDevice(string mountPoint)
    {
        string? device = null;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/mounts"))
            {
                var fields = line.Split(' ');
                if (fields.Length >= 3 && fields[1] == mountPoint) device = fields[2] == "ext4" ? fields[0] : null;
            }
        }
        catch (IOException) { }
        return device;
    }

    private static void Log(string message) => Console.Error.Write($"warren-agent grow-fs: {message}\n");
}
