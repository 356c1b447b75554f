using Warren.Platform.Runtime;
using Xunit;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// The agent's SFTP server driven by OpenSSH's own sftp client (-D runs the server command directly)
/// inside the busybox image: no libc, no sftp-server, yet uploads, listings, renames and links work.
/// </summary>
[Collection(DockerCollection.Name)]
public sealed class AgentSftpTests() : BusyboxVmTest("sftp")
{

    private async Task<(int Code, string Out, string Err)> SftpAsync(string batch)
    {
        string batchFile = Path.Combine(ScratchDirectory, "batch");
        await File.WriteAllTextAsync(batchFile, batch);
        string server = $"docker exec -i -u warren {DockerVmRuntime.ContainerName(VmId!)} {DockerVmRuntime.AgentMountPath} sftp";
        return await DockerTestEnvironment.RunAsync("sftp", ["-q", "-b", batchFile, "-D", server]);
    }

    [DockerFact]
    public async Task OpenSshSftpClient_WorksAgainstTheAgent_InABusyboxOnlyImage()
    {
        DockerTestEnvironment.Require();
        var payload = new byte[300_000]; // > one 256 KiB SFTP packet, so reads and writes are split
        new Random(42).NextBytes(payload);
        string local = Path.Combine(ScratchDirectory, "payload.bin");
        string back = Path.Combine(ScratchDirectory, "back.bin");
        await File.WriteAllBytesAsync(local, payload);

        var (code, stdout, stderr) = await SftpAsync($"""
            pwd
            mkdir up
            put {local} up/payload.bin
            rename up/payload.bin up/moved.bin
            ln -s up/moved.bin link.bin
            chmod 640 up/moved.bin
            ls -l up
            get link.bin {back}
            df
            rm up/moved.bin
            rm link.bin
            rmdir up
            """);
        Assert.True(code == 0, $"sftp failed ({code}): {stderr}\n{stdout}");
        Assert.Contains("Remote working directory: /home/warren", stdout);
        Assert.Contains("-rw-r-----", stdout);
        Assert.Contains("warren", stdout);
        Assert.Equal(payload, await File.ReadAllBytesAsync(back));

        // Errors come back as SFTP statuses, not a dead server.
        var (failCode, _, failErr) = await SftpAsync("get /nonexistent " + Path.Combine(ScratchDirectory, "x") + "\n");
        Assert.NotEqual(0, failCode);
        Assert.Contains("not found", failErr, StringComparison.OrdinalIgnoreCase);

        // The server runs as the invoking user: root's home is not writable for warren.
        var (denied, _, deniedErr) = await SftpAsync($"put {local} /root/x\n");
        Assert.NotEqual(0, denied);
        Assert.Contains("denied", deniedErr, StringComparison.OrdinalIgnoreCase);
    }
}
