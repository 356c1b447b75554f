using Warren.Platform.Runtime;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Vms;

/// <summary>
/// A daemon killed at any step of new, cp or rm (the runtime call never returns, the process is gone) and
/// started again reconciles to: no orphan container, no lost VM, no record in a transient state.
/// </summary>
public sealed class ReconcileTests
{
    /// <summary>Guard against a test hanging if the operation never reaches the runtime step.</summary>
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(FakeStep.PrepareImage)]
    [InlineData(FakeStep.CreateBeforeContainer)]
    [InlineData(FakeStep.CreateAfterContainer)]
    public async Task CrashDuringNew_ReconcilesToRunning(FakeStep step)
    {
        using var p = new TestPlatform();
        var a = await p.NewAccountAsync("alice@example.com");
        p.Runtime.HangAt = step;
        _ = await KillAt(p, () => p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" }));
        Assert.Equal(VmState.Creating, (await p.Vms.FindByNameAsync("web"))!.State);

        p.Restart();
        var report = await p.Vms.ReconcileAsync();

        var vm = await p.Vms.GetByNameAsync(a.Id, "web");
        Assert.Equal(VmState.Running, vm.State);
        Assert.Contains("web", report.Adopted.Concat(report.Redriven));
        AssertSettled(p);
    }

    [Theory]
    [InlineData(FakeStep.CopyBeforeContainer)]
    [InlineData(FakeStep.CopyAfterContainer)]
    public async Task CrashDuringCopy_ReconcilesToRunning(FakeStep step)
    {
        using var p = new TestPlatform();
        var a = await p.NewAccountAsync("alice@example.com");
        await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        p.Runtime.HangAt = step;
        _ = await KillAt(p, () => p.Vms.CopyAsync(a.Id, new VmCopyRequest { SourceName = "web", NewName = "web2" }));

        p.Restart();
        await p.Vms.ReconcileAsync();

        Assert.Equal(VmState.Running, (await p.Vms.GetByNameAsync(a.Id, "web2")).State);
        Assert.Equal(VmState.Running, (await p.Vms.GetByNameAsync(a.Id, "web")).State);
        AssertSettled(p);
    }

    [Fact]
    public async Task CrashDuringCopy_SourceGone_MarksFailed_NoOrphan()
    {
        using var p = new TestPlatform();
        var a = await p.NewAccountAsync("alice@example.com");
        var src = await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        p.Runtime.HangAt = FakeStep.CopyBeforeContainer;
        _ = await KillAt(p, () => p.Vms.CopyAsync(a.Id, new VmCopyRequest { SourceName = "web", NewName = "web2" }));
        p.Restart();
        await p.Vms.RemoveAsync(a.Id, "web");
        await p.Vms.ReconcileAsync();
        var copy = await p.Vms.GetByNameAsync(a.Id, "web2");
        Assert.Equal(VmState.Failed, copy.State);
        Assert.NotNull(copy.StateReason);
        AssertSettled(p);
    }

    [Theory]
    [InlineData(FakeStep.RemoveBeforeContainer)]
    [InlineData(FakeStep.RemoveAfterContainer)]
    public async Task CrashDuringRemove_FinishesTheDelete(FakeStep step)
    {
        using var p = new TestPlatform();
        var a = await p.NewAccountAsync("alice@example.com");
        var vm = await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        p.Runtime.HangAt = step;
        _ = await KillAt(p, () => p.Vms.RemoveAsync(a.Id, "web"));
        Assert.False(p.Directory.TryGetSlotForName("web", out _)); // already gone from DNS while deleting

        p.Restart();
        var report = await p.Vms.ReconcileAsync();

        Assert.Contains("web", report.Deleted);
        Assert.Null(await p.Vms.FindByNameAsync("web"));
        Assert.False(p.Engine.Containers.ContainsKey(vm.Id));
        AssertSettled(p);
    }

    [Fact]
    public async Task RunningButMissing_BecomesFailed_AndOrphansAreRemoved()
    {
        using var p = new TestPlatform();
        var a = await p.NewAccountAsync("alice@example.com");
        var vm = await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        var stopped = await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "idle" });
        p.Engine.Containers.TryRemove(vm.Id, out _);
        p.Engine.Containers[stopped.Id] = p.Engine.Containers[stopped.Id] with { State = RuntimeVmState.Stopped };
        p.Engine.Containers["vm_orphan"] = new RuntimeVmInfo("vm_orphan", "ghost", RuntimeVmState.Running, "img", null);

        p.Restart();
        var report = await p.Vms.ReconcileAsync();

        Assert.Equal(VmState.Failed, (await p.Vms.GetByNameAsync(a.Id, "web")).State);
        Assert.Equal(VmState.Stopped, (await p.Vms.GetByNameAsync(a.Id, "idle")).State);
        Assert.Contains("ghost", report.OrphansRemoved);
        Assert.False(p.Engine.Containers.ContainsKey("vm_orphan"));
        // A failed VM can still be removed.
        await p.Vms.RemoveAsync(a.Id, "web");
        AssertSettled(p);
    }

    [Fact]
    public async Task InterruptedCreate_WhoseImageNeedsCredentials_IsMarkedFailed()
    {
        using var p = new TestPlatform();
        var a = await p.NewAccountAsync("alice@example.com");
        p.Runtime.HangAt = FakeStep.CreateBeforeContainer;
        _ = await KillAt(p, () => p.Vms.CreateAsync(a.Id, new VmCreateRequest
        {
            Name = "web", Image = "registry.local/private:1", RegistryAuth = new RegistryCredential("me", "s3cret"),
        }));
        p.Restart();
        var report = await p.Vms.ReconcileAsync();
        Assert.Contains("web", report.MarkedFailed);
        Assert.Equal(VmState.Failed, (await p.Vms.GetByNameAsync(a.Id, "web")).State);
        AssertSettled(p);
    }

    /// <summary>Starts the operation, waits until the runtime hangs in the chosen step, then abandons it.</summary>
    private static async Task<Task> KillAt(TestPlatform p, Func<Task> operation)
    {
        var op = Task.Run(operation);
        var first = await Task.WhenAny(p.Runtime.Hung.Task, op, Task.Delay(StepTimeout));
        Assert.True(first == p.Runtime.Hung.Task, "the operation did not reach the crash step");
        return op;
    }

    /// <summary>No transient record, no orphan container, every live record's container present, invariant intact.</summary>
    private static void AssertSettled(TestPlatform p)
    {
        var records = p.Index.SnapshotVms();
        Assert.DoesNotContain(records, v => VmStates.IsTransient(v.State));
        foreach (var id in p.Engine.Containers.Keys) Assert.Contains(records, v => v.Id == id);
        foreach (var v in records.Where(v => v.State is VmState.Running or VmState.Stopped))
            Assert.True(p.Engine.Containers.ContainsKey(v.Id), $"{v.Name} has no container");
        Invariants.Check(p);
    }
}
