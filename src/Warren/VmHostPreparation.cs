using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Warren.Runtime.Docker;

namespace Warren;

/// <summary>
/// Runs first at start-up, before reconciliation and any listener: puts the VMs' fence in place (packet-filter
/// rules, each VM on its own network, disk images mounted) and refuses to start when the fence cannot be enforced,
/// unless Warren:Network:Isolation=Off says otherwise — which is then logged as a critical warning at every start.
/// </summary>
public sealed class VmHostPreparation(DockerVmRuntime runtime, ILogger<VmHostPreparation> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!runtime.IsolationEnforced)
            logger.LogCritical("VM NETWORK ISOLATION IS OFF (Warren:Network:Isolation=Off): VMs can reach this host's ports and private networks. Development only.");
        try
        {
            var report = await runtime.PrepareHostAsync(cancellationToken).ConfigureAwait(false);
            logger.LogInformation("VM host prepared: {Report}", report);
        }
        catch (DockerRuntimeException e) when (e.Code == DockerRuntimeErrors.IsolationUnavailable)
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
        catch (DockerRuntimeException e)
        {
            logger.LogWarning("VM packet-filter rules left in place: {Reason}", e.Message);
        }
    }
}
