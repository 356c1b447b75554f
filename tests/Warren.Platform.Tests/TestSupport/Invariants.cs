using Xunit;
using Dapper;
using Warren.Platform.Addressing;
using Warren.Platform.Vms;

namespace Warren.Platform.Tests.TestSupport;

/// <summary>
/// The allocation invariant and the agreement of records, routes and DNS, checked against the database.
/// Throws (xunit assertion) on the first violation.
/// </summary>
public static class Invariants
{
    public static void Check(TestPlatform p)
    {
        using var c = p.Db.OpenConnection();
        var vms = c.Query<(string Id, string Name, string AccountId, string? SlotName, string State)>(
            "SELECT id AS Id, name AS Name, account_id AS AccountId, slot_name AS SlotName, state AS State FROM vms").ToDictionary(v => v.Id);
        var reach = c.Query<(string AccountId, string SlotName, string VmId)>(
            "SELECT account_id AS AccountId, slot_name AS SlotName, vm_id AS VmId FROM ssh_reach").ToList();
        var sshGrants = c.Query<(string VmId, string AccountId)>("""
            SELECT s.vm_id AS VmId, a.id AS AccountId FROM vm_shares s JOIN accounts a ON a.email = s.email
            WHERE s.status = 'active' AND s.ssh = 1
            """).ToHashSet();

        // 1. Each route: a live VM, on the VM's own slot, for an account allowed to SSH into it.
        foreach (var r in reach)
        {
            Assert.True(vms.TryGetValue(r.VmId, out var vm), $"route to missing VM {r.VmId}");
            Assert.NotEqual("deleting", vm.State);
            Assert.Equal(vm.SlotName, r.SlotName);
            Assert.True(vm.AccountId == r.AccountId || sshGrants.Contains((r.VmId, r.AccountId)),
                $"account {r.AccountId} routes to {vm.Name} without SSH rights");
        }
        // 2. THE invariant: per account, at most one reachable VM per slot; and one route per (account, VM).
        Assert.Equal(reach.Count, reach.Select(r => (r.AccountId, r.SlotName)).Distinct().Count());
        Assert.Equal(reach.Count, reach.Select(r => (r.AccountId, r.VmId)).Distinct().Count());
        // 3. Maximality: an account with SSH rights to a VM it has no route to has a route on that slot already
        //    (otherwise the slot was free and the VM should have been routed).
        var routed = reach.ToDictionary(r => (r.AccountId, r.SlotName), r => r.VmId);
        var hasRoute = reach.Select(r => (r.AccountId, r.VmId)).ToHashSet();
        foreach (var vm in vms.Values.Where(v => v.State != "deleting" && v.SlotName is not null))
        {
            var allowed = sshGrants.Where(g => g.VmId == vm.Id).Select(g => g.AccountId).Append(vm.AccountId).Distinct();
            foreach (var a in allowed)
                if (!hasRoute.Contains((a, vm.Id)))
                    Assert.True(routed.ContainsKey((a, vm.SlotName!)), $"{a} cannot reach {vm.Name} on free slot {vm.SlotName}");
        }

        // 4. The in-memory index equals the database (incremental updates did not drift).
        var fresh = new PlatformIndex(p.Db);
        Assert.Equal(Sorted(fresh.SnapshotRoutes()), Sorted(p.Index.SnapshotRoutes()));
        Assert.Equal(vms.Count, p.Index.VmCount);

        // 5. The route table answers exactly the routes; the DNS view answers every live VM's slot.
        var accounts = c.Query<string>("SELECT id FROM accounts").ToList();
        foreach (var a in accounts)
            foreach (var slot in p.Slots.Slots)
            {
                var got = p.Routes.Resolve(a, slot.LocalIp);
                Assert.Equal(routed.GetValueOrDefault((a, slot.Name)), got?.Id);
            }
        foreach (var vm in vms.Values)
        {
            bool found = p.Directory.TryGetSlotForName(vm.Name, out var slot);
            if (vm.State == "deleting") Assert.False(found);
            else { Assert.True(found, $"DNS has no answer for {vm.Name}"); Assert.Equal(vm.SlotName, slot!.Name); }
            var rec = p.Index.GetById(vm.Id)!;
            var ep = p.Routes.GetSshEndpoint(rec, vm.AccountId);
            Assert.Equal(hasRoute.Contains((vm.AccountId, vm.Id)), ep.IsDirect);
            Assert.Equal(ep.IsDirect ? $"{vm.Name}.{p.Options.VmDomain}" : $"vm+{vm.Name}@{vm.SlotName}.{p.Options.VmDomain}", ep.Destination);
        }
    }

    private static List<string> Sorted(IEnumerable<(string, string, string)> routes)
        => routes.Select(r => $"{r.Item1}|{r.Item2}|{r.Item3}").Order(StringComparer.Ordinal).ToList();
}
