using System.Text.Json.Nodes;
using Warren.Platform.Accounts;
using Warren.Platform.Tokens;
using Warren.Platform.Vms;
using Warren.Ssh.Keys;

namespace Warren.Platform.Commands;

/// <summary>whoami, ssh-key *, exe0-to-exe1 (exe.dev's whoami, ssh-key and exe0/exe1 tokens).</summary>
public sealed partial class CommandDispatcher
{
    /// <summary>Largest public key read from stdin by <c>ssh-key add</c> (a 16384-bit RSA line is ~2.8 KiB).</summary>
    public const int MaxKeyInputChars = 16 * 1024;

    private void RegisterAccountHandlers()
    {
        _handlers["whoami"] = WhoamiAsync;
        _handlers["ssh-key list"] = KeyListAsync;
        _handlers["ssh-key add"] = KeyAddAsync;
        _handlers["ssh-key remove"] = KeyRemoveAsync;
        _handlers["ssh-key rename"] = KeyRenameAsync;
        _handlers["ssh-key generate-api-key"] = GenerateApiKeyAsync;
        _handlers["exe0-to-exe1"] = Exe0ToExe1Async;
    }

    private async Task<IReadOnlyList<AccountKey>> KeysCurrentFirstAsync(Invocation inv)
    {
        var keys = await _s.Accounts.ListKeysAsync(inv.Account.Id, inv.CancellationToken).ConfigureAwait(false);
        string? current = inv.Context.CurrentKey?.Fingerprint;
        return keys.OrderByDescending(k => k.Fingerprint == current).ToList();
    }

    private async Task<int> WhoamiAsync(Invocation inv)
    {
        inv.MaxArgs(0);
        var keys = await KeysCurrentFirstAsync(inv);
        string? current = inv.Context.CurrentKey?.Fingerprint;
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject
            {
                ["email"] = inv.Account.Email,
                ["ssh_keys"] = new JsonArray(keys.Select(k =>
                {
                    var o = new JsonObject { ["public_key"] = k.PublicKey, ["fingerprint"] = k.Fingerprint };
                    if (k.Name.Length > 0) o["name"] = k.Name;
                    o["current"] = k.Fingerprint == current;
                    return (JsonNode?)o;
                }).ToArray()),
            });
            return 0;
        }
        inv.Line($"{inv.Bold("Email Address:")} {inv.Account.Email}");
        foreach (var k in keys)
            inv.Line($"  Public Key: {k.PublicKey} ({k.Name}){(k.Fingerprint == current ? " ← current" : "")}");
        return 0;
    }

    private static JsonObject KeyJson(AccountKey k, string? current)
    {
        var o = new JsonObject { ["public_key"] = k.PublicKey, ["fingerprint"] = k.Fingerprint, ["name"] = k.Name };
        o["added_at"] = Invocation.Rfc3339(k.AddedAt);
        if (k.LastUsedAt is { } used) o["last_used_at"] = Invocation.Rfc3339(used);
        o["current"] = k.Fingerprint == current;
        if (k.Permissions is { } p) o["permissions"] = PermissionsJson(p);
        return o;
    }

    private static JsonObject PermissionsJson(ApiKeyPermissions p)
    {
        var o = new JsonObject();
        if (!p.IsSshKey) o["label"] = p.Label;
        if (p.Cmds is not null) o["cmds"] = Invocation.Array(p.Cmds);
        if (p.Vm is not null) o["vm"] = p.Vm;
        if (p.Tag is not null) o["tag"] = p.Tag;
        if (p.ExpiresAt is { } e) o["expires_at"] = Invocation.Rfc3339(e);
        return o;
    }

    private async Task<int> KeyListAsync(Invocation inv)
    {
        inv.MaxArgs(0);
        var keys = await KeysCurrentFirstAsync(inv);
        string? current = inv.Context.CurrentKey?.Fingerprint;
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject { ["ssh_keys"] = new JsonArray(keys.Select(k => (JsonNode?)KeyJson(k, current)).ToArray()) });
            return 0;
        }
        if (keys.Count == 0) { inv.Line("No SSH keys."); return 0; }
        int width = keys.Max(k => k.Name.Length) + 2;
        foreach (var k in keys)
        {
            string extra = k.Permissions switch
            {
                null => "",
                { IsSshKey: true, Vm: { } vm } => $" [ssh into {vm} only]",
                { IsSshKey: true, Tag: { } tag, Cmds: null } => $" [VMs tagged {tag}]",
                { IsSshKey: true, Tag: { } tag } p => $" [VMs tagged {tag}; commands: {string.Join(", ", p.Cmds ?? [])}]",
                { IsSshKey: true } p => $" [commands: {string.Join(", ", p.Cmds ?? [])}]",
                var p => $" [api key{(p.Vm is null ? "" : " for " + p.Vm)}{(p.Tag is null ? "" : " for tag " + p.Tag)}{(p.ExpiresAt is { } e ? ", expires " + Invocation.Rfc3339(e) : "")}]",
            };
            inv.Line($"  {k.Name.PadRight(width)}{k.Fingerprint}  {k.PublicKey}{extra}{(k.Fingerprint == current ? " ← current" : "")}");
        }
        return 0;
    }

    private async Task<int> KeyAddAsync(Invocation inv)
    {
        string? text = inv.Args.Positionals.Count > 0 ? string.Join(' ', inv.Args.Positionals) : null;
        if (text is null)
        {
            if (inv.Context.Interactive) throw inv.Usage("missing public key (paste it after 'ssh-key add')");
            text = await ReadBoundedAsync(inv.Context.Stdin, MaxKeyInputChars, inv.CancellationToken).ConfigureAwait(false);
        }
        else if (!inv.Context.Interactive && await StdinCarriesTextAsync(inv).ConfigureAwait(false))
        {
            throw new CommandException("give the public key either as an argument or on stdin, not both");
        }
        var lines = text.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Where(l => !l.StartsWith('#')).ToList();
        if (lines.Count == 0) throw inv.Usage("missing public key (give it as an argument or on stdin)");
        if (lines.Count > 1) throw new CommandException("give one public key at a time");
        if (!SshPublicKey.TryParseOpenSsh(lines[0], out var key, out var comment))
            throw new CommandException("invalid SSH public key: expected a line like \"ssh-ed25519 AAAA… comment\"");
        var scope = await NewKeyScopeAsync(inv).ConfigureAwait(false);
        // Without --name the key is named by its comment (ssh-keygen -C), as exe.dev does, unless that name is taken.
        var added = await _s.Accounts.AddKeyAsync(inv.Account.Id, key, inv.Args.Value("name"), scope, inv.CancellationToken,
            nameIfFree: comment).ConfigureAwait(false);
        if (inv.Json)
        {
            var o = new JsonObject { ["public_key"] = added.PublicKey, ["status"] = "added", ["name"] = added.Name };
            if (added.Permissions is { } p) o["permissions"] = PermissionsJson(p);
            inv.WriteJson(o);
        }
        else
        {
            inv.Line($"Added SSH key \"{added.Name}\" ({added.Fingerprint})");
            if (scope is { Vm: { } vm }) inv.Line($"It may only SSH into {vm}.");
            else if (scope is { Tag: { } tag }) inv.Line($"It sees and reaches only VMs tagged {tag}"
                + (scope.Cmds is { } only ? $", and may only run: {string.Join(", ", only)}" : "") + ".");
            else if (scope is not null) inv.Line($"It may only run: {string.Join(", ", scope.Cmds ?? [])}");
        }
        return 0;
    }

    /// <summary>
    /// The scope of a key <c>ssh-key add</c> is adding: its <c>--cmds</c>/<c>--vm</c>/<c>--tag</c>, held within the
    /// caller's own limits, or null for an unlimited key. A key added by a limited session (a scoped key, or a token)
    /// inherits that session's limits and may ask for less, never more, so a limited key cannot mint its way out of them.
    /// </summary>
    private async Task<ApiKeyPermissions?> NewKeyScopeAsync(Invocation inv)
    {
        // A tag-scoped session may not add keys at all (exe.dev's docs: ssh-key; the same rule as tag-scoped tokens).
        RefuseForTagScope(inv, "add SSH keys");
        string? tag = NewKeyTag(inv);
        IReadOnlyList<string>? cmds = null;
        if (inv.Args.Value("cmds") is { } cmdsText)
        {
            cmds = ParseCmds(cmdsText);
            if (cmds.Count == 0) throw new CommandException("--cmds needs at least one command (e.g. --cmds=ls,new or --cmds=ssh)");
        }
        string? vm = null;
        if (inv.Args.Value("vm") is { } vmText)
        {
            vm = VmNames.Normalize(vmText, _s.Options.VmDomain);
            await _s.Shares.OwnedAsync(inv.Account.Id, vm, inv.CancellationToken).ConfigureAwait(false);
            if (cmds is not null && cmds.Any(c => c != "ssh" && c != "ssh " + vm))
                throw new CommandException($"a key limited to one VM (--vm) can only SSH into it; drop --cmds or give --cmds=ssh");
            cmds = ["ssh " + vm];
        }

        var (limitCmds, limitVm) = CallerLimits(inv.Context);
        if (limitCmds is null && limitVm is null)
            return cmds is null && tag is null ? null : new ApiKeyPermissions("", cmds, vm, null, tag) { IsSshKey = true };
        if (limitVm is not null)
        {
            if (tag is not null) throw new CommandException(KeyScope.NotAllowed + $": this key may only grant SSH into {limitVm}");
            if (vm is not null && vm != limitVm) throw new CommandException(KeyScope.NotAllowed + $": this key may only grant SSH into {limitVm}");
            return new ApiKeyPermissions("", ["ssh " + limitVm], limitVm, null) { IsSshKey = true };
        }
        if (cmds is null) return new ApiKeyPermissions("", limitCmds, null, null, tag) { IsSshKey = true };
        var beyond = cmds.FirstOrDefault(c => !IsAllowed(limitCmds, c.Split(' ')));
        if (beyond is not null) throw new CommandException(KeyScope.NotAllowed + $": this key cannot grant \"{beyond}\"");
        return new ApiKeyPermissions("", cmds, vm, null, tag) { IsSshKey = true };
    }

    /// <summary>
    /// <c>ssh-key add --tag=T</c> (exe.dev's docs: ssh-key, "scope key to VMs with this tag"): the key sees and reaches
    /// only the account's VMs tagged T, as a <c>generate-api-key --tag</c> token does; null without the flag.
    /// </summary>
    private static string? NewKeyTag(Invocation inv)
    {
        if (inv.Args.Value("tag") is not { } text) return null;
        if (inv.Args.Value("vm") is not null)
            throw new CommandException("--tag and --vm cannot be combined: a key limited to one VM is already limited to it");
        string tag = text.Trim();
        try { VmTags.Validate(tag); }
        catch (PlatformException e) { throw new CommandException($"invalid --tag: {e.UserMessage}"); }
        if (inv.Args.Value("cmds") is { } cmds && ParseCmds(cmds).Any(c => c == "tag"))
            throw new CommandException("a key scoped to a tag cannot run tag (it would move VMs out of its own scope)");
        return tag;
    }

    /// <summary>
    /// The limits of the session running a command: the commands and VM of its scoped SSH key, narrowed by a
    /// token's command list and VM (POST /exec). Both null for an unlimited session.
    /// </summary>
    private static (IReadOnlyList<string>? Cmds, string? Vm) CallerLimits(CommandContext ctx)
    {
        IReadOnlyList<string>? cmds = ctx.AllowedCommands;
        string? vm = ctx.TokenVm;
        if (ctx.CurrentKey?.Permissions is { } p)
        {
            var keyCmds = p.IsSshKey ? p.Cmds ?? [] : p.Cmds ?? TokenAuthenticator.DefaultCommands;
            cmds = cmds is null ? keyCmds : cmds.Where(keyCmds.Contains).ToList();
            vm ??= p.Vm;
        }
        return (cmds, vm);
    }

    /// <summary>
    /// How long <c>ssh-key add KEY</c> looks at stdin for a second key. A pipe (<c>cat key.pub | ssh … ssh-key add
    /// KEY</c>) has its bytes or its end there at once; a terminal that sends nothing must not hold the command up.
    /// </summary>
    private static readonly TimeSpan StdinProbeWindow = TimeSpan.FromMilliseconds(300);

    /// <summary>Most characters the probe reads (enough to see past blank lines).</summary>
    private const int StdinProbeChars = 256;

    /// <summary>Whether stdin brings anything but white space within <see cref="StdinProbeWindow"/>.</summary>
    private async Task<bool> StdinCarriesTextAsync(Invocation inv)
    {
        using var window = new CancellationTokenSource(StdinProbeWindow, _s.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(inv.CancellationToken, window.Token);
        var buffer = new char[StdinProbeChars];
        int total = 0;
        try
        {
            while (total < buffer.Length)
            {
                int n = await inv.Context.Stdin.ReadAsync(buffer.AsMemory(total), linked.Token).ConfigureAwait(false);
                if (n == 0) break;
                for (int i = total; i < total + n; i++) if (!char.IsWhiteSpace(buffer[i])) return true;
                total += n;
            }
        }
        catch (OperationCanceledException) when (!inv.CancellationToken.IsCancellationRequested)
        {
            // Nothing (more) within the window: a terminal, or an idle pipe.
        }
        return false;
    }

    private static async Task<string> ReadBoundedAsync(TextReader reader, int maxChars, CancellationToken ct)
    {
        var buffer = new char[maxChars + 1];
        int total = 0;
        while (total < buffer.Length)
        {
            int n = await reader.ReadAsync(buffer.AsMemory(total), ct).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
        }
        if (total > maxChars) throw new CommandException($"input too large (more than {maxChars} characters)");
        return new string(buffer, 0, total);
    }

    private async Task<int> KeyRemoveAsync(Invocation inv)
    {
        // The account's keys are not VMs of its tag: a tag-scoped key manages neither them nor itself.
        RefuseForTagScope(inv, "remove SSH keys");
        string selector = string.Join(' ', inv.Args.Positionals);
        if (selector.Length == 0) throw inv.Usage("missing key name, fingerprint or public key");
        var removed = await _s.Accounts.RemoveKeyAsync(inv.Account.Id, selector, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json)
            inv.WriteJson(new JsonObject { ["public_key"] = removed.PublicKey, ["fingerprint"] = removed.Fingerprint, ["status"] = "deleted", ["name"] = removed.Name });
        else
            inv.Line(removed.Permissions is null or { IsSshKey: true } ? $"Removed SSH key \"{removed.Name}\"" : $"Revoked API key \"{removed.Name}\"");
        return 0;
    }

    private async Task<int> KeyRenameAsync(Invocation inv)
    {
        RefuseForTagScope(inv, "rename SSH keys");
        string old = inv.Arg(0, "current key name");
        string @new = inv.Arg(1, "new key name");
        inv.MaxArgs(2);
        var (before, after) = await _s.Accounts.RenameKeyAsync(inv.Account.Id, old, @new, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json)
            inv.WriteJson(new JsonObject
            {
                ["public_key"] = after.PublicKey, ["fingerprint"] = after.Fingerprint,
                ["old_name"] = before.Name, ["new_name"] = after.Name, ["status"] = "renamed",
            });
        else
            inv.Line($"Renamed SSH key \"{before.Name}\" to \"{after.Name}\"");
        return 0;
    }

    private async Task<int> GenerateApiKeyAsync(Invocation inv)
    {
        inv.MaxArgs(0);
        // A token session (AllowedCommands set), or any session authenticated by an API key's own key row,
        // may not mint: the second check holds even if a front door forgets to pass the token's commands.
        if (inv.Context.AllowedCommands is not null || inv.Context.CurrentKey?.Permissions is { IsSshKey: false })
            throw new CommandException("API tokens cannot create API tokens; run this over SSH with your own key");
        // The token's key would be a new key of the account, outside this key's limits.
        if (inv.Context.CurrentKey?.Permissions is { IsSshKey: true })
            throw new CommandException("a limited SSH key cannot create API tokens; run this with an unlimited key");
        string? vm = inv.Args.Value("vm");
        if (vm is not null)
        {
            vm = VmNames.Normalize(vm, _s.Options.VmDomain);
            var rec = _s.Index.GetByName(vm);
            if (rec is null || rec.AccountId != inv.Account.Id || rec.State == VmState.Deleting)
                throw new CommandException($"VM \"{vm}\" not found");
        }
        IReadOnlyList<string>? cmds = null;
        if (inv.Args.Value("cmds") is { } cmdsText) cmds = ParseCmds(cmdsText);
        // --tag: the token manages only the account's VMs with this tag (exe.dev's tag-scoped keys), and VMs it
        // creates get the tag. A VM token (--vm) already names its one VM.
        string? tag = inv.Args.Value("tag");
        if (tag is not null)
        {
            if (vm is not null) throw new CommandException("--tag and --vm cannot be combined: a VM token is already limited to its VM");
            tag = tag.Trim();
            try { VmTags.Validate(tag); }
            catch (PlatformException e) { throw new CommandException($"invalid --tag: {e.UserMessage}"); }
            if (cmds is not null && cmds.Any(c => c == "tag"))
                throw new CommandException("a token scoped to a tag cannot run tag (it would move VMs out of its own scope)");
        }
        DateTimeOffset? expiresAt = null;
        if (inv.Args.Value("exp") is { } expText &&
            !ApiKeyService.TryParseExpiry(expText, _s.Time.GetUtcNow(), out expiresAt, out var expError))
            throw new CommandException(expError!);
        var result = await _s.ApiKeys.GenerateAsync(inv.Account, inv.Args.Value("label"), vm, cmds, expiresAt, inv.CancellationToken, tag).ConfigureAwait(false);
        if (inv.Json)
        {
            var o = new JsonObject
            {
                ["label"] = result.Label, ["token"] = result.Token, ["namespace"] = result.Namespace, ["fingerprint"] = result.Fingerprint,
            };
            if (result.ExpiresAt is { } e) o["expires_at"] = Invocation.Rfc3339(e);
            if (tag is not null) o["tag"] = tag;
            inv.WriteJson(o);
            return 0;
        }
        inv.Line($"Created API key \"{result.Label}\" ({result.Fingerprint}).");
        inv.Line($"Namespace: {result.Namespace}");
        if (tag is not null) inv.Line($"Tag:       {tag} (only VMs with this tag; VMs it creates get it)");
        inv.Line($"Expires:   {(result.ExpiresAt is { } x ? Invocation.Rfc3339(x) : "never")}");
        inv.Line();
        inv.Line(result.Token);
        inv.Line();
        inv.Line("The token is shown only once. Revoke it with: ssh-key remove " + result.Label);
        return 0;
    }

    /// <summary>
    /// <c>--cmds</c>: comma-separated canonical command paths; an entry may be quoted (<c>'ssh my-vm'</c>).
    /// Each must name a command ("ssh VM" limits ssh to one VM).
    /// </summary>
    internal static IReadOnlyList<string> ParseCmds(string text)
    {
        var result = new List<string>();
        foreach (var raw in text.Split(','))
        {
            string c = raw.Trim();
            if (c.Length >= 2 && (c[0] == '\'' || c[0] == '"') && c[^1] == c[0]) c = c[1..^1].Trim();
            if (c.Length == 0) continue;
            c = string.Join(' ', c.Split(' ', StringSplitOptions.RemoveEmptyEntries));
            bool known = CommandCatalog.FindPath(c) is { InteractiveOnly: false }
                || (c.StartsWith("ssh ", StringComparison.Ordinal) && c.Split(' ').Length == 2 && VmNames.IsValid(c[4..]));
            if (!known)
            {
                var near = Suggest.Nearest(c, CommandCatalog.AllPaths());
                throw new CommandException(near is null ? $"unknown command \"{c}\" in --cmds" : $"unknown command \"{c}\" in --cmds (did you mean \"{near}\"?)");
            }
            if (!result.Contains(c)) result.Add(c);
        }
        return result;
    }

    private async Task<int> Exe0ToExe1Async(Invocation inv)
    {
        string token = inv.Arg(0, "token");
        inv.MaxArgs(1);
        string? vm = inv.Args.Value("vm") is { } v ? VmNames.Normalize(v, _s.Options.VmDomain) : null;
        // A VM namespace is the caller's own VM's: a handle for another account's VM is refused as exe.dev does.
        if (vm is not null) await _s.Shares.OwnedAsync(inv.Account.Id, vm, inv.CancellationToken).ConfigureAwait(false);
        var exe1 = await _s.ApiKeys.ConvertToExe1Async(inv.Account, token, vm, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(new JsonObject { ["token"] = exe1 });
        else inv.Line(exe1);
        return 0;
    }
}
