using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http;
using Warren.Edge.Tls;
using Warren.Ssh.Server;

namespace Warren.Edge.Smtp;

/// <summary>
/// The inbound SMTP front door: one listening socket per endpoint, one <see cref="SmtpSession"/> per connection,
/// open connections bounded per source (<see cref="SourceNetwork"/>: an IPv4 address or an IPv6 /64) and in all.
/// A refused connection gets 421 (RFC 5321 §3.8: the server may close with 421 at any time) and is closed.
/// </summary>
public sealed class InboundSmtpServer : IHostedService, IAsyncDisposable
{
    private readonly InboundSmtpOptions _options;
    private readonly IInboundMailSink _sink;
    private readonly TlsCertificateProvider? _certificates;
    private readonly TimeProvider _time;
    private readonly ILogger _log;
    private readonly List<Socket> _listeners = new();
    private readonly List<Task> _acceptLoops = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Dictionary<SourceNetwork, int> _perSource = new();
    private readonly object _gate = new();
    private readonly HashSet<Task> _sessions = new();
    private int _open;

    public InboundSmtpServer(InboundSmtpOptions options, IInboundMailSink sink, TlsCertificateProvider? certificates,
        TimeProvider time, ILogger<InboundSmtpServer> log)
    {
        _options = options;
        _sink = sink;
        _certificates = certificates;
        _time = time;
        _log = log;
    }

    /// <summary>The bound endpoints (port 0 in the options becomes the real port here).</summary>
    public IReadOnlyList<IPEndPoint> BoundEndpoints => _listeners.Select(l => (IPEndPoint)l.LocalEndPoint!).ToList();

    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var endpoint in _options.Endpoints)
        {
            var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                socket.Bind(endpoint);
                socket.Listen(128);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            _listeners.Add(socket);
            _log.LogInformation("SMTP listening on {Endpoint}", socket.LocalEndPoint);
        }
        foreach (var listener in _listeners)
            _acceptLoops.Add(Task.Run(() => AcceptLoopAsync(listener)));
        return Task.CompletedTask;
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { return; }
            catch (ObjectDisposedException) { return; }
            catch (SocketException e)
            {
                // EMFILE and friends: the loop goes on; the next accept may succeed.
                _log.LogWarning("SMTP accept failed: {Error}", e.SocketErrorCode);
                continue;
            }
            var remote = ((IPEndPoint)client.RemoteEndPoint!).Address;
            var source = SourceNetwork.Of(remote);
            SmtpReply? refusal = null;
            lock (_gate)
            {
                _perSource.TryGetValue(source, out int count);
                if (_open >= _options.MaxConnections) refusal = SmtpReply.ServerBusy;
                else if (count >= _options.MaxConnectionsPerSource) refusal = SmtpReply.TooManyConnections;
                else
                {
                    _perSource[source] = count + 1;
                    _open++;
                }
            }
            if (refusal is { } r)
            {
                _ = RefuseAsync(client, r);
                continue;
            }
            var session = Task.Run(() => ServeAsync(client, remote, source));
            lock (_gate) _sessions.Add(session);
            _ = session.ContinueWith(t => { lock (_gate) _sessions.Remove(t); }, TaskScheduler.Default);
        }
    }

    private async Task ServeAsync(Socket client, IPAddress remote, SourceNetwork source)
    {
        try
        {
            client.NoDelay = true;
            await using var stream = new NetworkStream(client, ownsSocket: true);
            var session = new SmtpSession(stream, remote, _options, _sink, _certificates, _time, _log);
            await session.RunAsync(_stop.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // A session's failure ends that connection only.
            _log.LogWarning("SMTP session from {Source} failed: {Error}", source, e.GetType().Name);
        }
        finally
        {
            client.Dispose();
            lock (_gate)
            {
                _open--;
                if (_perSource.TryGetValue(source, out int count) && count > 1) _perSource[source] = count - 1;
                else _perSource.Remove(source);
            }
        }
    }

    private static async Task RefuseAsync(Socket client, SmtpReply reply)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await client.SendAsync(Encoding.ASCII.GetBytes(reply + "\r\n"), SocketFlags.None, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
        finally
        {
            client.Dispose();
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        foreach (var l in _listeners) l.Dispose();
        Task[] pending;
        lock (_gate) pending = [.. _acceptLoops, .. _sessions];
        try
        {
            await Task.WhenAll(pending).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _stop.Dispose();
    }
}
