using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Warren.Platform.Addressing;

/// <summary>One shared address: DNS <c>{Name}.{VmDomain}</c> A <see cref="PublicIp"/>; the daemon listens on <see cref="LocalIp"/>.</summary>
public sealed record AddressSlot(string Name, int Index, IPAddress PublicIp, IPAddress LocalIp);

/// <summary>The configured slot pool (<see cref="PlatformOptions.EffectiveSlots"/>), indexed by name and by local IP.</summary>
public sealed partial class AddressSlotTable
{
    private readonly Dictionary<string, AddressSlot> _byName = new(StringComparer.Ordinal);
    private readonly Dictionary<IPAddress, AddressSlot> _byLocal = new();
    /// <summary>IPv4 local addresses by their 32-bit value: every SSH connection looks its slot up here, and
    /// hashing a fresh <see cref="IPAddress"/> costs several times a uint probe.</summary>
    private readonly Dictionary<uint, AddressSlot> _byLocalV4 = new();

    public AddressSlotTable(PlatformOptions options)
    {
        var list = new List<AddressSlot>();
        foreach (var o in options.EffectiveSlots)
        {
            if (!IsSlotName(o.Name)) throw new ArgumentException($"Slot name \"{o.Name}\" must be s followed by three or more digits.");
            // Interned, as PlatformIndex interns the slot names of routes: a route lookup then matches the slot by reference.
            var slot = new AddressSlot(string.Intern(o.Name), list.Count, Normalize(IPAddress.Parse(o.PublicIp)), Normalize(IPAddress.Parse(o.LocalIp)));
            if (!_byName.TryAdd(slot.Name, slot)) throw new ArgumentException($"Slot name \"{o.Name}\" appears twice.");
            if (!_byLocal.TryAdd(slot.LocalIp, slot)) throw new ArgumentException($"Local IP {o.LocalIp} is used by two slots.");
            if (TryGetIPv4(slot.LocalIp, out var v4)) _byLocalV4.Add(v4, slot);
            list.Add(slot);
        }
        if (list.Count == 0) throw new ArgumentException("At least one address slot is required.");
        Slots = list;
        VmDomain = options.VmDomain.Trim('.').ToLowerInvariant();
    }

    public IReadOnlyList<AddressSlot> Slots { get; }
    public int Count => Slots.Count;
    public string VmDomain { get; }

    [GeneratedRegex("^s[0-9]{3,}$", RegexOptions.CultureInvariant)]
    private static partial Regex SlotName();

    public static bool IsSlotName(string? name) => name is not null && SlotName().IsMatch(name);

    public bool TryGetByName(string name, [NotNullWhen(true)] out AddressSlot? slot) => _byName.TryGetValue(name, out slot);

    /// <summary>The slot whose listener address this is (IPv4-mapped IPv6 is unwrapped).</summary>
    public bool TryGetByLocalIp(IPAddress localIp, [NotNullWhen(true)] out AddressSlot? slot)
        => TryGetIPv4(localIp, out var v4) ? _byLocalV4.TryGetValue(v4, out slot) : _byLocal.TryGetValue(localIp, out slot);

    /// <summary>The IPv4 address as a big-endian uint, for IPv4 and IPv4-mapped IPv6 (RFC 4291 §2.5.5.2) addresses.</summary>
    private static bool TryGetIPv4(IPAddress ip, out uint value)
    {
        Span<byte> bytes = stackalloc byte[16];
        if (ip.AddressFamily == AddressFamily.InterNetwork && ip.TryWriteBytes(bytes, out _))
        {
            value = BinaryPrimitives.ReadUInt32BigEndian(bytes);
            return true;
        }
        if (ip.IsIPv4MappedToIPv6 && ip.TryWriteBytes(bytes, out _))
        {
            value = BinaryPrimitives.ReadUInt32BigEndian(bytes[12..]);
            return true;
        }
        value = 0;
        return false;
    }

    /// <summary>"s001.box.localhost".</summary>
    public string HostName(string slotName) => $"{slotName}.{VmDomain}";

    internal static IPAddress Normalize(IPAddress ip) => ip.IsIPv4MappedToIPv6 ? ip.MapToIPv4() : ip;
}
