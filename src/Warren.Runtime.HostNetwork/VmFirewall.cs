using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Warren.Runtime.HostNetwork;

/// <summary>
/// The installation's packet-filter rules: one nftables table of its own (<see cref="TableName"/>, family inet),
/// matching VM traffic by the installation's bridge-name prefix (<see cref="InterfacePrefix"/>), so it never touches
/// another installation's rules or Docker's chains. In nftables every base chain on a hook sees the packet and a drop
/// anywhere is final, so these chains (priority before Docker's filter chains) can only take away, never open:
/// <list type="bullet">
/// <item>forward: VM → any other VM rejected; VM → <see cref="HostNetworkOptions.DenyDestinations"/> rejected (except
///   port 53 of the configured resolvers and, when served, the metadata address); IPv6 from VMs dropped;</item>
/// <item>postrouting: VM traffic leaving through a non-VM interface is masqueraded (taps have no engine doing it);</item>
/// <item>input (VM → the host itself, any of its addresses): only replies to connections the host opened (the front
///   doors reaching VM ports), <see cref="HostNetworkOptions.HostServices"/> at the VM's gateway address and
///   <see cref="HostNetworkOptions.PublicServices"/> on any host address.</item>
/// </list>
/// The rules are replaced atomically (one nft transaction) and left in place when VMs go: they match only this
/// installation's bridges, so with no VMs they match nothing.
/// </summary>
public sealed class VmFirewall
{
    private readonly HostNetworkOptions _options;
    private readonly List<IPNetwork> _deny = [];
    private readonly List<(string Protocol, int Port)> _hostServices = [];
    private readonly List<(string Protocol, int Port)> _publicServices = [];
    private readonly string _instanceHash;

    public VmFirewall(HostNetworkOptions options, string instance)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(instance);
        _options = options;
        _instanceHash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(instance)));
        foreach (var cidr in options.DenyDestinations)
        {
            if (!IPNetwork.TryParse(cidr.Trim(), out var net))
                throw new ArgumentException($"Warren:Network:DenyDestinations: '{cidr}' is not a CIDR range");
            // VMs have no IPv6 at all (dropped below), so only IPv4 ranges need listing.
            if (net.BaseAddress.AddressFamily == AddressFamily.InterNetwork) _deny.Add(net);
        }
        foreach (var service in options.HostServices) _hostServices.Add(ParseService(service, nameof(options.HostServices)));
        foreach (var service in options.PublicServices) _publicServices.Add(ParseService(service, nameof(options.PublicServices)));
        DnsServers = ResolveDnsServers(options.DnsServers);
        _pool = new VmSubnetPool(options.Pool, options.SubnetPrefixLength).Pool;
    }

    private readonly IPNetwork _pool;

    /// <summary>The table's name: per installation (hash of its instance id), never shared.</summary>
    public string TableName => "warren_" + _instanceHash[..10];

    /// <summary>
    /// First characters of every VM bridge of this installation ("wv" + 5 hex of the instance's hash): Linux allows
    /// 15-character interface names (IFNAMSIZ 16 with the NUL), leaving 8 for the subnet.
    /// </summary>
    public string InterfacePrefix => "wv" + _instanceHash[..5];

    /// <summary>The bridge (and engine network) name of one VM subnet: the prefix, then the subnet's address in hex.</summary>
    public string BridgeName(VmSubnet subnet) =>
        InterfacePrefix + VmSubnetPool.ToUInt32(subnet.Network.BaseAddress).ToString("x8", CultureInfo.InvariantCulture);

    /// <summary>The resolvers VMs are given (and may reach on port 53).</summary>
    public IReadOnlyList<IPAddress> DnsServers { get; }

    /// <summary>
    /// The whole ruleset as one nft script: create-if-missing, delete, define — one atomic transaction that replaces
    /// whatever this table held. The last rule's comment carries a digest of the rules, so <see cref="VerifyAsync"/>
    /// can tell current rules from stale or tampered ones.
    /// </summary>
    public string BuildRuleset()
    {
        string body = BuildTableBody();
        string digest = Digest(body);
        var s = new StringBuilder();
        s.Append("table inet ").Append(TableName).Append(" {}\n");
        s.Append("delete table inet ").Append(TableName).Append('\n');
        s.Append("table inet ").Append(TableName).Append(" {\n");
        s.Append(body);
        s.Append("\tchain marker {\n\t\tcomment \"").Append(MarkerComment(digest)).Append("\"\n\t}\n");
        s.Append("}\n");
        return s.ToString();
    }

    private string BuildTableBody()
    {
        string vm = $"iifname \"{InterfacePrefix}*\"";
        var s = new StringBuilder();
        s.Append("\tset deny4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n");
        if (_deny.Count > 0) s.Append("\t\telements = { ").AppendJoin(", ", _deny.Select(n => n.ToString())).Append(" }\n");
        s.Append("\t}\n");
        s.Append("\tset dns4 {\n\t\ttype ipv4_addr\n");
        if (DnsServers.Count > 0) s.Append("\t\telements = { ").AppendJoin(", ", DnsServers.Select(a => a.ToString())).Append(" }\n");
        s.Append("\t}\n");

        // Forward: traffic a VM sends through the host. Before Docker's filter chains (priority filter = 0).
        s.Append("\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n");
        s.Append($"\t\t{vm} oifname \"{InterfacePrefix}*\" counter reject with icmpx type admin-prohibited comment \"VM to VM\"\n");
        s.Append($"\t\t{vm} meta nfproto ipv6 counter drop comment \"VMs have no IPv6\"\n");
        s.Append($"\t\t{vm} ip daddr @dns4 meta l4proto {{ tcp, udp }} th dport 53 accept comment \"resolvers\"\n");
        // No accept for 169.254.169.254 here: when Warren serves it, prerouting redirects it to the host (it never
        // reaches forward); when not, it is denied like the rest of 169.254/16 — a cloud host's own metadata service
        // (which answers at that address too) must never be reachable from a VM.
        s.Append($"\t\t{vm} ip daddr @deny4 counter reject with icmpx type admin-prohibited comment \"deny list\"\n");
        s.Append("\t}\n");

        // Input: traffic a VM sends to the host itself, on any of its addresses (not only its gateway).
        s.Append("\tchain input {\n\t\ttype filter hook input priority filter - 10; policy accept;\n");
        if (ServesMetadata)
        {
            // The listeners bind every address (one socket for all VMs), so only a VM's bridge may reach them: from
            // any other interface a new flow to those ports is dropped, so nobody off-host can ask as if they were a
            // VM. Only new flows: a reply to one of the host's own UDP queries may arrive at the same port number.
            s.Append($"\t\tiifname != \"{InterfacePrefix}*\" ct state new tcp dport {{ {MetadataPorts} }} counter drop comment \"metadata: VMs only\"\n");
            s.Append($"\t\tiifname != \"{InterfacePrefix}*\" ct state new udp dport {_options.VmDnsListenPort.ToString(CultureInfo.InvariantCulture)} counter drop comment \"VM DNS: VMs only\"\n");
        }
        s.Append($"\t\t{vm} ct state established,related accept comment \"replies to the front doors\"\n");
        foreach (var (protocol, port) in _hostServices)
            s.Append($"\t\t{vm} fib daddr . iif type local {protocol} dport {port.ToString(CultureInfo.InvariantCulture)} accept comment \"host service\"\n");
        foreach (var (protocol, port) in _publicServices)
            s.Append($"\t\t{vm} fib daddr type local {protocol} dport {port.ToString(CultureInfo.InvariantCulture)} accept comment \"front door\"\n");
        if (ServesMetadata)
        {
            // After the redirect the destination is the host's address on the VM's own bridge: "fib daddr . iif"
            // accepts exactly that address on that bridge, never another VM's host address (Linux would otherwise
            // accept any local address on any interface, RFC 1122 §3.3.4.2's weak host model).
            string port = _options.MetadataListenPort.ToString(CultureInfo.InvariantCulture);
            string dns = _options.VmDnsListenPort.ToString(CultureInfo.InvariantCulture);
            s.Append($"\t\t{vm} fib daddr . iif type local tcp dport {port} accept comment \"metadata\"\n");
            s.Append($"\t\t{vm} fib daddr . iif type local meta l4proto {{ tcp, udp }} th dport {dns} accept comment \"VM DNS\"\n");
        }
        s.Append($"\t\t{vm} counter reject with icmpx type admin-prohibited comment \"the host is closed to VMs\"\n");
        s.Append("\t}\n");

        if (ServesMetadata)
        {
            // Prerouting, before Docker's NAT: "redirect" rewrites the destination to the primary address of the
            // interface the packet came in on — the host's address on that VM's own bridge — so the listener learns
            // which VM is asking from its local address, which the VM cannot choose (exe.dev's docs: metadata).
            string port = _options.MetadataListenPort.ToString(CultureInfo.InvariantCulture);
            string dns = _options.VmDnsListenPort.ToString(CultureInfo.InvariantCulture);
            s.Append("\tchain metadata {\n\t\ttype nat hook prerouting priority dstnat - 10; policy accept;\n");
            s.Append($"\t\t{vm} ip daddr {HostNetworkOptions.MetadataAddress} tcp dport {HostNetworkOptions.MetadataPort} redirect to :{port} comment \"metadata\"\n");
            s.Append($"\t\t{vm} ip daddr {HostNetworkOptions.MetadataAddress} meta l4proto {{ tcp, udp }} th dport {HostNetworkOptions.MetadataDnsPort} redirect to :{dns} comment \"VM DNS\"\n");
            s.Append("\t}\n");
        }

        // Outbound NAT for VMs whose interface no engine masquerades (a microVM's tap). In postrouting the input
        // interface is unknown, so the VM is told by its source address; a container bridge's own masquerade makes the
        // same translation, and a connection is translated once (the first NAT chain to match binds it).
        s.Append("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
        s.Append($"\t\tip saddr {_pool} oifname != \"{InterfacePrefix}*\" counter masquerade comment \"VM outbound\"\n");
        s.Append("\t}\n");
        return s.ToString();
    }

    /// <summary>Whether the rules redirect 169.254.169.254 to Warren's metadata and DNS listeners (both ports known).</summary>
    public bool ServesMetadata => _options.MetadataServed && _options.MetadataListenPort is > 0 and < 65536 && _options.VmDnsListenPort is > 0 and < 65536;

    private string MetadataPorts => string.Create(CultureInfo.InvariantCulture, $"{_options.MetadataListenPort}, {_options.VmDnsListenPort}");

    /// <summary>Installs (or replaces) the rules; throws <see cref="HostNetworkException"/> when nft fails.</summary>
    public async Task ApplyAsync(CancellationToken ct)
    {
        var result = await HostCommand.RunAsync(_options.NftCommand, ["-f", "-"], BuildRuleset(), ct: ct);
        if (!result.Ok)
            throw new HostNetworkException($"cannot install the VM packet-filter rules (nftables table inet {TableName}): {result.Message}");
    }

    /// <summary>Null when the installed table is exactly the current rules; else what is wrong.</summary>
    public async Task<string?> VerifyAsync(CancellationToken ct)
    {
        var result = await HostCommand.RunAsync(_options.NftCommand, ["list", "table", "inet", TableName], ct: ct);
        if (!result.Ok) return $"nftables table inet {TableName} is missing: {result.Message}";
        string expected = MarkerComment(Digest(BuildTableBody()));
        return result.Stdout.Contains(expected, StringComparison.Ordinal)
            ? null
            : $"nftables table inet {TableName} does not hold the current rules";
    }

    /// <summary>Installs the rules, then reads them back. For start-up: throws when they are not in force.</summary>
    public async Task EnsureAsync(CancellationToken ct)
    {
        await ApplyAsync(ct);
        if (await VerifyAsync(ct) is { } problem) throw new HostNetworkException(problem);
    }

    /// <summary>Deletes this installation's table (tests, uninstall). Absent is fine.</summary>
    public async Task RemoveAsync(CancellationToken ct)
    {
        await HostCommand.RunAsync(_options.NftCommand, ["-f", "-"], $"table inet {TableName} {{}}\ndelete table inet {TableName}\n", ct: ct);
    }

    private string MarkerComment(string digest) => "warren " + digest;

    private static string Digest(string body) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(body)))[..16];

    internal static (string Protocol, int Port) ParseService(string text, string setting)
    {
        var parts = (text ?? "").Trim().Split('/');
        if (parts.Length == 2 && parts[0] is "tcp" or "udp"
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int port) && port is > 0 and < 65536)
            return (parts[0], port);
        throw new ArgumentException($"Warren:Network:{setting}: '{text}' is not tcp/PORT or udp/PORT");
    }

    /// <summary>Configured resolvers, else the host's non-loopback ones (a loopback resolver means nothing inside a VM), else public ones.</summary>
    public static IReadOnlyList<IPAddress> ResolveDnsServers(IEnumerable<string> configured, string resolvConfPath = "/etc/resolv.conf")
    {
        var servers = new List<IPAddress>();
        foreach (var text in configured)
        {
            if (!IPAddress.TryParse(text.Trim(), out var a) || a.AddressFamily != AddressFamily.InterNetwork)
                throw new ArgumentException($"Warren:Network:DnsServers: '{text}' is not an IPv4 address");
            servers.Add(a);
        }
        if (servers.Count > 0) return servers;
        try
        {
            foreach (var line in File.ReadLines(resolvConfPath))
            {
                var fields = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length >= 2 && fields[0] == "nameserver" && IPAddress.TryParse(fields[1], out var a)
                    && a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a))
                    servers.Add(a);
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return servers.Count > 0 ? servers : [IPAddress.Parse("1.1.1.1"), IPAddress.Parse("9.9.9.9")];
    }
}

/// <summary>The host's networking could not be set up or checked (nftables missing, rules refused, …).</summary>
public sealed class HostNetworkException(string message, Exception? inner = null) : Exception(message, inner);
