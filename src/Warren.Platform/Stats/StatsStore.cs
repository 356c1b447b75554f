using Dapper;
using Warren.Platform.Runtime;
using Warren.Platform.Storage;

namespace Warren.Platform.Stats;

/// <summary><c>stat --range=</c>: 1h, 24h, 7d, 30d.</summary>
public enum StatsRange { Hour, Day, Week, Month }

public static class StatsRanges
{
    public static bool TryParse(string? s, out StatsRange range)
    {
        (bool ok, range) = s?.Trim().ToLowerInvariant() switch
        {
            "1h" => (true, StatsRange.Hour),
            "24h" or "1d" => (true, StatsRange.Day),
            "7d" or "1w" => (true, StatsRange.Week),
            "30d" => (true, StatsRange.Month),
            _ => (false, StatsRange.Day),
        };
        return ok;
    }

    public static TimeSpan Span(this StatsRange r) => r switch
    {
        StatsRange.Hour => TimeSpan.FromHours(1),
        StatsRange.Day => TimeSpan.FromHours(24),
        StatsRange.Week => TimeSpan.FromDays(7),
        _ => TimeSpan.FromDays(30),
    };

    public static string ToWire(this StatsRange r) => r switch
    {
        StatsRange.Hour => "1h", StatsRange.Day => "24h", StatsRange.Week => "7d", _ => "30d",
    };

    /// <summary>Resolution answered for a range: raw for 1h, 1 min for 24h, 10 min for 7d, 1 h for 30d (seconds; 0 = raw).</summary>
    public static int ResolutionSeconds(this StatsRange r) => r switch
    {
        StatsRange.Hour => 0, StatsRange.Day => 60, StatsRange.Week => 600, _ => 3600,
    };
}

/// <summary>One point of <c>stat</c>: averages over the bucket (network counters: the bucket's last value).</summary>
public sealed record StatsPoint(
    DateTimeOffset Timestamp,
    double CpuPercent,
    long MemoryUsedBytes,
    long MemoryLimitBytes,
    long DiskUsedBytes,
    long NetworkRxBytes,
    long NetworkTxBytes,
    int Samples);

/// <summary>
/// Resource samples per VM, downsampled by <see cref="CompactAsync"/>: raw samples kept for 1 h, 1-minute
/// buckets for 24 h, 10-minute buckets for 7 d, 1-hour buckets for 30 d; older data is dropped.
/// </summary>
public sealed class StatsStore
{
    /// <summary>(resolution seconds, how long rows of that resolution are kept). Raw = 0.</summary>
    public static readonly IReadOnlyList<(int Resolution, TimeSpan Keep)> Tiers =
    [
        (0, TimeSpan.FromHours(1)),
        (60, TimeSpan.FromHours(24)),
        (600, TimeSpan.FromDays(7)),
        (3600, TimeSpan.FromDays(30)),
    ];

    private readonly WarrenDatabase _db;
    private readonly TimeProvider _time;

    public StatsStore(WarrenDatabase db, TimeProvider time)
    {
        _db = db;
        _time = time;
    }

    public Task AddSampleAsync(string vmId, VmStatsSample s, CancellationToken ct = default)
        => _db.WriteAsync(u => u.ExecuteAsync("""
            INSERT OR REPLACE INTO vm_stats (vm_id, resolution_seconds, ts, samples, cpu_percent, memory_used, memory_limit, disk_used, net_rx, net_tx)
            VALUES (@vmId, 0, @ts, 1, @CpuPercent, @MemoryUsedBytes, @MemoryLimitBytes, @DiskUsedBytes, @NetworkRxBytes, @NetworkTxBytes)
            """, new { vmId, ts = s.Timestamp.ToUnixTimeSeconds(), s.CpuPercent, s.MemoryUsedBytes, s.MemoryLimitBytes, s.DiskUsedBytes, s.NetworkRxBytes, s.NetworkTxBytes }), ct);

    /// <summary>
    /// Rolls each tier's rows older than its keep time into the next tier's buckets (weighted by sample count),
    /// and drops the last tier's expired rows. Idempotent; run periodically.
    /// </summary>
    public Task CompactAsync(CancellationToken ct = default)
    {
        var now = _time.GetUtcNow().ToUnixTimeSeconds();
        return _db.WriteAsync(async u =>
        {
            for (int i = 0; i < Tiers.Count; i++)
            {
                var (res, keep) = Tiers[i];
                long cutoff = now - (long)keep.TotalSeconds;
                if (i + 1 < Tiers.Count)
                {
                    int next = Tiers[i + 1].Resolution;
                    // Only whole buckets of the next tier that lie before the cutoff.
                    long limit = cutoff / next * next;
                    await u.ExecuteAsync("""
                        INSERT INTO vm_stats (vm_id, resolution_seconds, ts, samples, cpu_percent, memory_used, memory_limit, disk_used, net_rx, net_tx)
                        SELECT vm_id, @next, (ts / @next) * @next, SUM(samples),
                               SUM(cpu_percent * samples) / SUM(samples), CAST(SUM(memory_used * samples) / SUM(samples) AS INTEGER),
                               MAX(memory_limit), MAX(disk_used), MAX(net_rx), MAX(net_tx)
                        FROM vm_stats WHERE resolution_seconds = @res AND ts < @limit
                        GROUP BY vm_id, (ts / @next)
                        ON CONFLICT (vm_id, resolution_seconds, ts) DO UPDATE SET
                            cpu_percent = (vm_stats.cpu_percent * vm_stats.samples + excluded.cpu_percent * excluded.samples) / (vm_stats.samples + excluded.samples),
                            memory_used = CAST((vm_stats.memory_used * vm_stats.samples + excluded.memory_used * excluded.samples) / (vm_stats.samples + excluded.samples) AS INTEGER),
                            memory_limit = MAX(vm_stats.memory_limit, excluded.memory_limit),
                            disk_used = MAX(vm_stats.disk_used, excluded.disk_used),
                            net_rx = MAX(vm_stats.net_rx, excluded.net_rx),
                            net_tx = MAX(vm_stats.net_tx, excluded.net_tx),
                            samples = vm_stats.samples + excluded.samples
                        """, new { next, res, limit });
                    await u.ExecuteAsync("DELETE FROM vm_stats WHERE resolution_seconds = @res AND ts < @limit", new { res, limit });
                }
                else
                {
                    await u.ExecuteAsync("DELETE FROM vm_stats WHERE resolution_seconds = @res AND ts < @cutoff", new { res, cutoff });
                }
            }
        }, ct);
    }

    /// <summary>Points over the range ending now, bucketed at the range's resolution, oldest first.</summary>
    public Task<IReadOnlyList<StatsPoint>> QueryAsync(string vmId, StatsRange range, CancellationToken ct = default)
    {
        var now = _time.GetUtcNow().ToUnixTimeSeconds();
        long from = now - (long)range.Span().TotalSeconds;
        int bucket = Math.Max(1, range.ResolutionSeconds());
        return _db.ReadAsync<IReadOnlyList<StatsPoint>>(async c => (await c.QueryAsync<Row>("""
            SELECT (ts / @bucket) * @bucket AS Ts, SUM(samples) AS Samples,
                   SUM(cpu_percent * samples) / SUM(samples) AS Cpu, CAST(SUM(memory_used * samples) / SUM(samples) AS INTEGER) AS Mem,
                   MAX(memory_limit) AS MemLimit, MAX(disk_used) AS Disk, MAX(net_rx) AS Rx, MAX(net_tx) AS Tx
            FROM vm_stats WHERE vm_id = @vmId AND ts >= @from AND ts <= @now
            GROUP BY ts / @bucket ORDER BY Ts
            """, new { bucket, vmId, from, now }))
            .Select(r => new StatsPoint(DateTimeOffset.FromUnixTimeSeconds(r.Ts), r.Cpu, r.Mem, r.MemLimit, r.Disk, r.Rx, r.Tx, (int)r.Samples)).ToList(), ct);
    }

    public Task DeleteForVmAsync(string vmId, CancellationToken ct = default)
        => _db.WriteAsync(u => u.ExecuteAsync("DELETE FROM vm_stats WHERE vm_id = @vmId", new { vmId }), ct);

    private sealed class Row
    {
        public long Ts { get; set; }
        public long Samples { get; set; }
        public double Cpu { get; set; }
        public long Mem { get; set; }
        public long MemLimit { get; set; }
        public long Disk { get; set; }
        public long Rx { get; set; }
        public long Tx { get; set; }
    }
}
