namespace Warren.Runtime.HostNetwork;

/// <summary>
/// How VMs are networked and fenced (configuration section <c>Warren:Network</c>). Every VM gets its own small
/// subnet from <see cref="Pool"/> on its own bridge (no shared segment, no shared name service), and the
/// installation's packet-filter table keeps VM traffic away from the host and from <see cref="DenyDestinations"/>.
/// </summary>
/// <remarks>Lists are arrays: configuration binding replaces an array, where it would append to a list's defaults.</remarks>
public sealed class HostNetworkOptions
{
    public const string SectionName = "Warren:Network";

    /// <summary>
    /// <see cref="IsolationMode.On"/> (default): VMs are not created, and the daemon does not start, unless the
    /// packet-filter rules are installed and verified. <see cref="IsolationMode.Off"/> is for development machines
    /// without nftables only: VMs keep their own subnets (so still cannot reach each other), but nothing stops them
    /// from reaching the host's ports or the deny list.
    /// </summary>
    public IsolationMode Isolation { get; set; } = IsolationMode.On;

    /// <summary>
    /// IPv4 range VM subnets are cut from; it must not overlap the host's own networks. Two installations on one
    /// engine may share it: a subnet the engine already uses elsewhere is skipped.
    /// </summary>
    public string Pool { get; set; } = "10.231.0.0/16";

    /// <summary>Prefix length of one VM's subnet. /30 holds exactly network, gateway (the host), the VM and broadcast.</summary>
    public int SubnetPrefixLength { get; set; } = 30;

    /// <summary>
    /// Seconds a freed VM subnet (and so its address) stays unused, so that no cached route (the HTTPS front door
    /// caches VM addresses for 2 s) can reach a newer VM at an old VM's address.
    /// </summary>
    public int AddressQuarantineSeconds { get; set; } = 60;

    /// <summary>
    /// Destinations (CIDR) VMs may not reach through the host. Default: the RFC 1918 private ranges, RFC 6598 shared
    /// address space (CGNAT) and RFC 3927 link-local (where cloud metadata services live). The host's own addresses
    /// are always closed: VM traffic addressed to the host is dropped unless it is one of <see cref="HostServices"/>.
    /// </summary>
    public string[] DenyDestinations { get; set; } = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"];

    /// <summary>
    /// DNS resolvers VMs use (IPv4 addresses). Port 53 on them stays reachable even inside
    /// <see cref="DenyDestinations"/> (a cloud's resolver usually has a private address). Empty: the host's
    /// /etc/resolv.conf nameservers that are not loopback, else 1.1.1.1 and 9.9.9.9.
    /// </summary>
    public string[] DnsServers { get; set; } = [];

    /// <summary>
    /// Host services VMs may reach at their gateway address, as <c>tcp/PORT</c> or <c>udp/PORT</c> (the hook for
    /// a resolver or other service Warren serves to VMs). Empty by default: VMs reach no port of the host.
    /// </summary>
    public string[] HostServices { get; set; } = [];

    /// <summary>
    /// Front-door ports VMs may reach on any of the host's addresses, as <c>tcp/PORT</c>, the way any client on the
    /// internet reaches them (e.g. <c>tcp/443</c>, so a VM can fetch another VM's public site through the HTTPS front
    /// door and its access checks). Empty by default.
    /// </summary>
    public string[] PublicServices { get; set; } = [];

    /// <summary>
    /// Warren serves the metadata service at 169.254.169.254:80 and VM DNS at 169.254.169.254:53 (the address clouds
    /// use): VM traffic to that address on those ports is redirected (nftables <c>redirect</c>, the host's address on
    /// the VM's own bridge) to <see cref="MetadataListenPort"/> and <see cref="VmDnsListenPort"/>, and VMs are given
    /// 169.254.169.254 as their resolver. Everything else to 169.254/16 stays denied. False: no redirect; VMs use
    /// <see cref="DnsServers"/> directly.
    /// </summary>
    public bool MetadataServed { get; set; } = true;

    /// <summary>
    /// Host port (any address) of the metadata HTTP listener that redirected VM traffic reaches; 0 = a free port
    /// chosen at start. Only VM bridges may reach it (the packet filter drops it from every other interface).
    /// </summary>
    public int MetadataListenPort { get; set; }

    /// <summary>Host port (UDP and TCP, any address) of the VM resolver; 0 = a free port chosen at start.</summary>
    public int VmDnsListenPort { get; set; }

    /// <summary>
    /// Where the VM resolver relays names it does not answer itself, as <c>IP</c> or <c>IP:PORT</c>. Empty: the
    /// resolvers VMs were given before (<see cref="DnsServers"/>, else the host's /etc/resolv.conf).
    /// </summary>
    public string[] VmDnsUpstreams { get; set; } = [];

    /// <summary>The nftables command (on PATH by default).</summary>
    public string NftCommand { get; set; } = "nft";

    /// <summary>The metadata service address clouds use (and Warren serves).</summary>
    public const string MetadataAddress = "169.254.169.254";
    public const int MetadataPort = 80;
    /// <summary>The port VMs send DNS queries to at <see cref="MetadataAddress"/>.</summary>
    public const int MetadataDnsPort = 53;
}

/// <summary>Whether the daemon insists on its packet-filter rules.</summary>
public enum IsolationMode
{
    On,
    /// <summary>Development only: no packet-filter rules.</summary>
    Off,
}
