using System.Collections.Concurrent;

namespace Warren.Edge.Http;

/// <summary>
/// Token buckets per key (for /exec: per signing-key fingerprint). Time comes from the injected
/// <see cref="TimeProvider"/>. A refused request still takes a token, down to −overdraft, so a
/// client that keeps hammering stays locked out longer (reference §3).
/// </summary>
public sealed class KeyedTokenBucket
{
    /// <summary>Keys tracked at most; full buckets are forgotten first when reached.</summary>
    public const int MaxTrackedKeys = 100_000;

    private readonly ConcurrentDictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;
    private readonly double _burst;
    private readonly double _perSecond;
    private readonly double _overdraft;

    public KeyedTokenBucket(TimeProvider time, int burst, double perSecond, int overdraft)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(burst, 1);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(perSecond);
        ArgumentOutOfRangeException.ThrowIfNegative(overdraft);
        _time = time;
        _burst = burst;
        _perSecond = perSecond;
        _overdraft = overdraft;
    }

    /// <summary>Takes one token for <paramref name="key"/>; false when the bucket is empty.</summary>
    public bool TryAcquire(string key)
    {
        long now = _time.GetTimestamp();
        if (!_buckets.TryGetValue(key, out var bucket))
        {
            if (_buckets.Count >= MaxTrackedKeys)
            {
                Sweep(now);
                // Still full of active keys: refuse rather than grow without bound.
                if (_buckets.Count >= MaxTrackedKeys)
                    return false;
            }
            bucket = _buckets.GetOrAdd(key, _ => new Bucket(_burst, now));
        }
        lock (bucket)
        {
            Refill(bucket, now);
            if (bucket.Tokens >= 1)
            {
                bucket.Tokens -= 1;
                return true;
            }
            bucket.Tokens = Math.Max(bucket.Tokens - 1, -_overdraft);
            return false;
        }
    }

    private void Refill(Bucket bucket, long now)
    {
        double elapsed = _time.GetElapsedTime(bucket.Stamp, now).TotalSeconds;
        if (elapsed > 0)
        {
            bucket.Tokens = Math.Min(_burst, bucket.Tokens + elapsed * _perSecond);
            bucket.Stamp = now;
        }
    }

    private void Sweep(long now)
    {
        foreach (var (key, bucket) in _buckets)
        {
            lock (bucket)
            {
                Refill(bucket, now);
                if (bucket.Tokens >= _burst)
                    _buckets.TryRemove(key, out _);
            }
        }
    }

    private sealed class Bucket(double tokens, long stamp)
    {
        public double Tokens = tokens;
        public long Stamp = stamp;
    }
}
