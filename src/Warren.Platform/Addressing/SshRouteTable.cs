using System.Diagnostics.CodeAnalysis;
using System.Net;
using Dapper;
using Warren.Platform.Storage;
using Warren.Platform.Vms;
using Warren.Platform.Sharing;

namespace Warren.Platform.Addressing;

/// <summary>
/// How an account reaches a VM over SSH. <see cref="Host"/> is "NAME.box.localhost" for a direct route,
/// else a slot host "sNNN.box.localhost" with <see cref="User"/> "vm+NAME". <see cref="Destination"/> is
/// what <c>ls --json</c> prints as ssh_dest; <see cref="Port"/> is the front door's SSH port.
/// </summary>
public sealed record SshEndpoint(string Host, string? User, int Port)
{
    public string Destination => User is null ? Host : $"{User}@{Host}";
    public bool IsDirect => User is null;
}

/// <summary>
/// The SSH front door's lookup: {account of the verified key, local IP the connection arrived on} → VM.
/// Lookups are dictionary hits on <see cref="PlatformIndex"/> (no database access), so they stay O(1) with
/// thousands of slots and 100,000 VMs. The <c>vm+NAME@</c> form goes through <see cref="ResolveByNameAsync"/>.
/// </summary>
public sealed class SshRouteTable
{
    /// <summary>SSH user-name prefix that selects a VM by name on any shared address: "vm+NAME".</summary>
    public const string VmUserPrefix = "vm+";

    private readonly PlatformIndex _index;
    private readonly AddressSlotTable _slots;
    private readonly WarrenDatabase _db;
    private readonly PlatformOptions _options;
    private readonly IPAddress? _controlIp;

    public SshRouteTable(PlatformIndex index, AddressSlotTable slots, WarrenDatabase db, PlatformOptions options)
    {
        _index = index;
        _slots = slots;
        _db = db;
        _options = options;
        _controlIp = IPAddress.TryParse(options.ControlLocalIp, out var ip) ? AddressSlotTable.Normalize(ip) : null;
    }

    /// <summary>True when <paramref name="localIp"/> is the control plane's address.</summary>
    public bool IsControlAddress(IPAddress localIp) => _controlIp is not null && AddressSlotTable.Normalize(localIp).Equals(_controlIp);

    /// <summary>The slot a listener address belongs to.</summary>
    public bool TryGetSlot(IPAddress localIp, [NotNullWhen(true)] out AddressSlot? slot) => _slots.TryGetByLocalIp(localIp, out slot);

    /// <summary>The VM <paramref name="accountId"/> reaches at <paramref name="localIp"/>, or null (unknown address or no VM there).</summary>
    public VmRecord? Resolve(string accountId, IPAddress localIp)
        => _slots.TryGetByLocalIp(localIp, out var slot) ? _index.GetRoute(accountId, slot.Name) : null;

    public ValueTask<VmRecord?> ResolveAsync(string accountId, IPAddress localIp, CancellationToken ct = default)
        => ValueTask.FromResult(Resolve(accountId, localIp));

    /// <summary>
    /// The VM named <paramref name="vmName"/> (optionally "NAME.domain") if <paramref name="accountId"/> may SSH
    /// into it (owner, or an active share with SSH rights); null otherwise (not revealing existence).
    /// </summary>
    public async Task<VmRecord?> ResolveByNameAsync(string accountId, string vmName, CancellationToken ct = default)
    {
        var vm = _index.GetByName(VmNames.Normalize(vmName, _options.VmDomain));
        if (vm is null || vm.State == VmState.Deleting) return null;
        if (vm.AccountId == accountId) return vm;
        var ok = await _db.ReadAsync(c => c.ExecuteScalarAsync<long>($"""
            SELECT COUNT(*) FROM {ShareGrantees.VerifiedJoin}
            WHERE s.vm_id = @Id AND a.id = @accountId AND s.status = 'active' AND s.ssh = 1
            """, new { vm.Id, accountId }), ct);
        return ok > 0 ? vm : null;
    }

    /// <summary>Parses the SSH user "vm+NAME" (as in <c>ssh vm+web@s001.box.localhost</c>).</summary>
    public static bool TryParseVmUser(string? user, [NotNullWhen(true)] out string? vmName)
    {
        vmName = null;
        if (user is null || !user.StartsWith(VmUserPrefix, StringComparison.Ordinal) || user.Length == VmUserPrefix.Length) return false;
        vmName = user[VmUserPrefix.Length..];
        return true;
    }

    /// <summary>
    /// How <paramref name="viewerAccountId"/> reaches <paramref name="vm"/>: "NAME.domain" when the viewer has
    /// the direct route on the VM's slot, else "vm+NAME@sNNN.domain" (the VM's slot, or the viewer's first slot).
    /// </summary>
    public SshEndpoint GetSshEndpoint(VmRecord vm, string viewerAccountId)
    {
        var domain = _slots.VmDomain;
        if (vm.SlotName is not null && _index.HasRoute(viewerAccountId, vm.Id))
            return new SshEndpoint($"{vm.Name}.{domain}", null, _options.SshPort);
        var slot = vm.SlotName ?? _slots.Slots[0].Name;
        return new SshEndpoint(_slots.HostName(slot), VmUserPrefix + vm.Name, _options.SshPort);
    }

    /// <summary><see cref="GetSshEndpoint"/>'s destination string (ls --json "ssh_dest").</summary>
    public string SshDestination(VmRecord vm, string viewerAccountId) => GetSshEndpoint(vm, viewerAccountId).Destination;
}
