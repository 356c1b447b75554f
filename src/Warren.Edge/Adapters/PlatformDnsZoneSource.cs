using System.Net;
using Warren.Edge.Dns;
using Warren.Platform.Addressing;
using Warren.Platform.Vms;

namespace Warren.Edge.Adapters;

/// <summary>
/// <see cref="IDnsZoneSource"/> over the platform's in-memory <see cref="PlatformIndex"/> and
/// <see cref="AddressSlotTable"/>: no I/O per query, and the index changes the moment a VM is created,
/// renamed or removed.
/// </summary>
public sealed class PlatformDnsZoneSource : IDnsZoneSource
{
    private readonly PlatformIndex _index;
    private readonly AddressSlotTable _slots;

    public PlatformDnsZoneSource(PlatformIndex index, AddressSlotTable slots)
    {
        _index = index;
        _slots = slots;
    }

    public ValueTask<DnsVmEntry?> FindVmAsync(string vmName, CancellationToken ct)
    {
        var vm = _index.GetByName(vmName);
        if (vm is null || vm.State == VmState.Deleting)
            return ValueTask.FromResult<DnsVmEntry?>(null);
        // A VM over its account's slot budget has no slot: its name points at the control host.
        string? slot = vm.SlotName is not null && _slots.TryGetByName(vm.SlotName, out _) ? vm.SlotName : null;
        return ValueTask.FromResult<DnsVmEntry?>(new DnsVmEntry(slot));
    }

    public ValueTask<IPAddress?> FindSlotAddressAsync(string slotLabel, CancellationToken ct) =>
        ValueTask.FromResult(_slots.TryGetByName(slotLabel, out var slot) ? slot.PublicIp : null);
}
