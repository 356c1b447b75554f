using Warren.Edge.Limits;
using System.Net;
using Warren.Ssh.Server;

namespace Warren.Edge.Http;

/// <summary>
/// Requests per source network per second (<see cref="HttpFrontDoorOptions.RequestsPerSecondPerSource"/>), one
/// allowance shared by the full path and the connection-level lane. Off when the option is 0.
/// </summary>
public sealed class SourceRequestLimit
{
    private readonly KeyedTokenBucket<SourceNetwork>? _buckets;

    public SourceRequestLimit(HttpFrontDoorOptions options, TimeProvider time)
    {
        if (options.RequestsPerSecondPerSource > 0)
            _buckets = new KeyedTokenBucket<SourceNetwork>(time, options.RequestBurstPerSource, options.RequestsPerSecondPerSource, overdraft: 0);
    }

    /// <summary>Takes one request from <paramref name="remote"/>'s allowance; false (and how long to wait) when it is spent.</summary>
    public bool TryAcquire(IPAddress? remote, out TimeSpan retryAfter)
    {
        retryAfter = TimeSpan.Zero;
        return _buckets is null || remote is null || _buckets.TryAcquire(SourceNetwork.Of(remote), out retryAfter);
    }
}
