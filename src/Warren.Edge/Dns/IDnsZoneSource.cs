using System.Net;

namespace Warren.Edge.Dns;

/// <summary>
/// What the DNS server asks the platform about the VM domain. The server calls it on
/// every query that needs it and caches nothing, so answers change the moment the
/// platform's data changes. Implementations should answer from memory or an indexed
/// lookup: they sit on the hot path of every DNS query.
/// </summary>
public interface IDnsZoneSource
{
    /// <summary>
    /// Called for a query on <c>NAME.&lt;vm-domain&gt;</c>. <paramref name="vmName"/> is the
    /// lower-case first label. Returns null when no VM has that name (the server answers
    /// NXDOMAIN), otherwise where the name points.
    /// </summary>
    ValueTask<DnsVmEntry?> FindVmAsync(string vmName, CancellationToken ct);

    /// <summary>
    /// Called for a query on <c>LABEL.&lt;vm-domain&gt;</c> before <see cref="FindVmAsync"/>.
    /// <paramref name="slotLabel"/> is lower-case (e.g. <c>s001</c>). Returns the slot's public
    /// address (IPv4 → A, IPv6 → AAAA), or null when no slot has that label.
    /// </summary>
    ValueTask<IPAddress?> FindSlotAddressAsync(string slotLabel, CancellationToken ct);
}

/// <summary>
/// Where a VM's name points: the slot label (<c>s001</c>) its SSH address is on, or null when the
/// VM has no slot of its own (account over its slot budget): the name then points at the
/// control host, and SSH reaches the VM as <c>vm+NAME@…</c>.
/// </summary>
public sealed record DnsVmEntry(string? SlotLabel);
