using System.Text.Json.Nodes;

namespace Warren.Platform.Commands;

/// <summary>The settings <c>defaults write/read/delete</c> knows, in exe.dev's domain.</summary>
public static class AccountDefaults
{
    public const string Domain = "dev.exe";

    /// <summary>The setup script <c>new</c> uses when it is given no <c>--setup-script</c>; it runs once at first boot.</summary>
    public const string NewSetupScript = "new.setup-script";

    public static readonly IReadOnlyList<string> Keys = [NewSetupScript];
}

/// <summary>defaults write / read / delete (per-account settings, macOS defaults(1)-shaped as exe.dev's are).</summary>
public sealed partial class CommandDispatcher
{
    private void RegisterDefaultsHandlers()
    {
        _handlers["defaults write"] = DefaultsWriteAsync;
        _handlers["defaults read"] = DefaultsReadAsync;
        _handlers["defaults delete"] = DefaultsDeleteAsync;
    }

    /// <summary>DOMAIN KEY from positionals 0 and 1; only known settings, so a typo is an error rather than a silent no-op.</summary>
    private static (string Domain, string Key) DefaultName(Invocation inv)
    {
        string domain = inv.Arg(0, "domain (dev.exe)");
        string key = inv.Arg(1, "key");
        if (domain != AccountDefaults.Domain)
            throw new CommandException($"unknown defaults domain \"{domain}\"; use {AccountDefaults.Domain}");
        if (!AccountDefaults.Keys.Contains(key))
            throw new CommandException($"unknown default \"{key}\"; known: {string.Join(", ", AccountDefaults.Keys)}");
        return (domain, key);
    }

    private async Task<int> DefaultsWriteAsync(Invocation inv)
    {
        var (domain, key) = DefaultName(inv);
        inv.MaxArgs(3);
        string? value = inv.OptionalArg(2);
        if (value is null)
        {
            if (inv.Context.Interactive) throw inv.Usage("missing value");
            value = await ReadBoundedAsync(inv.Context.Stdin, MaxSetupScriptChars, inv.CancellationToken).ConfigureAwait(false);
        }
        if (System.Text.Encoding.UTF8.GetByteCount(value) > Vms.VmService.MaxSetupScriptBytes)
            throw new CommandException($"value too large (more than {Vms.VmService.MaxSetupScriptBytes} bytes)");
        if (value.Length == 0) throw new CommandException("empty value; to remove the default use: defaults delete " + domain + " " + key);
        await _s.Accounts.SetDefaultAsync(inv.Account.Id, domain, key, value, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json) inv.WriteJson(new JsonObject { ["domain"] = domain, ["key"] = key, ["status"] = "written" });
        else inv.Line($"Set {domain} {key}");
        return 0;
    }

    private async Task<int> DefaultsReadAsync(Invocation inv)
    {
        inv.MaxArgs(2);
        if (inv.Args.Positionals.Count == 2)
        {
            var (domain, key) = DefaultName(inv);
            var value = await _s.Accounts.GetDefaultAsync(inv.Account.Id, domain, key, inv.CancellationToken).ConfigureAwait(false)
                ?? throw new CommandException($"the default {domain} {key} is not set");
            if (inv.Json) inv.WriteJson(new JsonObject { ["domain"] = domain, ["key"] = key, ["value"] = value });
            else inv.Context.Stdout.Write(value.EndsWith('\n') ? value : value + "\n");
            return 0;
        }
        if (inv.OptionalArg(0) is { } d && d != AccountDefaults.Domain)
            throw new CommandException($"unknown defaults domain \"{d}\"; use {AccountDefaults.Domain}");
        var all = await _s.Accounts.ListDefaultsAsync(inv.Account.Id, inv.CancellationToken).ConfigureAwait(false);
        if (inv.Json)
        {
            var values = new JsonObject();
            foreach (var (_, key, value) in all) values[key] = value;
            inv.WriteJson(new JsonObject { [AccountDefaults.Domain] = values });
            return 0;
        }
        if (all.Count == 0) { inv.Line("No defaults set."); return 0; }
        foreach (var (domain, key, value) in all) inv.Line($"{domain} {key} = {value.TrimEnd('\n').Replace("\n", "\n    ")}");
        return 0;
    }

    private async Task<int> DefaultsDeleteAsync(Invocation inv)
    {
        var (domain, key) = DefaultName(inv);
        inv.MaxArgs(2);
        bool existed = await _s.Accounts.DeleteDefaultAsync(inv.Account.Id, domain, key, inv.CancellationToken).ConfigureAwait(false);
        if (!existed) throw new CommandException($"the default {domain} {key} is not set");
        if (inv.Json) inv.WriteJson(new JsonObject { ["domain"] = domain, ["key"] = key, ["status"] = "deleted" });
        else inv.Line($"Deleted {domain} {key}");
        return 0;
    }
}
