using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Warren.Platform.Runtime;

namespace Warren;

/// <summary>
/// Runs first at start-up, before reconciliation and any listener: the runtime puts the VMs' fence in place
/// (packet-filter rules, each VM on its own network or tap, disks; the microVM runtime also adopts running QEMU
/// processes and removes what a killed daemon left) and the daemon refuses to start when the fence cannot be enforced,
/// unless Warren:Network:Isolation=Off says otherwise — which is then logged as a critical warning at every start.
/// </summary>
public sealed class VmHostPreparation(IVmHostFence fence, ILogger<VmHostPreparation> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!fence.IsolationEnforced)
            logger.LogCritical("VM NETWORK ISOLATION IS OFF (Warren:Network:Isolation=Off, or Warren:MicroVm:Network=User): VMs can reach this host's ports and private networks. Development only.");
        try
        {
            string report = await fence.PrepareHostFenceAsync(cancellationToken).ConfigureAwait(false);
            logger.LogInformation("VM host prepared: {Report}", report);
        }
        catch (VmRuntimeException e) when (e.Code == IVmHostFence.IsolationUnavailable)
        {
            logger.LogCritical("refusing to start: {Reason}", e.Message);
            throw;
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (await fence.RemoveHostRulesIfNoVmsAsync(cancellationToken).ConfigureAwait(false))
                logger.LogInformation("no VMs left: VM packet-filter rules removed");
        }
        catch (Exception e) when (e is VmRuntimeException or Warren.Runtime.HostNetwork.HostNetworkException or TimeoutException)
        {
            logger.LogWarning("VM packet-filter rules left in place: {Reason}", e.Message);
        }
    }
}
