using Warren.Platform.Sharing;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Sharing;

public sealed class ShareServiceTests : IDisposable
{
    private readonly TestPlatform _p = new(slotCount: 2);
    public void Dispose() => _p.Dispose();

    [Fact]
    public async Task SshShare_GivesGranteeARoute_WhenItsSlotIsFree()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        Assert.False(await _p.Shares.CanSshAsync(vm, b.Id));
        Assert.Null(await _p.Routes.ResolveByNameAsync(b.Id, "web"));

        var share = await _p.Shares.AddUserAsync(a.Id, "web", "BOB@example.com", ssh: true);
        Assert.Equal(ShareStatus.Active, share.Status);
        Assert.True(await _p.Shares.CanSshAsync(vm, b.Id));
        Assert.Equal("web.box.localhost", _p.Routes.SshDestination(vm, b.Id));
        Assert.Equal(vm.Id, (await _p.Routes.ResolveByNameAsync(b.Id, "web"))?.Id);
        Invariants.Check(_p);

        await _p.Shares.RemoveUserAsync(a.Id, "web", "bob@example.com");
        Assert.False(await _p.Shares.CanSshAsync(vm, b.Id));
        Assert.Null(await _p.Routes.ResolveByNameAsync(b.Id, "web"));
        Invariants.Check(_p);
    }

    [Fact]
    public async Task SshShare_ThatWouldCollide_FallsBackToVmPlusName()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        // Bob fills both slots with his own VMs.
        await _p.Vms.CreateAsync(b.Id, new VmCreateRequest { Name = "b1" });
        await _p.Vms.CreateAsync(b.Id, new VmCreateRequest { Name = "b2" });
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        await _p.Shares.AddUserAsync(a.Id, "web", "bob@example.com", ssh: true);

        Assert.True(await _p.Shares.CanSshAsync(vm, b.Id));
        Assert.Equal($"vm+web@{vm.SlotName}.box.localhost", _p.Routes.SshDestination(vm, b.Id));
        Assert.Equal(vm.Id, (await _p.Routes.ResolveByNameAsync(b.Id, "web"))?.Id);
        _p.Slots.TryGetByName(vm.SlotName!, out var slot);
        Assert.NotEqual(vm.Id, _p.Routes.Resolve(b.Id, slot!.LocalIp)?.Id); // Bob's own VM answers there
        Invariants.Check(_p);

        // Bob removes his VM on that slot: the shared VM takes the freed route.
        var mine = _p.Routes.Resolve(b.Id, slot.LocalIp)!;
        await _p.Vms.RemoveAsync(b.Id, mine.Name);
        Assert.Equal(vm.Id, _p.Routes.Resolve(b.Id, slot.LocalIp)?.Id);
        Invariants.Check(_p);
    }

    [Fact]
    public async Task UpgradingAWebShareToSsh_RunsTheInvariant()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        await _p.Shares.AddUserAsync(a.Id, "web", "bob@example.com");
        Assert.False(await _p.Shares.CanSshAsync(vm, b.Id));
        Assert.True((await _p.Shares.SetUserSshAsync(a.Id, "web", "bob@example.com", true)).Ssh);
        Assert.True(await _p.Shares.CanSshAsync(vm, b.Id));
        Assert.Equal("web.box.localhost", _p.Routes.SshDestination(vm, b.Id));
        Invariants.Check(_p);
        await _p.Shares.SetUserSshAsync(a.Id, "web", "bob@example.com", false);
        Assert.False(await _p.Shares.CanSshAsync(vm, b.Id));
        Assert.True(await _p.Shares.CanAccessWebAsync(vm, b.Id));
        Invariants.Check(_p);
        await Assert.ThrowsAsync<PlatformException>(() => _p.Shares.SetUserSshAsync(a.Id, "web", "carol@example.com", true));
    }

    [Fact]
    public async Task PendingShare_BecomesActive_AtSignUp()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        var share = await _p.Shares.AddUserAsync(a.Id, "web", "carol@example.com", ssh: true);
        Assert.Equal(ShareStatus.Pending, share.Status);
        var dup = await Assert.ThrowsAsync<PlatformException>(() => _p.Shares.AddUserAsync(a.Id, "web", "carol@example.com"));
        Assert.Equal("web is already shared with carol@example.com", dup.UserMessage);

        var c = await _p.NewAccountAsync("carol@example.com");
        Assert.True(await _p.Shares.CanSshAsync(vm, c.Id));
        Assert.Equal("web.box.localhost", _p.Routes.SshDestination(vm, c.Id));
        Assert.Equal(ShareStatus.Active, Assert.Single((await _p.Shares.GetAsync(a.Id, "web")).Users).Status);
        Invariants.Check(_p);
    }

    [Fact]
    public async Task WebAccess_PublicOwnerOrShare()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        Assert.True(await _p.Shares.CanAccessWebAsync(vm, a.Id));
        Assert.False(await _p.Shares.CanAccessWebAsync(vm, b.Id));
        Assert.False(await _p.Shares.CanAccessWebAsync(vm, null));
        await _p.Shares.AddUserAsync(a.Id, "web", "bob@example.com");
        Assert.True(await _p.Shares.CanAccessWebAsync(vm, b.Id));
        Assert.False(await _p.Shares.CanSshAsync(vm, b.Id)); // web share only
        vm = await _p.Shares.SetPublicAsync(a.Id, "web", true);
        Assert.True(await _p.Shares.CanAccessWebAsync(vm, null));
    }

    [Fact]
    public async Task Port_Range_AndOwnerOnly()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        var e = await Assert.ThrowsAsync<PlatformException>(() => _p.Shares.SetPortAsync(a.Id, "web", 80));
        Assert.Equal("port must be between 3000 and 9999, got \"80\"", e.UserMessage);
        var vm = await _p.Shares.SetPortAsync(a.Id, "web", 8080);
        Assert.Equal(8080, vm.ProxyPort);
        Assert.Equal(80, vm.AutoProxyPort);
        e = await Assert.ThrowsAsync<PlatformException>(() => _p.Shares.SetPortAsync(b.Id, "web", 8080));
        Assert.Equal("VM \"web\" not found or access denied", e.UserMessage);
        vm = await _p.Shares.SetReceiveEmailAsync(a.Id, "web", true);
        Assert.True(vm.ReceiveEmail);
    }

    [Fact]
    public async Task Links_StoreOnlyAHash_CountUses_GrantWebShare()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        var (token, link) = await _p.Shares.AddLinkAsync(a.Id, "web");
        Assert.StartsWith(link.TokenHint, token);

        Assert.Equal(vm.Id, (await _p.Shares.RedeemLinkAsync(token, b.Id))?.Id);
        Assert.Null(await _p.Shares.RedeemLinkAsync("bogus", b.Id));
        Assert.True(await _p.Shares.CanAccessWebAsync(vm, b.Id));
        var shown = Assert.Single((await _p.Shares.GetAsync(a.Id, "web")).Links);
        Assert.Equal(1, shown.UseCount);
        Assert.NotNull(shown.LastUsedAt);

        await _p.Shares.RemoveLinkAsync(a.Id, "web", token);
        Assert.Empty((await _p.Shares.GetAsync(a.Id, "web")).Links);
        Assert.True(await _p.Shares.CanAccessWebAsync(vm, b.Id)); // shares made by the link stay
        _p.Db.Dispose();
        var bytes = string.Concat(Directory.GetFiles(_p.Directory_).Select(File.ReadAllText));
        Assert.DoesNotContain(token, bytes);
    }
}
