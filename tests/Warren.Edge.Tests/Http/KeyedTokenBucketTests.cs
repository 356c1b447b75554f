using Warren.Edge.Http;
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
}
