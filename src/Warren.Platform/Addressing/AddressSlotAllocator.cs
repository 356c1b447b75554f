using System.Security.Cryptography;
using System.Text;
using Warren.Platform.Storage;
using Warren.Platform.Sharing;

namespace Warren.Platform.Addressing;

/// <summary>Where a new VM went: its DNS slot, and whether its owner reaches it there directly.</summary>
public sealed record SlotAssignment(string SlotName, bool Reachable);

/// <summary>
/// Assigns address slots so that no account can SSH into two VMs on one slot.
/// The invariant lives in the database: table <c>ssh_reach(account_id, slot_name, vm_id)</c> has
/// PRIMARY KEY (account_id, slot_name), so a route {account, slot} names at most one VM even if two
/// creates raced. Every method here runs inside the caller's write transaction.
/// <para>
/// A VM has one DNS slot (fixed at create/cp, kept by rename). Its owner and every account it is shared
/// with over SSH get a reach row on that slot when theirs is free; an account without a row there reaches
/// the VM as <c>vm+NAME@sNNN.domain</c> instead.
/// </para>
/// </summary>
public sealed class AddressSlotAllocator
{
    private readonly AddressSlotTable _slots;

    public AddressSlotAllocator(AddressSlotTable slots) => _slots = slots;

    /// <summary>
    /// Where an account's search for a free slot starts: a stable hash of the account id, so accounts
    /// spread over the pool instead of all starting at s001. Stable across restarts and processes.
    /// </summary>
    public int StartIndex(string accountId)
    {
        Span<byte> h = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(accountId), h);
        uint v = BitConverter.ToUInt32(h);
        return (int)(v % (uint)_slots.Count);
    }

    /// <summary>
    /// Picks the new VM's slot for <paramref name="accountId"/>: the first slot, from <see cref="StartIndex"/>
    /// onwards (wrapping), where the account reaches nothing yet; records the reach row and the VM's slot_name.
    /// When every slot is taken the VM gets the start slot for DNS and no reach row (Reachable = false).
    /// The VM row must already exist (inserted in the same transaction).
    /// </summary>
    internal async Task<SlotAssignment> AssignAsync(UnitOfWork u, string accountId, string vmId)
    {
        var result = await ChooseAsync(u, accountId, vmId);
        await u.ExecuteAsync("UPDATE vms SET slot_name = @SlotName WHERE id = @vmId", new { result.SlotName, vmId });
        return result;
    }

    private async Task<SlotAssignment> ChooseAsync(UnitOfWork u, string accountId, string vmId)
    {
        var used = (await u.QueryAsync<string>("SELECT slot_name FROM ssh_reach WHERE account_id = @accountId", new { accountId }))
            .ToHashSet(StringComparer.Ordinal);
        int start = StartIndex(accountId);
        for (int i = 0; i < _slots.Count; i++)
        {
            var slot = _slots.Slots[(start + i) % _slots.Count];
            if (used.Contains(slot.Name)) continue;
            await u.ExecuteAsync("INSERT INTO ssh_reach (account_id, slot_name, vm_id) VALUES (@accountId, @Name, @vmId)",
                new { accountId, slot.Name, vmId });
            return new SlotAssignment(slot.Name, true);
        }
        return new SlotAssignment(_slots.Slots[start].Name, false);
    }

    /// <summary>
    /// Gives <paramref name="accountId"/> a direct route to the VM on its slot when that account reaches
    /// nothing else there. False when the slot is taken for the account (or the VM has no slot).
    /// </summary>
    internal async Task<bool> TryGrantAsync(UnitOfWork u, string accountId, string vmId)
    {
        var slot = await u.ScalarAsync<string?>("SELECT slot_name FROM vms WHERE id = @vmId AND state <> 'deleting'", new { vmId });
        if (slot is null) return false;
        var n = await u.ExecuteAsync("INSERT OR IGNORE INTO ssh_reach (account_id, slot_name, vm_id) VALUES (@accountId, @slot, @vmId)",
            new { accountId, slot, vmId });
        return n == 1;
    }

    /// <summary>
    /// Removes the account's route to the VM (share removed or downgraded) and hands the freed slot to
    /// another VM the account can SSH into there. Returns the VM ids whose routes changed.
    /// </summary>
    internal async Task<IReadOnlyList<string>> RevokeAsync(UnitOfWork u, string accountId, string vmId)
    {
        var slot = await u.ScalarAsync<string?>("SELECT slot_name FROM ssh_reach WHERE account_id = @accountId AND vm_id = @vmId", new { accountId, vmId });
        if (slot is null) return [vmId];
        await u.ExecuteAsync("DELETE FROM ssh_reach WHERE account_id = @accountId AND vm_id = @vmId", new { accountId, vmId });
        var touched = new List<string> { vmId };
        if (await PromoteAsync(u, accountId, slot, vmId) is { } promoted) touched.Add(promoted);
        return touched;
    }

    /// <summary>
    /// Drops every route to a VM that is going away and promotes, per affected account, another VM it
    /// can SSH into on the same slot. Returns the VM ids whose routes changed (including <paramref name="vmId"/>).
    /// </summary>
    internal async Task<IReadOnlyList<string>> ReleaseAsync(UnitOfWork u, string vmId)
    {
        var rows = (await u.QueryAsync<(string AccountId, string SlotName)>(
            "SELECT account_id AS AccountId, slot_name AS SlotName FROM ssh_reach WHERE vm_id = @vmId", new { vmId })).ToList();
        await u.ExecuteAsync("DELETE FROM ssh_reach WHERE vm_id = @vmId", new { vmId });
        var touched = new List<string> { vmId };
        foreach (var (acct, slot) in rows)
            if (await PromoteAsync(u, acct, slot, vmId) is { } promoted) touched.Add(promoted);
        return touched;
    }

    /// <summary>
    /// An account just got an account (sign-up) — its pending shares become active and SSH shares get
    /// routes where the invariant allows. Returns the VM ids whose records or routes changed.
    /// </summary>
    internal async Task<IReadOnlyList<string>> ActivatePendingSharesAsync(UnitOfWork u, string accountId, string email)
    {
        var vmIds = (await u.QueryAsync<(string VmId, long Ssh)>(
            "SELECT vm_id AS VmId, ssh AS Ssh FROM vm_shares WHERE email = @email AND status = 'pending'", new { email })).ToList();
        if (vmIds.Count == 0) return [];
        await u.ExecuteAsync("UPDATE vm_shares SET status = 'active' WHERE email = @email AND status = 'pending'", new { email });
        foreach (var (vmId, ssh) in vmIds)
            if (ssh != 0) await TryGrantAsync(u, accountId, vmId);
        return vmIds.Select(v => v.VmId).ToList();
    }

    private static async Task<string?> PromoteAsync(UnitOfWork u, string accountId, string slot, string excludedVmId)
    {
        var candidate = await u.ScalarAsync<string?>($"""
            SELECT v.id FROM vms v
            WHERE v.slot_name = @slot AND v.id <> @excludedVmId AND v.state <> 'deleting'
              AND NOT EXISTS (SELECT 1 FROM ssh_reach r WHERE r.account_id = @accountId AND r.vm_id = v.id)
              AND (v.account_id = @accountId OR EXISTS (
                    SELECT 1 FROM {ShareGrantees.VerifiedJoin}
                    WHERE s.vm_id = v.id AND a.id = @accountId AND s.status = 'active' AND s.ssh = 1))
            ORDER BY (v.account_id = @accountId) DESC, v.created_at, v.id
            LIMIT 1
            """, new { slot, excludedVmId, accountId });
        if (candidate is null) return null;
        await u.ExecuteAsync("INSERT INTO ssh_reach (account_id, slot_name, vm_id) VALUES (@accountId, @slot, @candidate)",
            new { accountId, slot, candidate });
        return candidate;
    }
}
