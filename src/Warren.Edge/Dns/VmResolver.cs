using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Edge.Metadata;

namespace Warren.Edge.Dns;

/// <summary>
/// The resolver inside every VM (reached at 169.254.169.254:53 through the packet filter's redirect): names below
/// <c>int.&lt;vm-domain&gt;</c> — the integrations (exe.dev's docs: integrations) — resolve to the metadata
/// address; every other query is relayed unchanged to the upstream resolvers (<see cref="DnsRelay"/>), so other
/// names resolve as before. UDP and TCP (RFC 7766), one query at a time per TCP message, bounded concurrency.
/// </summary>
public sealed partial class VmResolver : IHostedService, IAsyncDisposable
{
    /// <summary>TTL of the integration answers.</summary>
    public const uint IntegrationTtl = 60;
    /// <summary>Relayed queries in flight across all VMs; more are dropped (the client retries).</summary>
    public const int MaxConcurrentQueries = 256;
    public const int MaxTcpConnections = 256;
    public static readonly TimeSpan TcpMessageTimeout = TimeSpan.FromSeconds(10);

    private static readonly IPAddress s_metadataAddress = IPAddress.Parse("169.254.169.254");

    private readonly Socket _udp;
    private readonly Socket _tcp;
    private readonly string _integrationSuffix;
    private readonly DnsRelay _relay;
    private readonly ILogger _log;
    private readonly SemaphoreSlim _inFlight = new(MaxConcurrentQueries, MaxConcurrentQueries);
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _loops = [];
    private readonly DnsTcpService _tcpService = new(MaxTcpConnections, TcpMessageTimeout);

    public VmResolver(MetadataSockets sockets, string vmDomain, DnsRelay relay, ILogger<VmResolver>? log = null)
        : this(sockets.DnsUdp, sockets.DnsTcp, vmDomain, relay, log) { }

    internal VmResolver(Socket udp, Socket tcp, string vmDomain, DnsRelay relay, ILogger<VmResolver>? log = null)
    {
        _udp = udp;
        _tcp = tcp;
        _integrationSuffix = ".int." + vmDomain.Trim().TrimEnd('.').ToLowerInvariant();
        _relay = relay;
        _log = (ILogger?)log ?? NullLogger.Instance;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _tcp.Listen(MaxTcpConnections);
        _loops.Add(Task.Run(() => UdpLoopAsync(_stopping.Token)));
        _loops.Add(Task.Run(() => _tcpService.AcceptLoopAsync(_tcp, AnswerTcpAsync, null, _stopping.Token)));
        LogStarted(((IPEndPoint)_udp.LocalEndPoint!).Port, _integrationSuffix[1..], _relay.ToString());
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (!_stopping.IsCancellationRequested) _stopping.Cancel();
        _udp.Dispose();
        _tcp.Dispose();
        try { await Task.WhenAll(_loops).WaitAsync(cancellationToken).ConfigureAwait(false); }
        catch (OperationCanceledException) { }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _stopping.Dispose();
    }

    private async Task UdpLoopAsync(CancellationToken ct)
    {
        var any = new IPEndPoint(IPAddress.Any, 0);
        while (!ct.IsCancellationRequested)
        {
            byte[] receive = ArrayPool<byte>.Shared.Rent(DnsWire.MaxUdpDatagramSize);
            SocketReceiveFromResult received;
            try
            {
                received = await _udp.ReceiveFromAsync(receive, SocketFlags.None, any, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException || ct.IsCancellationRequested)
            {
                ArrayPool<byte>.Shared.Return(receive);
                return;
            }
            catch (SocketException)
            {
                ArrayPool<byte>.Shared.Return(receive);
                continue;
            }
            if (!_inFlight.Wait(0))
            {
                ArrayPool<byte>.Shared.Return(receive);
                continue;
            }
            _ = AnswerUdpAsync(receive, received.ReceivedBytes, received.RemoteEndPoint, ct);
        }
    }

    private async Task AnswerUdpAsync(byte[] request, int length, EndPoint client, CancellationToken ct)
    {
        byte[] response = ArrayPool<byte>.Shared.Rent(DnsWire.MaxUdpDatagramSize);
        try
        {
            int answer = await HandleAsync(request.AsMemory(0, length), response, udp: true, ct).ConfigureAwait(false);
            if (answer > 0) await _udp.SendToAsync(response.AsMemory(0, answer), SocketFlags.None, client, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { }
        finally
        {
            ArrayPool<byte>.Shared.Return(request);
            ArrayPool<byte>.Shared.Return(response);
            _inFlight.Release();
        }
    }

    /// <summary>A TCP query, under the same in-flight bound as UDP ones.</summary>
    private async ValueTask<int> AnswerTcpAsync(ReadOnlyMemory<byte> message, Memory<byte> response, CancellationToken ct)
    {
        await _inFlight.WaitAsync(ct).ConfigureAwait(false);
        try { return await HandleAsync(message, response, udp: false, ct).ConfigureAwait(false); }
        finally { _inFlight.Release(); }
    }

    /// <summary>The answer's length in <paramref name="response"/>; 0: send nothing. Never throws on any input.</summary>
    internal async ValueTask<int> HandleAsync(ReadOnlyMemory<byte> message, Memory<byte> response, bool udp, CancellationToken ct)
    {
        var status = DnsQueryParser.Parse(message.Span, out var query);
        if (status == DnsParseStatus.Drop) return 0;
        if (status != DnsParseStatus.Ok)
            return WriteBare(response, query, status == DnsParseStatus.NotImp ? DnsRcode.NotImp : DnsRcode.FormErr);
        var question = query.Question!;
        if (IsIntegrationName(question.Name))
            return WriteIntegrationAnswer(response, query, question);
        // RFC 1035 §4.2.1: a UDP reply is at most the client's advertised size; the upstream honours the same EDNS
        // option we pass on, and a larger reply would be cut by the client anyway.
        int relayed = await _relay.RelayAsync(message, question, udp, response, ct).ConfigureAwait(false);
        return relayed > 0 ? relayed : WriteBare(response, query, DnsRcode.ServFail);
    }

    /// <summary>Strictly below <c>int.&lt;vm-domain&gt;</c>.</summary>
    internal bool IsIntegrationName(string name) =>
        name.Length > _integrationSuffix.Length && name.EndsWith(_integrationSuffix, StringComparison.Ordinal);

    private static int WriteIntegrationAnswer(Memory<byte> response, DnsQuery query, DnsQuestion question)
    {
        var buffer = new byte[DnsWire.MaxUdpPayloadWithoutEdns];
        var writer = new DnsResponseWriter(buffer);
        bool a = question.QType is DnsWire.TypeA or DnsWire.TypeAny && question.QClass is DnsWire.ClassIn or DnsWire.ClassAny;
        writer.WriteHeader(query.Id, query.Opcode, authoritative: true, truncated: false, query.RecursionDesired, (int)DnsRcode.NoError,
            1, a ? 1 : 0, 0, query.HasEdns ? 1 : 0);
        writer.WriteQuestion(question);
        if (a) writer.WriteRecord(new DnsAddressRecord(question.Name, IntegrationTtl, s_metadataAddress));
        if (query.HasEdns) writer.WriteOpt(extendedRcode: 0);
        return CopyOut(writer, buffer, response);
    }

    private static int WriteBare(Memory<byte> response, DnsQuery query, DnsRcode rcode)
    {
        var buffer = new byte[DnsWire.MaxUdpPayloadWithoutEdns];
        var writer = new DnsResponseWriter(buffer);
        int qd = query.Question is null ? 0 : 1;
        writer.WriteHeader(query.Id, query.Opcode, authoritative: false, truncated: false, query.RecursionDesired, (int)rcode, qd, 0, 0, query.HasEdns ? 1 : 0);
        if (query.Question is not null) writer.WriteQuestion(query.Question);
        if (query.HasEdns) writer.WriteOpt(extendedRcode: 0);
        return CopyOut(writer, buffer, response);
    }

    private static int CopyOut(DnsResponseWriter writer, byte[] buffer, Memory<byte> response)
    {
        if (writer.Overflowed || writer.Length > response.Length) return 0;
        buffer.AsSpan(0, writer.Length).CopyTo(response.Span);
        return writer.Length;
    }

    [LoggerMessage(EventId = 4602, Level = LogLevel.Information,
        Message = "VM resolver listening on port {Port} (UDP and TCP; VMs reach it at 169.254.169.254:53): *.{Zone} → 169.254.169.254, the rest relayed to {Upstreams}")]
    private partial void LogStarted(int port, string zone, string upstreams);
}
