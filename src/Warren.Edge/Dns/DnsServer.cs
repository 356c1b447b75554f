using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Warren.Edge.Dns;

/// <summary>
/// The authoritative DNS server for the VM domain, over UDP and TCP on one endpoint (RFC 1035 §4.2).
/// A hosted service: <see cref="StartAsync"/> binds, <see cref="StopAsync"/> closes. Queries are
/// answered from <see cref="IDnsZoneSource"/> on every request.
/// </summary>
public sealed class DnsServer : IHostedService, IAsyncDisposable
{
    /// <summary>
    /// A TCP client must deliver each whole message (length prefix and body) within this time, and
    /// an idle connection is closed after it. RFC 7766 §6.2.3 recommends idle timeouts of seconds.
    /// </summary>
    public static readonly TimeSpan TcpMessageTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Concurrent TCP connections; more are closed on accept (RFC 7766 §6.2.2 lets servers limit them).</summary>
    public const int MaxTcpConnections = 256;

    /// <summary>Parallel UDP receive loops on the one socket.</summary>
    public static readonly int UdpReceiveLoops = Math.Clamp(Environment.ProcessorCount, 1, 4);

    /// <summary>How often to retry when port 0 gave a UDP port whose TCP twin is taken.</summary>
    public const int MaxBindAttempts = 16;

    private readonly DnsServerOptions _options;
    private readonly DnsAuthority _authority;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _loops = new();
    private Socket? _udp;
    private Socket? _tcp;
    private readonly DnsTcpService _tcpService = new(MaxTcpConnections, TcpMessageTimeout);

    public DnsServer(DnsServerOptions options, IDnsZoneSource source, TimeProvider? time = null, ILogger<DnsServer>? logger = null)
    {
        _options = options;
        _time = time ?? TimeProvider.System;
        _authority = new DnsAuthority(options, source, _time);
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>
    /// Test hook: a UDP size limit below the protocol's, to exercise truncation. Warren's records are
    /// small (the largest answer, a CNAME and an A record under a 63-octet label, stays far below 512
    /// octets), so the TC path is otherwise unreachable with real data.
    /// </summary>
    internal int UdpLimitOverride { get; set; }

    /// <summary>The bound endpoint (the same port for UDP and TCP), once started.</summary>
    public IPEndPoint? LocalEndpoint { get; private set; }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        for (int attempt = 1; ; attempt++)
        {
            var udp = new Socket(_options.Endpoint.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            var tcp = new Socket(_options.Endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                udp.Bind(_options.Endpoint);
                var bound = (IPEndPoint)udp.LocalEndPoint!;
                tcp.Bind(bound);
                tcp.Listen(MaxTcpConnections);
                _udp = udp;
                _tcp = tcp;
                LocalEndpoint = bound;
                break;
            }
            catch (SocketException) when (_options.Endpoint.Port == 0 && attempt < MaxBindAttempts)
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

        for (int i = 0; i < UdpReceiveLoops; i++)
            _loops.Add(Task.Run(() => UdpLoopAsync(_stopping.Token)));
        _loops.Add(Task.Run(() => _tcpService.AcceptLoopAsync(_tcp!, AnswerTcpAsync, code => Log.TcpError(_logger, code), _stopping.Token)));
        Log.Started(_logger, LocalEndpoint!, _options.VmDomain);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (!_stopping.IsCancellationRequested)
            _stopping.Cancel();
        _udp?.Dispose();
        _tcp?.Dispose();
        try
        {
            await Task.WhenAll(_loops).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) { }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _stopping.Dispose();
    }

    private async Task UdpLoopAsync(CancellationToken ct)
    {
        // Owned by this loop for its lifetime; never shared.
        var receive = new byte[DnsWire.MaxUdpDatagramSize];
        var send = new byte[DnsWire.MaxTcpMessageSize];
        var any = new IPEndPoint(_options.Endpoint.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        while (!ct.IsCancellationRequested)
        {
            SocketReceiveFromResult received;
            try
            {
                received = await _udp!.ReceiveFromAsync(receive, SocketFlags.None, any, ct).ConfigureAwait(false);
            }
            catch (Exception) when (ct.IsCancellationRequested) { return; }
            catch (ObjectDisposedException) { return; }
            catch (SocketException ex)
            {
                Log.UdpError(_logger, ex.SocketErrorCode);
                continue;
            }

            try
            {
                int length = await HandleAsync(receive.AsMemory(0, received.ReceivedBytes), send, udp: true, ct).ConfigureAwait(false);
                if (length > 0)
                    await _udp.SendToAsync(send.AsMemory(0, length), SocketFlags.None, received.RemoteEndPoint, ct).ConfigureAwait(false);
            }
            catch (Exception) when (ct.IsCancellationRequested) { return; }
            catch (ObjectDisposedException) { return; }
            catch (SocketException ex)
            {
                Log.UdpError(_logger, ex.SocketErrorCode);
            }
        }
    }

    /// <summary>A TCP query: the response writer takes an array, so the answer is built in one and copied after the prefix.</summary>
    private async ValueTask<int> AnswerTcpAsync(ReadOnlyMemory<byte> message, Memory<byte> response, CancellationToken ct)
    {
        byte[] body = ArrayPool<byte>.Shared.Rent(DnsWire.MaxTcpMessageSize);
        try
        {
            int length = await HandleAsync(message, body, udp: false, ct).ConfigureAwait(false);
            if (length > 0) body.AsSpan(0, length).CopyTo(response.Span);
            return length;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(body);
        }
    }

    /// <summary>
    /// Answers one query message. Returns the response length in <paramref name="response"/>
    /// (at least <see cref="DnsWire.MaxTcpMessageSize"/> bytes), or 0 to send nothing. Never throws
    /// for any input; a failing zone source gives SERVFAIL.
    /// </summary>
    internal async ValueTask<int> HandleAsync(ReadOnlyMemory<byte> message, byte[] response, bool udp, CancellationToken ct)
    {
        var status = DnsQueryParser.Parse(message.Span, out var query);
        if (status == DnsParseStatus.Drop)
            return 0;

        var writer = new DnsResponseWriter(response);
        if (status != DnsParseStatus.Ok)
        {
            var rcode = status == DnsParseStatus.NotImp ? DnsRcode.NotImp : DnsRcode.FormErr;
            WriteBare(writer, query, rcode, truncated: false);
            return writer.Length;
        }

        var question = query.Question!;
        int limit = !udp ? DnsWire.MaxTcpMessageSize
            : query.HasEdns ? Math.Clamp((int)query.EdnsUdpPayloadSize, DnsWire.MaxUdpPayloadWithoutEdns, DnsWire.EdnsUdpPayloadSize)
            : DnsWire.MaxUdpPayloadWithoutEdns;
        if (udp && UdpLimitOverride > 0)
            limit = UdpLimitOverride;

        if (query.HasEdns && query.EdnsVersion != DnsWire.EdnsVersion)
        {
            WriteBare(writer, query, (DnsRcode)(DnsWire.RcodeBadVers & DnsWire.RcodeMask), truncated: false, extendedRcode: DnsWire.RcodeBadVers);
            return writer.Length;
        }
        // Only class IN (or ANY) data exists here; zone transfers are not offered.
        if (question.QClass is not (DnsWire.ClassIn or DnsWire.ClassAny) || question.QType is DnsWire.TypeAxfr or DnsWire.TypeIxfr)
        {
            WriteBare(writer, query, DnsRcode.Refused, truncated: false);
            return writer.Length;
        }

        DnsAnswer answer;
        try
        {
            answer = await _authority.AnswerAsync(question, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            Log.SourceFailed(_logger, ex);
            WriteBare(writer, query, DnsRcode.ServFail, truncated: false);
            return writer.Length;
        }

        int additional = answer.Additional.Count + (query.HasEdns ? 1 : 0);
        writer.WriteHeader(query.Id, query.Opcode, answer.Authoritative, truncated: false, query.RecursionDesired, (int)answer.Rcode,
            1, answer.Answer.Count, answer.Authority.Count, additional);
        writer.WriteQuestion(question);
        foreach (var r in answer.Answer) writer.WriteRecord(r);
        foreach (var r in answer.Authority) writer.WriteRecord(r);
        foreach (var r in answer.Additional) writer.WriteRecord(r);
        if (query.HasEdns)
            writer.WriteOpt(extendedRcode: 0);

        if (writer.Overflowed || writer.Length > limit)
        {
            // RFC 1035 §4.2.1 / RFC 2181 §9: set TC and send what fits — here just the question,
            // so the client retries over TCP.
            writer.Reset();
            WriteBare(writer, query, answer.Rcode, truncated: true, authoritative: answer.Authoritative);
        }
        return writer.Length;
    }

    private static void WriteBare(DnsResponseWriter writer, DnsQuery query, DnsRcode rcode, bool truncated,
        int extendedRcode = 0, bool authoritative = false)
    {
        int qd = query.Question is null ? 0 : 1;
        writer.WriteHeader(query.Id, query.Opcode, authoritative, truncated, query.RecursionDesired, (int)rcode, qd, 0, 0, query.HasEdns ? 1 : 0);
        if (query.Question is not null)
            writer.WriteQuestion(query.Question);
        if (query.HasEdns)
            writer.WriteOpt(extendedRcode);
    }

    private static class Log
    {
        private static readonly Action<ILogger, IPEndPoint, string, Exception?> s_started = LoggerMessage.Define<IPEndPoint, string>(
            LogLevel.Information, EdgeEventIds.DnsStarted, "DNS server listening on {Endpoint} (UDP and TCP), authoritative for {Zone}");
        private static readonly Action<ILogger, SocketError, Exception?> s_udpError = LoggerMessage.Define<SocketError>(
            LogLevel.Debug, EdgeEventIds.DnsUdpError, "DNS UDP socket error {Error}");
        private static readonly Action<ILogger, SocketError, Exception?> s_tcpError = LoggerMessage.Define<SocketError>(
            LogLevel.Debug, EdgeEventIds.DnsTcpError, "DNS TCP accept error {Error}");
        private static readonly Action<ILogger, Exception?> s_sourceFailed = LoggerMessage.Define(
            LogLevel.Error, EdgeEventIds.DnsSourceFailed, "DNS zone source failed; answered SERVFAIL");

        public static void Started(ILogger l, IPEndPoint e, string zone) => s_started(l, e, zone, null);
        public static void UdpError(ILogger l, SocketError e) => s_udpError(l, e, null);
        public static void TcpError(ILogger l, SocketError e) => s_tcpError(l, e, null);
        public static void SourceFailed(ILogger l, Exception ex) => s_sourceFailed(l, ex);
    }
}
