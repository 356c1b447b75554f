using System.Net;
using System.Text;
using Microsoft.Extensions.Logging;
using Warren.Edge.Http;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
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
    ILogger<WarrenSshApplication> logger) : ISshServerApplication
{
    public async ValueTask<bool> IsPublicKeyAcceptableAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken ct)
    {
        var source = SourceKey(context.RemoteEndPoint);
        var account = await accounts.FindByKeyFingerprintAsync(key.Fingerprint, ct).ConfigureAwait(false);
        bool ok;
        if (IsControl(context.LocalEndPoint))
        {
            // Registered keys enter; an unregistered key enters only if it is the first key the
            // client offered: that key gets the sign-up dialogue and becomes the account's key.
            ok = account is not null || (context.OfferedKeys.Count > 0 && context.OfferedKeys[0].Equals(key));
        }
        else
        {
            // Slot address: only keys of some account. Which VM (if any) is decided after auth,
            // so an account without a VM here gets a message instead of a bare "Permission denied".
            ok = account is not null;
        }
        if (!ok && !failedAuthLimiter.TryAcquire(source))
        {
            logger.LogWarning("failed-auth rate limit reached for {Source}", source);
        }
        return ok;
    }

    public async ValueTask RunConnectionAsync(SshServerConnection connection)
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
            await ServeChannelsAsync(connection, async (channel, start) =>
                await controlPlane.RunAsync(channel, start, account, accountKey, key, source, ct).ConfigureAwait(false),
                directTcpip: null).ConfigureAwait(false);
            return;
        }

        VmRecord? vm = null;
        if (account is not null)
        {
            vm = SshRouteTable.TryParseVmUser(connection.User, out var vmName)
                ? await routes.ResolveByNameAsync(account.Id, vmName, ct).ConfigureAwait(false)
                : await routes.ResolveAsync(account.Id, LocalAddress(connection.LocalEndPoint), ct).ConfigureAwait(false);
        }
        if (vm is null)
        {
            var message = await NoVmHereMessageAsync(account, connection.LocalEndPoint, ct).ConfigureAwait(false);
            await ServeChannelsAsync(connection, async (channel, start) =>
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
        await ServeChannelsAsync(connection, async (channel, start) =>
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
                await StreamRelay.RelayAsync(channel.AsStream(), upstream, ct).ConfigureAwait(false);
                await channel.CloseAsync(ct).ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
    }

    private async Task ServeChannelsAsync(SshServerConnection connection, Func<SshChannel, SessionStart, Task> session, Func<SshChannelOpenRequest, Task>? directTcpip)
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
                        var start = await SessionStart.ReadAsync(channel, ct).ConfigureAwait(false);
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

    private static string SourceKey(EndPoint ep) => ep is IPEndPoint ip ? ip.Address.ToString() : ep.ToString() ?? "";
}
