using CsCheck;
using Warren.Edge.Limits;
using Warren.Edge.Tests.Support;

namespace Warren.Edge.Tests.Http;

public class KeyedTokenBucketTests
{
    [Fact]
    public void Burst_ThenRefusal_ThenRefillAtRate()
    {
        var time = new ManualTimeProvider();
        var bucket = new KeyedTokenBucket(time, burst: 3, perSecond: 1, overdraft: 0);
        for (int i = 0; i < 3; i++)
            Assert.True(bucket.TryAcquire("k"));
        Assert.False(bucket.TryAcquire("k"));
        Assert.True(bucket.TryAcquire("other"));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(bucket.TryAcquire("k"));
        Assert.False(bucket.TryAcquire("k"));
    }

    [Fact]
    public void Overdraft_ExtendsThePenalty_UpToItsBound()
    {
        var time = new ManualTimeProvider();
        var bucket = new KeyedTokenBucket(time, burst: 1, perSecond: 1, overdraft: 5);
        Assert.True(bucket.TryAcquire("k"));
        for (int i = 0; i < 100; i++)
            Assert.False(bucket.TryAcquire("k"));
        // Tokens are at -5 (the bound, not -100): 6 seconds bring one back.
        time.Advance(TimeSpan.FromSeconds(5));
        Assert.False(bucket.TryAcquire("k"));
        time.Advance(TimeSpan.FromSeconds(7));
        Assert.True(bucket.TryAcquire("k"));
    }

    [Fact]
    public void Refill_NeverExceedsBurst()
    {
        var time = new ManualTimeProvider();
        var bucket = new KeyedTokenBucket(time, burst: 2, perSecond: 1, overdraft: 0);
        time.Advance(TimeSpan.FromHours(1));
        Assert.True(bucket.TryAcquire("k"));
        Assert.True(bucket.TryAcquire("k"));
        Assert.False(bucket.TryAcquire("k"));
    }

    [Fact]
    public void Refusal_ReportsWhenTheNextTokenIsBack()
    {
        var time = new ManualTimeProvider();
        var bucket = new KeyedTokenBucket<int>(time, burst: 2, perSecond: 0.5, overdraft: 0);
        Assert.True(bucket.TryAcquire(1, out var none));
        Assert.Equal(TimeSpan.Zero, none);
        Assert.True(bucket.TryAcquire(1));
        Assert.False(bucket.TryAcquire(1, out var retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(2), retryAfter);
        // Without overdraft a refusal costs nothing: the bucket keeps refilling underneath.
        time.Advance(TimeSpan.FromSeconds(1.5));
        Assert.False(bucket.TryAcquire(1, out retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(0.5), retryAfter);
        time.Advance(TimeSpan.FromSeconds(0.5));
        Assert.True(bucket.TryAcquire(1));
    }

    [Fact]
    public void IdleBuckets_AreForgotten_AfterTheSweepInterval()
    {
        var time = new ManualTimeProvider();
        var bucket = new KeyedTokenBucket<int>(time, burst: 5, perSecond: 1, overdraft: 0);
        for (int key = 0; key < 100; key++)
            Assert.True(bucket.TryAcquire(key));
        Assert.Equal(100, bucket.TrackedKeys);
        time.Advance(KeyedTokenBucket<int>.IdleSweepInterval);
        Assert.True(bucket.TryAcquire(1000));
        // Every old bucket had refilled to its burst, so forgetting it changes nothing for its key.
        Assert.Equal(1, bucket.TrackedKeys);
    }

    [Fact]
    public void AtTheCap_IdleBucketsMakeRoom_ActiveOnesRefuseNewKeys()
    {
        var time = new ManualTimeProvider();
        var bucket = new KeyedTokenBucket<int>(time, burst: 1, perSecond: 1, overdraft: 0, maxTrackedKeys: 3);
        for (int key = 0; key < 3; key++)
            Assert.True(bucket.TryAcquire(key));
        Assert.False(bucket.TryAcquire(99)); // all three still empty: no room
        Assert.Equal(3, bucket.TrackedKeys);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(bucket.TryAcquire(99)); // the full ones were swept
        Assert.True(bucket.TrackedKeys <= 3);
    }

    /// <summary>One step of a client: wait some milliseconds, then ask for a token with one of a few keys.</summary>
    private static readonly Gen<(int WaitMs, int Key)> Step = Gen.Select(Gen.Int[0, 1500], Gen.Int[0, 3]);

    [Fact]
    public void Property_GrantsNeverExceedBurstPlusRefill_PerKey()
    {
        Gen.Select(Gen.Int[1, 20], Gen.Double[0.1, 50], Step.Array[1, 300]).Sample((burst, perSecond, steps) =>
        {
            var time = new ManualTimeProvider();
            var bucket = new KeyedTokenBucket<int>(time, burst, perSecond, overdraft: 0);
            var granted = new int[4];
            double elapsed = 0;
            foreach (var (waitMs, key) in steps)
            {
                time.Advance(TimeSpan.FromMilliseconds(waitMs));
                elapsed += waitMs / 1000.0;
                if (bucket.TryAcquire(key))
                    granted[key]++;
                // Small slack for floating point.
                if (granted[key] > burst + elapsed * perSecond + 1e-6)
                    return false;
            }
            return true;
        });
    }

    [Fact]
    public void Property_WaitingTheReportedRetryAfter_AlwaysSucceeds()
    {
        Gen.Select(Gen.Int[1, 10], Gen.Double[0.01, 100], Gen.Int[0, 50], Gen.Int[1, 60]).Sample((burst, perSecond, overdraft, attempts) =>
        {
            var time = new ManualTimeProvider();
            var bucket = new KeyedTokenBucket<string>(time, burst, perSecond, overdraft);
            bool lastGranted = true;
            TimeSpan retryAfter = TimeSpan.Zero;
            for (int i = 0; i < attempts; i++)
                lastGranted = bucket.TryAcquire("k", out retryAfter);
            if (lastGranted)
                return retryAfter == TimeSpan.Zero;
            // The reported time (plus a tick for rounding) is enough, however deep the overdraft.
            time.Advance(retryAfter + TimeSpan.FromTicks(1));
            return bucket.TryAcquire("k");
        });
    }

    [Fact]
    public void Property_TrackedKeys_NeverExceedTheCap()
    {
        Gen.Select(Gen.Int[1, 16], Gen.Select(Gen.Int[0, 3000], Gen.Int[0, 200]).Array[1, 400]).Sample((cap, steps) =>
        {
            var time = new ManualTimeProvider();
            var bucket = new KeyedTokenBucket<int>(time, burst: 2, perSecond: 1, overdraft: 0, maxTrackedKeys: cap);
            foreach (var (waitMs, key) in steps)
            {
                time.Advance(TimeSpan.FromMilliseconds(waitMs));
                bucket.TryAcquire(key);
                if (bucket.TrackedKeys > cap)
                    return false;
            }
            return true;
        });
    }
}
