using Warren.Platform.Runtime;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>Create, stop and start with /data kept, the VM's name in its /etc/hosts (and after a rename), poweroff from inside, and removal leaving nothing behind.</summary>
public sealed class MicroVmLifecycleTests(ITestOutputHelper output) : OwnRuntimeTest(output)
{
    [MicroVmFact]
    public async Task StopStart_KeepsData_PoweroffInside_EndsTheVm_AndRemoveLeavesNothing()
    {
        MicroVmTestEnvironment.Require();
        var runtime = await NewRuntimeAsync();
        string id = NewVmId();
        try
        {
            await runtime.CreateAsync(BusyboxMicroVm.Spec(id, "life"), MicroVmRuntimeTests.Timeout());
            await runtime.CreateAsync(BusyboxMicroVm.Spec(id, "life"), MicroVmRuntimeTests.Timeout()); // idempotent
            var (exit, _, _) = await MicroVmRuntimeTests.RunAsync(runtime, id, "sh", "-c", "echo kept > /data/marker && echo gone > /tmp/marker && sync");
            Assert.Equal(0, exit.ExitCode);
            Assert.Equal(RuntimeVmState.Running, (await runtime.InspectAsync(id, default))!.State);

            // (A running VM copies too: MicroVmOnlyTests and the conformance suite.)
            string copyId = id + "-c";

            await runtime.StopAsync(id, MicroVmRuntimeTests.Timeout());
            Assert.Equal(RuntimeVmState.Stopped, (await runtime.InspectAsync(id, default))!.State);

            // A stopped VM copies: filesystem and /data, its own name and address.
            await runtime.CopyAsync(id, BusyboxMicroVm.Spec(copyId, "copy"), MicroVmRuntimeTests.Timeout());
            try
            {
                var (_, copied, _) = await MicroVmRuntimeTests.RunAsync(runtime, copyId, "sh", "-c", "cat /data/marker; hostname");
                Assert.Equal("kept\ncopy\n", copied);
                Assert.NotEqual(await runtime.GetAddressAsync(copyId, default), await runtime.GetAddressAsync(id, default));
            }
            finally
            {
                await runtime.RemoveAsync(copyId, MicroVmRuntimeTests.Timeout());
            }

            // Grown while stopped: the guest grows its filesystems at the next boot.
            await runtime.ResizeAsync(id, new VmResources(1, 256L << 20, 640L << 20), MicroVmRuntimeTests.Timeout());
            Assert.Null(await runtime.GetAddressAsync(id, default));
            Assert.Null(await runtime.SampleStatsAsync(id, default));
            await runtime.StopAsync(id, MicroVmRuntimeTests.Timeout()); // idempotent

            await runtime.StartAsync(id, MicroVmRuntimeTests.Timeout());
            var started = System.Diagnostics.Stopwatch.StartNew();
            var (_, stdout, _) = await MicroVmRuntimeTests.RunAsync(runtime, id, "sh", "-c", "cat /data/marker; cat /tmp/marker 2>/dev/null || echo no-tmp; df -k /data | tail -1 | awk '{print $2}'; cat /etc/hosts");
            Output.WriteLine($"start to first exec answered: {started.Elapsed.TotalSeconds:F2} s");
            var lines = stdout.Split('\n');
            Assert.Equal(("kept", "no-tmp"), (lines[0], lines[1]));
            Assert.InRange(long.Parse(lines[2]) * 1024, 580L << 20, 640L << 20);
            // The agent as PID 1 of a real guest maps the VM's own name (hosts(5); BusyBox has no getent to ask).
            Assert.Matches(@"(?m)^127\.0\.1\.1\s+life(\s|$)", string.Join('\n', lines[3..]));
            Assert.Contains(await runtime.ListAsync(default), v => v.VmId == id && v.Name == "life" && v.State == RuntimeVmState.Running);

            // Rename reaches the running VM's hostname (and the seed, for the next boot).
            // /etc/hosts follows: the new name's line replaces the old one's.
            await runtime.RenameAsync(id, "renamed", MicroVmRuntimeTests.Timeout());
            var renamed = (await MicroVmRuntimeTests.RunAsync(runtime, id, "sh", "-c", "hostname; cat /etc/hosts")).Stdout;
            Assert.StartsWith("renamed\n", renamed);
            Assert.Matches(@"(?m)^127\.0\.1\.1\s+renamed(\s|$)", renamed);
            Assert.DoesNotMatch(@"(?m)\slife(\s|$)", renamed);

            // A daemon restart: a new runtime over the same directory finds the running VM and reconnects (new HELLO).
            runtime = await NewRuntimeAsync();
            Assert.Contains(await runtime.ListAsync(default), v => v.VmId == id && v.Name == "renamed" && v.State == RuntimeVmState.Running);
            Assert.Equal("kept\n", (await MicroVmRuntimeTests.RunAsync(runtime, id, "cat", "/data/marker")).Stdout);

            // poweroff inside: the agent (PID 1) syncs and powers off, and QEMU exits (-no-reboot).
            await using (var p = await runtime.ExecAsync(id, new ExecSpec(["poweroff"]), MicroVmRuntimeTests.Timeout()))
            {
                await p.CloseStandardInputAsync();
                try { await p.Completion.WaitAsync(TimeSpan.FromMinutes(1)); } catch (Exception) { /* the session may end with the VM */ }
            }
            for (int i = 0; i < 600 && (await runtime.InspectAsync(id, default))!.State == RuntimeVmState.Running; i++) await Task.Delay(100);
            Assert.Equal(RuntimeVmState.Stopped, (await runtime.InspectAsync(id, default))!.State);
            await Assert.ThrowsAsync<MicroVmException>(() => MicroVmRuntimeTests.RunAsync(runtime, id, "true"));
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
        Assert.Null(await runtime.InspectAsync(id, default));
        Assert.DoesNotContain(await runtime.ListAsync(default), v => v.VmId == id);
        Assert.False(Directory.Exists(Path.Combine(DataDirectory, "vms", id)));
        Assert.DoesNotContain(System.Diagnostics.Process.GetProcesses(), p => SafeCommandLine(p.Id).Contains("warren-" + id));
        await runtime.RemoveAsync(id, MicroVmRuntimeTests.Timeout()); // idempotent
    }

    private static string SafeCommandLine(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/cmdline"); }
        catch (IOException) { return ""; }
        catch (UnauthorizedAccessException) { return ""; }
    }
}
