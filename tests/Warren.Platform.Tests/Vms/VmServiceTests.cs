using Warren.Platform.Runtime;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Vms;

public sealed class VmServiceTests : IDisposable
{
    private readonly TestPlatform _p = new();
    public void Dispose() => _p.Dispose();

    [Fact]
    public async Task Create_RecordsRunningVm_WithSlotAndDirectRoute()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web", Tags = ["prod"] });
        Assert.Equal(VmState.Running, vm.State);
        Assert.NotNull(vm.SlotName);
        Assert.Equal(["prod"], vm.Tags);
        Assert.Equal(_p.Options.DefaultImage, vm.Image);
        Assert.Equal(_p.Options.Resources.DefaultMemoryBytes, vm.MemoryBytes);
        Assert.True(_p.Engine.Containers.ContainsKey(vm.Id));
        Assert.Equal("web.box.localhost", _p.Routes.SshDestination(vm, a.Id));
        _p.Slots.TryGetByName(vm.SlotName!, out var slot);
        Assert.Equal(vm.Id, _p.Routes.Resolve(a.Id, slot!.LocalIp)?.Id);
        Invariants.Check(_p);
    }

    [Theory]
    [InlineData(new int[0], 80)]
    [InlineData(new[] { 8080, 80, 3000 }, 80)]
    [InlineData(new[] { 22, 8080, 3000 }, 3000)]
    [InlineData(new[] { 22, 443 }, 80)]
    public async Task Create_ChoosesProxyPort_AsExeDev(int[] exposed, int expected)
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        _p.Engine.ExposedPorts["img:1"] = exposed;
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web", Image = "img:1" });
        Assert.Equal(expected, vm.ProxyPort);
        Assert.Equal(expected, VmService.ChooseProxyPort(exposed));
    }

    [Fact]
    public async Task Create_GeneratesWordWordName_WhenOmitted()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest());
        Assert.Matches("^[a-z]+-[a-z]+(-[0-9]+)?$", vm.Name);
    }

    [Fact]
    public async Task Create_TakenOrReservedName_IsNotAvailable()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        var e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.CreateAsync(b.Id, new VmCreateRequest { Name = "web" }));
        Assert.Equal(PlatformErrorCodes.VmNameUnavailable, e.Code);
        Assert.Equal("VM name \"web\" is not available", e.UserMessage);
        foreach (var reserved in new[] { "warren", "s001", "s042", "www", "api", "vm" })
        {
            e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.CreateAsync(b.Id, new VmCreateRequest { Name = reserved }));
            Assert.Equal(PlatformErrorCodes.VmNameUnavailable, e.Code);
        }
        Invariants.Check(_p);
    }

    [Fact]
    public async Task Create_BeyondAccountLimit_Refused()
    {
        using var p = new TestPlatform(maxVmsPerAccount: 2);
        var a = await p.NewAccountAsync("alice@example.com");
        await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "one" });
        await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "two" });
        var e = await Assert.ThrowsAsync<PlatformException>(() => p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "three" }));
        Assert.Equal(PlatformErrorCodes.VmLimitReached, e.Code);
        Assert.Equal("You have reached the maximum number of VMs allowed on your plan.", e.UserMessage);
    }

    [Fact]
    public async Task Create_ImageFailure_LeavesNothing_AndNeverStoresTheSecret()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        const string secret = "ghp_SUPERSECRET123";
        var e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.CreateAsync(a.Id, new VmCreateRequest
        {
            Name = "web", Image = "registry.local/missing:1", RegistryAuth = new RegistryCredential("me", secret),
        }));
        Assert.Equal(PlatformErrorCodes.VmCreateFailed, e.Code);
        Assert.DoesNotContain(secret, e.UserMessage);
        Assert.Contains(secret, _p.Engine.CredentialsSeen); // reached the runtime
        Assert.Empty(await _p.Vms.ListAsync(a.Id));
        Assert.Empty(_p.Engine.Containers);
        _p.Db.Dispose();
        var bytes = string.Concat(Directory.GetFiles(_p.Directory_).Select(f => File.ReadAllText(f)));
        Assert.DoesNotContain(secret, bytes);
    }

    [Fact]
    public async Task Create_RuntimeFailure_LeavesNoRecordNoContainer()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        _p.Runtime.FailAt = FakeStep.CreateAfterContainer;
        await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" }));
        Assert.Empty(_p.Engine.Containers);
        Assert.Null(await _p.Vms.FindByNameAsync("web"));
        Assert.False(_p.Directory.TryGetSlotForName("web", out _));
        _p.Runtime.FailAt = FakeStep.None;
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" }); // the name is free again
        Invariants.Check(_p);
    }

    [Fact]
    public async Task Remove_FreesNameSlotAndContainer()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        await _p.Vms.RemoveAsync(a.Id, "web.box.localhost");
        Assert.Empty(_p.Engine.Containers);
        Assert.Null(await _p.Vms.FindByNameAsync("web"));
        Assert.Null(_p.Routes.Resolve(a.Id, _p.Slots.Slots.Single(s => s.Name == vm.SlotName).LocalIp));
        var again = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        Assert.Equal(vm.SlotName, again.SlotName); // same account, same start slot
        Invariants.Check(_p);
    }

    [Fact]
    public async Task Remove_OtherAccountsVm_IsNotFound()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        var e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.RemoveAsync(b.Id, "web"));
        Assert.Equal(PlatformErrorCodes.VmNotFound, e.Code);
        Assert.Equal("VM \"web\" not found", e.UserMessage);
    }

    [Fact]
    public async Task Rename_KeepsIdSlotAndRoute_AndDnsFollows()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        long v0 = _p.Directory.Version;
        var renamed = await _p.Vms.RenameAsync(a.Id, "web", "site");
        Assert.Equal(vm.Id, renamed.Id);
        Assert.Equal(vm.SlotName, renamed.SlotName);
        Assert.Equal("site", _p.Engine.Containers[vm.Id].Name);
        Assert.False(_p.Directory.TryGetSlotForName("web", out _));
        Assert.True(_p.Directory.TryGetSlotForName("site", out var s));
        Assert.Equal(vm.SlotName, s.Name);
        Assert.True(_p.Directory.Version > v0);
        Assert.Equal(vm.Id, (await _p.Vms.RenameAsync(a.Id, "site", "site")).Id);
        Invariants.Check(_p);
    }

    [Fact]
    public async Task Copy_GetsNewSlot_CopiesTagsAndResources()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var src = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web", Tags = ["prod"], DiskBytes = 30 * ByteSize.GiB });
        var copy = await _p.Vms.CopyAsync(a.Id, new VmCopyRequest { SourceName = "web", NewName = "web-staging" });
        Assert.NotEqual(src.SlotName, copy.SlotName);
        Assert.Equal(["prod"], copy.Tags);
        Assert.Equal(src.DiskBytes, copy.DiskBytes);
        Assert.Equal(VmState.Running, copy.State);
        Assert.Null(copy.SourceVmId);
        var bare = await _p.Vms.CopyAsync(a.Id, new VmCopyRequest { SourceName = "web", NewName = "web-bare", CopyTags = false });
        Assert.Empty(bare.Tags);
        Invariants.Check(_p);
    }

    [Fact]
    public async Task Resize_DiskOnlyGrows()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        var e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.ResizeAsync(a.Id, "web", new VmResizeRequest(DiskBytes: 20 * ByteSize.GiB)));
        Assert.Equal(PlatformErrorCodes.DiskShrink, e.Code);
        Assert.Equal("--disk must be larger than current size (25 GB)", e.UserMessage);
        var r = await _p.Vms.ResizeAsync(a.Id, "web", new VmResizeRequest(Cpus: 4, MemoryBytes: 16 * ByteSize.GiB, DiskBytes: 50 * ByteSize.GiB));
        Assert.Equal(2, r.Before.Cpus);
        Assert.Equal(4, r.After.Cpus);
        Assert.Equal(50 * ByteSize.GiB, r.After.DiskBytes);
        e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.ResizeAsync(a.Id, "web", new VmResizeRequest(Cpus: 1000)));
        Assert.Equal(PlatformErrorCodes.ResourceOutOfRange, e.Code);
    }

    [Fact]
    public async Task TagsAndComment_RoundTrip_AndListFilters()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "db" });
        await _p.Vms.TagAsync(a.Id, "web", ["prod", "frontend"]);
        var e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.TagAsync(a.Id, "web", ["prod"]));
        Assert.Equal(PlatformErrorCodes.TagExists, e.Code);
        e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.TagAsync(a.Id, "web", ["x", "x"]));
        Assert.Equal(PlatformErrorCodes.TagDuplicate, e.Code);
        await _p.Vms.UntagAsync(a.Id, "web", ["frontend"]);
        e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.UntagAsync(a.Id, "web", ["frontend"]));
        Assert.Equal(PlatformErrorCodes.TagNotFound, e.Code);
        var c = await _p.Vms.SetCommentAsync(a.Id, "web", "  staging copy ");
        Assert.Equal("staging copy", c.Comment);
        Assert.Equal(["web"], (await _p.Vms.ListAsync(a.Id, "prod")).Select(v => v.Name));
        Assert.Equal(["db"], (await _p.Vms.ListAsync(a.Id, "db")).Select(v => v.Name));
        Assert.Equal(["web"], (await _p.Vms.ListAsync(a.Id, "w*")).Select(v => v.Name));
        Assert.Equal(["web"], (await _p.Vms.ListAsync(a.Id, "pr?d")).Select(v => v.Name));
        Assert.Equal(2, (await _p.Vms.ListAsync(a.Id, "*")).Count);
        Assert.Empty(await _p.Vms.ListAsync(a.Id, "nothing"));
        Assert.Equal("web", (await _p.Vms.GetByNameAsync(a.Id, "web.box.localhost")).Name);
    }

    [Fact]
    public async Task Restart_SetsRunning()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        await _p.Runtime.StopAsync(vm.Id, default);
        var r = await _p.Vms.RestartAsync(a.Id, "web");
        Assert.Equal(VmState.Running, r.State);
    }
}
