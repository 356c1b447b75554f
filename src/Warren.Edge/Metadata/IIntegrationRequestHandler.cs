using System.Net;
using Microsoft.AspNetCore.Http;

namespace Warren.Edge.Metadata;

/// <summary>
/// The VM a request to the metadata address came from, decided by the network path the packet arrived on (the VM's
/// own bridge or tap and the host address on it), never by anything the VM can write into the request.
/// </summary>
public sealed record MetadataCaller(string VmId, string VmName, string AccountId, IPAddress SourceAddress);

/// <summary>
/// Serves what a VM sends to <c>NAME.int.&lt;vm-domain&gt;</c>: VM DNS answers those names with the metadata address,
/// and the metadata server hands every such request here with the caller it identified. The metadata server owns
/// identification and <c>/</c>, <c>/gateway/…</c> on the bare address; the handler owns everything under an
/// integration's name (exe.dev's docs: integrations, http-proxy, github, reflection).
/// </summary>
public interface IIntegrationRequestHandler
{
    /// <summary>Writes the whole response. <paramref name="integrationName"/> is the DNS label before <c>.int.</c>.</summary>
    Task HandleAsync(HttpContext context, MetadataCaller caller, string integrationName, CancellationToken ct);
}
