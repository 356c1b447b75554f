namespace Warren.Platform.Commands;

public static partial class CommandCatalog
{
    /// <summary><c>integrations</c>: exe.dev's docs (integrations, http-proxy, vm-to-vm, reflection).</summary>
    private static CommandDefinition IntegrationsCommand() => new("integrations", "Manage integrations (secrets injected outside your VMs)")
    {
        Aliases = ["integration"],
        Subcommands =
        [
            new("list", "List your integrations (secrets shown as ***)"),
            new("add", "Add an integration: http-proxy, github or reflection", "TYPE", [
                V("name", "integration name (a DNS label; VMs use NAME.int.<vm-domain>)", "NAME"),
                S("target", "http-proxy: https://[user:password@]HOST[:PORT][/path]; with --peer, one of your VMs", "URL|VM"),
                S("header", "http-proxy: header to inject (repeatable)", "NAME:VALUE", FlagKind.Repeated),
                S("bearer", "http-proxy: inject Authorization: Bearer TOKEN", "TOKEN"),
                B("peer", "http-proxy: VM-to-VM; --target is another of your VMs, its key is injected by Warren"),
                V("fields", "reflection: comma list of email, integrations, tags, comment, default_port", "FIELDS"),
                V("repository", "github: the one repository it reaches", "OWNER/REPO"),
                R("attach", "attach at once: vm:NAME, tag:TAG or auto:all (repeatable)", "SPEC"),
            ]) { Details = "Examples:\n  integrations add http-proxy --name api --target https://api.example.com --bearer TOKEN --attach vm:my-vm\n  integrations add http-proxy --peer --name backend --target my-other-vm --attach tag:web\n  integrations add reflection --name meta --fields email,tags\n  integrations add github --name repo --repository owner/repo --attach vm:my-vm" },
            new("remove", "Remove an integration", "NAME"),
            new("rename", "Rename an integration", "OLD NEW"),
            new("attach", "Attach an integration to vm:NAME, tag:TAG or auto:all", "NAME SPEC") { Args = [ArgKind.None, ArgKind.None] },
            new("detach", "Detach an integration (access ends at once)", "NAME SPEC") { Args = [ArgKind.None, ArgKind.None] },
            new("setup", "Set up a provider for integrations: github", "PROVIDER", [
                S("token", "github: a fine-grained personal access token (stored sealed, never shown)", "TOKEN"),
                B("remove", "forget the provider's credential"),
            ]) { Details = "Example:\n  integrations setup github --token github_pat_...\nVMs then use git and the GitHub API through NAME.int.<vm-domain>; the token never reaches a VM." },
        ],
    };
}
