using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Warren.Platform.Vms;

namespace Warren;

/// <summary>
/// Notices VMs that stopped on their own (a guest's <c>shutdown</c>/<c>poweroff</c>/<c>halt</c>) or that the runtime
/// restarted, and brings their records along (<see cref="VmService.SyncRunStatesAsync"/>), so <c>ls</c>, SSH and the
/// HTTPS proxy see what the runtime sees. It asks the runtime every <see cref="Interval"/>: one listing call, for any
/// runtime, and no event stream to lose across an engine restart.
/// </summary>
public sealed partial class VmRunStateWatcher(VmService vms, TimeProvider time, ILogger<VmRunStateWatcher> logger) : BackgroundService
{
    /// <summary>
    /// How often the runtime is asked. Short enough that a VM powered off from inside shows as stopped by the time its
    /// owner looks; one engine list call per interval costs little (docs/PERFORMANCE.md has no budget it would dent).
    /// </summary>
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, time);
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
        {
            try { await vms.SyncRunStatesAsync(stoppingToken).ConfigureAwait(false); }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { return; }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The engine being down or slow must not end the watcher: the next tick tries again.
                SyncFailed(logger, e.Message);
            }
        }
    }

    [LoggerMessage(EventId = 2009, EventName = "vm.run_state_sync_failed", Level = LogLevel.Warning, Message = "vm.run_state_sync_failed reason={Reason}")]
    private static partial void SyncFailed(ILogger log, string reason);
}
