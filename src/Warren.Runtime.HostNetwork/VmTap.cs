using System.Globalization;

namespace Warren.Runtime.HostNetwork;

/// <summary>
/// A VM's tap device (Linux TUN/TAP, Documentation/networking/tuntap.rst): a persistent tap named like a VM bridge
/// (<see cref="VmFirewall.BridgeName"/>) with the host's side of the VM's subnet on it (its gateway address). The VM's
/// traffic so enters the host on an interface of the installation's prefix, and <see cref="VmFirewall"/>'s rules apply
/// to it exactly as to a container's bridge: one rule set for both runtimes.
/// </summary>
public static class VmTap
{
    private const string Ip = "ip";
    private const string SysClassNet = "/sys/class/net";

    /// <summary>Whether the host can make tap devices at all (the tun driver's control node).</summary>
    public static bool Available => File.Exists("/dev/net/tun");

    public static bool Exists(string name) => Directory.Exists(Path.Combine(SysClassNet, name));

    /// <summary>
    /// Makes the tap (owned by <paramref name="owner"/> when given, so an unprivileged QEMU may attach to it), puts the
    /// subnet's gateway on it and brings it up. An existing tap of that name is replaced (a crash between create and
    /// address leaves a half-made one).
    /// </summary>
    public static async Task CreateAsync(string name, VmSubnet subnet, string? owner, CancellationToken ct)
    {
        ValidateName(name);
        if (Exists(name)) await DeleteAsync(name, ct);
        var add = new List<string> { "tuntap", "add", "dev", name, "mode", "tap" };
        if (!string.IsNullOrEmpty(owner)) add.AddRange(["user", owner]);
        await RunAsync(add, ct);
        try
        {
            string gateway = subnet.Gateway + "/" + subnet.Network.PrefixLength.ToString(CultureInfo.InvariantCulture);
            await RunAsync(["addr", "add", gateway, "dev", name], ct);
            await RunAsync(["link", "set", "dev", name, "up"], ct);
        }
        catch
        {
            await DeleteAsync(name, CancellationToken.None);
            throw;
        }
    }

    /// <summary>Removes the tap; absent is fine.</summary>
    public static async Task DeleteAsync(string name, CancellationToken ct)
    {
        ValidateName(name);
        if (!Exists(name)) return;
        var result = await HostCommand.RunAsync(Ip, ["link", "del", "dev", name], ct: ct);
        if (!result.Ok && Exists(name))
            throw new HostNetworkException($"cannot remove tap {name}: {result.Message}");
    }

    /// <summary>The host's interfaces whose names start with <paramref name="prefix"/> (an installation's VM taps and bridges).</summary>
    public static IReadOnlyList<string> List(string prefix)
    {
        try
        {
            return Directory.EnumerateFileSystemEntries(SysClassNet).Select(Path.GetFileName)
                .Where(n => n != null && n.StartsWith(prefix, StringComparison.Ordinal)).Select(n => n!).ToList();
        }
        catch (IOException) { return []; }
    }

    /// <summary>Whether the interface is a tap (bridges made by the container engine have the same prefix).</summary>
    public static bool IsTap(string name) => File.Exists(Path.Combine(SysClassNet, name, "tun_flags"));

    /// <summary>Packets counters of an interface (host view: what the VM sent is the tap's rx).</summary>
    public static (long RxBytes, long TxBytes) Counters(string name)
    {
        static long Read(string path)
        {
            try { return long.Parse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture); }
            catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException) { return 0; }
        }
        string dir = Path.Combine(SysClassNet, name, "statistics");
        return (Read(Path.Combine(dir, "rx_bytes")), Read(Path.Combine(dir, "tx_bytes")));
    }

    /// <summary>Linux interface names: 1–15 characters (IFNAMSIZ 16 with the NUL), no '/', no whitespace.</summary>
    private static void ValidateName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 15 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.'))
            throw new ArgumentException($"'{name}' is not a valid interface name", nameof(name));
    }

    private static async Task RunAsync(IReadOnlyList<string> args, CancellationToken ct)
    {
        var result = await HostCommand.RunAsync(Ip, args, ct: ct);
        if (!result.Ok) throw new HostNetworkException($"ip {string.Join(' ', args)}: {result.Message}");
    }
}

/// <summary>
/// Forwarding for VM interfaces that are not the container engine's own bridges. The kernel must forward IPv4, and when
/// dockerd manages iptables its FORWARD chain's policy is DROP with accepts only for its bridges; Docker's docs
/// ("Packet filtering and firewalls") name the DOCKER-USER chain as the place for an administrator's own rules. The
/// accepts added there open nothing <see cref="VmFirewall"/> closes: its chains run first and a drop in nftables is final.
/// </summary>
public static class VmForwarding
{
    private const string IpForward = "/proc/sys/net/ipv4/ip_forward";
    private const string DockerUserChain = "DOCKER-USER";

    public static async Task EnsureAsync(string interfacePrefix, string iptables = "iptables", CancellationToken ct = default)
    {
        try
        {
            if (File.ReadAllText(IpForward).Trim() != "1") await File.WriteAllTextAsync(IpForward, "1", ct);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new HostNetworkException($"cannot enable IPv4 forwarding ({IpForward}): {e.Message}");
        }
        var chain = await HostCommand.RunAsync(iptables, ["-w", "5", "-n", "-L", DockerUserChain], ct: ct);
        if (!chain.Ok) return; // no dockerd rules (or no iptables): nothing drops forwarded VM traffic besides our own table
        foreach (var rule in Rules(interfacePrefix))
        {
            var check = await HostCommand.RunAsync(iptables, ["-w", "5", "-C", DockerUserChain, .. rule], ct: ct);
            if (check.Ok) continue;
            var insert = await HostCommand.RunAsync(iptables, ["-w", "5", "-I", DockerUserChain, "1", .. rule], ct: ct);
            if (!insert.Ok) throw new HostNetworkException($"cannot let VM traffic through {DockerUserChain}: {insert.Message}");
        }
    }

    /// <summary>Removes this prefix's accepts (tests, uninstall); absent is fine.</summary>
    public static async Task RemoveAsync(string interfacePrefix, string iptables = "iptables", CancellationToken ct = default)
    {
        foreach (var rule in Rules(interfacePrefix))
            while ((await HostCommand.RunAsync(iptables, ["-w", "5", "-D", DockerUserChain, .. rule], ct: ct)).Ok) { }
    }

    private static string[][] Rules(string interfacePrefix)
    {
        string wildcard = interfacePrefix + "+";
        return
        [
            ["-i", wildcard, "-j", "ACCEPT"],
            ["-o", wildcard, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ];
    }
}
