using Warren.Platform.Runtime;
using Warren.Platform.Stats;
using Warren.Platform.Tests.TestSupport;
using Xunit;

namespace Warren.Platform.Tests.Stats;

public sealed class StatsStoreTests : IDisposable
{
    private readonly TestPlatform _p = new();
    public void Dispose() => _p.Dispose();

    private VmStatsSample Sample(double cpu, long mem) => new(_p.Time.GetUtcNow(), cpu, mem, 1000, 10, 100, 200);

    [Fact]
    public async Task RawSamples_AnswerTheHourRange()
    {
        for (int i = 0; i < 6; i++) { await _p.Stats.AddSampleAsync("vm_1", Sample(i, 100)); _p.Time.Advance(TimeSpan.FromSeconds(10)); }
        var points = await _p.Stats.QueryAsync("vm_1", StatsRange.Hour);
        Assert.Equal(6, points.Count);
        Assert.Empty(await _p.Stats.QueryAsync("vm_2", StatsRange.Hour));
    }

    [Fact]
    public async Task Compaction_DownsamplesThroughEveryTier_KeepingWeightedAverages()
    {
        // Two hours of samples every 30 s, cpu alternating 0/100 → average 50.
        const int Samples = 240;
        for (int i = 0; i < Samples; i++)
        {
            await _p.Stats.AddSampleAsync("vm_1", Sample(i % 2 == 0 ? 0 : 100, 100));
            _p.Time.Advance(TimeSpan.FromSeconds(30));
        }
        await _p.Stats.CompactAsync();
        await _p.Stats.CompactAsync(); // idempotent
        var day = await _p.Stats.QueryAsync("vm_1", StatsRange.Day);
        Assert.Equal(Samples, day.Sum(p => p.Samples));
        Assert.InRange(day.Sum(p => p.CpuPercent * p.Samples) / Samples, 49.9, 50.1);
        Assert.All(day, p => Assert.Equal(0, p.Timestamp.ToUnixTimeSeconds() % 60));

        _p.Time.Advance(TimeSpan.FromDays(2));
        await _p.Stats.CompactAsync();
        var week = await _p.Stats.QueryAsync("vm_1", StatsRange.Week);
        Assert.Equal(Samples, week.Sum(p => p.Samples));
        Assert.All(week, p => Assert.Equal(0, p.Timestamp.ToUnixTimeSeconds() % 600));

        _p.Time.Advance(TimeSpan.FromDays(8));
        await _p.Stats.CompactAsync();
        var month = await _p.Stats.QueryAsync("vm_1", StatsRange.Month);
        Assert.Equal(Samples, month.Sum(p => p.Samples));
        Assert.InRange(month.Sum(p => p.CpuPercent * p.Samples) / Samples, 49.9, 50.1);

        _p.Time.Advance(TimeSpan.FromDays(31));
        await _p.Stats.CompactAsync();
        Assert.Empty(await _p.Stats.QueryAsync("vm_1", StatsRange.Month));
    }

    [Theory]
    [InlineData("1h", StatsRange.Hour)]
    [InlineData("24h", StatsRange.Day)]
    [InlineData("7d", StatsRange.Week)]
    [InlineData("30d", StatsRange.Month)]
    public void Ranges_Parse(string text, StatsRange expected)
    {
        Assert.True(StatsRanges.TryParse(text, out var r));
        Assert.Equal(expected, r);
        Assert.Equal(text, r.ToWire());
    }

    [Fact]
    public async Task Sampler_StoresOneSamplePerRunningVm()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        await _p.Vms.CreateAsync(a.Id, new Warren.Platform.Vms.VmCreateRequest { Name = "web" });
        var sampler = new StatsSampler(_p.Db, _p.Runtime, _p.Stats, _p.Time);
        Assert.Equal(1, await sampler.SampleOnceAsync(CancellationToken.None));
    }
}
