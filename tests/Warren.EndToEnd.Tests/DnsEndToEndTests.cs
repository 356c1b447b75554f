using System.Text.Json;
using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Issue 5 "Addresses and DNS" end to end: the real <c>dig</c> against the daemon's authoritative
/// server, over UDP and TCP, following VMs as they are created, renamed and removed.
/// </summary>
public sealed class DnsEndToEndTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;

    /// <summary>One answer line of dig: owner, TTL, type, data (trailing dots removed).</summary>
    public sealed record Rr(string Name, int Ttl, string Type, string Data);

    public sealed record DigResult(string Status, bool Authoritative, List<Rr> Answer, List<Rr> Authority, string Raw)
    {
        public override string ToString() => Raw;
    }

    /// <summary>Runs <c>dig @127.0.0.1 -p PORT NAME TYPE</c> (no recursion asked), parsing status, flags and sections.</summary>
    public static async Task<DigResult> DigAsync(WarrenDaemon daemon, string name, string type = "A", bool tcp = false)
    {
        string dig = ProcessRunner.Require("dig");
        var args = new List<string>
        {
            "@" + daemon.ControlAddress, "-p", daemon.DnsPort.ToString(), "+norecurse", "+time=5", "+tries=3",
            "+nocookie", "+noedns", name, type,
        };
        if (tcp) args.Insert(3, "+tcp");
        var r = await ProcessRunner.RunAsync(dig, args, timeout: TimeSpan.FromSeconds(60));
        Assert.True(r.ExitCode == 0, "dig failed: " + r);
        return Parse(r.Stdout);
    }

    public static DigResult Parse(string text)
    {
        var status = Regex.Match(text, @"status: (\w+)");
        Assert.True(status.Success, "no status in dig output:\n" + text);
        var flags = Regex.Match(text, @";; flags:([^;]*);");
        bool aa = flags.Success && flags.Groups[1].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries).Contains("aa");
        return new DigResult(status.Groups[1].Value, aa, Section(text, "ANSWER"), Section(text, "AUTHORITY"), text);
    }

    private static List<Rr> Section(string text, string section)
    {
        var list = new List<Rr>();
        bool inside = false;
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.StartsWith($";; {section} SECTION:", StringComparison.Ordinal)) { inside = true; continue; }
            if (!inside) continue;
            if (line.Length == 0 || line.StartsWith(";;", StringComparison.Ordinal)) break;
            var parts = line.Split((char[])['\t', ' '], StringSplitOptions.RemoveEmptyEntries);
            // NAME TTL CLASS TYPE DATA...
            list.Add(new Rr(parts[0].TrimEnd('.'), int.Parse(parts[1]), parts[3], string.Join(' ', parts.Skip(4)).TrimEnd('.')));
        }
        return list;
    }

    private async Task<SshUser> UserWithVmAsync(string email, string vm)
    {
        var u = await Daemon.CreateUserAsync(email);
        var r = await u.ControlAsync($"new --name={vm} --image=warren/busybox:1 --json");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal($"{vm}.box.localhost", JsonDocument.Parse(r.Stdout).RootElement.GetProperty("ssh_dest").GetString());
        return u;
    }

    /// <summary>The A query for a VM name: CNAME to its slot, then the slot's A record, authoritative.</summary>
    private static (string Slot, string Address) AssertChain(DigResult d, string vm)
    {
        Assert.True(d.Status == "NOERROR", d.Raw);
        Assert.True(d.Authoritative, "answer is not authoritative:\n" + d.Raw);
        Assert.True(d.Answer.Count == 2, d.Raw);
        var cname = d.Answer[0];
        // The owner name echoes the question's case (RFC 4343 §4.1); compare without case.
        Assert.Equal($"{vm}.box.localhost", cname.Name, ignoreCase: true);
        Assert.Equal("CNAME", cname.Type);
        Assert.Matches(@"^s\d{3}\.box\.localhost$", cname.Data.ToLowerInvariant());
        var a = d.Answer[1];
        Assert.Equal(cname.Data, a.Name, ignoreCase: true);
        Assert.Equal("A", a.Type);
        Assert.Matches(@"^127\.0\.1\.[1-4]$", a.Data);
        return (cname.Data.ToLowerInvariant(), a.Data);
    }

    [Fact]
    public async Task VmName_IsCnameToItsSlot_ThenA_OverUdpAndTcp()
    {
        var u = await UserWithVmAsync("dns1@example.com", "dns-one");

        var udp = await DigAsync(Daemon, "dns-one.box.localhost");
        var (slot, address) = AssertChain(udp, "dns-one");

        var tcp = await DigAsync(Daemon, "dns-one.box.localhost", tcp: true);
        Assert.Equal((slot, address), AssertChain(tcp, "dns-one"));
        Assert.Contains("(TCP)", tcp.Raw);

        // The slot name on its own resolves to the same address.
        var slotA = await DigAsync(Daemon, slot);
        Assert.True(slotA.Status == "NOERROR", slotA.Raw);
        Assert.Equal([new Rr(slot, slotA.Answer[0].Ttl, "A", address)], slotA.Answer);

        // Names are case-insensitive (RFC 4343).
        AssertChain(await DigAsync(Daemon, "DNS-One.Box.LocalHost"), "dns-one");

        // The address DNS gives is where the account's SSH lands in that VM.
        var host = await u.VmAsync(address, "hostname");
        Assert.True(host.ExitCode == 0, host.ToString());
        Assert.Equal("dns-one", host.Stdout.Trim());

        // The control host has its A record, and the zone apex its SOA and NS.
        var control = await DigAsync(Daemon, "warren.localhost");
        Assert.True(control.Status == "NOERROR", control.Raw);
        Assert.Contains(control.Answer, rr => rr.Type == "A" && rr.Data == "127.0.0.1");
        var soa = await DigAsync(Daemon, "box.localhost", "SOA", tcp: true);
        Assert.Contains(soa.Answer, rr => rr.Type == "SOA" && rr.Name == "box.localhost");
        var ns = await DigAsync(Daemon, "box.localhost", "NS");
        Assert.Contains(ns.Answer, rr => rr.Type == "NS" && rr.Name == "box.localhost");
    }

    [Fact]
    public async Task UnknownName_IsNxDomain_WithTheSoa_OverUdpAndTcp()
    {
        foreach (bool tcp in new[] { false, true })
        {
            var d = await DigAsync(Daemon, "no-such-vm-here.box.localhost", tcp: tcp);
            Assert.True(d.Status == "NXDOMAIN", d.Raw);
            Assert.True(d.Authoritative, d.Raw);
            Assert.Empty(d.Answer);
            Assert.Contains(d.Authority, rr => rr.Type == "SOA" && rr.Name == "box.localhost");
        }
        // Deeper names below the VM zone do not exist either.
        var deep = await DigAsync(Daemon, "a.b.box.localhost");
        Assert.True(deep.Status == "NXDOMAIN", deep.Raw);
        // Names outside our zones are refused, not answered.
        var outside = await DigAsync(Daemon, "example.com");
        Assert.True(outside.Status == "REFUSED", outside.Raw);
    }

    [Fact]
    public async Task Answers_FollowRenameAndRm_AtOnce()
    {
        var u = await UserWithVmAsync("dns2@example.com", "dns-before");
        var (slot, address) = AssertChain(await DigAsync(Daemon, "dns-before.box.localhost"), "dns-before");

        var rename = await u.ControlAsync("rename dns-before dns-after --json");
        Assert.True(rename.ExitCode == 0, rename.ToString());

        // The old name is gone and the new one points at the same slot (a rename keeps the slot).
        var old = await DigAsync(Daemon, "dns-before.box.localhost");
        Assert.True(old.Status == "NXDOMAIN", old.Raw);
        var renamed = await DigAsync(Daemon, "dns-after.box.localhost", tcp: true);
        Assert.Equal((slot, address), AssertChain(renamed, "dns-after"));

        var rm = await u.ControlAsync("rm dns-after --json");
        Assert.True(rm.ExitCode == 0, rm.ToString());
        Assert.Contains("dns-after", rm.Stdout);
        foreach (bool tcp in new[] { false, true })
        {
            var gone = await DigAsync(Daemon, "dns-after.box.localhost", tcp: tcp);
            Assert.True(gone.Status == "NXDOMAIN", gone.Raw);
        }
        // The slot itself stays: it is the pool, not the VM.
        var slotA = await DigAsync(Daemon, slot);
        Assert.True(slotA.Status == "NOERROR" && slotA.Answer.Count == 1, slotA.Raw);
    }
}
