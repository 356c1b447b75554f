using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Commands;
using Warren.Platform.Vms;

namespace Warren.Platform.Interactive;

/// <summary>
/// Tab completion for the interactive shell: command names, subcommands, flags, and VM names where a
/// command takes a VM (from <see cref="CommandCatalog"/> argument kinds and the in-memory VM index).
/// </summary>
public sealed class CommandCompleter
{
    private readonly Func<string, IEnumerable<string>> _vmNames;

    public CommandCompleter(PlatformIndex index)
        : this(accountId => index.SnapshotVms().Where(v => v.AccountId == accountId && v.State != VmState.Deleting).Select(v => v.Name))
    {
    }

    /// <summary>For tests: VM names per account id.</summary>
    public CommandCompleter(Func<string, IEnumerable<string>> vmNamesForAccount) => _vmNames = vmNamesForAccount;

    /// <summary>Candidates for the word that ends at <paramref name="cursor"/>, sorted; null when there are none.</summary>
    public Completion? Complete(Account? account, string line, int cursor)
    {
        cursor = Math.Clamp(cursor, 0, line.Length);
        string before = line[..cursor];
        int start = before.LastIndexOf(' ') + 1;
        string word = before[start..];
        var previous = before[..start].Split(' ', StringSplitOptions.RemoveEmptyEntries);

        IEnumerable<string> candidates = CandidatesFor(account, previous, word, ref start);
        string typed = before[start..];
        var list = candidates.Where(c => c.StartsWith(typed, StringComparison.Ordinal)).Distinct().Order(StringComparer.Ordinal).ToList();
        return list.Count == 0 ? null : new Completion(start, list);
    }

    private IEnumerable<string> CandidatesFor(Account? account, string[] previous, string word, ref int start)
    {
        // Words naming the command (flags and their values skipped).
        var words = new List<string>();
        string? pendingValueFlag = null;
        CommandDefinition? def = null;
        foreach (var p in previous)
        {
            if (pendingValueFlag is not null) { pendingValueFlag = null; continue; }
            if (p.Length > 1 && p[0] == '-')
            {
                if (def is not null && !p.Contains('=') && ArgParser.Find(def.Flags, p.TrimStart('-')) is { Kind: not FlagKind.Bool } f) pendingValueFlag = f.Name;
                continue;
            }
            words.Add(p);
            def = words.Count == 1 ? CommandCatalog.Find(p) : def?.FindSubcommand(p) ?? def;
        }

        if (pendingValueFlag is not null)
            return pendingValueFlag == "vm" ? VmNames(account) : [];

        if (words.Count == 0)
            return CommandCatalog.Commands.Where(c => !c.Hidden).Select(c => c.Name);

        var top = CommandCatalog.Find(words[0]);
        if (top is null) return [];
        if (top.HasSubcommands && words.Count == 1)
            return word.StartsWith('-') ? ["--json"] : top.Subcommands.Select(s => s.Name);
        var leaf = top.HasSubcommands ? top.FindSubcommand(words[1]) : top;
        if (leaf is null) return [];

        if (word.StartsWith('-'))
        {
            int eq = word.IndexOf('=');
            if (eq > 0)
            {
                // --vm=we<TAB>: complete the value after '='.
                string flag = word[..eq].TrimStart('-');
                start += eq + 1;
                return flag == "vm" ? VmNames(account) : [];
            }
            return leaf.Flags.Where(f => !f.Hidden).Append(ArgParser.JsonFlag)
                .Select(f => (f.Name.Length == 1 ? "-" : "--") + f.Name + (f.Kind == FlagKind.Bool ? "" : "="));
        }

        int position = words.Count - (top.HasSubcommands ? 2 : 1);
        if (leaf.Args.Count == 0) return [];
        var kind = leaf.Args[Math.Min(position, leaf.Args.Count - 1)];
        return kind switch
        {
            ArgKind.Vm => VmNames(account),
            ArgKind.Command => CommandCatalog.Commands.Where(c => !c.Hidden && !c.InteractiveOnly).Select(c => c.Name),
            _ => [],
        };
    }

    private IEnumerable<string> VmNames(Account? account) => account is null ? [] : _vmNames(account.Id);
}
