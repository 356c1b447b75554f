using Warren.Agent.Native;

namespace Warren.Agent.Vm;

/// <summary>
/// Gives the root filesystem this VM's own identity at boot: /etc/machine-id (machine-id(5): unique per installed
/// system) from the seed, and, when it had to change, fresh SSH host keys. A copy boots from its source's filesystem,
/// and every VM from its image's, so without this they would share both: the first boot of any VM, and of any copy,
/// changes the machine-id, removes the inherited host keys and makes new ones with the image's ssh-keygen -A.
/// </summary>
internal static class VmIdentity
{
    private const string SeedMachineId = VmGuest.SeedDirectory + "/machine-id";
    private const string MachineIdPath = "/etc/machine-id";
    private const string SshDirectory = "/etc/ssh";
    private const string SshKeygen = "/usr/bin/ssh-keygen";
    private static readonly TimeSpan KeygenTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Writes this VM's machine-id and removes inherited SSH host keys (quick file operations, before anyone can see
    /// them); true when new host keys are to be made (<see cref="MakeSshHostKeys"/>, slow: run in the background).
    /// </summary>
    public static bool Apply()
    {
        string wanted;
        try { wanted = File.ReadAllText(SeedMachineId).Trim(); }
        catch (IOException) { return false; } // a seed from before identities: nothing to apply
        if (wanted.Length != 32 || !Directory.Exists("/etc")) return false;
        string current = "";
        try { current = File.ReadAllText(MachineIdPath).Trim(); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        if (current == wanted) return false;
        try
        {
            File.Delete(MachineIdPath);
            File.WriteAllText(MachineIdPath, wanted + "\n");
            File.SetUnixFileMode(MachineIdPath, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log($"cannot write {MachineIdPath}: {e.Message}");
        }
        return RemoveSshHostKeys();
    }

    /// <summary>Removes the host keys the filesystem came with; true when there were some (the image runs an SSH server).</summary>
    private static bool RemoveSshHostKeys()
    {
        if (!Directory.Exists(SshDirectory)) return false;
        var keys = Directory.GetFiles(SshDirectory, "ssh_host_*key*");
        if (keys.Length == 0) return false;
        foreach (var key in keys)
        {
            try { File.Delete(key); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Log($"cannot remove {key}: {e.Message}"); }
        }
        return true;
    }

    /// <summary>New host keys with the image's <c>ssh-keygen -A</c>.</summary>
    /// <param name="spawn">Starts it as a child init tracks (PID 1 reaps every child: the Process class would never see its exit).</param>
    public static void MakeSshHostKeys(Func<string[], (int Pid, Task<int> Exited)> spawn)
    {
        if (!File.Exists(SshKeygen)) return;
        try
        {
            var (pid, exited) = spawn([SshKeygen, "-A"]);
            if (!exited.Wait(KeygenTimeout))
            {
                Libc.Kill(pid, 9);
                Log("ssh-keygen -A did not finish");
            }
        }
        catch (Exception e) when (e is IOException or FileNotFoundException)
        {
            Log($"ssh-keygen -A failed: {e.Message}");
        }
    }

    private static void Log(string message) => Console.Error.Write($"warren-agent init: {message}\n");
}
