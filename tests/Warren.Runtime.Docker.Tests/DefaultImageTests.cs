using System.Diagnostics;
using System.Text;
using Warren.Platform.Runtime;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// The default image warren/default:1 (scripts/build-images.sh, debootstrap): a Debian userland with a login
/// user `warren` who has passwordless sudo. Its CMD is a bare bash, which the agent does not run, and the VM stays up.
/// </summary>
[Collection(DockerCollection.Name)]
public sealed class DefaultImageTests(ITestOutputHelper output) : IAsyncLifetime
{
    public const string DefaultImage = "warren/default:1";
    private DockerVmRuntime? _runtime;
    private readonly string _vmId = "wt-" + Guid.NewGuid().ToString("N")[..12];

    public Task InitializeAsync()
    {
        if (DockerTestEnvironment.UnavailableReason == null) _runtime = new DockerVmRuntime(DockerTestEnvironment.Options());
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_runtime == null) return;
        await _runtime.RemoveAsync(_vmId, CancellationToken.None);
        _runtime.Dispose();
    }

    private async Task<(int? Code, string Out)> RunAsync(params string[] command)
    {
        await using var p = await _runtime!.ExecAsync(_vmId, new ExecSpec(command, User: "warren"), CancellationToken.None);
        await p.CloseStandardInputAsync();
        using var reader = new StreamReader(p.StandardOutput, Encoding.UTF8);
        string text = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromMinutes(2));
        var exit = await p.Completion.WaitAsync(TimeSpan.FromMinutes(2));
        return (exit.ExitCode, text);
    }

    [DockerFact]
    public async Task DefaultImage_HasTheUserland_AndPasswordlessSudo()
    {
        DockerTestEnvironment.Require();
        var info = await _runtime!.PrepareImageAsync(DefaultImage, null, CancellationToken.None);
        Assert.Equal("warren", info.User);

        var sw = Stopwatch.StartNew();
        await _runtime.CreateAsync(new VmSpec(_vmId, "debian-vm", DefaultImage, new VmResources(1, 512L * 1024 * 1024, 0),
            new Dictionary<string, string>(), CommandMode.Auto, null, null, null), CancellationToken.None);
        var (code, text) = await RunAsync("bash", "-c", "echo ready");
        output.WriteLine($"create + first exec of {DefaultImage}: {sw.ElapsedMilliseconds} ms (information only)");
        Assert.Equal(0, code);
        Assert.Equal("ready\n", text);

        (code, text) = await RunAsync("bash", "-c", "id -un; sudo -n id -u; hostname; command -v curl less vi ps /usr/lib/openssh/sftp-server | wc -l; test -d /etc/ssl/certs && echo certs");
        Assert.Equal(0, code);
        Assert.Equal("warren\n0\ndebian-vm\n5\ncerts\n", text);
        Assert.Equal(RuntimeVmState.Running, (await _runtime.InspectAsync(_vmId, CancellationToken.None))!.State);
    }

    /// <summary>
    /// Prints (never asserts: shared CI machines make times meaningless as pass/fail) the time from CreateAsync
    /// to a first command's output, next to `docker run -d` + `docker exec` of the same cached image.
    /// </summary>
    [DockerFact]
    public async Task CreateToFirstCommand_TimeIsReported()
    {
        DockerTestEnvironment.Require();
        foreach (var image in new[] { DockerTestEnvironment.BusyboxImage, DefaultImage })
        {
            string id = "wt-" + Guid.NewGuid().ToString("N")[..12];
            var sw = Stopwatch.StartNew();
            try
            {
                await _runtime!.CreateAsync(new VmSpec(id, "timing", image, new VmResources(1, 256L * 1024 * 1024, 0),
                    new Dictionary<string, string>(), CommandMode.Auto, null, null, null), CancellationToken.None);
                await using (var p = await _runtime.ExecAsync(id, new ExecSpec(["echo", "ok"]), CancellationToken.None))
                {
                    await p.CloseStandardInputAsync();
                    await p.Completion.WaitAsync(TimeSpan.FromMinutes(2));
                }
                long warren = sw.ElapsedMilliseconds;

                string name = "wt-cli-" + Guid.NewGuid().ToString("N")[..8];
                sw.Restart();
                var run = await DockerTestEnvironment.RunAsync("docker", ["run", "-d", "--name", name, "--label", DockerTestEnvironment.TestLabel + "=1",
                    "--entrypoint", "/bin/sh", image, "-c", "exec sleep 600"]);
                var exec = await DockerTestEnvironment.RunAsync("docker", ["exec", name, "echo", "ok"]);
                long cli = sw.ElapsedMilliseconds;
                await DockerTestEnvironment.RunAsync("docker", ["rm", "-f", name]);
                Assert.Equal(0, run.ExitCode);
                Assert.Equal(0, exec.ExitCode);
                output.WriteLine($"{image}: Warren create→first command {warren} ms; docker run -d + docker exec {cli} ms (information only)");
            }
            finally
            {
                await _runtime!.RemoveAsync(id, CancellationToken.None);
            }
        }
    }
}
