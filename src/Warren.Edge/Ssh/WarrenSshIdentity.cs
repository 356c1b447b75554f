using Warren.Platform.Accounts;
using Warren.Platform.Vms;
using Warren.Ssh.Server;

namespace Warren.Edge.Ssh;

/// <summary>
/// Who an SSH connection is, decided once at authentication and carried on the connection
/// (<see cref="SshServerConnection.Permissions"/>): the account and its key, the key's scope
/// (<see cref="AccountKey.Permissions"/>, read through <c>KeyScope</c>), whether the connection came to the
/// control address, and for a slot address the VM it names when authentication had to resolve it (a scoped key).
/// </summary>
public sealed class WarrenSshIdentity : SshPermissions
{
    private WarrenSshIdentity(Account? account, AccountKey? key, bool isControl, VmRecord? vm)
    {
        Account = account;
        Key = key;
        IsControl = isControl;
        Vm = vm;
    }

    /// <summary>The account holding the key; null for an unregistered key on the control address (sign-up).</summary>
    public Account? Account { get; }

    /// <summary>The registered key with its scope; null for an unregistered key.</summary>
    public AccountKey? Key { get; }

    /// <summary>True when the connection arrived on the control address.</summary>
    public bool IsControl { get; }

    /// <summary>For a slot address with a scoped key: the VM the connection names, resolved to check the scope.</summary>
    public VmRecord? Vm { get; }

    /// <summary>A registered key on the control address.</summary>
    public static WarrenSshIdentity Control(Account account, AccountKey key) => new(account, key, isControl: true, vm: null);

    /// <summary>An unregistered key on the control address: the sign-up dialogue makes it an account's key.</summary>
    public static WarrenSshIdentity Signup() => new(null, null, isControl: true, vm: null);

    /// <summary>A registered key on a slot address (<paramref name="vm"/> when resolved during authentication).</summary>
    public static WarrenSshIdentity Slot(Account account, AccountKey key, VmRecord? vm) => new(account, key, isControl: false, vm);
}
