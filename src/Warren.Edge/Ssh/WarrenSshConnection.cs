using System.Text;
using Microsoft.Extensions.Logging;
using Warren.Platform.Addressing;
using Warren.Platform.Commands;
using Warren.Platform.Runtime;
using Warren.Platform.Vms;
using Warren.Ssh.Connection;
using Warren.Ssh.Server;

namespace Warren.Edge.Ssh;

public sealed partial class WarrenSshApplication
{
    /// <summary>
    /// One authenticated connection (ContainerSSH's per-connection handler): its identity and, for a slot
    /// address, its VM are known when it is made, so "tcpip-forward" never waits for routing; it owns the
    /// connection's -R listeners and -A socket, released when the connection ends.
    /// </summary>
    private sealed class WarrenSshConnection(WarrenSshApplication app, SshServerConnection connection, WarrenSshIdentity? identity, VmRecord? vm)
        : ISshConnectionHandler
    {
        /// <summary>Most -R forwardings one connection may hold (each is a process in the VM).</summary>
        private const int MaxRemoteForwardsPerConnection = 64;

        /// <summary>Highest TCP port (RFC 793 ports are 16-bit).</summary>
        private const uint MaxTcpPort = 65535;

        private readonly object _gate = new();
        private readonly Dictionary<(string Address, uint Port), IVmListener> _forwards = new();
        private Task<IVmListener?>? _agentSocket;
        /// <summary>Whether this connection reaches a VM: a slot connection whose key's scope allows the VM it names.</summary>
        private bool ReachesVm => vm is not null && identity is { IsControl: false } && KeyScope.AllowsVmSsh(identity.Key, vm);

        private string? SshUser => SshRouteTable.TryParseVmUser(connection.User, out _) ? null : connection.User;
        private string DefaultUser => vm?.LoginUser ?? app.Options.DefaultLoginUser;

        public async ValueTask RunAsync()
        {
            var ct = connection.Closing;
            var source = $"ssh {connection.RemoteEndPoint}";
            if (identity is null || connection.AuthenticatedKey is not { } key)
            {
                await connection.DisconnectAsync(cancellationToken: ct).ConfigureAwait(false);
                return;
            }
            var account = identity.Account;
            var accountKey = identity.Key;

            if (identity.IsControl)
            {
                // Decided at authentication from the same key and scope; kept as a guard on the identity itself.
                if (!KeyScope.AllowsControlPlane(accountKey)) { await connection.DisconnectAsync(cancellationToken: ct).ConfigureAwait(false); return; }
                // No agent forwarding on the control plane: nothing there uses an agent.
                await ServeChannelsAsync(acceptAgentForwarding: false, async (channel, start) =>
                    await app.ControlPlane.RunAsync(channel, start, account, accountKey, key, source, ct).ConfigureAwait(false),
                    directTcpip: null).ConfigureAwait(false);
                return;
            }

            if (vm is not null && !ReachesVm)
            {
                await connection.DisconnectAsync(cancellationToken: ct).ConfigureAwait(false);
                return;
            }
            if (vm is null)
            {
                var message = await app.NoVmHereMessageAsync(account, connection.LocalEndPoint, ct).ConfigureAwait(false);
                await ServeChannelsAsync(acceptAgentForwarding: false, async (channel, start) =>
                {
                    await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
                    await channel.WriteExtendedAsync(Encoding.UTF8.GetBytes(message), cancellationToken: ct).ConfigureAwait(false);
                    // The client closes after exit-status; disconnecting here could overtake the message.
                    await channel.ExitAsync(1, ct).ConfigureAwait(false);
                }, directTcpip: null).ConfigureAwait(false);
                return;
            }

            var vmId = vm.Id;
            await ServeChannelsAsync(acceptAgentForwarding: true, async (channel, start) =>
            {
                var current = app.Index.GetById(vmId);
                if (current is null || current.State != VmState.Running)
                {
                    await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
                    var state = current?.State.ToWire() ?? "deleted";
                    await channel.WriteExtendedAsync(Encoding.UTF8.GetBytes($"warren: VM \"{vm.Name}\" is {state}; see: ssh {app.Options.ControlHost} ls\n"), cancellationToken: ct).ConfigureAwait(false);
                    await channel.ExitAsync(1, ct).ConfigureAwait(false);
                    return;
                }
                var user = await app.LoginUsers.ResolveAsync(vmId, SshUser, DefaultUser, ct).ConfigureAwait(false);
                if (start.AgentForwarding)
                {
                    // -A: one agent socket per connection (as sshd keeps one per connection), made on first use.
                    var socketPath = await AgentSocketAsync(user, ct).ConfigureAwait(false);
                    if (socketPath is not null) start.Env[AuthSocketEnv] = socketPath;
                }
                await app.Relay.RunAsync(channel, start, vmId, user, ct).ConfigureAwait(false);
            },
            directTcpip: async (request) =>
            {
                // -L: a TCP connection made inside the VM's network namespace (RFC 4254 §7.2).
                Stream upstream;
                try { upstream = await app.Runtime.ConnectAsync(vmId, request.Host ?? "localhost", (int)request.Port, ct).ConfigureAwait(false); }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    app.Logger.LogInformation("direct-tcpip to {Host}:{Port} in {Vm} failed: {Error}", request.Host, request.Port, vm.Name, e.Message);
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

        /// <summary>
        /// -R (RFC 4254 §7.1): listens inside the VM's network namespace as the login user
        /// (<see cref="IVmRuntime.ListenAsync"/>); every accepted connection becomes a "forwarded-tcpip"
        /// channel to the client. The bind address is the client's ("localhost" → 127.0.0.1; "" or "*"
        /// → all addresses): the VM is the account's own, as with sshd's GatewayPorts=clientspecified.
        /// Ports below 1024 need the login user to be root, as with sshd. Control-plane connections
        /// and connections without a VM refuse.
        /// </summary>
        public async ValueTask<uint?> RequestTcpipForwardAsync(string bindAddress, uint bindPort, CancellationToken cancellationToken)
        {
            if (bindPort > MaxTcpPort || !ReachesVm || app.Index.GetById(vm!.Id) is not { State: VmState.Running }) return null;
            lock (_gate)
            {
                if (_forwards.Count >= MaxRemoteForwardsPerConnection || (bindPort != 0 && _forwards.ContainsKey((bindAddress, bindPort)))) return null;
            }
            var user = await app.LoginUsers.ResolveAsync(vm.Id, SshUser, DefaultUser, cancellationToken).ConfigureAwait(false);
            IVmListener listener;
            try
            {
                // The listener lives as long as the connection, not the global request: its exec gets Closing.
                listener = await app.Runtime.ListenAsync(vm.Id, ListenSpec.Tcp(user, ListenHost(bindAddress), bindPort), connection.Closing).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                app.Logger.LogInformation("tcpip-forward {Address}:{Port} in {Vm} refused: {Error}", bindAddress, bindPort, vm.Name, e.Message);
                return null;
            }
            var key = (bindAddress, listener.BoundPort);
            lock (_gate)
            {
                if (_forwards.ContainsKey(key)) { _ = listener.DisposeAsync().AsTask(); return null; }
                _forwards[key] = listener;
            }
            _ = ServeListenerAsync(listener, connection.Closing,
                (incoming, ct) => connection.OpenForwardedTcpIpChannelAsync(bindAddress, listener.BoundPort, incoming.OriginatorAddress, incoming.OriginatorPort, ct));
            return listener.BoundPort;
        }

        public async ValueTask<bool> CancelTcpipForwardAsync(string bindAddress, uint bindPort, CancellationToken cancellationToken)
        {
            IVmListener? listener;
            lock (_gate)
            {
                if (!_forwards.Remove((bindAddress, bindPort), out listener)) return false;
            }
            await listener.DisposeAsync().ConfigureAwait(false);
            return true;
        }

        /// <summary>
        /// -A: the path of this connection's agent socket inside the VM, creating it on first use
        /// (a unix socket of the login user's, <see cref="ListenSpec.Unix"/>). Each connection to it
        /// opens an "auth-agent@openssh.com" channel to the client (OpenSSH PROTOCOL.agent).
        /// Null when the socket cannot be made; the session then runs without SSH_AUTH_SOCK.
        /// </summary>
        private async Task<string?> AgentSocketAsync(string user, CancellationToken ct)
        {
            Task<IVmListener?> pending;
            lock (_gate)
            {
                _agentSocket ??= CreateAgentSocketAsync(user);
                pending = _agentSocket;
            }
            var listener = await pending.WaitAsync(ct).ConfigureAwait(false);
            return listener?.SocketPath;
        }

        private async Task<IVmListener?> CreateAgentSocketAsync(string user)
        {
            var ct = connection.Closing;
            try
            {
                var listener = await app.Runtime.ListenAsync(vm!.Id, ListenSpec.Unix(user), ct).ConfigureAwait(false);
                _ = ServeListenerAsync(listener, ct, (_, c) => connection.OpenAgentChannelAsync(c));
                return listener;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                app.Logger.LogInformation("agent socket in {Vm} not created: {Error}", vm!.Name, e.Message);
                return null;
            }
        }

        /// <summary>
        /// For each connection accepted inside the VM: open a channel to the client, accept the
        /// connection's bytes from the runtime, relay until both sides end. A refused channel drops the
        /// VM-side connection at once.
        /// </summary>
        private async Task ServeListenerAsync(IVmListener listener, CancellationToken ct,
            Func<IVmIncomingConnection, CancellationToken, Task<SshChannel>> openChannel)
        {
            var running = new List<Task>();
            try
            {
                await foreach (var incoming in listener.AcceptAsync(ct).ConfigureAwait(false))
                {
                    running.RemoveAll(t => t.IsCompleted);
                    running.Add(RunGuardedAsync(() => RelayIncomingAsync(incoming, openChannel, ct), null));
                }
            }
            catch (OperationCanceledException) { }
            catch (IOException) { }
            catch (ObjectDisposedException) { }
            await Task.WhenAll(running).ConfigureAwait(false);
        }

        private async Task RelayIncomingAsync(IVmIncomingConnection incoming,
            Func<IVmIncomingConnection, CancellationToken, Task<SshChannel>> openChannel, CancellationToken ct)
        {
            SshChannel channel;
            try { channel = await openChannel(incoming, ct).ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                app.Logger.LogInformation("forwarded connection from {Vm} refused by the client: {Error}", vm!.Name, e.Message);
                await incoming.RejectAsync(ct).ConfigureAwait(false);
                return;
            }
            Stream upstream;
            try { upstream = await incoming.AcceptAsync(ct).ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                app.Logger.LogInformation("forwarded connection in {Vm} lost before it was claimed: {Error}", vm!.Name, e.Message);
                await channel.CloseAsync(ct).ConfigureAwait(false);
                return;
            }
            await using (upstream)
            {
                await StreamRelay.RelayAsync(channel, upstream, ct).ConfigureAwait(false);
                await channel.CloseAsync(ct).ConfigureAwait(false);
            }
        }

        private async Task ServeChannelsAsync(bool acceptAgentForwarding,
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
                app.Logger.LogError(e, "SSH channel handler failed");
                if (channel is not null) { try { await channel.CloseAsync().ConfigureAwait(false); } catch { } }
            }
        }

        /// <summary>Releases the -R listeners and the -A socket.</summary>
        public async ValueTask DisposeAsync()
        {
            List<IVmListener> all;
            Task<IVmListener?>? agent;
            lock (_gate)
            {
                all = [.. _forwards.Values];
                _forwards.Clear();
                agent = _agentSocket;
            }
            foreach (var l in all) await l.DisposeAsync().ConfigureAwait(false);
            if (agent is not null)
            {
                try { if (await agent.ConfigureAwait(false) is { } a) await a.DisposeAsync().ConfigureAwait(false); }
                catch (OperationCanceledException) { }
            }
        }
    }

    /// <summary>The environment variable naming the forwarded agent's socket (as ssh-agent(1) and sshd set it).</summary>
    public const string AuthSocketEnv = "SSH_AUTH_SOCK";

    internal static string ListenHost(string bindAddress) => bindAddress switch
    {
        "" or "*" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        _ => bindAddress,
    };
}
