using System.Net;
using System.Text;
using Microsoft.Extensions.Logging;
using Warren.Edge.Limits;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Commands;
using Warren.Platform.Runtime;
using Warren.Platform.Vms;
using Warren.Ssh.Auth;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;

namespace Warren.Edge.Ssh;

/// <summary>
/// The platform's side of every SSH connection. The local address the connection arrived on
/// decides: the control address leads to the control plane; a slot address leads to the VM
/// that {account of the verified key, slot} names — allocation guarantees at most one.
/// </summary>
public sealed partial class WarrenSshApplication(
    AccountService accounts,
    SshRouteTable routes,
    PlatformIndex index,
    IVmRuntime runtime,
    PlatformOptions options,
    ControlPlaneSession controlPlane,
    VmSessionRelay relay,
    LoginUserResolver loginUsers,
    KeyedTokenBucket failedAuthLimiter,
    TimeProvider time,
    ILogger<WarrenSshApplication> logger) : ISshServerApplication
{
    /// <summary>How long a source that used up its failed-authentication budget is refused outright.</summary>
    private static readonly TimeSpan FailedAuthPenalty = TimeSpan.FromMinutes(1);

    /// <summary>Sources tracked as blocked before the table is swept (bounds memory under a wide attack).</summary>
    private const int MaxBlockedSources = 100_000;

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, DateTimeOffset> _blockedUntil = new();

    /// <summary>
    /// Turns the key into the connection's identity: one read (key and account together) per connection, since the
    /// server asks once for a query and its signed request. Null refuses the key.
    /// </summary>
    public async ValueTask<SshPermissions?> AuthorizePublicKeyAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken ct)
    {
        var source = SourceKey(context.RemoteEndPoint);
        var now = time.GetUtcNow();
        if (_blockedUntil.TryGetValue(source, out var until))
        {
            if (now < until) return null; // even a good key: the source is in its penalty period
            _blockedUntil.TryRemove(source, out _);
        }
        var found = await accounts.FindKeyWithAccountAsync(key.Fingerprint, ct).ConfigureAwait(false);
        WarrenSshIdentity? identity;
        if (IsControl(context.LocalEndPoint))
        {
            // Registered keys enter unless limited to one VM; an unregistered key enters only if it is the
            // first key the client offered: that key gets the sign-up dialogue and becomes the account's key.
            identity = found is { } f
                ? (KeyScope.AllowsControlPlane(f.Key) ? WarrenSshIdentity.Control(f.Account, f.Key) : null)
                : (context.OfferedKeys.Count > 0 && context.OfferedKeys[0].Equals(key) ? WarrenSshIdentity.Signup() : null);
        }
        else if (found is { } f)
        {
            // Slot address: only keys of some account. Which VM (if any) is decided after auth,
            // so an account without a VM here gets a message instead of a bare "Permission denied";
            // a scoped key, though, is refused here unless it may reach the VM this connection names,
            // so the client can offer its next key (as sshd does for a key whose options do not match).
            if (f.Key.Permissions is null) identity = WarrenSshIdentity.Slot(f.Account, f.Key, vm: null);
            else
            {
                var vm = await ResolveVmAsync(f.Account.Id, user, context.LocalEndPoint, ct).ConfigureAwait(false);
                identity = vm is not null && KeyScope.AllowsVmSsh(f.Key, vm) ? WarrenSshIdentity.Slot(f.Account, f.Key, vm) : null;
            }
        }
        else identity = null;
        if (identity is null && !failedAuthLimiter.TryAcquire(source))
        {
            if (_blockedUntil.Count >= MaxBlockedSources)
                foreach (var (k, v) in _blockedUntil) if (v <= now) _blockedUntil.TryRemove(k, out _);
            if (_blockedUntil.Count < MaxBlockedSources) _blockedUntil[source] = now + FailedAuthPenalty;
            logger.LogWarning("failed-auth rate limit reached for {Source}; refusing it for {Penalty}", source, FailedAuthPenalty);
        }
        return identity;
    }

    /// <summary>What a client that offered no key at all is told (exe.dev's wording, with this host's name).</summary>
    internal static string NoKeyMessage(string controlHost)
        => $"SSH keys are required to access {controlHost}. Please create a key with 'ssh-keygen -t ed25519' and try again.";

    /// <summary>
    /// keyboard-interactive (RFC 4256) is offered only to say this: a client with no key ends up here after
    /// publickey, and an info request with no prompts shows its instruction (OpenSSH prints it) before the
    /// client gives up. It never authenticates anyone. A client that did offer keys is refused silently: its keys
    /// were judged already.
    /// </summary>
    public async ValueTask<SshPermissions?> AuthenticateKeyboardInteractiveAsync(SshAuthContext context, string user, IKeyboardInteractivePrompter prompter, CancellationToken ct)
    {
        if (context.OfferedKeys.Count == 0)
            await prompter.PromptAsync("", NoKeyMessage(options.ControlHost) + "\n", [], ct).ConfigureAwait(false);
        return null;
    }

    private async Task<VmRecord?> ResolveVmAsync(string accountId, string user, EndPoint local, CancellationToken ct)
        => SshRouteTable.TryParseVmUser(user, out var vmName)
            ? await routes.ResolveByNameAsync(accountId, vmName, ct).ConfigureAwait(false)
            : await routes.ResolveAsync(accountId, LocalAddress(local), ct).ConfigureAwait(false);

    /// <summary>
    /// After authentication: the connection's own handler. The identity came with the connection, so nothing is
    /// looked up again; a slot connection's VM is resolved here (in memory, or one share check for <c>vm+NAME</c>
    /// of another account's VM) unless authentication already did for a scoped key.
    /// </summary>
    public async ValueTask<ISshConnectionHandler> OpenConnectionAsync(SshServerConnection connection)
    {
        var identity = connection.Permissions as WarrenSshIdentity;
        if (identity?.Key is { } key) _ = accounts.TouchKeyAsync(key.Fingerprint, CancellationToken.None);
        VmRecord? vm = null;
        if (identity is { IsControl: false, Account: { } account })
            vm = identity.Vm ?? await ResolveVmAsync(account.Id, connection.User, connection.LocalEndPoint, connection.Closing).ConfigureAwait(false);
        return new WarrenSshConnection(this, connection, identity, vm);
    }

    // What the per-connection handler uses (primary-constructor services are not visible to nested types).
    private PlatformIndex Index => index;
    private IVmRuntime Runtime => runtime;
    private PlatformOptions Options => options;
    private ControlPlaneSession ControlPlane => controlPlane;
    private VmSessionRelay Relay => relay;
    private LoginUserResolver LoginUsers => loginUsers;
    private ILogger Logger => logger;

    private async Task<string> NoVmHereMessageAsync(Account? account, EndPoint local, CancellationToken ct)
    {
        var sb = new StringBuilder();
        routes.TryGetSlot(LocalAddress(local), out var slot);
        sb.Append("warren: you have no VM on ").Append(slot is null ? LocalAddress(local).ToString() : $"{slot.Name}.{options.VmDomain}").Append(".\n");
        if (account is not null)
        {
            var vms = index.SnapshotVms().Where(v => v.AccountId == account.Id).OrderBy(v => v.Name, StringComparer.Ordinal).ToList();
            if (vms.Count == 0) sb.Append($"You have no VMs. Create one with: ssh {options.ControlHost} new\n");
            else
            {
                sb.Append("Your VMs:\n");
                foreach (var v in vms) sb.Append("  ssh ").Append(routes.SshDestination(v, account.Id)).Append('\n');
            }
        }
        sb.Append($"Control plane: ssh {options.ControlHost}\n");
        return sb.ToString();
    }

    private bool IsControl(EndPoint local) => routes.IsControlAddress(LocalAddress(local));

    internal static IPAddress LocalAddress(EndPoint ep) => ep is IPEndPoint ip ? (ip.Address.IsIPv4MappedToIPv6 ? ip.Address.MapToIPv4() : ip.Address) : IPAddress.None;

    /// <summary>The failed-authentication budget is per <see cref="SourceNetwork"/> (an IPv6 client holds a whole /64).</summary>
    private static string SourceKey(EndPoint ep) => SourceNetwork.Of(ep).ToString();
}
