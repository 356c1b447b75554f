using Microsoft.Extensions.Logging;

namespace Warren.Platform;

/// <summary>
/// The platform's log events. Event ids are stable (2000–2099 belong to Warren.Platform's lifecycle code);
/// names match the event's dotted code. Messages carry ids and names, never credentials.
/// </summary>
internal static partial class PlatformLog
{
    [LoggerMessage(EventId = 2001, EventName = "vm.create_failed", Level = LogLevel.Warning, Message = "vm.create_failed vm={VmId} name={Name} reason={Reason}")]
    public static partial void CreateFailed(ILogger log, string vmId, string name, string reason);

    [LoggerMessage(EventId = 2002, EventName = "vm.create_cleanup_failed", Level = LogLevel.Warning, Message = "vm.create_cleanup_failed vm={VmId} reason={Reason}")]
    public static partial void CreateCleanupFailed(ILogger log, string vmId, string reason);

    [LoggerMessage(EventId = 2003, EventName = "vm.remove_failed", Level = LogLevel.Warning, Message = "vm.remove_failed vm={VmId} reason={Reason}")]
    public static partial void RemoveFailed(ILogger log, string vmId, string reason);

    [LoggerMessage(EventId = 2004, EventName = "vm.reconcile_failed", Level = LogLevel.Error, Message = "vm.reconcile_failed vm={VmId} name={Name} state={State} reason={Reason}")]
    public static partial void ReconcileFailed(ILogger log, string vmId, string name, string state, string reason);

    [LoggerMessage(EventId = 2005, EventName = "vm.reconcile_orphan_failed", Level = LogLevel.Error, Message = "vm.reconcile_orphan_failed vm={VmId} reason={Reason}")]
    public static partial void ReconcileOrphanFailed(ILogger log, string vmId, string reason);

    [LoggerMessage(EventId = 2006, EventName = "vm.reconciled", Level = LogLevel.Information, Message = "vm.reconciled adopted={Adopted} redriven={Redriven} failed={Failed} deleted={Deleted} synced={Synced} orphans={Orphans}")]
    public static partial void Reconciled(ILogger log, int adopted, int redriven, int failed, int deleted, int synced, int orphans);

    [LoggerMessage(EventId = 2007, EventName = "vm.mark_failed_failed", Level = LogLevel.Warning, Message = "vm.mark_failed_failed vm={VmId} reason={Reason}")]
    public static partial void MarkFailedFailed(ILogger log, string vmId, string reason);

    [LoggerMessage(EventId = 2020, EventName = "stats.sample_failed", Level = LogLevel.Debug, Message = "stats.sample_failed vm={VmId} reason={Reason}")]
    public static partial void SampleFailed(ILogger log, string vmId, string reason);

    [LoggerMessage(EventId = 2008, EventName = "vm.run_state_synced", Level = LogLevel.Information, Message = "vm.run_state_synced vm={VmId} name={Name} from={From} to={To}")]
    public static partial void RunStateSynced(ILogger log, string vmId, string name, string from, string to);
}
