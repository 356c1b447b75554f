namespace Warren.Platform.Commands;

/// <summary>What a positional argument is, for tab completion.</summary>
public enum ArgKind { None, Vm, Command, Key }

/// <summary>One command or subcommand: its names, flags and help text (no behaviour).</summary>
public sealed class CommandDefinition
{
    public CommandDefinition(string name, string summary, string usage = "", IReadOnlyList<FlagDefinition>? flags = null)
    {
        Name = name;
        Summary = summary;
        Usage = usage;
        Flags = flags ?? Array.Empty<FlagDefinition>();
    }

    public string Name { get; }

    /// <summary>Canonical path, "ssh-key list"; set by the catalog.</summary>
    public string Path { get; internal set; } = "";

    public string Summary { get; }

    /// <summary>The arguments part of the usage line: "VM [NEW]".</summary>
    public string Usage { get; }

    public IReadOnlyList<FlagDefinition> Flags { get; }
    public IReadOnlyList<string> Aliases { get; init; } = Array.Empty<string>();
    public IReadOnlyList<CommandDefinition> Subcommands { get; init; } = Array.Empty<CommandDefinition>();

    /// <summary>Kinds of the positional arguments, in order; the last one repeats.</summary>
    public IReadOnlyList<ArgKind> Args { get; init; } = Array.Empty<ArgKind>();

    /// <summary>Left out of <c>help</c> (still runs and completes).</summary>
    public bool Hidden { get; init; }

    /// <summary>Only meaningful in the interactive shell (exit, quit).</summary>
    public bool InteractiveOnly { get; init; }

    /// <summary>Flags end at the first positional (the rest belongs to a remote command: <c>ssh VM ls -la</c>).</summary>
    public bool StopAtFirstPositional { get; init; }

    /// <summary>Positions (0-based, among the positionals) whose values are secrets, never recorded (a share-link token).</summary>
    public IReadOnlyList<int> SecretArgs { get; init; } = Array.Empty<int>();

    /// <summary>Longer help, printed by <c>help CMD</c>.</summary>
    public string? Details { get; init; }

    public bool HasSubcommands => Subcommands.Count > 0;

    public CommandDefinition? FindSubcommand(string name)
        => Subcommands.FirstOrDefault(s => s.Name == name || s.Aliases.Contains(name));
}

/// <summary>
/// Warren's command set with exe.dev's names, flags and arguments.
/// Behaviour lives in <see cref="CommandDispatcher"/>.
/// </summary>
public static partial class CommandCatalog
{
    private static FlagDefinition V(string name, string help, string valueName = "VALUE", bool hidden = false) => new(name, FlagKind.Value, help, valueName, hidden);
    /// <summary>A value flag whose value is a secret, or may hold one (<see cref="FlagDefinition.Secret"/>).</summary>
    private static FlagDefinition S(string name, string help, string valueName, FlagKind kind = FlagKind.Value) => new(name, kind, help, valueName, Secret: true);
    private static FlagDefinition B(string name, string help, bool hidden = false) => new(name, FlagKind.Bool, help, null, hidden);
    private static FlagDefinition R(string name, string help, string valueName = "VALUE") => new(name, FlagKind.Repeated, help, valueName);

    public static IReadOnlyList<CommandDefinition> Commands { get; } = Build();

    private static IReadOnlyList<CommandDefinition> Build()
    {
        var list = new List<CommandDefinition>
        {
            new("help", "Show help for commands", "[COMMAND]", [B("verbose", "also show hidden flags and each subcommand's flags")]) { Args = [ArgKind.Command] },
            new("ls", "List your VMs", "[PATTERN]", [B("l", "long format: resources, port, creation time"), B("a", "also list VMs shared with you")]) { Args = [ArgKind.Vm] },
            new("new", "Create a new VM", "", [
                V("name", "VM name (generated when omitted)", "NAME"),
                V("image", "container image to run", "IMAGE"),
                S("registry-auth", "credentials for a private registry", "USER:TOKEN"),
                R("tag", "add tags: repeatable, or a comma list (--tag=a,b)", "TAG"),
                S("env", "environment variable (repeatable)", "KEY=VALUE", FlagKind.Repeated),
                V("cpu", "number of CPUs", "N"),
                V("memory", "memory size, e.g. 8GB", "SIZE"),
                V("disk", "disk size, e.g. 25GB", "SIZE"),
                V("command", "how the image's command runs: auto, none, or a custom command", "auto|none|CMD"),
                V("comment", "a comment shown by ls", "TEXT"),
                B("no-email", "do not mail the owner that the VM was created"),
                S("setup-script", "script run once after creation (a file path is not read; pass the text, or /dev/stdin)", "SCRIPT"),
                R("integration", "attach integrations at creation: repeatable, or a comma list", "NAME"),
            ]),
            new("rm", "Delete VMs", "VM...") { Args = [ArgKind.Vm], Aliases = ["delete"] },
            new("restart", "Restart a VM", "VM") { Args = [ArgKind.Vm] },
            new("rename", "Rename a VM", "OLD NEW") { Args = [ArgKind.Vm, ArgKind.None] },
            new("tag", "Add or remove tags on a VM (TAG may be a comma list)", "VM TAG...", [B("d", "remove the tags instead of adding them")]) { Args = [ArgKind.Vm, ArgKind.None] },
            new("comment", "Set a VM's comment (empty to clear)", "VM [TEXT...]") { Args = [ArgKind.Vm, ArgKind.None] },
            new("cp", "Copy a VM", "SRC [NEW]", [
                B("copy-tags", "copy the source VM's tags (default true)"),
                V("cpu", "number of CPUs", "N"),
                V("memory", "memory size", "SIZE"),
                V("disk", "disk size", "SIZE"),
            ]) { Args = [ArgKind.Vm, ArgKind.None] },
            new("resize", "Change a VM's CPUs, memory or disk (disk only grows)", "VM", [
                V("cpu", "number of CPUs", "N"),
                V("memory", "memory size", "SIZE"),
                V("disk", "disk size", "SIZE"),
            ]) { Args = [ArgKind.Vm] },
            new("stat", "Show a VM's resource usage", "VM", [V("range", "time range: 1h, 24h, 7d or 30d", "RANGE")]) { Args = [ArgKind.Vm] },
            new("whoami", "Show your account and SSH keys"),
            new("ssh-key", "Manage SSH keys and API tokens")
            {
                Subcommands =
                [
                    new("list", "List your SSH keys"),
                    new("add", "Add an SSH public key (argument or stdin)", "[PUBLIC-KEY]", [
                        V("name", "name for the key", "NAME"),
                        V("cmds", "limit the key to these comma-separated commands (ssh: SSH into your VMs)", "CMDS"),
                        V("vm", "limit the key to SSH into this VM only", "VM"),
                        V("tag", "scope the key to VMs with this tag", "TAG"),
                    ]),
                    new("remove", "Remove an SSH key or API token", "NAME|FINGERPRINT|PUBLIC-KEY") { Args = [ArgKind.Key] },
                    new("rename", "Rename an SSH key", "OLD NEW") { Args = [ArgKind.Key, ArgKind.None] },
                    new("generate-api-key", "Create an API token (exe1)", "", [
                        V("label", "name for the token", "LABEL"),
                        V("vm", "make a token for one VM's HTTPS proxy", "VM"),
                        V("cmds", "comma-separated commands the token may run", "CMDS"),
                        V("exp", "expiry: 30d, 1y, 12h, … or never", "DURATION"),
                        V("tag", "limit the token to VMs with this tag (the VMs it creates get it)", "TAG"),
                    ]),
                ],
            },
            new("defaults", "Account defaults (dev.exe new.setup-script: the setup script of every new VM)")
            {
                Subcommands =
                [
                    new("write", "Set a default (the value as an argument, or on stdin)", "DOMAIN KEY [VALUE]"),
                    new("read", "Show defaults", "[DOMAIN [KEY]]"),
                    new("delete", "Remove a default", "DOMAIN KEY"),
                ],
            },
            new("share", "Share a VM's website")
            {
                Subcommands =
                [
                    new("show", "Show who can reach a VM", "VM") { Args = [ArgKind.Vm] },
                    new("port", "Show or set the port the HTTPS proxy uses", "VM [PORT]") { Args = [ArgKind.Vm, ArgKind.None] },
                    new("set-public", "Make the VM's site public", "VM") { Args = [ArgKind.Vm] },
                    new("set-private", "Make the VM's site private", "VM") { Args = [ArgKind.Vm] },
                    new("add", "Share with a person by email", "VM EMAIL", [
                        B("root", "also grant SSH access"),
                        V("message", "note included in the invitation", "TEXT"),
                    ]) { Args = [ArgKind.Vm, ArgKind.None] },
                    new("remove", "Stop sharing with a person", "VM EMAIL") { Args = [ArgKind.Vm, ArgKind.None] },
                    new("add-link", "Create a share link", "VM") { Args = [ArgKind.Vm], Aliases = ["add-share-link"] },
                    new("remove-link", "Remove a share link", "VM TOKEN") { Args = [ArgKind.Vm, ArgKind.None], Aliases = ["remove-share-link"], SecretArgs = [1] },
                    new("receive-email", "Show or switch mail delivery to the VM", "VM [on|off]") { Args = [ArgKind.Vm, ArgKind.None], Details = "With on, mail to anything@VM.<vm-domain> is written to ~/Maildir/new/ of the VM's login user (Maildir format, a Delivered-To: header first). The VM must be running. Receiving stops by itself at 1000 unread files in ~/Maildir/new/." },
                ],
            },
            IntegrationsCommand(),
            new("browser", "Print a one-time link that logs your browser in"),
            new("ssh", "Open a shell or run a command in a VM", "VM [COMMAND...]") { Args = [ArgKind.Vm, ArgKind.None], StopAtFirstPositional = true },
            new("exe0-to-exe1", "Convert an exe0 token into a short exe1 token", "TOKEN", [V("vm", "the VM the token is for", "VM")]) { Hidden = true, SecretArgs = [0] },
            new("exit", "Leave the shell") { InteractiveOnly = true },
            new("quit", "Leave the shell") { InteractiveOnly = true, Hidden = true },
        };
        foreach (var c in list)
        {
            c.Path = c.Name;
            foreach (var s in c.Subcommands) s.Path = c.Name + " " + s.Name;
        }
        return list;
    }

    public static CommandDefinition? Find(string name)
        => Commands.FirstOrDefault(c => c.Name == name || c.Aliases.Contains(name));

    /// <summary>
    /// One-word names exe.dev keeps for a subcommand (<c>delete-ssh-key</c> is <c>ssh-key remove</c>). They resolve to
    /// the subcommand itself, so token and key permissions see its canonical path; help does not list them.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> SubcommandShortcuts = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["delete-ssh-key"] = "ssh-key remove",
    };

    /// <summary>Every canonical path: "ls", "ssh-key", "ssh-key list", …</summary>
    public static IEnumerable<string> AllPaths()
    {
        foreach (var c in Commands)
        {
            yield return c.Path;
            foreach (var s in c.Subcommands) yield return s.Path;
        }
    }

    /// <summary>The definition for a canonical path, or null.</summary>
    public static CommandDefinition? FindPath(string path)
    {
        foreach (var c in Commands)
        {
            if (c.Path == path) return c;
            foreach (var s in c.Subcommands) if (s.Path == path) return s;
        }
        return null;
    }

    /// <summary>
    /// Finds the command an argv names, skipping flags (and the values of value flags written
    /// without '='). <paramref name="rest"/> is argv without the command words.
    /// </summary>
    public static CommandDefinition? Resolve(IReadOnlyList<string> argv, out List<string> rest, out string? unknownWord, out CommandDefinition? parent)
        => Resolve(argv, out rest, null, out unknownWord, out parent);

    /// <summary>As above; <paramref name="restIndexes"/>, when given, receives the argv index of each element of <paramref name="rest"/>.</summary>
    public static CommandDefinition? Resolve(IReadOnlyList<string> argv, out List<string> rest, List<int>? restIndexes,
        out string? unknownWord, out CommandDefinition? parent)
    {
        var kept = new List<string>();
        rest = kept;
        void Keep(int index)
        {
            kept.Add(argv[index]);
            restIndexes?.Add(index);
        }
        unknownWord = null;
        parent = null;
        CommandDefinition? current = null;
        int i = 0;
        for (; i < argv.Count; i++)
        {
            string a = argv[i];
            if (a == "--") { Keep(i); i++; break; }
            if (a.Length > 1 && a[0] == '-')
            {
                Keep(i);
                // Top-level and group commands take only global (boolean) flags, so skip just this token;
                // a leaf's value flag written before the leaf's name takes the next word.
                if (current is not null && !a.Contains('='))
                {
                    string name = a.TrimStart('-');
                    var def = ArgParser.Find(current.Flags, name);
                    if (def is not null && def.Kind != FlagKind.Bool && i + 1 < argv.Count) Keep(++i);
                }
                continue;
            }
            if (current is null)
            {
                if (SubcommandShortcuts.TryGetValue(a, out var target))
                {
                    current = FindPath(target);
                    i++;
                    break;
                }
                current = Find(a);
                if (current is null) { unknownWord = a; i++; break; }
                if (!current.HasSubcommands) { i++; break; }
                continue;
            }
            // current is a group
            var sub = current.FindSubcommand(a);
            if (sub is null) { unknownWord = a; parent = current; i++; break; }
            parent = current;
            current = sub;
            i++;
            break;
        }
        for (; i < argv.Count; i++) Keep(i);
        if (unknownWord is not null) return null;
        return current;
    }
}
