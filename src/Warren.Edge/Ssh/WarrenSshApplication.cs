using System.Net;
using System.Text;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Commands;
using Warren.Platform.Runtime;
using Warren.Platform.Vms;
using Warren.Ssh.Auth;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;

namespace Warren.Edge.Ssh;

/// <summary>
/// The platform's side of every SSH connection. The local address the connection arrived on
/// decides: the control address leads to the control plane; a slot address leads to the VM
/// that {account of the verified key, slot} names — allocation guarantees at most one.
/// </summary>
public sealed class WarrenSshApplication(
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

    public async ValueTask<bool> IsPublicKeyAcceptableAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken ct)
    {
        var source = SourceKey(context.RemoteEndPoint);
        var now = time.GetUtcNow();
        if (_blockedUntil.TryGetValue(source, out var until))
        {
            if (now < until) return false; // even a good key: the source is in its penalty period
            _blockedUntil.TryRemove(source, out _);
        }
        var accountKey = await accounts.FindKeyByFingerprintAsync(key.Fingerprint, ct).ConfigureAwait(false);
        bool ok;
        if (IsControl(context.LocalEndPoint))
        {
            // Registered keys enter unless limited to one VM; an unregistered key enters only if it is the
            // first key the client offered: that key gets the sign-up dialogue and becomes the account's key.
            ok = accountKey is not null
                ? KeyScope.AllowsControlPlane(accountKey)
                : context.OfferedKeys.Count > 0 && context.OfferedKeys[0].Equals(key);
        }
        else
        {
            // Slot address: only keys of some account. Which VM (if any) is decided after auth,
            // so an account without a VM here gets a message instead of a bare "Permission denied";
            // a scoped key, though, is refused here unless it may reach the VM this connection names,
            // so the client can offer its next key (as sshd does for a key whose options do not match).
            ok = accountKey is not null
                && (accountKey.Permissions is null || await ScopedKeyReachesVmAsync(accountKey, user, context.LocalEndPoint, ct).ConfigureAwait(false));
        }
        if (!ok && !failedAuthLimiter.TryAcquire(source))
        {
            if (_blockedUntil.Count >= MaxBlockedSources)
                foreach (var (k, v) in _blockedUntil) if (v <= now) _blockedUntil.TryRemove(k, out _);
            if (_blockedUntil.Count < MaxBlockedSources) _blockedUntil[source] = now + FailedAuthPenalty;
            logger.LogWarning("failed-auth rate limit reached for {Source}; refusing it for {Penalty}", source, FailedAuthPenalty);
        }
        return ok;
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
    public async ValueTask<bool> AuthenticateKeyboardInteractiveAsync(SshAuthContext context, string user, IKeyboardInteractivePrompter prompter, CancellationToken ct)
    {
        if (context.OfferedKeys.Count == 0)
            await prompter.PromptAsync("", NoKeyMessage(options.ControlHost) + "\n", [], ct).ConfigureAwait(false);
        return false;
    }

    /// <summary>Whether the VM a connection names (by <c>vm+NAME</c> user or slot address) is one the key may reach.</summary>
    private async Task<bool> ScopedKeyReachesVmAsync(AccountKey key, string user, EndPoint local, CancellationToken ct)
    {
        var vm = await ResolveVmAsync(key.AccountId, user, local, ct).ConfigureAwait(false);
        return vm is not null && KeyScope.AllowsVmSsh(key, vm.Name);
    }

    private async Task<VmRecord?> ResolveVmAsync(string accountId, string user, EndPoint local, CancellationToken ct)
        => SshRouteTable.TryParseVmUser(user, out var vmName)
            ? await routes.ResolveByNameAsync(accountId, vmName, ct).ConfigureAwait(false)
            : await routes.ResolveAsync(accountId, LocalAddress(local), ct).ConfigureAwait(false);

    /// <summary>
    /// Per-connection state for requests that arrive outside channels (tcpip-forward) or span
    /// sessions (the forwarded agent socket). Global requests can arrive before
    /// <see cref="RunConnectionAsync"/> has resolved the VM, so they wait for <see cref="VmConnection.Target"/>.
    /// </summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<SshServerConnection, VmConnection> _connections = new();

    public async ValueTask RunConnectionAsync(SshServerConnection connection)
    {
        var state = _connections.GetOrAdd(connection, _ => new VmConnection());
        try
        {
            await RunConnectionCoreAsync(connection, state).ConfigureAwait(false);
        }
        finally
        {
            state.Target.TrySetResult(null);
            _connections.TryRemove(connection, out _);
            await state.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task RunConnectionCoreAsync(SshServerConnection connection, VmConnection state)
    {
        var ct = connection.Closing;
        var key = connection.AuthenticatedKey;
        if (key is null) { await connection.DisconnectAsync(cancellationToken: ct).ConfigureAwait(false); return; }
        var accountKey = await accounts.FindKeyByFingerprintAsync(key.Fingerprint, ct).ConfigureAwait(false);
        var account = accountKey is null ? null : await accounts.GetAsync(accountKey.AccountId, ct).ConfigureAwait(false);
        if (accountKey is not null) _ = accounts.TouchKeyAsync(key.Fingerprint, CancellationToken.None);
        var source = $"ssh {connection.RemoteEndPoint}";

        if (IsControl(connection.LocalEndPoint))
        {
            state.Target.TrySetResult(null);
            // Checked at authentication too; again here because the key's scope may have changed since.
            if (!KeyScope.AllowsControlPlane(accountKey)) { await connection.DisconnectAsync(cancellationToken: ct).ConfigureAwait(false); return; }
            // No agent forwarding on the control plane: nothing there uses an agent.
            await ServeChannelsAsync(connection, acceptAgentForwarding: false, async (channel, start) =>
                await controlPlane.RunAsync(channel, start, account, accountKey, key, source, ct).ConfigureAwait(false),
                directTcpip: null).ConfigureAwait(false);
            return;
        }

        VmRecord? vm = null;
        if (account is not null)
        {
            vm = await ResolveVmAsync(account.Id, connection.User, connection.LocalEndPoint, ct).ConfigureAwait(false);
            if (vm is not null && !KeyScope.AllowsVmSsh(accountKey, vm.Name))
            {
                state.Target.TrySetResult(null);
                await connection.DisconnectAsync(cancellationToken: ct).ConfigureAwait(false);
                return;
            }
        }
        if (vm is null)
        {
            state.Target.TrySetResult(null);
            var message = await NoVmHereMessageAsync(account, connection.LocalEndPoint, ct).ConfigureAwait(false);
            await ServeChannelsAsync(connection, acceptAgentForwarding: false, async (channel, start) =>
            {
                await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
                await channel.WriteExtendedAsync(Encoding.UTF8.GetBytes(message), cancellationToken: ct).ConfigureAwait(false);
                // The client closes after exit-status; disconnecting here could overtake the message.
                await channel.ExitAsync(1, ct).ConfigureAwait(false);
            }, directTcpip: null).ConfigureAwait(false);
            return;
        }

        var sshUser = SshRouteTable.TryParseVmUser(connection.User, out _) ? null : connection.User;
        var vmId = vm.Id;
        var defaultUser = vm.LoginUser ?? options.DefaultLoginUser;
        state.Target.TrySetResult(new VmTarget(vmId, vm.Name, sshUser, defaultUser));
        await ServeChannelsAsync(connection, acceptAgentForwarding: true, async (channel, start) =>
        {
            var current = index.GetById(vmId);
            if (current is null || current.State != VmState.Running)
            {
                await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
                var state = current?.State.ToWire() ?? "deleted";
                await channel.WriteExtendedAsync(Encoding.UTF8.GetBytes($"warren: VM \"{vm.Name}\" is {state}; see: ssh {options.ControlHost} ls\n"), cancellationToken: ct).ConfigureAwait(false);
                await channel.ExitAsync(1, ct).ConfigureAwait(false);
                return;
            }
            var user = await loginUsers.ResolveAsync(vmId, sshUser, defaultUser, ct).ConfigureAwait(false);
            if (start.AgentForwarding)
            {
                // -A: one agent socket per connection (as sshd keeps one per connection), made on first use.
                var socketPath = await AgentSocketAsync(connection, state, vmId, vm.Name, user, ct).ConfigureAwait(false);
                if (socketPath is not null) start.Env[AuthSocketEnv] = socketPath;
            }
            await relay.RunAsync(channel, start, vmId, user, ct).ConfigureAwait(false);
        },
        directTcpip: async (request) =>
        {
            // -L: a TCP connection made inside the VM's network namespace (RFC 4254 §7.2).
            Stream upstream;
            try { upstream = await runtime.ConnectAsync(vmId, request.Host ?? "localhost", (int)request.Port, ct).ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogInformation("direct-tcpip to {Host}:{Port} in {Vm} failed: {Error}", request.Host, request.Port, vm.Name, e.Message);
                await request.RejectAsync(SshChannelOpenFailureReason.ConnectFailed, "connect failed", ct).ConfigureAwait(false);
                return;
            }
            await using (upstream)
            {
                var channel = await request.AcceptAsync(ct).ConfigureAwait(false);
                await StreamRelay.RelayAsync(channel, upstream, ct).ConfigureAwait(false);
                await channel.CloseAsync(ct).ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
    }

    /// <summary>The environment variable naming the forwarded agent's socket (as ssh-agent(1) and sshd set it).</summary>
    public const string AuthSocketEnv = "SSH_AUTH_SOCK";

    /// <summary>
    /// -R (RFC 4254 §7.1): listens inside the VM's network namespace as the login user, with the
    /// agent's <c>listen</c> subcommand; every accepted connection becomes a "forwarded-tcpip"
    /// channel to the client. The bind address is the client's ("localhost" → 127.0.0.1; "" or "*"
    /// → all addresses): the VM is the account's own, as with sshd's GatewayPorts=clientspecified.
    /// Ports below 1024 need the login user to be root, as with sshd. Control-plane connections
    /// and connections without a VM refuse.
    /// </summary>
    public async ValueTask<uint?> RequestTcpipForwardAsync(SshServerConnection connection, string bindAddress, uint bindPort, CancellationToken cancellationToken)
    {
        if (bindPort > MaxTcpPort) return null;
        var state = _connections.GetOrAdd(connection, _ => new VmConnection());
        var target = await state.Target.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (target is null || index.GetById(target.VmId) is not { State: VmState.Running }) return null;
        lock (state.Gate)
        {
            if (state.Forwards.Count >= MaxRemoteForwardsPerConnection || (bindPort != 0 && state.Forwards.ContainsKey((bindAddress, bindPort)))) return null;
        }
        var user = await loginUsers.ResolveAsync(target.VmId, target.SshUser, target.DefaultUser, cancellationToken).ConfigureAwait(false);
        VmListener listener;
        try
        {
            // The listener lives as long as the connection, not the global request: its exec gets Closing.
            listener = await VmListener.StartTcpAsync(runtime, target.VmId, user, ListenHost(bindAddress), bindPort, connection.Closing).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogInformation("tcpip-forward {Address}:{Port} in {Vm} refused: {Error}", bindAddress, bindPort, target.VmName, e.Message);
            return null;
        }
        var key = (bindAddress, listener.BoundPort);
        lock (state.Gate)
        {
            if (state.Forwards.ContainsKey(key)) { _ = listener.DisposeAsync().AsTask(); return null; }
            state.Forwards[key] = listener;
        }
        _ = ServeListenerAsync(listener, target.VmName, connection.Closing,
            (incoming, ct) => connection.OpenForwardedTcpIpChannelAsync(bindAddress, listener.BoundPort, incoming.OriginatorAddress, incoming.OriginatorPort, ct));
        return listener.BoundPort;
    }

    public async ValueTask<bool> CancelTcpipForwardAsync(SshServerConnection connection, string bindAddress, uint bindPort, CancellationToken cancellationToken)
    {
        if (!_connections.TryGetValue(connection, out var state)) return false;
        VmListener? listener;
        lock (state.Gate)
        {
            if (!state.Forwards.Remove((bindAddress, bindPort), out listener)) return false;
        }
        await listener.DisposeAsync().ConfigureAwait(false);
        return true;
    }

    /// <summary>Most -R forwardings one connection may hold (each is a process in the VM).</summary>
    private const int MaxRemoteForwardsPerConnection = 64;

    /// <summary>Highest TCP port (RFC 793 ports are 16-bit).</summary>
    private const uint MaxTcpPort = 65535;

    internal static string ListenHost(string bindAddress) => bindAddress switch
    {
        "" or "*" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        _ => bindAddress,
    };

    /// <summary>
    /// -A: the path of this connection's agent socket inside the VM, creating it on first use
    /// (<c>listen --unix</c> as the login user: a 0700 directory under /tmp). Each connection to it
    /// opens an "auth-agent@openssh.com" channel to the client (OpenSSH PROTOCOL.agent).
    /// Null when the socket cannot be made; the session then runs without SSH_AUTH_SOCK.
    /// </summary>
    private async Task<string?> AgentSocketAsync(SshServerConnection connection, VmConnection state, string vmId, string vmName, string user, CancellationToken ct)
    {
        Task<VmListener?> pending;
        lock (state.Gate)
        {
            state.AgentSocket ??= CreateAgentSocketAsync(connection, vmId, vmName, user);
            pending = state.AgentSocket;
        }
        var listener = await pending.WaitAsync(ct).ConfigureAwait(false);
        return listener?.SocketPath;
    }

    private async Task<VmListener?> CreateAgentSocketAsync(SshServerConnection connection, string vmId, string vmName, string user)
    {
        var ct = connection.Closing;
        try
        {
            var listener = await VmListener.StartUnixAsync(runtime, vmId, user, ct).ConfigureAwait(false);
            _ = ServeListenerAsync(listener, vmName, ct, (_, c) => connection.OpenAgentChannelAsync(c));
            return listener;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogInformation("agent socket in {Vm} not created: {Error}", vmName, e.Message);
            return null;
        }
    }

    /// <summary>
    /// For each connection accepted inside the VM: open a channel to the client, claim the
    /// connection's bytes from the agent, relay until both sides end. A refused channel drops the
    /// VM-side connection at once.
    /// </summary>
    private async Task ServeListenerAsync(VmListener listener, string vmName, CancellationToken ct,
        Func<VmListener.Incoming, CancellationToken, Task<SshChannel>> openChannel)
    {
        var running = new List<Task>();
        try
        {
            await foreach (var incoming in listener.AcceptAsync(ct).ConfigureAwait(false))
            {
                running.RemoveAll(t => t.IsCompleted);
                running.Add(RunGuardedAsync(() => RelayIncomingAsync(listener, incoming, vmName, openChannel, ct), null));
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
        catch (ObjectDisposedException) { }
        await Task.WhenAll(running).ConfigureAwait(false);
    }

    private async Task RelayIncomingAsync(VmListener listener, VmListener.Incoming incoming, string vmName,
        Func<VmListener.Incoming, CancellationToken, Task<SshChannel>> openChannel, CancellationToken ct)
    {
        SshChannel channel;
        try { channel = await openChannel(incoming, ct).ConfigureAwait(false); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogInformation("forwarded connection from {Vm} refused by the client: {Error}", vmName, e.Message);
            await listener.DropAsync(incoming, ct).ConfigureAwait(false);
            return;
        }
        Stream upstream;
        try { upstream = await listener.ClaimAsync(incoming, ct).ConfigureAwait(false); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogInformation("forwarded connection in {Vm} lost before it was claimed: {Error}", vmName, e.Message);
            await channel.CloseAsync(ct).ConfigureAwait(false);
            return;
        }
        await using (upstream)
        {
            await StreamRelay.RelayAsync(channel, upstream, ct).ConfigureAwait(false);
            await channel.CloseAsync(ct).ConfigureAwait(false);
        }
    }

    /// <summary>The VM a connection was routed to, once known.</summary>
    private sealed record VmTarget(string VmId, string VmName, string? SshUser, string DefaultUser);

    /// <summary>What one VM connection holds beyond its channels: -R listeners and the -A socket. Guarded by <see cref="Gate"/>.</summary>
    private sealed class VmConnection : IAsyncDisposable
    {
        public readonly object Gate = new();
        public readonly TaskCompletionSource<VmTarget?> Target = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly Dictionary<(string Address, uint Port), VmListener> Forwards = new();
        public Task<VmListener?>? AgentSocket;

        public async ValueTask DisposeAsync()
        {
            List<VmListener> all;
            Task<VmListener?>? agent;
            lock (Gate)
            {
                all = [.. Forwards.Values];
                Forwards.Clear();
                agent = AgentSocket;
            }
            foreach (var l in all) await l.DisposeAsync().ConfigureAwait(false);
            if (agent is not null)
            {
                try { if (await agent.ConfigureAwait(false) is { } a) await a.DisposeAsync().ConfigureAwait(false); }
                catch (OperationCanceledException) { }
            }
        }
    }

    private async Task ServeChannelsAsync(SshServerConnection connection, bool acceptAgentForwarding,
        Func<SshChannel, SessionStart, Task> session, Func<SshChannelOpenRequest, Task>? directTcpip)
    {
        var ct = connection.Closing;
        var running = new List<Task>();
        try
        {
            await foreach (var request in connection.AcceptChannelsAsync(ct).ConfigureAwait(false))
            {
                running.RemoveAll(t => t.IsCompleted);
                if (request.ChannelType == SshChannelTypes.Session)
                {
                    var channel = await request.AcceptAsync(ct).ConfigureAwait(false);
                    running.Add(RunGuardedAsync(async () =>
                    {
                        var start = await SessionStart.ReadAsync(channel, acceptAgentForwarding, ct).ConfigureAwait(false);
                        if (start is not null) await session(channel, start).ConfigureAwait(false);
                    }, channel));
                }
                else if (request.ChannelType == SshChannelTypes.DirectTcpIp && directTcpip is not null)
                {
                    running.Add(RunGuardedAsync(() => directTcpip(request), null));
                }
                else
                {
                    await request.RejectAsync(SshChannelOpenFailureReason.AdministrativelyProhibited, "channel type not supported here", ct).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
        await Task.WhenAll(running).ConfigureAwait(false);
    }

    private async Task RunGuardedAsync(Func<Task> work, SshChannel? channel)
    {
        try { await work().ConfigureAwait(false); }
        catch (OperationCanceledException) { }
        catch (IOException) { }
        catch (Exception e)
        {
            logger.LogError(e, "SSH channel handler failed");
            if (channel is not null) { try { await channel.CloseAsync().ConfigureAwait(false); } catch { } }
        }
    }

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
