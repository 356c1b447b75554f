using System.Net;
using CsCheck;
using Warren.Runtime.HostNetwork;
using Xunit;

namespace Warren.Runtime.Docker.Tests;

/// <summary>The host-network library without the engine or the kernel: subnet arithmetic and the generated ruleset.</summary>
public sealed class HostNetworkTests
{
    private const int PropertyIterations = 2000;

    [Fact]
    public void Pool_CutsAlignedSubnets_GatewayThenVm()
    {
        var pool = new VmSubnetPool("10.231.0.0/16", 30);
        Assert.Equal(16384, pool.Count);
        var s = pool[1];
        Assert.Equal("10.231.0.4/30", s.Network.ToString());
        Assert.Equal(IPAddress.Parse("10.231.0.5"), s.Gateway);
        Assert.Equal(IPAddress.Parse("10.231.0.6"), s.VmAddress);
        Assert.Equal(16383, pool.IndexOf(pool[16383].Network));
        Assert.Equal(-1, pool.IndexOf(IPNetwork.Parse("10.232.0.0/30")));
        Assert.Equal(-1, pool.IndexOf(IPNetwork.Parse("10.231.0.0/29")));
    }

    [Theory]
    [InlineData("not-a-cidr", 30)]
    [InlineData("fd00::/64", 126)]
    [InlineData("10.0.0.0/24", 31)]
    [InlineData("10.0.0.0/24", 16)]
    [InlineData("10.0.0.0/8", 30)]
    public void Pool_RejectsUnusableSettings(string pool, int prefix) =>
        Assert.Throws<ArgumentException>(() => new VmSubnetPool(pool, prefix));

    [Fact]
    public void Candidates_StartAfterTheLastAllocated_WrapRound_AndListEveryFreeSubnetOnce()
    {
        Gen.Select(Gen.Int[26, 30], Gen.Int[-1, 64], Gen.Int[0, 63].Array[0, 20]).Sample((prefix, last, takenList) =>
        {
            var pool = new VmSubnetPool("10.231.0.0/24", prefix);
            var taken = takenList.Where(t => t < pool.Count).ToHashSet();
            var order = pool.Candidates(last, taken).ToList();
            Assert.Equal(pool.Count - taken.Count, order.Count);
            Assert.Equal(order.Count, order.Distinct().Count());
            Assert.DoesNotContain(order, taken.Contains);
            int start = last < 0 || last >= pool.Count ? 0 : (last + 1) % pool.Count;
            if (order.Count > 0) Assert.Equal(Enumerable.Range(0, pool.Count).Select(i => (start + i) % pool.Count).First(i => !taken.Contains(i)), order[0]);
            // A just-freed subnet (the last allocated) comes round last.
            if (last >= 0 && last < pool.Count && !taken.Contains(last)) Assert.Equal(last, order[^1]);
            foreach (int i in order.Take(8))
            {
                var s = pool[i];
                Assert.True(s.Network.Contains(s.Gateway) && s.Network.Contains(s.VmAddress));
                Assert.Equal(i, pool.IndexOf(s.Network));
            }
        }, iter: PropertyIterations);
    }

    [Fact]
    public void Quarantine_HoldsAFreedSubnet_ForItsPeriod()
    {
        var time = new ManualTime();
        var q = new AddressQuarantine(TimeSpan.FromSeconds(60), time);
        q.Release(3);
        Assert.Contains(3, q.Held());
        time.Advance(TimeSpan.FromSeconds(59));
        Assert.Contains(3, q.Held());
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.DoesNotContain(3, q.Held());
    }

    [Fact]
    public void Ruleset_FencesTheInstallationsBridges_AndNothingElse()
    {
        var firewall = new VmFirewall(new HostNetworkOptions { DnsServers = ["10.255.255.53"], HostServices = ["udp/53"], PublicServices = ["tcp/443"] }, "inst-1");
        string rules = firewall.BuildRuleset();
        Assert.StartsWith("wv", firewall.InterfacePrefix);
        Assert.Equal(7, firewall.InterfacePrefix.Length);
        Assert.Equal(15, firewall.BridgeName(new VmSubnetPool("10.231.0.0/16", 30)[5]).Length);
        Assert.Contains($"table inet {firewall.TableName} {{", rules);
        Assert.Contains($"iifname \"{firewall.InterfacePrefix}*\" oifname \"{firewall.InterfacePrefix}*\" counter reject", rules);
        Assert.Contains("10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16", rules);
        Assert.Contains("elements = { 10.255.255.53 }", rules);
        Assert.Contains("fib daddr . iif type local udp dport 53 accept", rules);
        Assert.Contains("fib daddr type local tcp dport 443 accept", rules);
        Assert.DoesNotContain("169.254.169.254", rules);
        // Served (both listener ports known): 169.254.169.254 is redirected to the host's address on the VM's own bridge,
        // accepted there only on those ports, and the ports are closed to every other interface. Never forwarded.
        var served = new VmFirewall(new HostNetworkOptions { MetadataServed = true, MetadataListenPort = 40080, VmDnsListenPort = 40053, DnsServers = ["1.1.1.1"] }, "inst-1");
        Assert.True(served.ServesMetadata);
        string servedRules = served.BuildRuleset();
        Assert.Contains("type nat hook prerouting", servedRules);
        Assert.Contains("ip daddr 169.254.169.254 tcp dport 80 redirect to :40080", servedRules);
        Assert.Contains("ip daddr 169.254.169.254 meta l4proto { tcp, udp } th dport 53 redirect to :40053", servedRules);
        Assert.Contains("fib daddr . iif type local tcp dport 40080 accept", servedRules);
        Assert.Contains($"iifname != \"{served.InterfacePrefix}*\" meta l4proto {{ tcp, udp }} th dport {{ 40080, 40053 }} counter drop", servedRules);
        Assert.DoesNotContain("169.254.169.254 tcp dport 80 accept", servedRules);
        // Wanted but no ports bound: nothing about the address at all (it stays in the deny list).
        Assert.False(new VmFirewall(new HostNetworkOptions { MetadataServed = true, DnsServers = ["1.1.1.1"] }, "inst-1").ServesMetadata);
        // Another installation: another table and prefix.
        var other = new VmFirewall(new HostNetworkOptions(), "inst-2");
        Assert.NotEqual(firewall.TableName, other.TableName);
        Assert.NotEqual(firewall.InterfacePrefix, other.InterfacePrefix);
    }

    [Fact]
    public void Configuration_ThatIsNotAnAddressOrService_IsRejected_NeverPutIntoTheRuleset()
    {
        // Whatever the text, it is either refused or appears only in canonical form: no nft syntax gets through.
        Gen.String.Sample(text =>
        {
            foreach (var options in new[]
            {
                new HostNetworkOptions { DenyDestinations = [text], DnsServers = ["1.1.1.1"] },
                new HostNetworkOptions { DnsServers = [text] },
                new HostNetworkOptions { HostServices = [text], DnsServers = ["1.1.1.1"] },
                new HostNetworkOptions { PublicServices = [text], DnsServers = ["1.1.1.1"] },
            })
            {
                string rules;
                try { rules = new VmFirewall(options, "fuzz").BuildRuleset(); }
                catch (ArgumentException) { continue; }
                foreach (char c in "\";{}\n#") Assert.Equal(CountOf(new VmFirewall(new HostNetworkOptions { DnsServers = ["1.1.1.1"] }, "fuzz").BuildRuleset(), c) + Extra(options, c), CountOf(rules, c));
            }
        }, iter: PropertyIterations);
    }

    [Fact]
    public void DnsServers_DefaultToTheHostsNonLoopbackResolvers()
    {
        string conf = Path.GetTempFileName();
        try
        {
            File.WriteAllText(conf, "# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver fd00::1\noptions ndots:0\n");
            Assert.Equal([IPAddress.Parse("10.255.255.53")], VmFirewall.ResolveDnsServers([], conf));
            File.WriteAllText(conf, "nameserver 127.0.0.53\n");
            Assert.Equal(2, VmFirewall.ResolveDnsServers([], conf).Count);
            Assert.Throws<ArgumentException>(() => VmFirewall.ResolveDnsServers(["dns.example"], conf));
        }
        finally
        {
            File.Delete(conf);
        }
    }

    [Fact]
    public void MountInfo_FindsTheSourceOfAMountPoint()
    {
        Assert.NotNull(VmDiskImages.MountSource("/proc"));
        Assert.Null(VmDiskImages.MountSource("/proc/self"));
    }

    private static int CountOf(string s, char c) => s.Count(x => x == c);

    /// <summary>A valid host service adds one rule line with fixed punctuation.</summary>
    private static int Extra(HostNetworkOptions options, char c) => options.HostServices.Length + options.PublicServices.Length == 0 ? 0 : c switch
    {
        '"' => 4,
        '\n' => 1,
        _ => 0,
    };

    private sealed class ManualTime : TimeProvider
    {
        private DateTimeOffset _now = DateTimeOffset.UnixEpoch;
        public override DateTimeOffset GetUtcNow() => _now;
        public void Advance(TimeSpan by) => _now += by;
    }
}
