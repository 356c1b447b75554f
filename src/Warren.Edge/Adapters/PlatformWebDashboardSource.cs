using Warren.Edge.Http;
using Warren.Platform.Accounts;
using Warren.Platform.Sharing;
using Warren.Platform.Vms;

namespace Warren.Edge.Adapters;

/// <summary>
/// <see cref="IWebDashboardSource"/> over the platform: the account's VMs (<see cref="VmService.ListAsync"/>) and the
/// VMs of other accounts shared with it by an active share (<see cref="ShareService.ListSharedWithAsync"/>), each
/// with its owner's address. Both lists are keyed by the signed-in account's id, never by anything the client sent.
/// </summary>
public sealed class PlatformWebDashboardSource(VmService vms, ShareService shares, AccountService accounts) : IWebDashboardSource
{
    public async ValueTask<WebDashboard> GetDashboardAsync(WebUser user, CancellationToken ct)
    {
        var owned = await vms.ListAsync(user.UserId, pattern: null, ct).ConfigureAwait(false);
        var shared = await shares.ListSharedWithAsync(user.UserId, ct).ConfigureAwait(false);
        var ownerEmails = new Dictionary<string, string>(StringComparer.Ordinal) { [user.UserId] = user.Email };
        var sharedVms = new List<WebDashboardVm>(shared.Count);
        foreach (var vm in shared.OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            if (!ownerEmails.TryGetValue(vm.AccountId, out var email))
            {
                email = (await accounts.GetAsync(vm.AccountId, ct).ConfigureAwait(false))?.Email;
                if (email is null)
                    continue; // the owner's account is gone: the share leads nowhere
                ownerEmails[vm.AccountId] = email;
            }
            sharedVms.Add(Describe(vm, email));
        }
        return new WebDashboard(owned.Where(v => v.State != VmState.Deleting).Select(v => Describe(v, user.Email)).ToList(), sharedVms);
    }

    private static WebDashboardVm Describe(VmRecord vm, string ownerEmail) =>
        new(vm.Name, vm.State.ToWire(), ownerEmail, vm.IsPublic, vm.ProxyPort);
}
