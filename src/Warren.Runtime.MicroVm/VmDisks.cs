using System.Globalization;
using Docker.DotNet;
using Docker.DotNet.Models;

namespace Warren.Runtime.MicroVm;

/// <summary>
/// The disks of microVMs, made without loop mounts or root-only tools beyond e2fsprogs and qemu-img:
/// <list type="bullet">
/// <item>once per image id, a read-only base <c>images/&lt;id&gt;.qcow2</c>: <c>docker export</c> of a created (never
///   started) container, unpacked with tar, the mount points the initramfs and agent use added, then
///   <c>mke2fs -t ext4 -L rootfs -d</c> and <c>qemu-img convert -O qcow2</c>;</item>
/// <item>per VM, a qcow2 overlay on that base sized by the VM's disk, a /data disk (ext4 <c>LABEL=data</c>), and a small
///   read-only seed disk (<c>LABEL=warren-seed</c>) holding the agent, the token and the image config, so neither the
///   token nor the agent is ever in the shared base.</item>
/// </list>
/// </summary>
internal sealed class VmDisks(MicroVmRuntimeOptions options, DockerClient docker)
{
    /// <summary>Free space added to an image's files in its base filesystem (the overlay's virtual size is the VM's disk).</summary>
    private const long BaseHeadroomBytes = 256L * 1024 * 1024;
    /// <summary>ext4 metadata and a margin over the files' sizes in the seed disk.</summary>
    private const long SeedHeadroomBytes = 8L * 1024 * 1024;
    private static readonly TimeSpan ExportTimeout = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromMinutes(5);

    /// <summary>Directories the guest mounts over (the initramfs and <c>init --vm</c>); only made when absent at the top level, never through a link.</summary>
    private static readonly string[] MountPoints = [".warren", "data", "proc", "sys", "dev", "run", "tmp"];

    private readonly SemaphoreSlim _baseLock = new(1, 1);
    private readonly SemaphoreSlim _dataTemplateLock = new(1, 1);
    /// <summary>Virtual sizes of image bases (read-only once built: asked of qemu-img once per base, not per VM).</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _baseSizes = new(StringComparer.Ordinal);

    private string ImagesDirectory => Path.Combine(options.DataDirectory, "images");

    public string BasePath(string imageId) => Path.Combine(ImagesDirectory, ImageKey(imageId) + ".qcow2");

    /// <summary>"sha256:abc…" → "sha256-abc…" (the file name of the image's base).</summary>
    private static string ImageKey(string imageId)
    {
        foreach (char c in imageId)
            if (!(char.IsAsciiLetterOrDigit(c) || c == ':' || c == '-' || c == '_')) throw new ArgumentException($"unexpected image id {imageId}");
        return imageId.Replace(':', '-');
    }

    /// <summary>Builds the image's base unless it exists; returns its path and the size of its filesystem.</summary>
    public async Task<string> EnsureBaseAsync(string image, string imageId, CancellationToken ct)
    {
        string path = BasePath(imageId);
        if (File.Exists(path)) return path;
        await _baseLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (File.Exists(path)) return path;
            Directory.CreateDirectory(ImagesDirectory);
            string work = Path.Combine(ImagesDirectory, $"build-{ImageKey(imageId)}-{Guid.NewGuid():N}");
            Directory.CreateDirectory(work, VmLayout.DirectoryMode);
            try
            {
                string tree = Path.Combine(work, "rootfs");
                Directory.CreateDirectory(tree);
                await ExportAsync(image, tree, ct).ConfigureAwait(false);
                foreach (var name in MountPoints)
                {
                    string dir = Path.Combine(tree, name);
                    // The image's own entry wins (a link is left alone: following it could leave the tree).
                    if (!Path.Exists(dir) && new FileInfo(dir).LinkTarget == null) Directory.CreateDirectory(dir);
                }
                long bytes = await DiskUsageAsync(tree, ct).ConfigureAwait(false);
                string raw = Path.Combine(work, "rootfs.img");
                await MakeExt4Async("rootfs", tree, raw, bytes + bytes / 5 + BaseHeadroomBytes, ct).ConfigureAwait(false);
                string temp = path + ".tmp";
                await HostCommand.RunAsync(options.QemuImgPath, ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, temp], ToolTimeout, ct).ConfigureAwait(false);
                File.Move(temp, path, overwrite: true);
                return path;
            }
            finally
            {
                try { Directory.Delete(work, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
        }
        finally
        {
            _baseLock.Release();
        }
    }

    /// <summary><c>docker create</c> + <c>docker export | tar -x</c> (numeric owners, xattrs: setuid bits and capabilities survive).</summary>
    private async Task ExportAsync(string image, string tree, CancellationToken ct)
    {
        var created = await docker.Containers.CreateContainerAsync(new CreateContainerParameters
        {
            Image = image,
            // Never started: the entrypoint only has to exist in the request.
            Entrypoint = ["/.warren/agent"],
            Labels = new Dictionary<string, string> { ["warren.microvm-export"] = "1" },
        }, ct).ConfigureAwait(false);
        try
        {
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
            limit.CancelAfter(ExportTimeout);
            await using var export = await docker.Containers.ExportContainerAsync(created.ID, limit.Token).ConfigureAwait(false);
            await HostCommand.RunAsync("tar", ["-x", "-C", tree, "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f", "-"], ExportTimeout, ct, export).ConfigureAwait(false);
        }
        finally
        {
            await docker.Containers.RemoveContainerAsync(created.ID, new ContainerRemoveParameters { Force = true }, CancellationToken.None).ConfigureAwait(false);
        }
    }

    private static async Task<long> DiskUsageAsync(string tree, CancellationToken ct)
    {
        var output = await HostCommand.RunAsync("du", ["-s", "-B1", "--apparent-size", tree], ToolTimeout, ct).ConfigureAwait(false);
        return long.Parse(output.Split('\t', ' ')[0], CultureInfo.InvariantCulture);
    }

    /// <summary>An ext4 image file of <paramref name="bytes"/> (sparse), filled from <paramref name="tree"/> when given.</summary>
    private async Task MakeExt4Async(string label, string? tree, string file, long bytes, CancellationToken ct)
    {
        long kib = (bytes + 1023) / 1024;
        var args = new List<string> { "-q", "-F", "-t", "ext4", "-L", label, "-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1" };
        if (tree != null) args.AddRange(["-d", tree]);
        args.AddRange([file, kib.ToString(CultureInfo.InvariantCulture) + "K"]);
        await HostCommand.RunAsync(options.Mke2fsPath, args, ToolTimeout, ct).ConfigureAwait(false);
    }

    /// <summary>The VM's root: a qcow2 overlay whose virtual size is the VM's disk (at least the base's).</summary>
    public async Task CreateRootAsync(VmLayout vm, string basePath, long diskBytes, CancellationToken ct)
    {
        if (!_baseSizes.TryGetValue(basePath, out long baseBytes))
            _baseSizes[basePath] = baseBytes = await VirtualSizeAsync(basePath, ct).ConfigureAwait(false);
        long size = Math.Max(diskBytes, baseBytes);
        await HostCommand.RunAsync(options.QemuImgPath,
            ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", basePath, vm.Root, size.ToString(CultureInfo.InvariantCulture)], ToolTimeout, ct).ConfigureAwait(false);
        File.SetUnixFileMode(vm.Root, VmLayout.FileMode);
    }

    /// <summary>
    /// An empty ext4 /data disk, qcow2 (so a copy can later share it as a backing file): a copy of the installation's
    /// empty one of that size (<c>images/data-&lt;bytes&gt;.qcow2</c>, made once by mke2fs and qemu-img: a few MiB of
    /// metadata), so a create runs no tool for it. The copies share the filesystem's UUID, as a copied VM's does; the
    /// guest mounts it by label.
    /// </summary>
    public async Task CreateDataAsync(VmLayout vm, long bytes, CancellationToken ct)
    {
        string template = await EnsureDataTemplateAsync(bytes, ct).ConfigureAwait(false);
        File.Copy(template, vm.Data, overwrite: true);
        File.SetUnixFileMode(vm.Data, VmLayout.FileMode);
    }

    private async Task<string> EnsureDataTemplateAsync(long bytes, CancellationToken ct)
    {
        string path = Path.Combine(ImagesDirectory, "data-" + bytes.ToString(CultureInfo.InvariantCulture) + ".qcow2");
        if (File.Exists(path)) return path;
        await _dataTemplateLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (File.Exists(path)) return path;
            Directory.CreateDirectory(ImagesDirectory);
            string raw = path + ".raw", temp = path + ".tmp";
            try
            {
                await MakeExt4Async("data", null, raw, bytes, ct).ConfigureAwait(false);
                await HostCommand.RunAsync(options.QemuImgPath, ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, temp], ToolTimeout, ct).ConfigureAwait(false);
                File.SetUnixFileMode(temp, VmLayout.FileMode);
                File.Move(temp, path, overwrite: true);
            }
            finally
            {
                File.Delete(raw);
                File.Delete(temp);
            }
            return path;
        }
        finally
        {
            _dataTemplateLock.Release();
        }
    }

    /// <summary>
    /// The seed disk (mounted read-only at /.warren by the initramfs; files read by <c>init --vm</c>, see
    /// src/Warren.Agent/Vm/VmGuest.cs): agent, token, hostname, init-args and env (NUL-separated), workdir, setup, run/.
    /// Written beside and renamed, so a running VM keeps the file it opened.
    /// </summary>
    public async Task WriteSeedAsync(VmLayout vm, VmRecord record, string agentPath, ReadOnlyMemory<byte> token, CancellationToken ct)
    {
        string tree = vm.Seed + ".d";
        string temp = vm.Seed + ".tmp";
        if (Directory.Exists(tree)) Directory.Delete(tree, recursive: true);
        Directory.CreateDirectory(tree, VmLayout.DirectoryMode);
        try
        {
            File.Copy(agentPath, Path.Combine(tree, "agent"));
            File.SetUnixFileMode(Path.Combine(tree, "agent"), UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead
                | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            WriteFile(tree, "token", token.Span, VmLayout.FileMode);
            WriteText(tree, "hostname", record.Name);
            // machine-id(5): 32 lowercase hex digits, unique per system; derived one-way from the VM's own random token,
            // so it is stable across restarts and renames, and a copy (new token) gets a new one.
            WriteText(tree, "machine-id", Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
                [.. "warren machine-id\0"u8, .. token.Span]))[..32]);
            WriteText(tree, "init-args", string.Join('\0', record.InitArgs));
            WriteText(tree, "env", string.Join('\0', record.Env));
            if (!string.IsNullOrEmpty(record.WorkingDirectory)) WriteText(tree, "workdir", record.WorkingDirectory);
            if (record.SetupScript != null) WriteText(tree, "setup", record.SetupScript);
            Directory.CreateDirectory(Path.Combine(tree, "run"));
            long bytes = new DirectoryInfo(tree).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
            await MakeExt4Async("warren-seed", tree, temp, bytes + SeedHeadroomBytes, ct).ConfigureAwait(false);
            File.SetUnixFileMode(temp, VmLayout.FileMode);
            File.Move(temp, vm.Seed, overwrite: true);
        }
        finally
        {
            Directory.Delete(tree, recursive: true);
            File.Delete(temp);
        }
    }

    private static void WriteText(string dir, string name, string text) =>
        WriteFile(dir, name, System.Text.Encoding.UTF8.GetBytes(text), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

    private static void WriteFile(string dir, string name, ReadOnlySpan<byte> content, UnixFileMode mode)
    {
        using var file = new FileStream(Path.Combine(dir, name), new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = mode });
        file.Write(content);
    }

    /// <summary>A stopped VM's root for a copy: a new overlay on the same base holding only what differs from it.</summary>
    public async Task CopyRootAsync(VmLayout source, VmLayout target, string basePath, CancellationToken ct)
    {
        await HostCommand.RunAsync(options.QemuImgPath,
            ["convert", "-q", "-f", "qcow2", "-O", "qcow2", "-B", basePath, "-F", "qcow2", source.Root, target.Root], CopyTimeout, ct).ConfigureAwait(false);
        File.SetUnixFileMode(target.Root, VmLayout.FileMode);
    }

    /// <summary>A stopped VM's /data for a copy, in full (sparse: only allocated clusters are written).</summary>
    public async Task CopyDataAsync(VmLayout source, VmLayout target, CancellationToken ct)
    {
        await HostCommand.RunAsync(options.QemuImgPath, ["convert", "-q", "-f", "qcow2", "-O", "qcow2", source.Data, target.Data], CopyTimeout, ct).ConfigureAwait(false);
        File.SetUnixFileMode(target.Data, VmLayout.FileMode);
    }

    private static readonly TimeSpan CopyTimeout = TimeSpan.FromMinutes(30);

    /// <summary>Grows a stopped VM's disk image; the guest grows the filesystem at its next boot.</summary>
    public Task GrowAsync(string image, long bytes, CancellationToken ct) =>
        HostCommand.RunAsync(options.QemuImgPath, ["resize", "-q", "-f", "qcow2", image, bytes.ToString(CultureInfo.InvariantCulture)], ToolTimeout, ct);

    private async Task<long> VirtualSizeAsync(string image, CancellationToken ct)
    {
        var json = await HostCommand.RunAsync(options.QemuImgPath, ["info", "--output=json", image], ToolTimeout, ct).ConfigureAwait(false);
        return System.Text.Json.Nodes.JsonNode.Parse(json)?["virtual-size"]?.GetValue<long>()
               ?? throw new MicroVmException(MicroVmErrors.HostToolFailed, $"qemu-img info gave no virtual size for {image}");
    }
}
