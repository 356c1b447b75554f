using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Warren.Platform.Addressing;
using Warren.Platform.Runtime;
using Warren.Platform.Vms;

namespace Warren.Platform.Commands;

/// <summary>ls, new, rm, restart, rename, tag, comment, cp, resize (exe.dev).</summary>
public sealed partial class CommandDispatcher
{
    /// <summary>Largest setup script read from stdin (<c>--setup-script=/dev/stdin</c>); VmService enforces exe.dev's 10 KiB.</summary>
    private const int MaxSetupScriptChars = VmService.MaxSetupScriptBytes + 1;

    private const string StdinPath = "/dev/stdin";

    private void RegisterVmHandlers()
    {
        _handlers["ls"] = LsAsync;
        _handlers["new"] = NewAsync;
        _handlers["rm"] = RmAsync;
        _handlers["restart"] = RestartAsync;
        _handlers["rename"] = RenameAsync;
        _handlers["tag"] = TagAsync;
        _handlers["comment"] = CommentAsync;
        _handlers["cp"] = CpAsync;
        _handlers["resize"] = ResizeAsync;
        _handlers["stat"] = StatAsync;
    }

    // ---- shared helpers ----

    private string Host(string vmName) => $"{vmName}.{_s.Options.VmDomain}";

    /// <summary>https://NAME.domain, with the port when it is not 443.</summary>
    internal string HttpsUrl(string vmName)
        => _s.Options.HttpsPort == 443 ? $"https://{Host(vmName)}" : $"https://{Host(vmName)}:{_s.Options.HttpsPort}";

    private static string SshCommand(SshEndpoint e) => e.Port == 22 ? $"ssh {e.Destination}" : $"ssh -p {e.Port} {e.Destination}";

    /// <summary>The VM name as typed: "name.domain" → "name" (exe.dev does this everywhere except rename and stat).</summary>
    private string VmArg(Invocation inv, int index)
    {
        var name = VmNames.Normalize(inv.Arg(index, "VM name"), _s.Options.VmDomain);
        CheckTokenVm(inv, name);
        return name;
    }

    /// <summary>
    /// A token limited to one VM sees no other VM; a tag-scoped key (<c>generate-api-key --tag</c>) sees only the
    /// caller's VMs with its tag. Either way another VM is "not found", as one that does not exist is, so a scoped
    /// key learns nothing about the rest of the account.
    /// </summary>
    private void CheckTokenVm(Invocation inv, string vmName)
    {
        if (inv.Context.TokenVm is { } only && only != vmName) throw new CommandException($"VM \"{vmName}\" not found");
        if (ScopeTag(inv.Context) is { } tag && _s.Index.GetByName(vmName) is { } vm && vm.AccountId == inv.Account.Id && !vm.Tags.Contains(tag))
            throw new CommandException($"VM \"{vmName}\" not found");
    }

    /// <summary>
    /// The tag the session's key is scoped to (exe.dev: "scope key to VMs with this tag"), or null. For /exec the
    /// current key is the one that signed the token, so a token from a tag-scoped API key carries its scope.
    /// </summary>
    internal static string? ScopeTag(CommandContext ctx) => ctx.CurrentKey?.Permissions?.Tag;

    /// <summary>Commands that would move a VM in or out of the scope are not for a tag-scoped key.</summary>
    private static void RefuseForTagScope(Invocation inv, string what)
    {
        if (ScopeTag(inv.Context) is { } tag) throw new CommandException($"a key scoped to tag \"{tag}\" cannot {what}");
    }

    private static void RefuseForVmToken(Invocation inv)
    {
        if (inv.Context.TokenVm is not null) throw new CommandException(Tokens.TokenErrors.NotAllowed);
    }

    private static double? ParseCpus(Invocation inv)
    {
        if (inv.Args.Value("cpu") is not { } text) return null;
        if (!double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v) || v <= 0 || double.IsInfinity(v))
            throw new CommandException($"invalid --cpu \"{text}\": use a number of CPUs, like 2");
        return v;
    }

    private static long? ParseSize(Invocation inv, string flag)
        => inv.Args.Value(flag) is { } text ? ByteSize.Parse(text, "--" + flag) : null;

    // ---- ls ----

    private async Task<int> LsAsync(Invocation inv)
    {
        inv.MaxArgs(1);
        string? pattern = inv.OptionalArg(0) is { } p ? VmNames.Normalize(p, _s.Options.VmDomain) : null;
        var vms = await _s.Vms.ListAsync(inv.Account.Id, pattern, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Context.TokenVm is { } only) vms = vms.Where(v => v.Name == only).ToList();
        if (ScopeTag(inv.Context) is { } scope) vms = vms.Where(v => v.Tags.Contains(scope)).ToList();
        bool longFormat = inv.Args.Flag("l");
        var shared = inv.Args.Flag("a") && inv.Context.TokenVm is null && ScopeTag(inv.Context) is null
            ? await SharedVmsAsync(inv, pattern).ConfigureAwait(false)
            : [];
        if (inv.Json)
        {
            var o = new JsonObject { ["vms"] = new JsonArray(vms.Select(v => (JsonNode?)VmJson(v, inv.Account.Id, longFormat)).ToArray()) };
            if (shared.Count > 0)
            {
                o["team_vms"] = new JsonArray(shared.Select(x =>
                {
                    var j = VmJson(x.Vm, inv.Account.Id, longFormat);
                    j.Remove("tags");
                    j.Remove("allocated_cpus");
                    j.Remove("memory_capacity_bytes");
                    j.Remove("disk_capacity_bytes");
                    j["creator_email"] = x.OwnerEmail;
                    return (JsonNode?)j;
                }).ToArray());
            }
            inv.WriteJson(o);
            return 0;
        }
        LsText(inv, vms, longFormat, pattern);
        if (shared.Count > 0)
        {
            inv.Line();
            inv.Line(inv.Bold("Team VMs:"));
            foreach (var (v, owner) in shared) inv.Line($"  • {Host(v.Name)} - {v.State.ToWire()} ({v.Image}) by {owner}");
        }
        return 0;
    }

    /// <summary>VMs of other accounts shared with the caller (<c>ls -a</c>), with their owners' addresses.</summary>
    private async Task<List<(VmRecord Vm, string OwnerEmail)>> SharedVmsAsync(Invocation inv, string? pattern)
    {
        var result = new List<(VmRecord, string)>();
        foreach (var v in await _s.Shares.ListSharedWithAsync(inv.Account.Id, inv.CancellationToken).ConfigureAwait(false))
        {
            if (pattern is not null && v.Name != pattern && !v.Tags.Contains(pattern)) continue;
            var owner = await _s.Accounts.GetAsync(v.AccountId, inv.CancellationToken).ConfigureAwait(false);
            result.Add((v, owner?.Email ?? ""));
        }
        return result;
    }

    private void LsText(Invocation inv, IReadOnlyList<VmRecord> vms, bool longFormat, string? pattern)
    {
        if (vms.Count == 0)
        {
            inv.Line(pattern is null ? "No VMs found. Create one with 'new'." : $"No VMs match \"{pattern}\".");
            return;
        }
        if (!longFormat)
        {
            inv.Line(inv.Bold("Your VMs:"));
            foreach (var v in vms)
            {
                var line = $"  • {Host(v.Name)} - {v.State.ToWire()} ({v.Image})";
                if (v.Tags.Count > 0) line += " " + string.Join(' ', v.Tags.Select(t => "#" + t));
                if (v.Comment.Length > 0) line += " # " + v.Comment;
                inv.Line(line);
            }
            return;
        }
        var rows = vms.Select(v => new[]
        {
            Host(v.Name), v.State.ToWire(), Invocation.Rfc3339(v.CreatedAt),
            $"{v.Cpus.ToString(CultureInfo.InvariantCulture)} cpu", ByteSize.Format(v.MemoryBytes), ByteSize.Format(v.DiskBytes),
            $":{v.ProxyPort}", HttpsUrl(v.Name),
            string.Join(' ', v.Tags.Select(t => "#" + t)) + (v.Comment.Length > 0 ? (v.Tags.Count > 0 ? " " : "") + "# " + v.Comment : ""),
        }).ToList();
        var widths = Enumerable.Range(0, rows[0].Length - 1).Select(i => rows.Max(r => r[i].Length)).ToArray();
        foreach (var r in rows)
            inv.Line(string.Join("  ", r.Take(widths.Length).Select((c, i) => c.PadRight(widths[i]))) + "  " + r[^1]);
    }

    private JsonObject VmJson(VmRecord v, string viewerAccountId, bool longFormat)
    {
        var ssh = _s.Routes.GetSshEndpoint(v, viewerAccountId);
        var o = new JsonObject
        {
            ["vm_name"] = v.Name,
            ["ssh_dest"] = ssh.Destination,
            ["ssh_host"] = ssh.Host,
        };
        if (ssh.User is not null) o["ssh_user"] = ssh.User;
        o["ssh_port"] = ssh.Port;
        o["https_url"] = HttpsUrl(v.Name);
        o["status"] = v.State.ToWire();
        o["region"] = _s.Options.Region;
        if (_s.Options.RegionDisplay.Length > 0) o["region_display"] = _s.Options.RegionDisplay;
        o["image"] = v.Image;
        o["tags"] = Invocation.Array(v.Tags);
        if (v.Comment.Length > 0) o["comment"] = v.Comment;
        // Present only when on, so the default shape stays exe.dev's (like "comment").
        if (v.ReceiveEmail) o["email_enabled"] = true;
        o["created_at"] = Invocation.Rfc3339(v.CreatedAt);
        o["allocated_cpus"] = v.Cpus;
        o["memory_capacity_bytes"] = v.MemoryBytes;
        o["disk_capacity_bytes"] = v.DiskBytes;
        if (longFormat)
        {
            o["cpu"] = v.Cpus;
            o["memory"] = ByteSize.Format(v.MemoryBytes);
            o["disk"] = ByteSize.Format(v.DiskBytes);
            o["proxy_port"] = v.ProxyPort;
        }
        return o;
    }

    // ---- new ----

    private async Task<int> NewAsync(Invocation inv)
    {
        inv.MaxArgs(0);
        RefuseForVmToken(inv);
        string? name = inv.Args.Value("name") is { } n ? VmNames.Normalize(n, _s.Options.VmDomain) : null;
        RegistryCredential? auth = null;
        if (inv.Args.Value("registry-auth") is { } ra)
        {
            int colon = ra.IndexOf(':');
            if (colon <= 0 || colon == ra.Length - 1) throw new CommandException("invalid --registry-auth: expected USER:TOKEN");
            auth = new RegistryCredential(ra[..colon], ra[(colon + 1)..]);
        }
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var e in inv.Args.Values("env"))
        {
            var kv = VmEnv.Parse(e);
            env[kv.Key] = kv.Value;
        }
        var mode = CommandMode.Auto;
        IReadOnlyList<string>? custom = null;
        switch (inv.Args.Value("command"))
        {
            case null or "auto": break;
            case "none": mode = CommandMode.None; break;
            case "custom": mode = CommandMode.Custom; break;
            case var text:
                if (!ShellLexer.TrySplit(text, out var argv, out var lexError)) throw new CommandException($"invalid --command: {lexError}");
                mode = CommandMode.Custom;
                custom = argv;
                break;
        }
        string? setup = inv.Args.Value("setup-script");
        if (setup == StdinPath)
        {
            if (inv.Context.Interactive) throw new CommandException("--setup-script=/dev/stdin works only over ssh exec");
            setup = await ReadBoundedAsync(inv.Context.Stdin, MaxSetupScriptChars, inv.CancellationToken).ConfigureAwait(false);
        }
        setup ??= await _s.Accounts.GetDefaultAsync(inv.Account.Id, AccountDefaults.Domain, AccountDefaults.NewSetupScript, inv.CancellationToken).ConfigureAwait(false);
        var request = new VmCreateRequest
        {
            Name = name,
            Image = inv.Args.Value("image"),
            RegistryAuth = auth,
            // A tag-scoped key's VMs carry its tag, so it keeps managing what it made.
            Tags = ScopeTag(inv.Context) is { } scopeTag && !inv.Args.Values("tag").Contains(scopeTag)
                ? [.. inv.Args.Values("tag"), scopeTag]
                : inv.Args.Values("tag"),
            Env = env,
            Cpus = ParseCpus(inv),
            MemoryBytes = ParseSize(inv, "memory"),
            DiskBytes = ParseSize(inv, "disk"),
            CommandMode = mode,
            CustomCommand = custom,
            Comment = inv.Args.Value("comment"),
            SetupScript = setup,
        };
        var integrationsToAttach = await NewIntegrationsAsync(inv).ConfigureAwait(false);
        long started = _s.Time.GetTimestamp();
        inv.Line($"Creating {name ?? "a new VM"} using image {request.Image ?? _s.Options.DefaultImage}...");
        await inv.Context.Stdout.FlushAsync(inv.CancellationToken).ConfigureAwait(false);
        var vm = await _s.Vms.CreateAsync(inv.Account.Id, request, inv.CancellationToken).ConfigureAwait(false);
        await AttachNewIntegrationsAsync(inv, vm, integrationsToAttach).ConfigureAwait(false);
        var ssh = _s.Routes.GetSshEndpoint(vm, inv.Account.Id);
        if (!inv.Args.Flag("no-email")) await SendCreationMailAsync(inv, vm, ssh).ConfigureAwait(false);
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject
            {
                ["vm_name"] = vm.Name,
                ["tags"] = Invocation.Array(vm.Tags),
                ["ssh_command"] = SshCommand(ssh),
                ["ssh_dest"] = ssh.Destination,
                ["ssh_port"] = ssh.Port,
                ["https_url"] = HttpsUrl(vm.Name),
                ["proxy_port"] = vm.ProxyPort,
                ["status"] = vm.State.ToWire(),
            });
            return 0;
        }
        if (inv.Context.Interactive)
            inv.Line($"Ready in {_s.Time.GetElapsedTime(started).TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)}s!");
        inv.Line();
        inv.Line(inv.Bold($"App (HTTPS proxy → :{vm.ProxyPort})"));
        inv.Line(HttpsUrl(vm.Name));
        inv.Line();
        inv.Line(inv.Bold("SSH"));
        inv.Line(SshCommand(ssh));
        return 0;
    }

    /// <summary>
    /// The mail exe.dev sends its owner when a VM is made (<c>new --no-email</c> skips it). Only to an address the
    /// account proved, so an account signed up with someone else's address cannot mail them; best effort: a relay
    /// failure is logged and the VM stands.
    /// </summary>
    private async Task SendCreationMailAsync(Invocation inv, VmRecord vm, SshEndpoint ssh)
    {
        if (_s.Email is null) return;
        var account = await _s.Accounts.GetAsync(inv.Account.Id, inv.CancellationToken).ConfigureAwait(false);
        if (account is not { EmailVerified: true }) return;
        string body = $"Your VM {vm.Name} is ready.\n\nApp (HTTPS proxy → :{vm.ProxyPort})\n{HttpsUrl(vm.Name)}\n\nSSH\n{SshCommand(ssh)}\n\n"
            + $"Manage it with: ssh {_s.Options.ControlHost} help\n";
        try
        {
            await _s.Email.SendAsync(account.Email, $"Your VM {vm.Name} is ready", body, inv.CancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _log.LogWarning(e, "Creation e-mail for VM {Vm} failed", vm.Name);
        }
    }

    // ---- rm ----

    private async Task<int> RmAsync(Invocation inv)
    {
        if (inv.Args.Positionals.Count == 0) throw inv.Usage("missing VM name");
        var deleted = new List<string>();
        var failed = new List<string>();
        foreach (var raw in inv.Args.Positionals)
        {
            string name = VmNames.Normalize(raw, _s.Options.VmDomain);
            try
            {
                CheckTokenVm(inv, name);
                inv.Line($"Deleting {name}...");
                await _s.Vms.RemoveAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false);
                deleted.Add(name);
            }
            catch (Exception e) when (e is PlatformException or CommandException)
            {
                failed.Add(name);
                if (!inv.Json) await FailAsync(inv.Context, false, e is PlatformException pe ? pe.UserMessage : e.Message);
            }
        }
        if (inv.Json)
            inv.WriteJson(new JsonObject { ["deleted"] = Invocation.Array(deleted), ["failed"] = Invocation.Array(failed) });
        else if (deleted.Count > 0)
            inv.Line($"{deleted.Count} VM(s) deleted successfully");
        return failed.Count == 0 ? 0 : 1;
    }

    // ---- restart / rename / tag / comment ----

    private async Task<int> RestartAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        inv.MaxArgs(1);
        inv.Line($"Restarting {name}...");
        await inv.Context.Stdout.FlushAsync(inv.CancellationToken).ConfigureAwait(false);
        var vm = await _s.Vms.RestartAsync(inv.Account.Id, name, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(new JsonObject { ["vm_name"] = vm.Name, ["status"] = "restarted" });
        else inv.Line($"VM \"{vm.Name}\" restarted successfully");
        return 0;
    }

    private async Task<int> RenameAsync(Invocation inv)
    {
        // exe.dev takes rename's names literally (no name.domain normalisation).
        string old = inv.Arg(0, "current VM name");
        string @new = inv.Arg(1, "new VM name");
        inv.MaxArgs(2);
        RefuseForVmToken(inv);
        CheckTokenVm(inv, old);
        if (old == @new)
        {
            inv.Line($"{old} is already named {old}");
            return 0;
        }
        var vm = await _s.Vms.RenameAsync(inv.Account.Id, old, @new, inv.CancellationToken).ConfigureAwait(false);
        if (_s.Integrations is { } integrations)
            await integrations.FollowVmRenameAsync(inv.Account, vm.Id, vm.Name, CancellationToken.None).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(new JsonObject { ["old_name"] = old, ["new_name"] = vm.Name, ["status"] = "renamed" });
        else inv.Line($"Renamed {old} to {vm.Name}");
        return 0;
    }

    private async Task<int> TagAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        RefuseForTagScope(inv, "change tags");
        var tags = VmTags.SplitLists(inv.Args.Positionals.Skip(1));
        if (tags.Count == 0) throw inv.Usage("missing tag");
        bool remove = inv.Args.Flag("d");
        var vm = remove
            ? await _s.Vms.UntagAsync(inv.Account.Id, name, tags, inv.CancellationToken).ConfigureAwait(false)
            : await _s.Vms.TagAsync(inv.Account.Id, name, tags, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject { ["vm_name"] = vm.Name, ["tags"] = Invocation.Array(vm.Tags) });
            return 0;
        }
        string list = string.Join(", ", tags.Select(t => $"\"{t}\""));
        string noun = tags.Count == 1 ? "tag" : "tags";
        inv.Line(remove ? $"Removed {noun} {list} from {vm.Name}" : $"Added {noun} {list} to {vm.Name}");
        return 0;
    }

    private async Task<int> CommentAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        // ssh joins its arguments with spaces, so the comment may arrive as several words.
        string text = string.Join(' ', inv.Args.Positionals.Skip(1));
        var vm = await _s.Vms.SetCommentAsync(inv.Account.Id, name, text, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(new JsonObject { ["vm_name"] = vm.Name, ["comment"] = vm.Comment });
        else inv.Line(vm.Comment.Length == 0 ? $"Cleared the comment on {vm.Name}" : $"Set the comment on {vm.Name}");
        return 0;
    }

    // ---- cp / resize ----

    private async Task<int> CpAsync(Invocation inv)
    {
        string source = VmArg(inv, 0);
        string? target = inv.OptionalArg(1) is { } t ? VmNames.Normalize(t, _s.Options.VmDomain) : null;
        inv.MaxArgs(2);
        RefuseForVmToken(inv);
        var request = new VmCopyRequest
        {
            SourceName = source,
            NewName = target,
            // A tag-scoped key's copy keeps the tag: dropping it would make a VM the key itself could no longer see.
            CopyTags = inv.Args.Flag("copy-tags", defaultValue: true) || ScopeTag(inv.Context) is not null,
            Cpus = ParseCpus(inv),
            MemoryBytes = ParseSize(inv, "memory"),
            DiskBytes = ParseSize(inv, "disk"),
        };
        long started = _s.Time.GetTimestamp();
        inv.Line($"Copying {source}{(target is null ? "" : " to " + target)}...");
        await inv.Context.Stdout.FlushAsync(inv.CancellationToken).ConfigureAwait(false);
        var vm = await _s.Vms.CopyAsync(inv.Account.Id, request, inv.CancellationToken).ConfigureAwait(false);
        double elapsed = Math.Round(_s.Time.GetElapsedTime(started).TotalSeconds, 1);
        var ssh = _s.Routes.GetSshEndpoint(vm, inv.Account.Id);
        if (inv.Json)
        {
            inv.WriteJson(new JsonObject
            {
                ["name"] = vm.Name,
                ["state"] = vm.State.ToWire(),
                ["source"] = source,
                ["ssh"] = ssh.Destination,
                ["ssh_command"] = SshCommand(ssh),
                ["https_url"] = HttpsUrl(vm.Name),
                ["tags"] = Invocation.Array(vm.Tags),
                ["elapsed"] = elapsed,
            });
            return 0;
        }
        inv.Line($"Created {vm.Name} from {source} in {elapsed.ToString("0.0", CultureInfo.InvariantCulture)}s");
        inv.Line(HttpsUrl(vm.Name));
        inv.Line(SshCommand(ssh));
        return 0;
    }

    private async Task<int> ResizeAsync(Invocation inv)
    {
        string name = VmArg(inv, 0);
        inv.MaxArgs(1);
        var request = new VmResizeRequest(ParseCpus(inv), ParseSize(inv, "memory"), ParseSize(inv, "disk"));
        if (request.Cpus is null && request.MemoryBytes is null && request.DiskBytes is null)
            throw inv.Usage("give at least one of --cpu, --memory, --disk");
        var r = await _s.Vms.ResizeAsync(inv.Account.Id, name, request, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json)
        {
            var o = new JsonObject
            {
                ["vm_name"] = r.After.Name,
                ["old_memory"] = r.Before.MemoryBytes,
                ["new_memory"] = r.After.MemoryBytes,
                ["old_cpus"] = r.Before.Cpus,
                ["new_cpus"] = r.After.Cpus,
            };
            if (request.DiskBytes is not null)
            {
                o["disk_old_bytes"] = r.Before.DiskBytes;
                o["disk_new_bytes"] = r.After.DiskBytes;
            }
            if (r.Outcome.Note is { } note) o["note"] = note;
            inv.WriteJson(o);
            return 0;
        }
        if (request.MemoryBytes is not null) inv.Line($"Memory: {ByteSize.Format(r.Before.MemoryBytes)} -> {ByteSize.Format(r.After.MemoryBytes)}");
        if (request.Cpus is not null) inv.Line($"CPUs: {r.Before.Cpus.ToString(CultureInfo.InvariantCulture)} -> {r.After.Cpus.ToString(CultureInfo.InvariantCulture)}");
        if (request.DiskBytes is not null) inv.Line($"Disk: {ByteSize.Format(r.Before.DiskBytes)} -> {ByteSize.Format(r.After.DiskBytes)}");
        if (r.Outcome.Note is { } n) inv.Line(n);
        bool pending = (request.Cpus is not null && !r.Outcome.CpuApplied) || (request.MemoryBytes is not null && !r.Outcome.MemoryApplied);
        if (pending) inv.Line($"Restart the VM to apply the change: restart {r.After.Name}");
        return 0;
    }
}
