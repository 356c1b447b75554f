using System.Net;
using Docker.DotNet;
using Docker.DotNet.Models;
using Microsoft.Extensions.Logging;
using Warren.Runtime.HostNetwork;

namespace Warren.Runtime.Docker;

/// <summary>A VM's engine network: its name (= its bridge's name) and subnet.</summary>
internal readonly record struct VmEndpoint(string NetworkName, VmSubnet Subnet);

/// <summary>
/// One engine network per VM. Why not one shared bridge with inter-container traffic off: on a user-defined network
/// the engine's embedded DNS (127.0.0.11 in every container) answers forward and PTR queries for every container on
/// the network, so a VM could enumerate the others' names and addresses; ARP on a shared segment shows who is there;
/// and the address would still be the engine's choice. A network of its own gives the VM a DNS that knows only
/// itself, a segment with only itself and the host on it, and an address Warren picks: a /30 cut from
/// <see cref="HostNetworkOptions.Pool"/> in a cycle, kept out of use for <see cref="HostNetworkOptions.AddressQuarantineSeconds"/>
/// after the VM goes. The engine's own rules already drop traffic between two of its bridge networks; the
/// installation's <see cref="VmFirewall"/> table adds the host and the deny list, and does not rely on those.
/// </summary>
internal sealed partial class DockerVmNetworks
{
    /// <summary>Bridge driver options (Docker's documented network options for the bridge driver).</summary>
    private const string BridgeNameOption = "com.docker.network.bridge.name";
    private const string IccOption = "com.docker.network.bridge.enable_icc";
    private const string MasqueradeOption = "com.docker.network.bridge.enable_ip_masquerade";
    /// <summary>The network a container joins when none is named (VMs created before isolation sit there).</summary>
    internal const string DefaultBridgeNetwork = "bridge";

    /// <summary>
    /// Subnets tried per allocation before giving up: each failed try is one engine call (the subnet is used by a
    /// network the listing missed, e.g. one created concurrently by another installation).
    /// </summary>
    private const int MaxCreateAttempts = 32;

    private readonly DockerClient _client;
    private readonly DockerRuntimeOptions _options;
    private readonly ILogger _log;
    private readonly VmSubnetPool _pool;
    private readonly AddressQuarantine _quarantine;
    private readonly SemaphoreSlim _allocation = new(1, 1);
    private int _lastAllocated = -1;
    private bool _cursorKnown;

    public DockerVmNetworks(DockerClient client, DockerRuntimeOptions options, ILogger log)
    {
        _client = client;
        _options = options;
        _log = log;
        Firewall = new VmFirewall(options.VmNetwork, options.Instance);
        _pool = new VmSubnetPool(options.VmNetwork.Pool, options.VmNetwork.SubnetPrefixLength);
        _quarantine = new AddressQuarantine(TimeSpan.FromSeconds(Math.Max(0, options.VmNetwork.AddressQuarantineSeconds)));
    }

    public VmFirewall Firewall { get; }

    public bool IsolationOn => _options.VmNetwork.Isolation == IsolationMode.On;

    /// <summary>
    /// Makes sure the packet-filter rules are in force (read back from the kernel; reinstalled when missing or
    /// stale, e.g. after someone flushed the ruleset). With isolation on, failure is an
    /// <see cref="DockerRuntimeErrors.IsolationUnavailable"/> error: no VM runs without its fence.
    /// </summary>
    public async Task EnsureIsolationAsync(CancellationToken ct)
    {
        if (!IsolationOn) return;
        try
        {
            if (await Firewall.VerifyAsync(ct) == null) return;
            await Firewall.EnsureAsync(ct);
        }
        catch (Exception e) when (e is HostNetworkException or TimeoutException)
        {
            throw new DockerRuntimeException(DockerRuntimeErrors.IsolationUnavailable,
                $"VM network isolation cannot be enforced: {e.Message} (install nftables, or on a development machine only set Warren:Network:Isolation=Off)", e);
        }
    }

    /// <summary>
    /// The VM's network, created with the next free subnet in the cycle when it has none (idempotent: a VM id keeps
    /// the network it has).
    /// </summary>
    public async Task<VmEndpoint> AllocateAsync(string vmId, IDictionary<string, string> labels, CancellationToken ct)
    {
        await _allocation.WaitAsync(ct);
        try
        {
            var networks = await DockerVmRuntime.Engine(() => _client.Networks.ListNetworksAsync(new NetworksListParameters(), ct));
            var taken = new HashSet<int>(_quarantine.Held());
            VmEndpoint? existing = null;
            NetworkResponse? newest = null;
            foreach (var n in networks)
            {
                foreach (var config in n.IPAM?.Config ?? [])
                    foreach (int index in OverlappingIndexes(config.Subnet)) taken.Add(index);
                if (!IsOurs(n)) continue;
                if (newest == null || n.Created > newest.Created) newest = n;
                if (n.Labels.TryGetValue(DockerVmRuntime.LabelVmId, out var owner) && owner == vmId && ToEndpoint(n) is { } mine) existing = mine;
            }
            if (existing is { } found) return found;
            // The engine knows its own networks only: a microVM tap (this or another installation's) holds a subnet too.
            taken.UnionWith(_pool.IndexesOnHostInterfaces());
            if (!_cursorKnown)
            {
                // First allocation of this process: continue the cycle after the newest network, not from the start.
                if (newest != null && ToEndpoint(newest) is { } last) _lastAllocated = last.Subnet.Index;
                _cursorKnown = true;
            }
            int attempts = 0;
            foreach (int index in _pool.Candidates(_lastAllocated, taken))
            {
                if (++attempts > MaxCreateAttempts) break;
                var subnet = _pool[index];
                string name = Firewall.BridgeName(subnet);
                try
                {
                    await _client.Networks.CreateNetworkAsync(new NetworksCreateParameters
                    {
                        Name = name,
                        Driver = "bridge",
                        CheckDuplicate = true,
                        Labels = labels,
                        Options = new Dictionary<string, string>
                        {
                            [BridgeNameOption] = name,
                            // One VM per bridge: nothing to talk to anyway; off so a second endpoint never could.
                            [IccOption] = "false",
                            [MasqueradeOption] = "true",
                        },
                        IPAM = new IPAM
                        {
                            Driver = "default",
                            Config = [new IPAMConfig { Subnet = subnet.Network.ToString(), Gateway = subnet.Gateway.ToString() }],
                        },
                    }, ct);
                }
                catch (DockerApiException e) when (e.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.Conflict or HttpStatusCode.BadRequest)
                {
                    // Overlaps a network the listing did not show (another installation, just now): next subnet.
                    LogSubnetSkipped(subnet.ToString(), (int)e.StatusCode);
                    continue;
                }
                catch (HttpRequestException e)
                {
                    throw new DockerRuntimeException(DockerRuntimeErrors.EngineUnavailable, $"container engine unavailable: {e.Message}", e);
                }
                _lastAllocated = index;
                return new VmEndpoint(name, subnet);
            }
            throw new DockerRuntimeException(DockerRuntimeErrors.IsolationUnavailable,
                $"no free VM subnet in {_pool.Pool} (/{_pool.PrefixLength} each, freed ones wait {_quarantine.Period.TotalSeconds:0} s): enlarge Warren:Network:Pool");
        }
        finally
        {
            _allocation.Release();
        }
    }

    /// <summary>The VM's network, or null when it has none (a VM of the old layout, or gone).</summary>
    public async Task<VmEndpoint?> FindAsync(string vmId, CancellationToken ct)
    {
        foreach (var n in await ListOwnedAsync(vmId, ct))
            if (ToEndpoint(n) is { } endpoint) return endpoint;
        return null;
    }

    /// <summary>
    /// Removes the VM's network(s) after its container is gone; their subnets go into quarantine. The engine may
    /// briefly still count the removed container as attached, hence the bounded retry.
    /// </summary>
    public async Task ReleaseAsync(string vmId, CancellationToken ct)
    {
        const int RemoveAttempts = 20;
        foreach (var n in await ListOwnedAsync(vmId, ct))
        {
            if (ToEndpoint(n) is { } endpoint) _quarantine.Release(endpoint.Subnet.Index);
            for (int attempt = 1; ; attempt++)
            {
                try
                {
                    await _client.Networks.DeleteNetworkAsync(n.ID, ct);
                    break;
                }
                catch (DockerNetworkNotFoundException) { break; }
                catch (DockerApiException e) when (e.StatusCode == HttpStatusCode.NotFound) { break; }
                catch (DockerApiException e) when (e.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.Conflict && attempt < RemoveAttempts)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(50 * attempt), ct);
                }
                catch (DockerApiException e)
                {
                    throw new DockerRuntimeException(DockerRuntimeErrors.EngineError, $"cannot remove network {n.Name} of VM {vmId}: {(int)e.StatusCode}", e);
                }
                catch (HttpRequestException e)
                {
                    throw new DockerRuntimeException(DockerRuntimeErrors.EngineUnavailable, $"container engine unavailable: {e.Message}", e);
                }
            }
        }
    }

    /// <summary>
    /// The resolvers a container is given: the metadata address when Warren serves VM DNS there (its resolver answers
    /// <c>*.int.&lt;vm-domain&gt;</c> and relays the rest), else the upstream resolvers themselves. On an engine
    /// network the container's own resolver (127.0.0.11) forwards to these from inside the container's network
    /// namespace, so the query still arrives on the VM's bridge.
    /// </summary>
    public IList<string> ContainerDnsServers() => Firewall.ServesMetadata && IsolationOn
        ? [HostNetworkOptions.MetadataAddress]
        : Firewall.DnsServers.Select(a => a.ToString()).ToList();

    /// <summary>
    /// The VM whose network has <paramref name="hostAddress"/> as the host's (gateway) address, or null. This is how
    /// the metadata service identifies a caller: by the address its connection reached, which the redirect chose
    /// from the bridge the packet arrived on. Reads the engine (networks carry the VM id label), so it follows
    /// create and rm; the address is not reused while quarantined.
    /// </summary>
    public async Task<string?> FindVmIdByHostAddressAsync(IPAddress hostAddress, CancellationToken ct)
    {
        if (hostAddress.IsIPv4MappedToIPv6) hostAddress = hostAddress.MapToIPv4();
        if (hostAddress.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork || !_pool.Pool.Contains(hostAddress)) return null;
        int index = _pool.IndexOf(new IPNetwork(MaskTo(hostAddress, _pool.PrefixLength), _pool.PrefixLength));
        if (index < 0) return null;
        var subnet = _pool[index];
        if (!subnet.Gateway.Equals(hostAddress)) return null;
        string name = Firewall.BridgeName(subnet);
        var networks = await DockerVmRuntime.Engine(() => _client.Networks.ListNetworksAsync(new NetworksListParameters
        {
            Filters = new Dictionary<string, IDictionary<string, bool>>
            {
                ["label"] = new Dictionary<string, bool> { [DockerVmRuntime.LabelInstance + "=" + _options.Instance] = true },
                ["name"] = new Dictionary<string, bool> { [name] = true },
            },
        }, ct));
        foreach (var n in networks)
        {
            // The engine's name filter matches substrings; only the exact name and subnet count.
            if (n.Name != name || !IsOurs(n) || ToEndpoint(n) is not { } endpoint || endpoint.Subnet.Index != index) continue;
            if (n.Labels.TryGetValue(DockerVmRuntime.LabelVmId, out var vmId) && !string.IsNullOrEmpty(vmId)) return vmId;
        }
        return null;
    }

    private static IPAddress MaskTo(IPAddress address, int prefixLength)
    {
        uint value = VmSubnetPool.ToUInt32(address);
        uint mask = prefixLength == 0 ? 0 : uint.MaxValue << (32 - prefixLength);
        return VmSubnetPool.FromUInt32(value & mask);
    }

    /// <summary>How a container joins its VM network: at the address Warren chose.</summary>
    public static NetworkingConfig Join(VmEndpoint endpoint) => new()
    {
        EndpointsConfig = new Dictionary<string, EndpointSettings>
        {
            [endpoint.NetworkName] = new() { IPAMConfig = new EndpointIPAMConfig { IPv4Address = endpoint.Subnet.VmAddress.ToString() } },
        },
    };

    /// <summary>
    /// Moves a VM created before per-VM networks (on the engine's default bridge, shared with every such VM) onto a
    /// network of its own: connect to the new one at its address, then leave the default bridge. Works on running
    /// containers; the VM's open connections on the old address drop.
    /// </summary>
    public async Task<bool> AdoptAsync(string vmId, ContainerInspectResponse container, IDictionary<string, string> labels, CancellationToken ct)
    {
        var joined = container.NetworkSettings?.Networks?.Keys ?? [];
        if (joined.Any(k => k.StartsWith(Firewall.InterfacePrefix, StringComparison.Ordinal))) return false;
        var endpoint = await AllocateAsync(vmId, labels, ct);
        await DockerVmRuntime.Engine(() => _client.Networks.ConnectNetworkAsync(endpoint.NetworkName, new NetworkConnectParameters
        {
            Container = container.ID,
            EndpointConfig = Join(endpoint).EndpointsConfig[endpoint.NetworkName],
        }, ct));
        foreach (var other in joined)
        {
            await DockerVmRuntime.Engine(() => _client.Networks.DisconnectNetworkAsync(other, new NetworkDisconnectParameters
            {
                Container = container.ID,
                Force = true,
            }, ct));
        }
        return true;
    }

    private async Task<IList<NetworkResponse>> ListOwnedAsync(string vmId, CancellationToken ct) =>
        await DockerVmRuntime.Engine(() => _client.Networks.ListNetworksAsync(new NetworksListParameters
        {
            Filters = new Dictionary<string, IDictionary<string, bool>>
            {
                ["label"] = new Dictionary<string, bool>
                {
                    [DockerVmRuntime.LabelInstance + "=" + _options.Instance] = true,
                    [DockerVmRuntime.LabelVmId + "=" + vmId] = true,
                },
            },
        }, ct));

    private bool IsOurs(NetworkResponse n) =>
        n.Labels != null && n.Labels.TryGetValue(DockerVmRuntime.LabelInstance, out var instance) && instance == _options.Instance
        && n.Name.StartsWith(Firewall.InterfacePrefix, StringComparison.Ordinal);

    private VmEndpoint? ToEndpoint(NetworkResponse n)
    {
        foreach (var config in n.IPAM?.Config ?? [])
        {
            if (!IPNetwork.TryParse(config.Subnet ?? "", out var net)) continue;
            int index = _pool.IndexOf(net);
            if (index >= 0) return new VmEndpoint(n.Name, _pool[index]);
        }
        return null;
    }

    /// <summary>Pool subnets a network's range overlaps (any size, so another installation's /24 counts too).</summary>
    private IEnumerable<int> OverlappingIndexes(string? cidr)
    {
        if (!IPNetwork.TryParse(cidr ?? "", out var net) || net.BaseAddress.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork) yield break;
        uint first = VmSubnetPool.ToUInt32(net.BaseAddress);
        uint last = first + (uint)((1UL << (32 - net.PrefixLength)) - 1);
        uint poolFirst = VmSubnetPool.ToUInt32(_pool.Pool.BaseAddress);
        uint poolLast = poolFirst + (uint)((1UL << (32 - _pool.Pool.PrefixLength)) - 1);
        if (last < poolFirst || first > poolLast) yield break;
        int shift = 32 - _pool.PrefixLength;
        int from = (int)((Math.Max(first, poolFirst) - poolFirst) >> shift);
        int to = (int)((Math.Min(last, poolLast) - poolFirst) >> shift);
        for (int i = from; i <= to; i++) yield return i;
    }

    [LoggerMessage(EventId = 4010, Level = LogLevel.Debug, Message = "runtime.subnet-skipped: VM subnet {Subnet} refused by the engine ({Status}), trying the next")]
    private partial void LogSubnetSkipped(string subnet, int status);
}
