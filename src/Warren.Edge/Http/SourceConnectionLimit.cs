using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using Warren.Edge.Limits;
using Warren.Ssh.Server;

namespace Warren.Edge.Http;

/// <summary>
/// Open connections per source (<see cref="SourceNetwork"/>: an IPv4 address or an IPv6 /64) across every HTTP(S)
/// listener and both transports: one client cannot hold the daemon's descriptors, which SSH, the container engine
/// and SQLite share (nginx's <c>limit_conn</c> per <c>$binary_remote_addr</c>). A connection over the limit is closed
/// as it is accepted, before any TLS work, and the refusal is logged once per source per minute.
/// </summary>
/// <remarks>
/// One lock over a small map: taken twice per connection (never per request), for a few dictionary operations.
/// Sources with no connection are removed, so the map holds only sources that are connected right now.
/// </remarks>
public sealed class SourceConnectionLimit
{
    private readonly int _maxPerSource;
    private readonly SourceRefusalLog _refusals;
    private readonly Lock _gate = new();
    private readonly Dictionary<SourceNetwork, int> _open = new();

    /// <param name="maxPerSource">Connections each source may hold open; 0 turns the limit off.</param>
    public SourceConnectionLimit(int maxPerSource, ILogger logger, TimeProvider? time = null)
    {
        _maxPerSource = maxPerSource;
        _refusals = new SourceRefusalLog(logger, "HTTPS connection limit ({Limit} open connections per source) reached for {Source}; further connections are closed at accept", maxPerSource, time);
    }

    public bool Enabled => _maxPerSource > 0;

    /// <summary>Counts a new connection from <paramref name="source"/>; false (and not counted) past the limit.</summary>
    public bool TryEnter(SourceNetwork source)
    {
        if (!Enabled)
            return true;
        lock (_gate)
        {
            _open.TryGetValue(source, out int n);
            if (n < _maxPerSource)
            {
                _open[source] = n + 1;
                return true;
            }
        }
        _refusals.Refused(source);
        return false;
    }

    /// <summary>A connection counted by <see cref="TryEnter"/> has closed (or left for a listener that counts it again).</summary>
    public void Leave(SourceNetwork source)
    {
        if (!Enabled)
            return;
        lock (_gate)
        {
            if (!_open.TryGetValue(source, out int n))
                return;
            if (n <= 1)
                _open.Remove(source);
            else
                _open[source] = n - 1;
        }
    }

    /// <summary>Connections <paramref name="source"/> holds now.</summary>
    public int OpenConnections(SourceNetwork source)
    {
        lock (_gate)
            return _open.GetValueOrDefault(source);
    }

    /// <summary>Kestrel connection middleware, placed first on a listener (before <c>UseHttps</c>): refuses before the handshake.</summary>
    public Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        if (!Enabled)
            return next(connection);
        var source = SourceNetwork.Of(connection.RemoteEndPoint);
        if (!TryEnter(source))
        {
            connection.Abort(new ConnectionAbortedException("too many connections from this source"));
            return Task.CompletedTask;
        }
        return ServeAsync(connection, next, source);
    }

    private async Task ServeAsync(ConnectionContext connection, ConnectionDelegate next, SourceNetwork source)
    {
        try
        {
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            Leave(source);
        }
    }
}
