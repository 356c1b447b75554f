using System.Text;
using Microsoft.Extensions.Logging;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Commands;
using Warren.Platform.Interactive;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;

namespace Warren.Edge.Ssh;

/// <summary>
/// A session channel on the control host: `ssh warren.localhost CMD` runs the command set,
/// a pty without a command gets the interactive shell (or the sign-up dialogue for a key no
/// account holds), no pty and no command prints help, and `ssh VM [command]` hops into a VM.
/// </summary>
public sealed class ControlPlaneSession(
    CommandDispatcher dispatcher,
    InteractiveShell shell,
    SignupDialogue signup,
    AccountService accounts,
    SshRouteTable routes,
    PlatformOptions options,
    VmSessionRelay relay,
    LoginUserResolver loginUsers,
    ILogger logger)
{
    public async Task RunAsync(SshChannel channel, SessionStart start, Account? account, AccountKey? key, SshPublicKey verifiedKey, string source, CancellationToken ct)
    {
        var stream = channel.AsStream();
        if (start.Kind == "exec" && TerminalBootstrap.IsBootstrap(start.Argument)) start = start.Redirect("shell", "");
        switch (start.Kind)
        {
            case "exec":
            {
                if (!ShellLexer.TrySplit(start.Argument, out var argv, out var lexError))
                {
                    await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
                    await WriteStderrAsync(channel, (lexError ?? "invalid command syntax") + "\n", ct).ConfigureAwait(false);
                    await channel.ExitAsync(1, ct).ConfigureAwait(false);
                    return;
                }
                if (argv.Count > 0 && argv[0] == "scp")
                {
                    await RefuseFileTransferAsync(channel, start, ct).ConfigureAwait(false);
                    return;
                }
                if (argv.Count > 0 && argv[0] == "ssh" && account is not null)
                {
                    await HopAsync(channel, start, account, key, argv, ct).ConfigureAwait(false);
                    return;
                }
                await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
                int code = await RunCommandAsync(channel, stream, start.Pty is not null, account, key, argv, source, ct).ConfigureAwait(false);
                await channel.ExitAsync((uint)code, ct).ConfigureAwait(false);
                return;
            }
            case "shell" when start.Pty is not null:
            {
                await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
                LineEditor? editor = null;
                if (account is null)
                {
                    SignupResult result;
                    var prompter = new PtyPrompter(stream, stream);
                    editor = prompter.Editor;
                    try { result = await signup.RunAsync(prompter, verifiedKey, ct).ConfigureAwait(false); }
                    catch (IOException e) when (e is not SshChannelClosedException)
                    {
                        // The mail relay refused or was unreachable: say so, keep the daemon's details out.
                        logger.LogWarning("sign-up mail failed: {Error}", e.Message);
                        await stream.WriteAsync("\r\nThe verification e-mail could not be sent. Please try again later.\r\n"u8.ToArray(), ct).ConfigureAwait(false);
                        await channel.ExitAsync(1, ct).ConfigureAwait(false);
                        return;
                    }
                    if (result.Account is null)
                    {
                        await channel.ExitAsync(1, ct).ConfigureAwait(false);
                        return;
                    }
                    account = result.Account;
                    key = await accounts.FindKeyByFingerprintAsync(verifiedKey.Fingerprint, ct).ConfigureAwait(false);
                }
                var ctx = new CommandContext { Account = account, CurrentKey = key, Source = source, CancellationToken = ct };
                int code = await shell.RunAsync(ctx, stream, stream, editor).ConfigureAwait(false);
                await channel.ExitAsync((uint)code, ct).ConfigureAwait(false);
                return;
            }
            case "shell":
            {
                // No pty and no command: print help, as exe.dev does.
                await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
                int code = await RunCommandAsync(channel, stream, false, account, key, ["help"], source, ct).ConfigureAwait(false);
                await channel.ExitAsync((uint)code, ct).ConfigureAwait(false);
                return;
            }
            case "subsystem" when start.Argument == "sftp":
                // scp (SFTP mode, OpenSSH 9+) and sftp both ask for this subsystem.
                await RefuseFileTransferAsync(channel, start, ct).ConfigureAwait(false);
                return;
            default:
                await start.Request!.RejectAsync(ct).ConfigureAwait(false);
                await channel.CloseAsync(ct).ConfigureAwait(false);
                return;
        }
    }

    private async Task<int> RunCommandAsync(SshChannel channel, Stream stream, bool pty, Account? account, AccountKey? key,
        IReadOnlyList<string> argv, string source, CancellationToken ct)
    {
        var utf8 = new UTF8Encoding(false);
        var stdout = new InteractiveShell.CrlfWriter(stream, translateNewlines: pty);
        var stderr = pty ? stdout : new InteractiveShell.CrlfWriter(channel.StderrStream, translateNewlines: false);
        using var stdin = new StreamReader(stream, utf8, false, 4096, leaveOpen: true);
        var ctx = new CommandContext
        {
            Account = account,
            CurrentKey = key,
            Stdin = stdin,
            Stdout = stdout,
            Stderr = stderr,
            Interactive = pty,
            Source = source,
            CancellationToken = ct,
        };
        int code;
        try { code = await dispatcher.RunAsync(ctx, argv).ConfigureAwait(false); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            var trace = Guid.NewGuid().ToString("N")[..12];
            logger.LogError(e, "command {Command} failed, trace {Trace}", argv.Count > 0 ? argv[0] : "", trace);
            await stderr.WriteLineAsync($"\"{(argv.Count > 0 ? argv[0] : "")}\": internal error, trace ID: {trace}").ConfigureAwait(false);
            code = 1;
        }
        await stdout.FlushAsync(ct).ConfigureAwait(false);
        if (!ReferenceEquals(stderr, stdout)) await stderr.FlushAsync(ct).ConfigureAwait(false);
        return code;
    }

    /// <summary>`ssh VM [command]`: the VM's shell or command, through the control host (the fallback path).</summary>
    private async Task HopAsync(SshChannel channel, SessionStart start, Account account, AccountKey? key, List<string> argv, CancellationToken ct)
    {
        if (argv.Count >= 2 && !KeyScope.AllowsVmSsh(key, NormalizeVmName(argv[1])))
        {
            await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
            await WriteStderrAsync(channel, KeyScope.NotAllowed + "\n", ct).ConfigureAwait(false);
            await channel.ExitAsync(1, ct).ConfigureAwait(false);
            return;
        }
        if (argv.Count < 2)
        {
            await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
            await WriteStderrAsync(channel, "usage: ssh VM [command]\n", ct).ConfigureAwait(false);
            await channel.ExitAsync(1, ct).ConfigureAwait(false);
            return;
        }
        var name = NormalizeVmName(argv[1]);
        var vm = await routes.ResolveByNameAsync(account.Id, name, ct).ConfigureAwait(false);
        // A tag-scoped key (ssh-key add --tag): a VM outside its tag is "not found", as the commands say.
        if (vm is null || !KeyScope.AllowsVmSsh(key, vm))
        {
            await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
            await WriteStderrAsync(channel, $"VM \"{name}\" not found\n", ct).ConfigureAwait(false);
            await channel.ExitAsync(1, ct).ConfigureAwait(false);
            return;
        }
        // As OpenSSH's ssh(1) does with its command arguments: joined with spaces and run by the login user's shell
        // in the VM, so `ssh VM 'a > f; b'` means the same here as straight to the VM (quoting is undone twice: by
        // the control plane's lexer, then by the VM's shell).
        var rest = argv.Count > 2 ? string.Join(' ', argv.Skip(2)) : "";
        var target = rest.Length == 0 ? start.Redirect("shell", "") : start.Redirect("exec", rest);
        // No user name comes with the hop: the VM's default user, or root where the image lacks it.
        var user = await loginUsers.ResolveAsync(vm.Id, null, vm.LoginUser ?? options.DefaultLoginUser, ct).ConfigureAwait(false);
        await relay.RunAsync(channel, target, vm.Id, user, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// The control host holds no files: scp and sftp clients are told where files live (the client shows the
    /// channel's stderr before it reports the closed connection) instead of a bare "subsystem request failed".
    /// </summary>
    private async Task RefuseFileTransferAsync(SshChannel channel, SessionStart start, CancellationToken ct)
    {
        await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
        await WriteStderrAsync(channel, FileTransferMessage(options.VmDomain) + "\n", ct).ConfigureAwait(false);
        await channel.ExitAsync(1, ct).ConfigureAwait(false);
    }

    internal static string FileTransferMessage(string vmDomain) => $"scp/sftp is not supported here; use NAME.{vmDomain}";

    private string NormalizeVmName(string name)
    {
        var suffix = "." + options.VmDomain;
        return name.EndsWith(suffix, StringComparison.OrdinalIgnoreCase) ? name[..^suffix.Length] : name;
    }

    private static ValueTask WriteStderrAsync(SshChannel channel, string text, CancellationToken ct)
        => channel.WriteExtendedAsync(Encoding.UTF8.GetBytes(text), cancellationToken: ct);
}
