using Warren.Platform.Mail;
using Warren.Platform.Tests.Commands;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Mail;

/// <summary>
/// <see cref="SiteVisitorLog"/> and the email gateway's use of it (exe.dev's docs: send email — people who logged into
/// the VM's site), real SQLite: per VM, bounded, gone with the VM, and only while the address is still the account's
/// verified one.
/// </summary>
public sealed class SiteVisitorLogTests : IDisposable
{
    private readonly TestPlatform _p = new();
    private readonly RecordingEmailSender _sender = new();

    public void Dispose() => _p.Dispose();

    private Task<VmEmailResult> SendAsync(VmRecord vm, string to)
        => new VmEmailGateway(_p.Db, _sender).SendAsync(vm.Id, vm.AccountId, new VmEmailRequest(to, "s", "b", null), CancellationToken.None);

    [Fact]
    public async Task A_recorded_visitor_may_be_mailed_by_that_vm_only_and_not_after_the_vm_is_gone()
    {
        var owner = await _p.NewAccountAsync("owner@example.com");
        var visitor = await _p.NewAccountAsync("visitor@example.com");
        var site = await _p.Vms.CreateAsync(owner.Id, new VmCreateRequest { Name = "site" });
        var other = await _p.Vms.CreateAsync(owner.Id, new VmCreateRequest { Name = "other" });
        var log = new SiteVisitorLog(_p.Db, _p.Time);

        Assert.Equal(VmEmailOutcome.RecipientNotAllowed, (await SendAsync(site, "visitor@example.com")).Outcome);
        await log.RecordAsync(site.Id, visitor.Id, "Visitor@Example.com");
        Assert.Equal(VmEmailOutcome.Sent, (await SendAsync(site, "visitor@example.com")).Outcome);
        Assert.Equal(VmEmailOutcome.RecipientNotAllowed, (await SendAsync(other, "visitor@example.com")).Outcome);

        // An address the account no longer proves is not a recipient.
        await _p.Db.WriteAsync(u => u.ExecuteAsync("UPDATE accounts SET email_verified = 0 WHERE id = @Id", new { visitor.Id }));
        Assert.Equal(VmEmailOutcome.RecipientNotAllowed, (await SendAsync(site, "visitor@example.com")).Outcome);

        await _p.Vms.RemoveAsync(owner.Id, "site");
        Assert.Equal(0, await log.CountAsync(site.Id));
        // Recording for a VM that is gone is a no-op, not an error.
        await log.RecordAsync(site.Id, visitor.Id, "visitor@example.com");
        Assert.Equal(0, await log.CountAsync(site.Id));
    }

    [Fact]
    public async Task Each_vm_keeps_only_its_latest_logins()
    {
        var owner = await _p.NewAccountAsync("owner@example.com");
        var site = await _p.Vms.CreateAsync(owner.Id, new VmCreateRequest { Name = "busy" });
        var log = new SiteVisitorLog(_p.Db, _p.Time, maxVisitorsPerVm: 3);
        var visitors = new List<string>();
        for (int i = 0; i < 5; i++)
        {
            var a = await _p.NewAccountAsync($"v{i}@example.com");
            visitors.Add(a.Email);
            await log.RecordAsync(site.Id, a.Id, a.Email);
            _p.Time.Advance(TimeSpan.FromSeconds(1));
        }
        Assert.Equal(3, await log.CountAsync(site.Id));
        Assert.Equal(VmEmailOutcome.RecipientNotAllowed, (await SendAsync(site, visitors[0])).Outcome);
        Assert.Equal(VmEmailOutcome.RecipientNotAllowed, (await SendAsync(site, visitors[1])).Outcome);
        Assert.Equal(VmEmailOutcome.Sent, (await SendAsync(site, visitors[4])).Outcome);
    }
}
