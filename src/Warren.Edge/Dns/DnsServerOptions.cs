using System.Net;

namespace Warren.Edge.Dns;

/// <summary>Configuration of the authoritative DNS server.</summary>
public sealed class DnsServerOptions
{
    /// <summary>Where to listen, over both UDP and TCP. Port 0 picks one free port for both.</summary>
    public IPEndPoint Endpoint { get; set; } = new(IPAddress.Loopback, 5353);

    /// <summary>The VM domain, e.g. <c>box.localhost</c>: the zone this server is authoritative for.</summary>
    public string VmDomain { get; set; } = "box.localhost";

    /// <summary>The control host name, e.g. <c>warren.localhost</c>. Served as its own zone when it is outside <see cref="VmDomain"/>.</summary>
    public string ControlHost { get; set; } = "warren.localhost";

    /// <summary>The control host's public address (A or AAAA record).</summary>
    public IPAddress ControlHostAddress { get; set; } = IPAddress.Loopback;

    /// <summary>The name in NS records and the SOA MNAME. Defaults to <see cref="ControlHost"/>.</summary>
    public string? NameServerHost { get; set; }

    /// <summary>
    /// The mail exchanger (MX target) for VM names, slot names and the control host: the host name whose address
    /// the SMTP front door listens on. Null: no MX records. When it is the control host or a slot name, its address
    /// goes in the additional section; any other name must resolve elsewhere.
    /// </summary>
    public string? MailExchangeHost { get; set; }

    /// <summary>The SOA RNAME as a domain name (<c>hostmaster.box.localhost</c>). Defaults to <c>hostmaster.&lt;zone&gt;</c>.</summary>
    public string? HostmasterMailbox { get; set; }
}
