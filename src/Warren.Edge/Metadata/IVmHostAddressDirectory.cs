using System.Net;

namespace Warren.Edge.Metadata;

/// <summary>
/// The runtime's side of caller identity: which VM's own network has this address as the host's address. Every VM
/// has its own bridge (or tap) and subnet, and the packet filter redirects 169.254.169.254 to the host's address on
/// the interface the packet arrived on, so that address names the VM whatever the VM writes into its packets.
/// </summary>
public interface IVmHostAddressDirectory
{
    Task<string?> FindVmIdByHostAddressAsync(IPAddress hostAddress, CancellationToken ct);
}
