using System.Diagnostics;
using Warren.Platform.Runtime;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// "Pattern B": dockerd and <c>docker run</c> inside a VM, which a container runtime cannot offer a tenant without
/// privileges on the host. One boot of warren/dind:1 (scripts/build-images.sh), about a minute under emulation.
/// </summary>
public sealed class MicroVmDockerInsideTests(ITestOutputHelper output) : OwnRuntimeTest(output)
{
    private const string DindImage = "warren/dind:1";

    [MicroVmFact]
    public async Task Dockerd_RunsInTheVm_AndRunsAContainer()
    {
        MicroVmTestEnvironment.Require();
        MicroVmTestEnvironment.RequireImage(DindImage);
        var runtime = await NewRuntimeAsync(TimeSpan.FromMinutes(3));
        string id = NewVmId();
        var clock = Stopwatch.StartNew();
        try
        {
            await runtime.CreateAsync(new VmSpec(id, "dind", DindImage, new VmResources(1, 1536L << 20, 4L << 30),
                new Dictionary<string, string>(), CommandMode.None, null, null, null), MicroVmRuntimeTests.Timeout());
            Output.WriteLine($"created (image base included) {clock.Elapsed.TotalSeconds:F1} s");
            var (exit, _, stderr) = await MicroVmRuntimeTests.RunAsync(runtime, id, "sh", "-c", "nohup dockerd --data-root /data/docker >/data/dockerd.log 2>&1 &");
            Assert.True(exit.ExitCode == 0, stderr);
            Output.WriteLine($"booted, dockerd started {clock.Elapsed.TotalSeconds:F1} s");

            string info = "";
            for (int i = 0; i < 600 && info.Length == 0; i++)
            {
                var r = await MicroVmRuntimeTests.RunAsync(runtime, id, "docker", "info", "--format", "{{.Driver}} {{.CgroupVersion}}");
                if (r.Exit.ExitCode == 0) info = r.Stdout.Trim();
                else await Task.Delay(200);
            }
            Output.WriteLine($"dockerd ready {clock.Elapsed.TotalSeconds:F1} s: {info}");
            Assert.Equal("overlay2 2", info);   // overlay and cgroup v2 from the VM's own kernel

            // The image goes in as `docker save` on the host piped into `docker load` through the session's stdin.
            using (var save = Process.Start(new ProcessStartInfo("docker", ["save", MicroVmTestEnvironment.BusyboxImage]) { RedirectStandardOutput = true })!)
            {
                await using var load = await runtime.ExecAsync(id, new ExecSpec(["docker", "load"]), MicroVmRuntimeTests.Timeout());
                var loaded = new StreamReader(load.StandardOutput).ReadToEndAsync();
                await save.StandardOutput.BaseStream.CopyToAsync(load.StandardInput);
                await load.CloseStandardInputAsync();
                Assert.Equal(0, (await load.Completion.WaitAsync(TimeSpan.FromMinutes(3))).ExitCode);
                Assert.Contains("Loaded image", await loaded);
            }
            Output.WriteLine($"image loaded {clock.Elapsed.TotalSeconds:F1} s");

            var run = await MicroVmRuntimeTests.RunAsync(runtime, id, "docker", "run", "--rm", MicroVmTestEnvironment.BusyboxImage, "sh", "-c", "echo nested-ok; uname -r");
            Output.WriteLine($"docker run {clock.Elapsed.TotalSeconds:F1} s: {run.Stdout}{run.Stderr}");
            Assert.Equal(0, run.Exit.ExitCode);
            Assert.StartsWith("nested-ok\n", run.Stdout);
            Assert.EndsWith("-cloud-amd64\n", run.Stdout);
        }
        catch
        {
            WriteConsole(id);
            throw;
        }
        finally
        {
            await runtime.RemoveAsync(id, MicroVmRuntimeTests.Timeout());
        }
    }
}
