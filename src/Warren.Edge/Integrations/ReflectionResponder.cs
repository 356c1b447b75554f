using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Integrations;
using Warren.Platform.Vms;

namespace Warren.Edge.Integrations;

/// <summary>
/// The reflection integration (exe.dev's docs: reflection): a VM reads its own metadata — <c>/email</c>,
/// <c>/integrations</c>, <c>/tags</c>, <c>/comment</c>, <c>/default_port</c>; <c>/</c> lists the paths. An integration
/// made with <c>--fields</c> serves only those; any other path or method is 403.
/// </summary>
public sealed class ReflectionResponder
{
    private static readonly (string Field, string Description)[] s_paths =
    [
        ("email", "owner email address"),
        ("integrations", "integrations available to this VM"),
        ("tags", "tags set on this VM"),
        ("comment", "comment set on this VM"),
        ("default_port", "default proxy port for this VM"),
    ];

    private readonly IntegrationService _integrations;
    private readonly AccountService _accounts;

    public ReflectionResponder(IntegrationService integrations, AccountService accounts)
    {
        _integrations = integrations;
        _accounts = accounts;
    }

    public async Task RespondAsync(HttpContext context, VmRecord vm, Integration reflection, CancellationToken ct)
    {
        var request = context.Request;
        if (!HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method))
        {
            await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status403Forbidden, "reflection is read-only (GET)", ct).ConfigureAwait(false);
            return;
        }
        IReadOnlyList<string> allowed = reflection.Fields ?? IntegrationValidation.ReflectionFields;
        string path = request.Path.Value is { Length: > 1 } p ? p.TrimEnd('/') : "/";
        JsonObject? body;
        if (path == "/")
        {
            body = new JsonObject
            {
                ["paths"] = new JsonArray(s_paths.Where(x => allowed.Contains(x.Field))
                    .Select(x => (JsonNode?)new JsonObject { ["description"] = x.Description, ["path"] = "/" + x.Field }).ToArray()),
            };
        }
        else
        {
            string field = path[1..];
            body = allowed.Contains(field) ? await FieldAsync(field, vm, ct).ConfigureAwait(false) : null;
        }
        if (body is null)
        {
            await IntegrationRequestHandler.WriteErrorAsync(context, StatusCodes.Status403Forbidden, "not available through this reflection integration", ct).ConfigureAwait(false);
            return;
        }
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(body.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n", ct).ConfigureAwait(false);
    }

    private async Task<JsonObject?> FieldAsync(string field, VmRecord vm, CancellationToken ct)
    {
        switch (field)
        {
            case "email":
                var account = await _accounts.GetAsync(vm.AccountId, ct).ConfigureAwait(false);
                return new JsonObject { ["email"] = account?.Email ?? "" };
            case "tags":
                return new JsonObject { ["tags"] = new JsonArray(vm.Tags.Select(t => (JsonNode?)t).ToArray()) };
            case "comment":
                return new JsonObject { ["comment"] = vm.Comment };
            case "default_port":
                return new JsonObject { ["default_port"] = vm.ProxyPort };
            case "integrations":
                var attached = await _integrations.ListAttachedAsync(vm, ct).ConfigureAwait(false);
                return new JsonObject
                {
                    ["integrations"] = new JsonArray(attached.Select(i => (JsonNode?)new JsonObject
                    {
                        ["comment"] = "",
                        ["help"] = i.Repository is { } repo
                            ? $"git clone http://{_integrations.HostFor(i.Name)}/{repo}.git"
                            : $"curl http://{_integrations.HostFor(i.Name)}/",
                        ["name"] = i.Name,
                        ["type"] = i.Type.ToWire(),
                    }).ToArray()),
                };
            default:
                return null;
        }
    }
}
