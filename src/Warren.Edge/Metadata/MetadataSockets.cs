using System.Net;
using System.Net.Sockets;

namespace Warren.Edge.Metadata;

/// <summary>
/// The host-side sockets redirected VM traffic reaches: TCP for the metadata service, UDP and TCP on one port for VM
/// DNS. Bound (on every address) when the object graph is built — before the packet-filter rules are written, which
/// need the ports — and listened on by <see cref="MetadataServer"/> and <see cref="Dns.VmResolver"/>. A port of 0
/// takes a free one, so several installations can share a host.
/// </summary>
public sealed class MetadataSockets : IDisposable
{
    /// <summary>Tries to find a port free for both UDP and TCP when the DNS port is chosen by the system.</summary>
    public const int MaxBindAttempts = 16;

    private Socket? _metadataTcp;

    public MetadataSockets(int metadataPort, int dnsPort, IPAddress? address = null)
    {
        address ??= IPAddress.Any;
        _metadataTcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            _metadataTcp.Bind(new IPEndPoint(address, metadataPort));
            (DnsUdp, DnsTcp) = BindPair(new IPEndPoint(address, dnsPort));
        }
        catch
        {
            _metadataTcp.Dispose();
            throw;
        }
        MetadataPort = ((IPEndPoint)_metadataTcp.LocalEndPoint!).Port;
        DnsPort = ((IPEndPoint)DnsUdp.LocalEndPoint!).Port;
    }

    public int MetadataPort { get; }
    public int DnsPort { get; }
    public Socket DnsUdp { get; }
    /// <summary>Bound, not yet listening.</summary>
    public Socket DnsTcp { get; }

    /// <summary>
    /// The metadata socket's descriptor for Kestrel (<c>ListenHandle</c>), which then owns it: this object forgets it
    /// so the descriptor is closed once, by Kestrel.
    /// </summary>
    public ulong TakeMetadataHandle()
    {
        var socket = _metadataTcp ?? throw new InvalidOperationException("the metadata socket was handed over already");
        _metadataTcp = null;
        ulong handle = (ulong)socket.SafeHandle.DangerousGetHandle();
        socket.SafeHandle.SetHandleAsInvalid();
        GC.SuppressFinalize(socket);
        return handle;
    }

    public void Dispose()
    {
        _metadataTcp?.Dispose();
        DnsUdp.Dispose();
        DnsTcp.Dispose();
    }

    private static (Socket Udp, Socket Tcp) BindPair(IPEndPoint endpoint)
    {
        for (int attempt = 1; ; attempt++)
        {
            var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                udp.Bind(endpoint);
                tcp.Bind(udp.LocalEndPoint!);
                return (udp, tcp);
            }
            catch (SocketException) when (endpoint.Port == 0 && attempt < MaxBindAttempts)
            {
                udp.Dispose();
                tcp.Dispose();
            }
            catch
            {
                udp.Dispose();
                tcp.Dispose();
                throw;
            }
        }
    }
}
