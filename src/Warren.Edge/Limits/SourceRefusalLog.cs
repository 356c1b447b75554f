using Microsoft.Extensions.Logging;
using Warren.Ssh.Server;

namespace Warren.Edge.Limits;

/// <summary>
/// Logs a refusal at most once per source per minute: a flood must not become a flood of log lines. The table of
/// sources is bounded (<see cref="MaxSources"/>); when full it is cleared, which at worst logs a source again early.
/// </summary>
public sealed class SourceRefusalLog(ILogger logger, string message, int limit, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    /// <summary>How often one source's refusals are logged at most.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMinutes(1);

    /// <summary>Sources remembered at most.</summary>
    public const int MaxSources = 10_000;

    private readonly Lock _gate = new();
    private readonly Dictionary<SourceNetwork, long> _lastLogged = new();

    /// <summary>Notes a refusal; logs it unless this source was logged within <see cref="Interval"/>.</summary>
    public void Refused(SourceNetwork source)
    {
        long now = _time.Milliseconds();
        lock (_gate)
        {
            if (_lastLogged.TryGetValue(source, out long last) && now - last < (long)Interval.TotalMilliseconds)
                return;
            if (_lastLogged.Count >= MaxSources)
                _lastLogged.Clear();
            _lastLogged[source] = now;
        }
#pragma warning disable CA2254 // one fixed template per instance, given by the owner
        logger.LogWarning(EdgeEventIds.SourceRefused, message, limit, source.ToString());
#pragma warning restore CA2254
    }
}
