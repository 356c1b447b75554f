using Dapper;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Platform.Runtime;
using Warren.Platform.Storage;

namespace Warren.Platform.Stats;

/// <summary>Samples every running VM each <see cref="SampleInterval"/> and compacts each <see cref="CompactInterval"/>.</summary>
public sealed class StatsSampler : BackgroundService
{
    /// <summary>360 raw points per hour: enough detail for <c>stat --range=1h</c>.</summary>
    public static readonly TimeSpan SampleInterval = TimeSpan.FromSeconds(10);
    public static readonly TimeSpan CompactInterval = TimeSpan.FromMinutes(5);

    private readonly WarrenDatabase _db;
    private readonly IVmRuntime _runtime;
    private readonly StatsStore _store;
    private readonly TimeProvider _time;
    private readonly ILogger _log;

    public StatsSampler(WarrenDatabase db, IVmRuntime runtime, StatsStore store, TimeProvider time, ILogger<StatsSampler>? logger = null)
    {
        _db = db;
        _runtime = runtime;
        _store = store;
        _time = time;
        _log = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>One round: a sample of each running VM. Returns how many were stored.</summary>
    public async Task<int> SampleOnceAsync(CancellationToken ct)
    {
        var ids = await _db.ReadAsync(c => c.QueryAsync<string>("SELECT id FROM vms WHERE state = 'running'"), ct);
        int n = 0;
        foreach (var id in ids)
        {
            try
            {
                if (await _runtime.SampleStatsAsync(id, ct) is { } s) { await _store.AddSampleAsync(id, s, ct); n++; }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                PlatformLog.SampleFailed(_log, id, e.Message);
            }
        }
        return n;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(SampleInterval, _time);
        var lastCompact = _time.GetUtcNow();
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await SampleOnceAsync(stoppingToken);
                if (_time.GetUtcNow() - lastCompact >= CompactInterval)
                {
                    await _store.CompactAsync(stoppingToken);
                    lastCompact = _time.GetUtcNow();
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { }
    }
}
