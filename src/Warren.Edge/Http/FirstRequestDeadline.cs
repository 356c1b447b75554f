using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Warren.Edge.Limits;

namespace Warren.Edge.Http;

/// <summary>
/// Closes a Kestrel connection that has not started a request within <see cref="HttpFrontDoorOptions.FirstRequestTimeout"/>
/// of its TLS handshake (HTTP/1.1 and HTTP/2 alike): an idle TLS connection costs the daemon a descriptor and a
/// session, and Kestrel's keep-alive timeout (130 s) would otherwise hold it. Connections that have served a request
/// keep Kestrel's keep-alive timeout. Checked on Kestrel's once-a-second connection heartbeat; no timer per connection.
/// </summary>
/// <remarks>
/// A request marks its connection started through the connection's items (<see cref="MarkStarted(HttpContext)"/>,
/// called by the front door's middleware, and <see cref="MarkStarted(ConnectionContext)"/> by the connection-level
/// lane, which serves requests below Kestrel's HTTP layer).
/// </remarks>
internal sealed class FirstRequestDeadline(TimeSpan timeout, TimeProvider time)
{
    /// <summary>The key of a connection's <see cref="Mark"/> in its items.</summary>
    private static readonly object s_key = new();

    private readonly long _timeoutMs = (long)timeout.TotalMilliseconds;

    private sealed class Mark(ConnectionContext connection, long deadline, TimeProvider time)
    {
        public readonly TimeProvider Time = time;
        public readonly ConnectionContext Connection = connection;
        public readonly long Deadline = deadline;
        public volatile bool Started;
    }

    /// <summary>Kestrel connection middleware, placed after <c>UseHttps</c> (the handshake has its own timeout).</summary>
    public Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        if (connection.Features.Get<IConnectionHeartbeatFeature>() is { } heartbeat)
        {
            var mark = new Mark(connection, time.Milliseconds() + _timeoutMs, time);
            connection.Items[s_key] = mark;
            heartbeat.OnHeartbeat(static state =>
            {
                var m = (Mark)state;
                if (!m.Started && m.Time.Milliseconds() >= m.Deadline)
                {
                    m.Started = true; // once
                    m.Connection.Abort(new ConnectionAbortedException("no request within the first-request timeout"));
                }
            }, mark);
        }
        return next(connection);
    }

    /// <summary>A request has begun on this connection: it now has Kestrel's keep-alive timeout only.</summary>
    public static void MarkStarted(HttpContext context)
    {
        if (context.Features.Get<IConnectionItemsFeature>()?.Items is { } items && items.TryGetValue(s_key, out var mark))
            ((Mark)mark!).Started = true;
    }

    /// <inheritdoc cref="MarkStarted(HttpContext)"/>
    public static void MarkStarted(ConnectionContext connection)
    {
        if (connection.Items.TryGetValue(s_key, out var mark))
            ((Mark)mark!).Started = true;
    }
}
