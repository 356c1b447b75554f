using System.Collections.Concurrent;
using System.Net;
using Warren.Platform.Addressing;
using Warren.Platform.Vms;

namespace Warren.Edge.Metadata;

/// <summary>
/// Who is asking: the local address a connection reached (the host's address on the caller's own bridge, chosen by
/// the packet filter's redirect) names the VM; the source address is only reported, never trusted — a VM may put any
/// address on its interface. The VM's name and owner come from the platform index on every request, so a rename
/// shows at once and a removed VM is nobody. Address → VM id is cached for <see cref="CacheFor"/>, well inside the
/// time a freed VM address is kept out of use (Warren:Network:AddressQuarantineSeconds).
/// </summary>
public sealed class MetadataCallerResolver(IVmHostAddressDirectory directory, PlatformIndex index, TimeProvider time) : IMetadataCallerSource
{
    public static readonly TimeSpan CacheFor = TimeSpan.FromSeconds(2);
    /// <summary>Cap on cached addresses (one per VM); cleared when reached.</summary>
    public const int MaxCachedAddresses = 65_536;

    private readonly ConcurrentDictionary<IPAddress, (string? VmId, long At)> _cache = new();

    public async ValueTask<MetadataCaller?> ResolveAsync(IPAddress? localAddress, IPAddress? sourceAddress, CancellationToken ct)
    {
        if (localAddress is null) return null;
        if (localAddress.IsIPv4MappedToIPv6) localAddress = localAddress.MapToIPv4();
        long now = time.GetTimestamp();
        string? vmId;
        if (_cache.TryGetValue(localAddress, out var hit) && time.GetElapsedTime(hit.At, now) < CacheFor)
            vmId = hit.VmId;
        else
        {
            vmId = await directory.FindVmIdByHostAddressAsync(localAddress, ct).ConfigureAwait(false);
            if (_cache.Count >= MaxCachedAddresses) _cache.Clear();
            _cache[localAddress] = (vmId, now);
        }
        if (vmId is null || index.GetById(vmId) is not { } vm || vm.State == VmState.Deleting) return null;
        var source = sourceAddress is null ? IPAddress.None : sourceAddress.IsIPv4MappedToIPv6 ? sourceAddress.MapToIPv4() : sourceAddress;
        return new MetadataCaller(vm.Id, vm.Name, vm.AccountId, source);
    }
}

/// <summary>Who is asking, from the addresses of the connection (<see cref="MetadataCallerResolver"/>).</summary>
public interface IMetadataCallerSource
{
    /// <summary>The caller, or null when the connection did not come through a live VM's own network.</summary>
    ValueTask<MetadataCaller?> ResolveAsync(IPAddress? localAddress, IPAddress? sourceAddress, CancellationToken ct);
}
