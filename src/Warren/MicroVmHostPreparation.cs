using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Warren.Runtime.MicroVm;

namespace Warren;

/// <summary>
/// The microVM runtime's counterpart of <see cref="VmHostPreparation"/>: runs before reconciliation and any listener,
/// puts the VMs' fence in place (packet filter, forwarding), adopts running QEMU processes and removes what a killed
/// daemon left behind; refuses to start when the fence cannot be enforced (unless Warren:Network:Isolation=Off).
/// </summary>
public sealed class MicroVmHostPreparation(MicroVmRuntime runtime, ILogger<MicroVmHostPreparation> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!runtime.IsolationEnforced)
            logger.LogCritical("VM NETWORK ISOLATION IS OFF (Warren:Network:Isolation=Off or Warren:MicroVm:Network=User): VMs can reach this host's ports and private networks. Development only.");
        try
        {
            var report = await runtime.PrepareHostAsync(cancellationToken).ConfigureAwait(false);
            logger.LogInformation("microVM host prepared: {Report}", report);
        }
        catch (MicroVmException e) when (e.Code == MicroVmErrors.IsolationUnavailable)
        {
            logger.LogCritical("refusing to start: {Reason}", e.Message);
            throw;
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (await runtime.RemoveHostRulesIfNoVmsAsync(cancellationToken).ConfigureAwait(false))
                logger.LogInformation("no VMs left: VM packet-filter rules removed");
        }
        catch (Exception e) when (e is MicroVmException or Warren.Runtime.HostNetwork.HostNetworkException or TimeoutException)
        {
            logger.LogWarning("VM packet-filter rules left in place: {Reason}", e.Message);
        }
    }
}
