using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Warren.Runtime.HostNetwork;

/// <summary>One VM's subnet: the host is the gateway (first usable address), the VM the next one.</summary>
public readonly record struct VmSubnet(int Index, IPNetwork Network, IPAddress Gateway, IPAddress VmAddress)
{
    public override string ToString() => Network.ToString();
}

/// <summary>
/// The pool VM subnets are cut from (RFC 4632 prefixes). Subnets are handed out in a cycle — the one after the most
/// recently allocated, wrapping at the end — so a freed subnet is the last to come round again; together with the
/// quarantine (<see cref="AddressQuarantine"/>) no address is reused while a cached route may still point at it.
/// </summary>
public sealed class VmSubnetPool
{
    /// <summary>Smallest useful subnet: network, gateway, VM and broadcast addresses.</summary>
    public const int MaxPrefixLength = 30;

    private readonly uint _base;
    private readonly int _prefixLength;

    public VmSubnetPool(string pool, int prefixLength)
    {
        if (!IPNetwork.TryParse(pool, out var network) || network.BaseAddress.AddressFamily != AddressFamily.InterNetwork)
            throw new ArgumentException($"VM address pool '{pool}' is not an IPv4 CIDR range (e.g. 10.231.0.0/16)", nameof(pool));
        if (prefixLength < network.PrefixLength || prefixLength > MaxPrefixLength)
            throw new ArgumentException($"VM subnet prefix /{prefixLength} must lie between the pool's /{network.PrefixLength} and /{MaxPrefixLength}", nameof(prefixLength));
        // Hard cap on the pool's size so an index always fits an int and a full scan stays cheap.
        const int MaxSubnetBits = 20;
        if (prefixLength - network.PrefixLength > MaxSubnetBits)
            throw new ArgumentException($"VM address pool {pool} cut into /{prefixLength} gives more than 2^{MaxSubnetBits} subnets; use a smaller pool or larger subnets", nameof(prefixLength));
        Pool = network;
        _base = ToUInt32(network.BaseAddress);
        _prefixLength = prefixLength;
        Count = 1 << (prefixLength - network.PrefixLength);
    }

    public IPNetwork Pool { get; }

    public int PrefixLength => _prefixLength;

    /// <summary>Number of subnets in the pool.</summary>
    public int Count { get; }

    public VmSubnet this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
            uint start = _base + ((uint)index << (32 - _prefixLength));
            return new VmSubnet(index, new IPNetwork(FromUInt32(start), _prefixLength), FromUInt32(start + 1), FromUInt32(start + 2));
        }
    }

    /// <summary>The index of a subnet of this pool (exact prefix and alignment), or -1.</summary>
    public int IndexOf(IPNetwork subnet)
    {
        if (subnet.PrefixLength != _prefixLength || subnet.BaseAddress.AddressFamily != AddressFamily.InterNetwork) return -1;
        if (!Pool.Contains(subnet.BaseAddress)) return -1;
        return (int)((ToUInt32(subnet.BaseAddress) - _base) >> (32 - _prefixLength));
    }

    /// <summary>
    /// Indexes in allocation order: the one after <paramref name="lastAllocated"/> first, wrapping round, skipping
    /// <paramref name="taken"/>. Each free index appears exactly once.
    /// </summary>
    public IEnumerable<int> Candidates(int lastAllocated, IReadOnlySet<int> taken)
    {
        int start = lastAllocated < 0 || lastAllocated >= Count ? 0 : (lastAllocated + 1) % Count;
        for (int i = 0; i < Count; i++)
        {
            int index = (start + i) % Count;
            if (!taken.Contains(index)) yield return index;
        }
    }

    /// <summary>The pool subnet holding <paramref name="address"/>, or null.</summary>
    public int? IndexOfAddress(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetwork || !Pool.Contains(address)) return null;
        uint mask = PrefixLength == 0 ? 0 : uint.MaxValue << (32 - PrefixLength);
        int index = IndexOf(new IPNetwork(FromUInt32(ToUInt32(address) & mask), PrefixLength));
        return index >= 0 ? index : null;
    }

    /// <summary>
    /// Pool subnets an interface of this host already has an address in (another installation's bridge or tap, a
    /// container engine's network): a second route to the same /30 would take a VM's traffic away from it.
    /// </summary>
    public IEnumerable<int> IndexesOnHostInterfaces()
    {
        System.Net.NetworkInformation.NetworkInterface[] interfaces;
        try { interfaces = System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces(); }
        catch (System.Net.NetworkInformation.NetworkInformationException) { yield break; }
        foreach (var i in interfaces)
            foreach (var u in i.GetIPProperties().UnicastAddresses)
                if (IndexOfAddress(u.Address) is int index) yield return index;
    }

    public static uint ToUInt32(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[4];
        address.TryWriteBytes(bytes, out _);
        return BinaryPrimitives.ReadUInt32BigEndian(bytes);
    }

    public static IPAddress FromUInt32(uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
        return new IPAddress(bytes);
    }
}

/// <summary>
/// Freed subnets that may not be handed out yet. Kept in memory: what it protects against — a route or address cached
/// by a front door of this process (the HTTPS front door caches VM addresses for 2 s) — lives in memory too, so a
/// restarted daemon has nothing stale to protect.
/// </summary>
public sealed class AddressQuarantine(TimeSpan period, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Dictionary<int, DateTimeOffset> _released = [];
    private readonly Lock _lock = new();

    public TimeSpan Period => period;

    /// <summary>Notes that subnet <paramref name="index"/> was freed now.</summary>
    public void Release(int index)
    {
        lock (_lock) _released[index] = _time.GetUtcNow();
    }

    /// <summary>The subnets still in quarantine (expired entries are dropped).</summary>
    public IReadOnlySet<int> Held()
    {
        lock (_lock)
        {
            var now = _time.GetUtcNow();
            foreach (var (index, at) in _released.ToList())
                if (now - at >= period) _released.Remove(index);
            return _released.Keys.ToHashSet();
        }
    }
}
