using System.Collections.Concurrent;
using System.Net;
using Warren.Edge.Dns;

namespace Warren.Edge.Tests.Dns;

internal sealed class FakeZoneSource : IDnsZoneSource
{
    public ConcurrentDictionary<string, string?> Vms { get; } = new();
    public ConcurrentDictionary<string, IPAddress> Slots { get; } = new();

    public ValueTask<DnsVmEntry?> FindVmAsync(string vmName, CancellationToken ct) =>
        ValueTask.FromResult(Vms.TryGetValue(vmName, out var slot) ? new DnsVmEntry(slot) : null);

    public ValueTask<IPAddress?> FindSlotAddressAsync(string slotLabel, CancellationToken ct) =>
        ValueTask.FromResult(Slots.TryGetValue(slotLabel, out var ip) ? ip : null);
}
