using System.Net;

namespace Warren.Edge.Dns;

/// <summary>
/// Decides the answer to one question for the VM zone and the control host. Reads
/// <see cref="IDnsZoneSource"/> on every call; nothing is cached, so answers follow the platform at once.
/// </summary>
/// <remarks>
/// Names (all compared in lower case, RFC 4343):
/// <list type="bullet">
/// <item><c>&lt;vm-domain&gt;</c>: SOA and NS (apex), NODATA for other types.</item>
/// <item>the control host: A/AAAA of <see cref="DnsServerOptions.ControlHostAddress"/>; its own SOA/NS when outside the VM domain.</item>
/// <item><c>sNNN.&lt;vm-domain&gt;</c> (any label the source knows as a slot): A/AAAA of the slot.</item>
/// <item><c>NAME.&lt;vm-domain&gt;</c>: CNAME to the slot name (or to the control host when the VM has no slot), plus the target's address record in the same answer (RFC 1034 §4.3.2 step 3a).</item>
/// <item>MX (when <see cref="DnsServerOptions.MailExchangeHost"/> is set): on the control host and on each slot name; a
/// VM name, being a CNAME (which has no other data, RFC 1034 §3.6.2), answers an MX query with the CNAME and its
/// target's MX, so mail to <c>x@NAME.&lt;vm-domain&gt;</c> finds the exchanger (RFC 5321 §5.1).</item>
/// <item>anything else in a zone: NXDOMAIN with the SOA in the authority section (RFC 2308 §3); outside: REFUSED without AA.</item>
/// </list>
/// </remarks>
internal sealed class DnsAuthority
{
    /// <summary>
    /// TTL of every record. Short on purpose: VMs are created, renamed and removed at any moment
    /// and the answer must follow within seconds for resolvers that cache.
    /// </summary>
    public const uint RecordTtlSeconds = 30;

    /// <summary>SOA MINIMUM = negative-caching TTL (RFC 2308 §4): as short as positive answers, so a new VM's name resolves soon.</summary>
    public const uint NegativeTtlSeconds = 30;

    /// <summary>SOA REFRESH/RETRY/EXPIRE (RFC 1035 §3.3.13). There are no secondaries; these are the conventional RFC 1912 §2.2 values.</summary>
    public const uint SoaRefreshSeconds = 3600;
    public const uint SoaRetrySeconds = 600;
    public const uint SoaExpireSeconds = 1209600;

    /// <summary>MX PREFERENCE (RFC 1035 §3.3.9). There is one exchanger, so the value only has to be valid.</summary>
    public const ushort MailExchangePreference = 10;

    private readonly IDnsZoneSource _source;
    private readonly string _vmZone;
    private readonly string _controlHost;
    private readonly IPAddress _controlAddress;
    private readonly bool _controlHostIsOwnZone;
    private readonly string _nameServer;
    private readonly string? _hostmaster;
    private readonly string? _mailExchange;
    private readonly uint _serial;

    public DnsAuthority(DnsServerOptions options, IDnsZoneSource source, TimeProvider time)
    {
        _source = source;
        _vmZone = Normalize(options.VmDomain);
        _controlHost = Normalize(options.ControlHost);
        _controlAddress = options.ControlHostAddress;
        _controlHostIsOwnZone = !IsAtOrBelow(_controlHost, _vmZone);
        _nameServer = Normalize(options.NameServerHost ?? options.ControlHost);
        _hostmaster = options.HostmasterMailbox is null ? null : Normalize(options.HostmasterMailbox);
        _mailExchange = string.IsNullOrWhiteSpace(options.MailExchangeHost) ? null : Normalize(options.MailExchangeHost);
        // The data changes continuously and nobody transfers the zone; the start time is a serial that
        // increases across restarts (RFC 1982 arithmetic wraps in 2106).
        _serial = (uint)time.GetUtcNow().ToUnixTimeSeconds();
    }

    public static string Normalize(string name) => name.Trim().TrimEnd('.').ToLowerInvariant();

    public async ValueTask<DnsAnswer> AnswerAsync(DnsQuestion question, CancellationToken ct)
    {
        string name = question.Name;
        ushort qtype = question.QType;

        string? zone = IsAtOrBelow(name, _vmZone) ? _vmZone
            : _controlHostIsOwnZone && IsAtOrBelow(name, _controlHost) ? _controlHost
            : null;
        if (zone is null)
            return new DnsAnswer { Rcode = DnsRcode.Refused, Authoritative = false };

        var answer = new DnsAnswer { Rcode = DnsRcode.NoError, Authoritative = true };

        if (name == _controlHost)
        {
            AddApexRecordsIfApex(answer, name, zone, qtype);
            if (Wants(qtype, _controlAddress))
                answer.Answer.Add(new DnsAddressRecord(name, RecordTtlSeconds, _controlAddress));
            await AddMailExchangeAsync(answer, name, qtype, ct).ConfigureAwait(false);
            return Finish(answer, zone);
        }

        if (name == zone)
        {
            AddApexRecordsIfApex(answer, name, zone, qtype);
            return Finish(answer, zone);
        }

        // Only one label below the VM zone can exist: NAME or sNNN.
        string relative = name[..(name.Length - zone.Length - 1)];
        if (zone != _vmZone || relative.Contains('.'))
            return NxDomain(answer, zone);

        var slotAddress = await _source.FindSlotAddressAsync(relative, ct).ConfigureAwait(false);
        if (slotAddress is not null)
        {
            if (Wants(qtype, slotAddress))
                answer.Answer.Add(new DnsAddressRecord(name, RecordTtlSeconds, slotAddress));
            await AddMailExchangeAsync(answer, name, qtype, ct).ConfigureAwait(false);
            return Finish(answer, zone);
        }

        var vm = await _source.FindVmAsync(relative, ct).ConfigureAwait(false);
        if (vm is null)
            return NxDomain(answer, zone);

        string target;
        IPAddress? targetAddress;
        if (vm.SlotLabel is { Length: > 0 } slot)
        {
            target = Normalize(slot) + "." + _vmZone;
            targetAddress = await _source.FindSlotAddressAsync(Normalize(slot), ct).ConfigureAwait(false);
        }
        else
        {
            target = _controlHost;
            targetAddress = _controlAddress;
        }
        answer.Answer.Add(new DnsNameRecord(name, DnsWire.TypeCname, RecordTtlSeconds, target));
        if (qtype == DnsWire.TypeCname)
            return answer;
        // RFC 1034 §4.3.2 3a: restart at the CNAME target, which is ours too.
        if (targetAddress is not null && Wants(qtype, targetAddress))
            answer.Answer.Add(new DnsAddressRecord(target, RecordTtlSeconds, targetAddress));
        await AddMailExchangeAsync(answer, target, qtype, ct).ConfigureAwait(false);
        return Finish(answer, zone);
    }

    /// <summary>The MX of <paramref name="owner"/> for an MX or ANY query, with the exchanger's address as additional data when it is ours (RFC 1035 §3.3.9).</summary>
    private async ValueTask AddMailExchangeAsync(DnsAnswer answer, string owner, ushort qtype, CancellationToken ct)
    {
        if (_mailExchange is null || qtype is not (DnsWire.TypeMx or DnsWire.TypeAny))
            return;
        answer.Answer.Add(new DnsMxRecord(owner, RecordTtlSeconds, MailExchangePreference, _mailExchange));
        IPAddress? address = null;
        if (_mailExchange == _controlHost)
            address = _controlAddress;
        else if (IsAtOrBelow(_mailExchange, _vmZone) && _mailExchange != _vmZone)
        {
            string label = _mailExchange[..(_mailExchange.Length - _vmZone.Length - 1)];
            if (!label.Contains('.'))
                address = await _source.FindSlotAddressAsync(label, ct).ConfigureAwait(false);
        }
        if (address is not null && !answer.Additional.Any(r => r.Owner == _mailExchange))
            answer.Additional.Add(new DnsAddressRecord(_mailExchange, RecordTtlSeconds, address));
    }

    private void AddApexRecordsIfApex(DnsAnswer answer, string name, string zone, ushort qtype)
    {
        if (name != zone)
            return;
        if (qtype is DnsWire.TypeSoa or DnsWire.TypeAny)
            answer.Answer.Add(Soa(zone));
        if (qtype is DnsWire.TypeNs or DnsWire.TypeAny)
        {
            answer.Answer.Add(new DnsNameRecord(zone, DnsWire.TypeNs, RecordTtlSeconds, _nameServer));
            // Glue-like additional data when we know the name server's address (RFC 1035 §3.3.11).
            if (_nameServer == _controlHost)
                answer.Additional.Add(new DnsAddressRecord(_controlHost, RecordTtlSeconds, _controlAddress));
        }
    }

    /// <summary>NODATA (no answer records, NOERROR) carries the SOA in authority (RFC 2308 §2.2).</summary>
    private DnsAnswer Finish(DnsAnswer answer, string zone)
    {
        if (answer.Answer.Count == 0)
            answer.Authority.Add(Soa(zone));
        return answer;
    }

    private DnsAnswer NxDomain(DnsAnswer answer, string zone)
    {
        var nx = new DnsAnswer { Rcode = DnsRcode.NxDomain, Authoritative = true };
        nx.Authority.Add(Soa(zone));
        return nx;
    }

    private DnsSoaRecord Soa(string zone) => new(
        zone, RecordTtlSeconds, _nameServer, _hostmaster ?? "hostmaster." + zone, _serial,
        SoaRefreshSeconds, SoaRetrySeconds, SoaExpireSeconds, NegativeTtlSeconds);

    private static bool Wants(ushort qtype, IPAddress address)
    {
        ushort type = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? DnsWire.TypeAaaa : DnsWire.TypeA;
        return qtype == type || qtype == DnsWire.TypeAny;
    }

    private static bool IsAtOrBelow(string name, string zone) =>
        name == zone || (name.Length > zone.Length && name.EndsWith(zone, StringComparison.Ordinal) && name[name.Length - zone.Length - 1] == '.');
}
