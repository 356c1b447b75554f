using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Warren.Runtime.HostNetwork;

namespace Warren.Runtime.MicroVm;

/// <summary>How a microVM is networked (<see cref="MicroVmRuntimeOptions.Network"/>).</summary>
public enum VmNetworkMode
{
    /// <summary>
    /// Default: a tap device per VM with its own /30 from <see cref="HostNetworkOptions.Pool"/>, fenced by the
    /// installation's <see cref="VmFirewall"/> exactly like a container's bridge.
    /// </summary>
    Tap,
    /// <summary>
    /// Development fallback where tap devices cannot be made: QEMU user networking with listed ports forwarded from a
    /// loopback address. Not fenced: the guest reaches the host's loopback services through the user-net gateway.
    /// </summary>
    User,
}

/// <summary>VM addresses and tap devices, and the host side they need (packet filter, forwarding).</summary>
public sealed partial class MicroVmRuntime
{
    private int _lastSubnet = -1;

    /// <summary>The installation's packet-filter table: the same one (same name, same rules) the Docker runtime uses.</summary>
    public VmFirewall Firewall => _firewall;

    /// <summary>Whether new VMs get tap devices (else user networking).</summary>
    public bool UsesTap => _options.Network == VmNetworkMode.Tap;

    private bool IsolationOn => UsesTap && _options.Docker.VmNetwork.Isolation == IsolationMode.On;

    /// <summary>
    /// Before a VM gets a tap: the packet-filter rules are in force (read back; reinstalled when missing or stale) and
    /// the host forwards the taps' traffic. With isolation on, no VM runs without its fence.
    /// </summary>
    private async Task EnsureHostNetworkAsync(CancellationToken ct)
    {
        if (!UsesTap) return;
        if (!VmTap.Available)
            throw new MicroVmException(MicroVmErrors.IsolationUnavailable,
                "tap devices are unavailable (/dev/net/tun missing); on a development machine only, set Warren:MicroVm:Network=User");
        try
        {
            if (IsolationOn && await _firewall.VerifyAsync(ct).ConfigureAwait(false) != null)
                await _firewall.EnsureAsync(ct).ConfigureAwait(false);
            await VmForwarding.EnsureAsync(_firewall.InterfacePrefix, ct: ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HostNetworkException or TimeoutException)
        {
            throw new MicroVmException(MicroVmErrors.IsolationUnavailable,
                $"VM network isolation cannot be enforced: {e.Message} (install nftables, or on a development machine only set Warren:Network:Isolation=Off)", e);
        }
    }

    /// <summary>
    /// The VM's address and network: with taps, the next free /30 of the pool in a cycle (skipping subnets of other VMs,
    /// of any host interface, e.g. the container engine's bridges, and those in quarantine); with user networking, the
    /// lowest free loopback address. Reserved by a marker file until vm.json names it.
    /// </summary>
    private async Task<VmNetworkAssignment> AllocateNetworkAsync(string vmId, CancellationToken ct)
    {
        await _addressLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var used = new HashSet<string>(StringComparer.Ordinal);
            foreach (var dir in Directory.EnumerateDirectories(Path.Combine(_options.DataDirectory, "vms")))
            {
                if (VmRecord.TryRead(Path.Combine(dir, "vm.json")) is { } r) used.Add(r.Address);
                string marker = Path.Combine(dir, "address");
                if (File.Exists(marker) && Path.GetFileName(dir) != vmId) used.Add(File.ReadAllText(marker).Trim());
            }
            string markerPath = Path.Combine(_options.DataDirectory, "vms", vmId, "address");
            if (!UsesTap)
            {
                for (int host = 2; host <= 254; host++)
                {
                    string address = _options.LoopbackPrefix + host.ToString(CultureInfo.InvariantCulture);
                    if (used.Contains(address)) continue;
                    File.WriteAllText(markerPath, address);
                    return new VmNetworkAssignment(address, null, QemuProcess.UserGuestNetwork);
                }
                throw new MicroVmException(MicroVmErrors.NoAddressLeft, $"no free address in {_options.LoopbackPrefix}2-254");
            }

            var taken = new HashSet<int>(_quarantine.Held());
            foreach (var text in used)
                if (IPAddress.TryParse(text, out var a) && SubnetIndexOf(a) is int i) taken.Add(i);
            taken.UnionWith(_pool.IndexesOnHostInterfaces());
            foreach (int index in _pool.Candidates(_lastSubnet, taken))
            {
                var subnet = _pool[index];
                string address = subnet.VmAddress.ToString();
                File.WriteAllText(markerPath, address);
                _lastSubnet = index;
                // With the metadata service on, the guest asks the VM resolver at the metadata address (redirected to the
                // host's end of this tap like a container bridge's), which answers *.int.<vm-domain> and relays the rest.
                string dns = _firewall.ServesMetadata ? HostNetworkOptions.MetadataAddress
                    : _firewall.DnsServers.Count > 0 ? _firewall.DnsServers[0].ToString() : "";
                string guest = $"{subnet.VmAddress}/{subnet.Network.PrefixLength.ToString(CultureInfo.InvariantCulture)},{subnet.Gateway},{dns}";
                return new VmNetworkAssignment(address, _firewall.BridgeName(subnet), guest);
            }
            throw new MicroVmException(MicroVmErrors.NoAddressLeft,
                $"no free VM subnet in {_pool.Pool} (/{_pool.PrefixLength} each, freed ones wait {_quarantine.Period.TotalSeconds:0} s): enlarge Warren:Network:Pool");
        }
        finally
        {
            _addressLock.Release();
        }
    }

    /// <summary>
    /// The VM whose tap carries <paramref name="hostAddress"/> as the host's end of its /30, or null: the metadata
    /// service's caller identity. The packet filter redirects 169.254.169.254 to the address of the interface the packet
    /// came in on, so this names the VM whatever source address the guest writes.
    /// </summary>
    public Task<string?> FindVmIdByHostAddressAsync(IPAddress hostAddress, CancellationToken ct)
    {
        if (hostAddress.IsIPv4MappedToIPv6) hostAddress = hostAddress.MapToIPv4();
        if (!IsolationOn || SubnetIndexOf(hostAddress) is not int index) return Task.FromResult<string?>(null);
        var subnet = _pool[index];
        if (!subnet.Gateway.Equals(hostAddress)) return Task.FromResult<string?>(null);
        string tap = _firewall.BridgeName(subnet), address = subnet.VmAddress.ToString();
        foreach (var dir in Directory.EnumerateDirectories(Path.Combine(_options.DataDirectory, "vms")))
        {
            ct.ThrowIfCancellationRequested();
            if (VmRecord.TryRead(Path.Combine(dir, "vm.json")) is { } r && r.Tap == tap && r.Address == address)
                return Task.FromResult<string?>(r.VmId);
        }
        return Task.FromResult<string?>(null);
    }

    private int? SubnetIndexOf(IPAddress address) => _pool.IndexOfAddress(address);

    /// <summary>The VM's tap exists and carries its gateway (made again after a host reboot, or when someone removed it).</summary>
    private async Task EnsureTapAsync(VmRecord record, CancellationToken ct)
    {
        if (record.Tap == null) return;
        if (VmTap.Exists(record.Tap)) return;
        await EnsureHostNetworkAsync(ct).ConfigureAwait(false);
        if (!IPAddress.TryParse(record.Address, out var address) || SubnetIndexOf(address) is not int index)
            throw new MicroVmException(MicroVmErrors.VmStartFailed, $"VM {record.VmId}'s address {record.Address} is outside the VM pool {_pool.Pool}");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            await VmTap.CreateAsync(record.Tap, _pool[index], _options.QemuUser, ct).ConfigureAwait(false);
        }
        catch (HostNetworkException e)
        {
            throw new MicroVmException(MicroVmErrors.IsolationUnavailable, $"cannot make the network of VM {record.VmId}: {e.Message}", e);
        }
        LogTapCreated(record.Tap, record.VmId, clock.Elapsed.TotalMilliseconds);
    }

    /// <summary>Removes the VM's tap; its subnet goes into quarantine (no cached route may reach a newer VM at this address).</summary>
    private async Task ReleaseNetworkAsync(VmRecord? record, CancellationToken ct)
    {
        if (record?.Tap == null) return;
        try
        {
            await VmTap.DeleteAsync(record.Tap, ct).ConfigureAwait(false);
        }
        catch (HostNetworkException e)
        {
            throw new MicroVmException(MicroVmErrors.HostToolFailed, e.Message, e);
        }
        if (IPAddress.TryParse(record.Address, out var address) && SubnetIndexOf(address) is int index) _quarantine.Release(index);
    }

    [Microsoft.Extensions.Logging.LoggerMessage(Level = Microsoft.Extensions.Logging.LogLevel.Debug, Message = "tap {Tap} of microVM {VmId} made in {Milliseconds:0.0} ms")]
    private partial void LogTapCreated(string tap, string vmId, double milliseconds);
}

/// <summary>Where a VM sits: its address (as the host reaches it), its tap (null: user networking), and the guest's <c>warren.net=</c>.</summary>
internal readonly record struct VmNetworkAssignment(string Address, string? Tap, string GuestNetwork);
