using System.Text.Json.Nodes;
using Warren.Platform.Integrations;
using Warren.Platform.Vms;

namespace Warren.Platform.Commands;

/// <summary><c>integrations list|add|remove|rename|attach|detach</c> and <c>new --integration</c> (exe.dev's docs: integrations).</summary>
public sealed partial class CommandDispatcher
{
    /// <summary>How a secret is shown: never its value.</summary>
    public const string SecretMask = "***";

    private void RegisterIntegrationHandlers()
    {
        _handlers["integrations list"] = IntegrationsListAsync;
        _handlers["integrations add"] = IntegrationsAddAsync;
        _handlers["integrations remove"] = IntegrationsRemoveAsync;
        _handlers["integrations rename"] = IntegrationsRenameAsync;
        _handlers["integrations attach"] = IntegrationsAttachAsync;
        _handlers["integrations detach"] = IntegrationsDetachAsync;
        _handlers["integrations setup"] = IntegrationsSetupAsync;
    }

    private IntegrationService IntegrationsOrThrow(Invocation inv)
    {
        RefuseForVmToken(inv);
        return _s.Integrations ?? throw new CommandException("integrations are not available on this server");
    }

    private async Task<int> IntegrationsListAsync(Invocation inv)
    {
        inv.MaxArgs(0);
        var svc = IntegrationsOrThrow(inv);
        var all = await svc.ListAsync(inv.Account.Id, inv.CancellationToken).ConfigureAwait(false);
        var names = await VmNamesByIdAsync(inv).ConfigureAwait(false);
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject { ["integrations"] = new JsonArray(all.Select(i => (JsonNode?)IntegrationJson(svc, i, names)).ToArray()) });
            return 0;
        }
        if (all.Count == 0) { inv.Line("No integrations."); return 0; }
        foreach (var i in all)
        {
            string attached = i.Attachments.Count == 0 ? "(not attached)" : string.Join(", ", i.Attachments.Select(a => IntegrationService.Describe(a, names)));
            inv.Line($"{inv.Bold(i.Name)}  {TypeLabel(i)}  {MaskedTarget(i, names) ?? ""}".TrimEnd());
            foreach (var h in i.HeaderNames) inv.Line($"    header {h}: {SecretMask}");
            if (i.HasBearer) inv.Line($"    Authorization: Bearer {SecretMask}");
            if (i.Fields is { } f) inv.Line($"    fields: {string.Join(",", f)}");
            inv.Line($"    attached: {attached}");
            inv.Line($"    use: {UsageFor(svc, i)}");
        }
        return 0;
    }

    private async Task<int> IntegrationsAddAsync(Invocation inv)
    {
        var svc = IntegrationsOrThrow(inv);
        string typeText = inv.Arg(0, "integration type (http-proxy, github or reflection)");
        inv.MaxArgs(1);
        if (!IntegrationTypes.TryParse(typeText, out var type))
            throw new CommandException($"unknown integration type \"{IntegrationValidation.Shown(typeText)}\"; use http-proxy, github or reflection");
        string name = inv.Args.Value("name") ?? throw inv.Usage("missing --name");
        string? fields = inv.Args.Value("fields");
        var request = new IntegrationAddRequest
        {
            Name = name,
            Type = type,
            Target = inv.Args.Value("target"),
            Headers = inv.Args.Values("header"),
            Bearer = inv.Args.Value("bearer"),
            Peer = inv.Args.Flag("peer"),
            Fields = fields is null ? null : IntegrationValidation.ParseFields(fields),
            Attach = inv.Args.Values("attach"),
            Repository = inv.Args.Value("repository"),
        };
        var added = await svc.AddAsync(inv.Account, request, inv.CancellationToken).ConfigureAwait(false);
        var names = await VmNamesByIdAsync(inv).ConfigureAwait(false);
        if (inv.Json) { inv.WriteJson(IntegrationJson(svc, added, names)); return 0; }
        inv.Line($"Added integration {added.Name}");
        inv.Line();
        inv.Line("Usage from a VM:");
        string? vm = added.Attachments.FirstOrDefault(a => a.Kind == AttachmentKind.Vm) is { } va && names.TryGetValue(va.Value, out var vn) ? vn : null;
        inv.Line($"  {(vm is null ? "" : $"ssh {vm} ")}{UsageFor(svc, added)}");
        if (added.Attachments.Count == 0) inv.Line($"Attach it first: integrations attach {added.Name} vm:NAME (or tag:TAG, auto:all)");
        return 0;
    }

    private async Task<int> IntegrationsRemoveAsync(Invocation inv)
    {
        var svc = IntegrationsOrThrow(inv);
        string name = inv.Arg(0, "integration name");
        inv.MaxArgs(1);
        var removed = await svc.RemoveAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(new JsonObject { ["name"] = removed.Name, ["status"] = "removed" });
        else inv.Line($"Removed integration {removed.Name}");
        return 0;
    }

    private async Task<int> IntegrationsRenameAsync(Invocation inv)
    {
        var svc = IntegrationsOrThrow(inv);
        string old = inv.Arg(0, "current name");
        string @new = inv.Arg(1, "new name");
        inv.MaxArgs(2);
        var (before, after) = await svc.RenameAsync(inv.Account.Id, old, @new, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(new JsonObject { ["old_name"] = before.Name, ["new_name"] = after.Name, ["status"] = "renamed" });
        else inv.Line($"Renamed integration {before.Name} to {after.Name}");
        return 0;
    }

    private Task<int> IntegrationsAttachAsync(Invocation inv) => AttachOrDetachAsync(inv, attach: true);

    private Task<int> IntegrationsDetachAsync(Invocation inv) => AttachOrDetachAsync(inv, attach: false);

    private async Task<int> AttachOrDetachAsync(Invocation inv, bool attach)
    {
        var svc = IntegrationsOrThrow(inv);
        string name = inv.Arg(0, "integration name");
        string spec = inv.Arg(1, "vm:NAME, tag:TAG or auto:all");
        inv.MaxArgs(2);
        if (spec.StartsWith("vm:", StringComparison.Ordinal)) spec = "vm:" + VmNames.Normalize(spec[3..], _s.Options.VmDomain);
        var updated = attach
            ? await svc.AttachAsync(inv.Account.Id, name, spec, inv.CancellationToken).ConfigureAwait(false)
            : await svc.DetachAsync(inv.Account.Id, name, spec, inv.CancellationToken).ConfigureAwait(false);
        var names = await VmNamesByIdAsync(inv).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(IntegrationJson(svc, updated, names));
        else inv.Line(attach ? $"Attached {updated.Name} to {spec}" : $"Detached {updated.Name} from {spec}");
        return 0;
    }

    /// <summary>What a VM runs to use the integration: git for github (exe.dev's docs: github), curl otherwise.</summary>
    private static string UsageFor(IntegrationService svc, Integration i)
        => i.Type == IntegrationType.GitHub ? $"git clone http://{svc.HostFor(i.Name)}/{i.Repository}.git" : $"curl http://{svc.HostFor(i.Name)}/";

    /// <summary>
    /// <c>integrations setup github --token TOKEN</c> stores the account's GitHub fine-grained token (sealed, never shown
    /// again); <c>--remove</c> forgets it; with neither, says whether one is set.
    /// </summary>
    private async Task<int> IntegrationsSetupAsync(Invocation inv)
    {
        var svc = IntegrationsOrThrow(inv);
        string provider = inv.Arg(0, "provider (github)");
        inv.MaxArgs(1);
        if (provider != "github") throw new CommandException($"unknown provider \"{IntegrationValidation.Shown(provider)}\"; use github");
        string? token = inv.Args.Value("token");
        bool remove = inv.Args.Flag("remove");
        if (token is not null && remove) throw inv.Usage("give --token or --remove, not both");
        string status;
        if (token is not null) { await svc.SetGitHubTokenAsync(inv.Account.Id, token, inv.CancellationToken).ConfigureAwait(false); status = "configured"; }
        else if (remove) status = await svc.RemoveGitHubTokenAsync(inv.Account.Id, inv.CancellationToken).ConfigureAwait(false) ? "removed" : "not configured";
        else status = await svc.GitHubSetupTimeAsync(inv.Account.Id, inv.CancellationToken).ConfigureAwait(false) is null ? "not configured" : "configured";
        if (inv.Json)
        {
            var o = new JsonObject { ["provider"] = "github", ["status"] = status };
            if (status == "configured") o["token"] = SecretMask;
            inv.WriteJson(o);
            return 0;
        }
        inv.Line(status switch
        {
            "configured" => $"GitHub: configured (token {SecretMask}). Add one with: integrations add github --name NAME --repository OWNER/REPO --attach vm:VM",
            "removed" => "GitHub: token removed; github integrations are refused until a new one is set",
            _ => "GitHub: not configured. Run: integrations setup github --token TOKEN (a fine-grained personal access token)",
        });
        return 0;
    }

    // ---- new --integration a,b

    /// <summary>The integrations <c>new --integration</c> names, checked before the VM is made so a typo creates nothing.</summary>
    private async Task<IReadOnlyList<string>> NewIntegrationsAsync(Invocation inv)
    {
        var names = inv.Args.Values("integration").SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).Distinct().ToList();
        if (names.Count == 0) return names;
        var svc = IntegrationsOrThrow(inv);
        foreach (var n in names)
            if (await svc.FindAsync(inv.Account.Id, n, inv.CancellationToken).ConfigureAwait(false) is null)
                throw new CommandException($"integration \"{IntegrationValidation.Shown(n)}\" not found");
        return names;
    }

    private async Task AttachNewIntegrationsAsync(Invocation inv, VmRecord vm, IReadOnlyList<string> names)
    {
        foreach (var n in names)
            await _s.Integrations!.AttachAsync(inv.Account.Id, n, "vm:" + vm.Name, CancellationToken.None).ConfigureAwait(false);
    }

    // ---- output

    private async Task<IReadOnlyDictionary<string, string>> VmNamesByIdAsync(Invocation inv)
        => (await _s.Vms.ListAsync(inv.Account.Id, null, inv.CancellationToken).ConfigureAwait(false)).ToDictionary(v => v.Id, v => v.Name);

    private static string TypeLabel(Integration i) => i.IsPeer ? "http-proxy (peer)" : i.Type.ToWire();

    /// <summary>The target as shown: a basic-auth password as <c>%2A%2A%2A</c> (*** URL-encoded), a peer as its VM's name.</summary>
    private static string? MaskedTarget(Integration i, IReadOnlyDictionary<string, string> vmNames)
    {
        if (i.IsPeer) return i.PeerVmId is { } id && vmNames.TryGetValue(id, out var n) ? n : "(deleted VM)";
        if (i.Target is null) return null;
        if (i.BasicUser is null) return i.Target;
        var b = new UriBuilder(i.Target) { UserName = Uri.EscapeDataString(i.BasicUser), Password = Uri.EscapeDataString(SecretMask) };
        return b.Uri.AbsoluteUri;
    }

    private static JsonObject IntegrationJson(IntegrationService svc, Integration i, IReadOnlyDictionary<string, string> vmNames)
    {
        var o = new JsonObject
        {
            ["name"] = i.Name,
            ["type"] = i.Type.ToWire(),
        };
        if (MaskedTarget(i, vmNames) is { } t) o["target"] = t;
        if (i.IsPeer) o["peer"] = true;
        if (i.HeaderNames.Count > 0)
        {
            var h = new JsonObject();
            foreach (var n in i.HeaderNames) h[n] = SecretMask;
            o["headers"] = h;
        }
        if (i.HasBearer) o["bearer"] = SecretMask;
        if (i.Fields is { } f) o["fields"] = Invocation.Array(f);
        o["attachments"] = Invocation.Array(i.Attachments.Select(a => IntegrationService.Describe(a, vmNames)));
        if (i.Repository is { } repo) o["repository"] = repo.ToString();
        o["help"] = UsageFor(svc, i);
        return o;
    }
}
