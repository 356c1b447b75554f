using System.Globalization;
using System.Text;
using Warren.Runtime.HostNetwork;

namespace Warren.Runtime.Docker;

/// <summary>
/// VM disks as files: <c>&lt;dir&gt;/&lt;vmId&gt;.ext4</c>, a sparse ext4 image of the VM's disk size (only written
/// blocks take host space), loop-mounted at <c>&lt;dir&gt;/&lt;vmId&gt;.mnt</c>, which the container bind-mounts at /data:
/// a VM cannot write past its size (ENOSPC), whatever the engine's storage driver. Host tools: mke2fs, mount/umount,
/// losetup, resize2fs (e2fsprogs, util-linux, mount) and chattr.
/// <para>Crash safety: an image is built as <c>.partial</c> and renamed when complete, so an interrupted create leaves
/// only a file <see cref="RemovePartials"/> deletes. The mount point directory is made immutable (chattr +i, where the
/// host filesystem supports it) while nothing is mounted on it, so a container the engine starts before the image is
/// mounted (host reboot: the restart policy runs before Warren) gets a /data it cannot write to, rather than writing to
/// the host's disk unbounded.</para>
/// </summary>
internal sealed class VmDiskImages(string directory)
{
    private const string ImageSuffix = ".ext4";
    private const string PartialSuffix = ".ext4.partial";
    private const string MountSuffix = ".mnt";

    /// <summary>
    /// mke2fs: no blocks reserved for root (-m 0: the VM's root would otherwise get space its users cannot use);
    /// lazy inode table and journal initialisation so making a large image writes almost nothing now.
    /// </summary>
    private static readonly string[] MakeFsArgs = ["-t", "ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"];

    /// <summary>nodev: device nodes on a VM's disk mean nothing on the host; the VM's own root stays root on /data.</summary>
    private const string MountOptions = "loop,nodev";

    /// <summary>Smallest disk image: ext4 with a journal needs a few MiB to be useful.</summary>
    public const long MinimumBytes = 16L * 1024 * 1024;

    public string Directory => directory;

    public string ImagePath(string vmId) => Path.Combine(directory, vmId + ImageSuffix);

    public string MountPath(string vmId) => Path.Combine(directory, vmId + MountSuffix);

    private string PartialPath(string vmId) => Path.Combine(directory, vmId + PartialSuffix);

    public bool Exists(string vmId) => File.Exists(ImagePath(vmId));

    /// <summary>The image's size (the VM's disk size), or 0 without an image.</summary>
    public long SizeOf(string vmId)
    {
        var file = new FileInfo(ImagePath(vmId));
        return file.Exists ? file.Length : 0;
    }

    /// <summary>The mount point directory (immutable while empty). Made before the container, which bind-mounts it.</summary>
    public async Task PrepareMountPointAsync(string vmId, CancellationToken ct)
    {
        // Loop devices, mount and statfs: VM disk images are a Linux host feature.
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("VM disk images need a Linux host");
        System.IO.Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string mount = MountPath(vmId);
        if (System.IO.Directory.Exists(mount)) return;
        System.IO.Directory.CreateDirectory(mount);
        // Best effort: a data directory on a filesystem without inode flags (FS_IOC_SETFLAGS) still works, only
        // without this guard for the window before start-up remounts.
        await HostCommand.RunAsync("chattr", ["+i", mount], ct: ct);
    }

    /// <summary>Makes the image (when missing) and mounts it (when not mounted). Idempotent.</summary>
    public async Task EnsureAsync(string vmId, long bytes, CancellationToken ct)
    {
        await PrepareMountPointAsync(vmId, ct);
        if (!Exists(vmId) && !OperatingSystem.IsWindows())
        {
            long size = Math.Max(bytes, MinimumBytes);
            string partial = PartialPath(vmId);
            File.Delete(partial);
            using (var file = new FileStream(partial, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.None))
            {
                // Sparse: no block is written until the filesystem uses it.
                file.SetLength(size);
            }
            File.SetUnixFileMode(partial, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            await RunAsync("mke2fs", [.. MakeFsArgs, partial], ct);
            File.Move(partial, ImagePath(vmId));
        }
        await MountAsync(vmId, ct);
    }

    /// <summary>Mounts the image; true when it was not mounted before (a running container needs a restart to see it).</summary>
    public async Task<bool> MountAsync(string vmId, CancellationToken ct)
    {
        string mount = MountPath(vmId);
        if (MountSource(mount) != null) return false;
        await RunAsync("mount", ["-t", "ext4", "-o", MountOptions, ImagePath(vmId), mount], ct);
        // mke2fs makes lost+found; a VM's empty /data should look like an empty volume.
        string lostFound = Path.Combine(mount, "lost+found");
        try
        {
            if (System.IO.Directory.Exists(lostFound) && !System.IO.Directory.EnumerateFileSystemEntries(lostFound).Any()) System.IO.Directory.Delete(lostFound);
        }
        catch (IOException) { }
        return true;
    }

    /// <summary>
    /// Grows the image and its filesystem online: truncate, re-read the loop device's size (losetup -c), resize2fs on
    /// the mounted filesystem. Never shrinks: a smaller size is ignored. Returns the size in force afterwards and
    /// whether the filesystem still needs <see cref="FinishGrowOfflineAsync"/> — online growth is an ext4 ioctl that
    /// needs CAP_SYS_RESOURCE, which a daemon in a restricted container may lack.
    /// </summary>
    public async Task<(long Size, bool NeedsOffline)> GrowAsync(string vmId, long bytes, CancellationToken ct)
    {
        long current = SizeOf(vmId);
        if (current == 0 || bytes <= current) return (current, false);
        await MountAsync(vmId, ct);
        string device = MountSource(MountPath(vmId))
            ?? throw new DockerRuntimeException(DockerRuntimeErrors.DiskFailed, $"disk of VM {vmId} is not mounted");
        using (var file = new FileStream(ImagePath(vmId), FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
            file.SetLength(bytes);
        await RunAsync("losetup", ["-c", device], ct);
        var online = await HostCommand.RunAsync("resize2fs", [device], ct: ct);
        if (online.Ok) return (bytes, false);
        if (online.Message.Contains("Permission denied", StringComparison.Ordinal)) return (bytes, true);
        throw new DockerRuntimeException(DockerRuntimeErrors.DiskFailed, $"VM disk: resize2fs {device} failed: {online.Message}");
    }

    /// <summary>
    /// Grows the filesystem to the (already grown) image with nothing using it: unmount, check (resize2fs insists on a
    /// freshly checked filesystem), resize, mount. The VM must be stopped.
    /// </summary>
    public async Task FinishGrowOfflineAsync(string vmId, CancellationToken ct)
    {
        await UnmountAsync(MountPath(vmId), ct);
        // e2fsck -p exits 1 when it fixed something, which is still a usable filesystem (e2fsck(8) exit codes).
        var check = await HostCommand.RunAsync("e2fsck", ["-f", "-p", ImagePath(vmId)], ct: ct);
        if (check.ExitCode is not (0 or 1))
            throw new DockerRuntimeException(DockerRuntimeErrors.DiskFailed, $"VM disk: e2fsck of {vmId} failed: {check.Message}");
        await RunAsync("resize2fs", [ImagePath(vmId)], ct);
        await MountAsync(vmId, ct);
    }

    /// <summary>Bytes the VM's filesystem uses (statfs: blocks less free blocks), or 0 when not mounted.</summary>
    public long UsedBytes(string vmId)
    {
        string mount = MountPath(vmId);
        if (MountSource(mount) == null) return 0;
        try
        {
            var drive = new DriveInfo(mount);
            return Math.Max(0, drive.TotalSize - drive.TotalFreeSpace);
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>Unmounts and deletes the image and its mount point. Absent is fine.</summary>
    public async Task DeleteAsync(string vmId, CancellationToken ct)
    {
        if (!System.IO.Directory.Exists(directory)) return;
        string mount = MountPath(vmId);
        await UnmountAsync(mount, ct);
        File.Delete(PartialPath(vmId));
        File.Delete(ImagePath(vmId));
        if (System.IO.Directory.Exists(mount))
        {
            await HostCommand.RunAsync("chattr", ["-i", mount], ct: ct);
            System.IO.Directory.Delete(mount);
        }
    }

    /// <summary>Deletes images an interrupted create left half made.</summary>
    public void RemovePartials()
    {
        if (!System.IO.Directory.Exists(directory)) return;
        foreach (var partial in System.IO.Directory.EnumerateFiles(directory, "*" + PartialSuffix)) File.Delete(partial);
    }

    /// <summary>VM ids with an image or a mount point here.</summary>
    public IReadOnlyCollection<string> VmIds()
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        if (!System.IO.Directory.Exists(directory)) return ids;
        foreach (var entry in System.IO.Directory.EnumerateFileSystemEntries(directory))
        {
            string name = Path.GetFileName(entry);
            if (name.EndsWith(ImageSuffix, StringComparison.Ordinal)) ids.Add(name[..^ImageSuffix.Length]);
            else if (name.EndsWith(MountSuffix, StringComparison.Ordinal)) ids.Add(name[..^MountSuffix.Length]);
        }
        return ids;
    }

    private static async Task UnmountAsync(string mount, CancellationToken ct)
    {
        // The engine may hold the bind mount for a moment after removing the container; then detach lazily.
        const int UnmountAttempts = 10;
        for (int attempt = 1; MountSource(mount) != null; attempt++)
        {
            var result = await HostCommand.RunAsync("umount", attempt < UnmountAttempts ? [mount] : ["-l", mount], ct: ct);
            if (result.Ok) continue;
            if (attempt >= UnmountAttempts)
                throw new DockerRuntimeException(DockerRuntimeErrors.DiskFailed, $"cannot unmount {mount}: {result.Message}");
            await Task.Delay(TimeSpan.FromMilliseconds(100 * attempt), ct);
        }
    }

    /// <summary>The device mounted at <paramref name="mountPoint"/> (from /proc/self/mountinfo, proc(5)), or null.</summary>
    internal static string? MountSource(string mountPoint)
    {
        string target = Path.GetFullPath(mountPoint).TrimEnd('/');
        string? source = null;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue": field 5 is the mount
            // point; after the " - " separator come the type and the source. The last mount on a path wins.
            var fields = line.Split(' ');
            if (fields.Length < 10 || Unescape(fields[4]) != target) continue;
            int dash = Array.IndexOf(fields, "-", 6);
            if (dash > 0 && dash + 2 < fields.Length) source = Unescape(fields[dash + 2]);
        }
        return source;
    }

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo (octal).</summary>
    private static string Unescape(string field)
    {
        if (!field.Contains('\\')) return field;
        var s = new StringBuilder(field.Length);
        for (int i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && i + 3 < field.Length
                && int.TryParse(field.AsSpan(i + 1, 3), NumberStyles.None, CultureInfo.InvariantCulture, out _))
            {
                s.Append((char)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else s.Append(field[i]);
        }
        return s.ToString();
    }

    private static async Task RunAsync(string tool, string[] args, CancellationToken ct)
    {
        var result = await HostCommand.RunAsync(tool, args, ct: ct);
        if (!result.Ok)
            throw new DockerRuntimeException(DockerRuntimeErrors.DiskFailed, $"VM disk: {tool} {string.Join(' ', args)} failed: {result.Message}");
    }
}
