using System.Diagnostics.CodeAnalysis;
using Warren.Platform.Vms;

namespace Warren.Platform.Addressing;

/// <summary>
/// What the authoritative DNS server needs: NAME → slot (CNAME target), slot → public IP (A). Backed by the
/// in-memory <see cref="PlatformIndex"/>, so answers change the moment a VM is created, renamed or removed.
/// </summary>
public interface IVmDirectory
{
    /// <summary>Grows on every change; cache answers keyed by it.</summary>
    long Version { get; }

    /// <summary>Raised after every change.</summary>
    event Action? Changed;

    string VmDomain { get; }

    /// <summary>The configured slots (each answers "sNNN.domain A PublicIp").</summary>
    IReadOnlyList<AddressSlot> Slots { get; }

    bool TryGetSlot(string slotName, [NotNullWhen(true)] out AddressSlot? slot);

    /// <summary>
    /// The slot of the VM named <paramref name="vmName"/> (a bare label). False for unknown names and
    /// for VMs being deleted.
    /// </summary>
    bool TryGetSlotForName(string vmName, [NotNullWhen(true)] out AddressSlot? slot);
}

public sealed class VmDirectory : IVmDirectory
{
    private readonly PlatformIndex _index;
    private readonly AddressSlotTable _slots;

    public VmDirectory(PlatformIndex index, AddressSlotTable slots)
    {
        _index = index;
        _slots = slots;
    }

    public long Version => _index.Version;

    public event Action? Changed
    {
        add => _index.Changed += value;
        remove => _index.Changed -= value;
    }

    public string VmDomain => _slots.VmDomain;
    public IReadOnlyList<AddressSlot> Slots => _slots.Slots;

    public bool TryGetSlot(string slotName, [NotNullWhen(true)] out AddressSlot? slot) => _slots.TryGetByName(slotName, out slot);

    public bool TryGetSlotForName(string vmName, [NotNullWhen(true)] out AddressSlot? slot)
    {
        slot = null;
        var vm = _index.GetByName(vmName.ToLowerInvariant());
        if (vm is null || vm.State == VmState.Deleting || vm.SlotName is null) return false;
        return _slots.TryGetByName(vm.SlotName, out slot);
    }
}
