using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Warren.Platform.Vms;

namespace Warren;

/// <summary>
/// Runs before the front doors open: brings VM records and the container engine back into
/// agreement after a crash (records stuck in creating/deleting, orphan containers).
/// </summary>
public sealed class StartupReconciler(VmService vms, ILogger<StartupReconciler> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var report = await vms.ReconcileAsync(cancellationToken).ConfigureAwait(false);
        logger.LogInformation("reconciled VMs with the runtime: {Report}", report);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
