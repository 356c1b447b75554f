using Dapper;
using Warren.Platform.Mail;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Mail;

public sealed class InboundMailPolicyTests : IDisposable
{
    private readonly TestPlatform _p = new();
    public void Dispose() => _p.Dispose();

    private InboundMailPolicy Policy => new(_p.Options, _p.Index);

    [Fact]
    public async Task OnlyNameDotVmDomain_OfAnEnabledRunningVm_IsAccepted()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "quiet" });
        await _p.Shares.SetReceiveEmailAsync(a.Id, "web", true);

        Assert.Equal(RecipientDecision.Accept, Policy.Check("web.box.localhost").Decision);
        Assert.Equal("web", Policy.Check("WEB.Box.LocalHost.").Vm!.Name);
        Assert.Equal(RecipientDecision.NoSuchMailbox, Policy.Check("quiet.box.localhost").Decision);   // receive-email off
        Assert.Equal(RecipientDecision.NoSuchMailbox, Policy.Check("nope.box.localhost").Decision);    // no such VM
        Assert.Equal(RecipientDecision.NoSuchMailbox, Policy.Check("x.web.box.localhost").Decision);   // nested
        Assert.Equal(RecipientDecision.NotOurDomain, Policy.Check("box.localhost").Decision);          // the zone itself
        Assert.Equal(RecipientDecision.NotOurDomain, Policy.Check("web.box.localhost.evil.example").Decision);
        Assert.Equal(RecipientDecision.NotOurDomain, Policy.Check("webbox.localhost").Decision);
        Assert.Equal(RecipientDecision.NotOurDomain, Policy.Check("example.com").Decision);
        Assert.Equal(RecipientDecision.NotOurDomain, Policy.Check("[127.0.0.1]").Decision);
        // Refusals carry no VM, so nothing about it can leak into a reply.
        Assert.Null(Policy.Check("quiet.box.localhost").Vm);
    }

    [Fact]
    public async Task StoppedVm_IsATemporaryRefusal_AndDeletingOneIsUnknown()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        await _p.Shares.SetReceiveEmailAsync(a.Id, "web", true);

        await SetStateAsync(vm.Id, "stopped");
        Assert.Equal(RecipientDecision.VmNotRunning, Policy.Check("web.box.localhost").Decision);
        await SetStateAsync(vm.Id, "deleting");
        Assert.Equal(RecipientDecision.NoSuchMailbox, Policy.Check("web.box.localhost").Decision);
    }

    [Fact]
    public async Task SwitchingOff_AndRenaming_TakeEffectAtOnce()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web" });
        await _p.Shares.SetReceiveEmailAsync(a.Id, "web", true);
        await _p.Vms.RenameAsync(a.Id, "web", "site");
        Assert.Equal(RecipientDecision.NoSuchMailbox, Policy.Check("web.box.localhost").Decision);
        Assert.Equal(RecipientDecision.Accept, Policy.Check("site.box.localhost").Decision);
        await _p.Shares.SetReceiveEmailAsync(a.Id, "site", false);
        Assert.Equal(RecipientDecision.NoSuchMailbox, Policy.Check("site.box.localhost").Decision);
    }

    private async Task SetStateAsync(string vmId, string state)
    {
        await _p.Db.WriteAsync(async u =>
        {
            await u.Connection.ExecuteAsync("UPDATE vms SET state = @state WHERE id = @vmId", new { state, vmId }, u.Transaction);
            _p.Index.ReloadVmsOnCommit(u, [vmId]);
        });
    }
}
