using System.Text.Json;
using System.Text.Json.Serialization;
using Warren.Platform.Runtime;

namespace Warren.Runtime.MicroVm;

/// <summary>
/// Files of one VM under <c>&lt;data&gt;/vms/&lt;id&gt;/</c> (directory 0700: the token and the sockets are the daemon's):
/// root.qcow2 (overlay on the image's base), data.qcow2 (/data), seed.img (agent, token, image config), token,
/// vm.json (<see cref="VmRecord"/>), run/qemu.pid, qmp.sock, agent.sock (the virtio-serial port), console.log.
/// </summary>
internal sealed class VmLayout(string root, string vmId)
{
    public string Directory { get; } = Path.Combine(root, "vms", vmId);
    public string Root => Path.Combine(Directory, "root.qcow2");
    public string Data => Path.Combine(Directory, "data.qcow2");
    public string Seed => Path.Combine(Directory, "seed.img");
    public string Token => Path.Combine(Directory, "token");
    public string Record => Path.Combine(Directory, "vm.json");
    /// <summary>
    /// QEMU's own directory (owned by the QEMU user when it runs unprivileged): the pid file, which QEMU removes when it
    /// exits normally, so a pid file left behind by a dead process means QEMU did not exit on its own terms (killed,
    /// crashed). The VM's directory itself stays the daemon's alone: a compromised QEMU cannot rewrite vm.json.
    /// </summary>
    public string RunDirectory => Path.Combine(Directory, "run");
    public string PidFile => Path.Combine(RunDirectory, "qemu.pid");
    /// <summary>The reservation of the VM's address (and so its tap), written before vm.json.</summary>
    public string AddressMarker => Path.Combine(Directory, "address");
    public string QmpSocket => Path.Combine(Directory, "qmp.sock");
    public string AgentSocket => Path.Combine(Directory, "agent.sock");
    public string ConsoleLog => Path.Combine(Directory, "console.log");

    public const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
}

/// <summary>What the runtime keeps about a VM between starts (vm.json).</summary>
internal sealed record VmRecord(
    string VmId,
    string Name,
    string Image,
    string ImageId,
    VmResources Resources,
    string Address,
    IReadOnlyList<int> Ports,
    IReadOnlyList<string> InitArgs,
    IReadOnlyList<string> Env,
    string? WorkingDirectory,
    string? SetupScript,
    string? Tap = null,
    string? GuestNetwork = null)
{
    private static readonly JsonSerializerOptions s_json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    public static VmRecord? TryRead(string path)
    {
        try { return JsonSerializer.Deserialize<VmRecord>(File.ReadAllText(path), s_json); }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Written to a temporary file and renamed, so a crash never leaves half a record.</summary>
    public void Write(string path)
    {
        string temp = path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(this, s_json));
        File.SetUnixFileMode(temp, VmLayout.FileMode);
        File.Move(temp, path, overwrite: true);
    }
}
