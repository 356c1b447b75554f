using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Warren.Edge.Metadata;
using Warren.Platform.Integrations;
using Warren.Platform.Vms;

namespace Warren.Edge.Integrations;

/// <summary>
/// What a VM's request to <c>NAME.int.&lt;vm-domain&gt;</c> gets (exe.dev's docs: integrations).
/// </summary>
/// <remarks>
/// Steps: 1. the caller's VM as stored now (its tags decide <c>tag:</c> attachments, so <c>tag</c>/<c>tag -d</c> and
/// <c>detach</c> act on the next request); 2. the caller's account's integration of that name, attached to that VM,
/// else 403 — another account's integration of the same name is never looked at; 3. reflection is answered here,
/// http-proxy goes to <see cref="IntegrationForwarder"/>.
/// </remarks>
public sealed class IntegrationRequestHandler : IIntegrationRequestHandler
{
    private readonly IntegrationService _integrations;
    private readonly VmService _vms;
    private readonly ReflectionResponder _reflection;
    private readonly IntegrationForwarder _forwarder;

    public IntegrationRequestHandler(IntegrationService integrations, VmService vms, ReflectionResponder reflection,
        IntegrationForwarder forwarder)
    {
        _integrations = integrations;
        _vms = vms;
        _reflection = reflection;
        _forwarder = forwarder;
    }

    public async Task HandleAsync(HttpContext context, MetadataCaller caller, string integrationName, CancellationToken ct)
    {
        var vm = await _vms.GetByIdAsync(caller.VmId, ct).ConfigureAwait(false);
        if (vm is null || vm.AccountId != caller.AccountId)
        {
            await WriteErrorAsync(context, StatusCodes.Status403Forbidden, "unknown VM", ct).ConfigureAwait(false);
            return;
        }
        var integration = IntegrationValidation.IsValidName(integrationName)
            ? await _integrations.FindAsync(vm.AccountId, integrationName, ct).ConfigureAwait(false)
            : null;
        if (integration is null || !integration.IsAttachedTo(vm.Id, vm.Tags))
        {
            // One answer for "no such integration" and "not attached": names are not an oracle.
            await WriteErrorAsync(context, StatusCodes.Status403Forbidden,
                $"integration \"{(integrationName.Length > 63 ? integrationName[..63] : integrationName)}\" is not attached to this VM", ct).ConfigureAwait(false);
            return;
        }
        switch (integration.Type)
        {
            case IntegrationType.Reflection:
                await _reflection.RespondAsync(context, vm, integration, ct).ConfigureAwait(false);
                break;
            default:
                await _forwarder.ForwardAsync(context, caller, vm, integration, ct).ConfigureAwait(false);
                break;
        }
    }

    /// <summary><c>{"error":"…"}</c> with a status; the message never names a target or a secret.</summary>
    internal static async Task WriteErrorAsync(HttpContext context, int status, string message, CancellationToken ct)
    {
        if (context.Response.HasStarted) { context.Abort(); return; }
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(new JsonObject { ["error"] = message }.ToJsonString() + "\n", ct).ConfigureAwait(false);
    }
}
