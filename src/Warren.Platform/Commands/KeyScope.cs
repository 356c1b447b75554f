using Warren.Platform.Accounts;
using Warren.Platform.Vms;

namespace Warren.Platform.Commands;

/// <summary>
/// What the key that authenticated a session may reach (<c>ssh-key add --cmds=a,b --vm=NAME</c>). One place for
/// the rule, used by the dispatcher (control-plane commands), the SSH front door (at authentication and again
/// when a connection is routed) and <c>ssh VM</c> through the control host.
/// </summary>
/// <remarks>
/// A key without permissions reaches everything its account can. A scoped SSH key runs only the command paths in
/// its <see cref="ApiKeyPermissions.Cmds"/>; SSH into a VM counts as the command <c>ssh VM</c>, so
/// <c>--cmds=ssh</c> allows every VM of the account and <c>"ssh web"</c> only web. A key with a VM
/// (<c>--vm=web</c>) is stored with the commands <c>["ssh web"]</c> and is refused on the control host altogether,
/// as OpenSSH refuses a key whose authorized_keys options do not match (sshd(8) AUTHORIZED_KEYS FILE FORMAT).
/// API keys (made by the server, which kept no private key) never log in over SSH. A key with a tag
/// (<c>ssh-key add --tag=T</c>, exe.dev's docs: ssh-key) reaches only its account's VMs tagged T, over SSH as through
/// the commands (the dispatcher's tag scope); without <c>--cmds</c> it may run every command within that scope.
/// </remarks>
public static class KeyScope
{
    /// <summary>The error a scoped key gets for a command outside its list.</summary>
    public const string NotAllowed = "command not allowed by SSH key permissions";

    /// <summary>Whether a session authenticated by <paramref name="key"/> may use the control host at all.</summary>
    public static bool AllowsControlPlane(AccountKey? key)
        => key?.Permissions is not { } p || (p.IsSshKey && p.Vm is null);

    /// <summary>
    /// Whether <paramref name="key"/> may open SSH sessions in the VM named <paramref name="vmName"/>, as far as the
    /// name tells: a tag-scoped key also needs <see cref="AllowsVmSsh(AccountKey?, VmRecord)"/> once the VM is known.
    /// </summary>
    public static bool AllowsVmSsh(AccountKey? key, string vmName)
    {
        if (key?.Permissions is not { } p) return true;
        if (!p.IsSshKey) return false;
        if (p.Vm is not null && p.Vm != vmName) return false;
        if (p.Cmds is null) return p.Tag is not null;
        return CommandDispatcher.IsAllowed(p.Cmds, ["ssh", vmName]);
    }

    /// <summary>Whether <paramref name="key"/> may open SSH sessions in <paramref name="vm"/>: its name, and a tag key's tag.</summary>
    public static bool AllowsVmSsh(AccountKey? key, VmRecord vm)
    {
        if (!AllowsVmSsh(key, vm.Name)) return false;
        // A tag key reaches its own account's VMs with the tag; not another account's VM shared with the account.
        return key?.Permissions?.Tag is not { } tag || (vm.AccountId == key.AccountId && vm.Tags.Contains(tag));
    }

    /// <summary>
    /// Whether a token signed by <paramref name="key"/> may stand for its account at the HTTPS proxy of the VM named
    /// <paramref name="vmName"/> (<paramref name="vm"/>, null when there is none): the key's VM or tag scope holds there
    /// too (exe.dev: "the key's database row can add tag and vm scope"), since the key's holder signs any namespace.
    /// </summary>
    public static bool AllowsVmToken(AccountKey key, string vmName, VmRecord? vm)
    {
        if (key.Permissions is not { } p) return true;
        if (p.Vm is not null && p.Vm != vmName) return false;
        return p.Tag is not { } tag || (vm is not null && vm.AccountId == key.AccountId && vm.Tags.Contains(tag));
    }

    /// <summary>Whether <paramref name="key"/> may run <paramref name="argv"/> on the control host.</summary>
    public static bool AllowsCommand(AccountKey? key, IReadOnlyList<string> argv)
    {
        if (key?.Permissions is not { } p) return true;
        // An API key's limits are applied to the token it signed (CommandContext.AllowedCommands).
        if (!p.IsSshKey) return true;
        if (p.Vm is not null) return false;
        return p.Cmds is null ? p.Tag is not null : CommandDispatcher.IsAllowed(p.Cmds, argv);
    }
}
