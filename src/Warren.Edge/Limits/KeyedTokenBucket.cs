using System.Collections.Concurrent;
using Warren.Ssh.Server;

namespace Warren.Edge.Limits;

/// <summary>
/// Token buckets per key (for /exec: per signing-key fingerprint; for the proxy: per
/// <see cref="SourceNetwork"/>). Time comes from the injected <see cref="TimeProvider"/>. With an
/// overdraft, a refused request still takes a token, down to −overdraft, so a client that keeps
/// hammering stays locked out longer (exe.dev); without one, refused requests cost nothing and
/// the bucket refills at its rate regardless.
/// </summary>
/// <remarks>
/// Memory is bounded: a bucket that has refilled to its burst is indistinguishable from a new one,
/// so such idle buckets are forgotten every <see cref="IdleSweepInterval"/> and whenever the table
/// reaches its cap. A table still full of active keys refuses new keys rather than grow.
/// </remarks>
public class KeyedTokenBucket<TKey> where TKey : notnull
{
    /// <summary>Default cap on tracked keys: about 100 bytes each, so ~10 MB at the cap.</summary>
    public const int MaxTrackedKeys = 100_000;

    /// <summary>How often idle (full) buckets are forgotten outside of the at-cap sweep; one pass is O(tracked keys).</summary>
    public static readonly TimeSpan IdleSweepInterval = TimeSpan.FromMinutes(1);

    private readonly ConcurrentDictionary<TKey, Bucket> _buckets;
    private readonly TimeProvider _time;
    private readonly double _burst;
    private readonly double _perSecond;
    private readonly double _overdraft;
    private readonly int _maxTrackedKeys;
    private long _lastSweep;
    private int _sweeping;

    public KeyedTokenBucket(TimeProvider time, int burst, double perSecond, int overdraft,
        int maxTrackedKeys = MaxTrackedKeys, IEqualityComparer<TKey>? comparer = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(burst, 1);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(perSecond);
        ArgumentOutOfRangeException.ThrowIfNegative(overdraft);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTrackedKeys, 1);
        _time = time;
        _burst = burst;
        _perSecond = perSecond;
        _overdraft = overdraft;
        _maxTrackedKeys = maxTrackedKeys;
        _buckets = new ConcurrentDictionary<TKey, Bucket>(comparer);
        _lastSweep = time.GetTimestamp();
    }

    /// <summary>Keys currently tracked (never more than the cap).</summary>
    public int TrackedKeys => _buckets.Count;

    /// <summary>Takes one token for <paramref name="key"/>; false when the bucket is empty.</summary>
    public bool TryAcquire(TKey key) => TryAcquire(key, out _);

    /// <summary>
    /// Takes one token for <paramref name="key"/>; false when the bucket is empty, with
    /// <paramref name="retryAfter"/> the time until one token is back (for a <c>Retry-After</c> header).
    /// </summary>
    public bool TryAcquire(TKey key, out TimeSpan retryAfter)
    {
        long now = _time.GetTimestamp();
        if (_time.GetElapsedTime(Volatile.Read(ref _lastSweep), now) >= IdleSweepInterval)
            SweepOnce(now);
        while (true)
        {
            if (!_buckets.TryGetValue(key, out var bucket))
            {
                if (_buckets.Count >= _maxTrackedKeys)
                {
                    SweepOnce(now);
                    // Still full of active keys: refuse rather than grow without bound.
                    if (_buckets.Count >= _maxTrackedKeys)
                    {
                        retryAfter = TimeSpan.FromSeconds(1 / _perSecond);
                        return false;
                    }
                }
                bucket = _buckets.GetOrAdd(key, static (_, state) => new Bucket(state.Burst, state.Now), (Burst: _burst, Now: now));
            }
            lock (bucket)
            {
                // Swept between lookup and lock: take a token from the bucket that replaced it.
                if (bucket.Removed)
                    continue;
                Refill(bucket, now);
                if (bucket.Tokens >= 1)
                {
                    bucket.Tokens -= 1;
                    retryAfter = TimeSpan.Zero;
                    return true;
                }
                if (_overdraft > 0)
                    bucket.Tokens = Math.Max(bucket.Tokens - 1, -_overdraft);
                retryAfter = TimeSpan.FromSeconds((1 - bucket.Tokens) / _perSecond);
                return false;
            }
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

    /// <summary>Forgets full buckets; one sweeper at a time, the others carry on.</summary>
    private void SweepOnce(long now)
    {
        if (Interlocked.CompareExchange(ref _sweeping, 1, 0) != 0)
            return;
        try
        {
            foreach (var (key, bucket) in _buckets)
            {
                lock (bucket)
                {
                    Refill(bucket, now);
                    if (bucket.Tokens >= _burst)
                    {
                        bucket.Removed = true;
                        _buckets.TryRemove(new KeyValuePair<TKey, Bucket>(key, bucket));
                    }
                }
            }
        }
        finally
        {
            Volatile.Write(ref _lastSweep, now);
            Volatile.Write(ref _sweeping, 0);
        }
    }

    private sealed class Bucket(double tokens, long stamp)
    {
        public double Tokens = tokens;
        /// <summary>Timestamp of the last refill.</summary>
        public long Stamp = stamp;
        /// <summary>Set (under the bucket's lock) when swept out of the table.</summary>
        public bool Removed;
    }
}

/// <summary>Token buckets keyed by ordinal strings (see <see cref="KeyedTokenBucket{TKey}"/>).</summary>
public sealed class KeyedTokenBucket(TimeProvider time, int burst, double perSecond, int overdraft)
    : KeyedTokenBucket<string>(time, burst, perSecond, overdraft, MaxTrackedKeys, StringComparer.Ordinal);
