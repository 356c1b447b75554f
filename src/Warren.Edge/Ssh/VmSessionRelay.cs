using System.Buffers;
using Microsoft.Extensions.Logging;
using Warren.Platform.Runtime;
using Warren.Ssh.Connection;

namespace Warren.Edge.Ssh;

/// <summary>
/// Runs one SSH session inside a VM: the started program's stdio, window changes and
/// signals are relayed between the channel and <see cref="IVmRuntime.ExecAsync"/>, and the
/// session ends as RFC 4254 §6.10 orders it: exit-status (or exit-signal), EOF, CLOSE.
/// </summary>
public sealed class VmSessionRelay(IVmRuntime runtime, ILogger logger)
{
    /// <summary>Copy buffer per direction; 32 KiB matches OpenSSH's channel packet size (CHAN_SES_PACKET_DEFAULT).</summary>
    private const int CopyBufferBytes = 32 * 1024;

    /// <summary>
    /// Client → program: one read takes every channel packet that arrived since the last one, up to this much (an
    /// eighth of OpenSSH's 2 MiB window, and the agent session socket's largest DATA frame), so a bulk upload is
    /// written to the program in a few large writes instead of one per 32 KiB packet.
    /// </summary>
    private const int InputBufferBytes = 256 * 1024;

    /// <summary>
    /// The session kind a start request asks for (RFC 4254 §6.5); what program serves it is the runtime's business
    /// (<see cref="ExecSessionKind"/>). Null for anything else (a subsystem other than sftp).
    /// </summary>
    internal static ExecSessionKind? KindOf(SessionStart start) => start.Kind switch
    {
        "shell" => ExecSessionKind.Shell,
        "exec" => ExecSessionKind.Command,
        "subsystem" when start.Argument == "sftp" => ExecSessionKind.Sftp,
        _ => null,
    };

    public async Task RunAsync(SshChannel channel, SessionStart start, string vmId, string loginUser, CancellationToken ct)
    {
        if (KindOf(start) is not { } kind)
        {
            await start.Request!.RejectAsync(ct).ConfigureAwait(false);
            await channel.CloseAsync(ct).ConfigureAwait(false);
            return;
        }
        TtySpec? tty = start.Pty is { } p && start.Kind != "subsystem"
            ? new TtySpec(string.IsNullOrEmpty(p.Term) ? "xterm" : p.Term, (int)Math.Max(1, p.WidthChars), (int)Math.Max(1, p.HeightRows))
            : null;
        var env = new Dictionary<string, string>(start.Env);
        if (tty is not null) env["TERM"] = tty.Term;

        IVmProcess process;
        try
        {
            IReadOnlyList<string> command = kind == ExecSessionKind.Command ? [start.Argument] : [];
            process = await runtime.ExecAsync(vmId, new ExecSpec(command, loginUser, env, tty, Kind: kind), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogWarning(e, "exec in VM {VmId} failed", vmId);
            await start.Request!.RejectAsync(ct).ConfigureAwait(false);
            await channel.WriteExtendedAsync("warren: the VM is not running\r\n"u8.ToArray(), cancellationToken: ct).ConfigureAwait(false);
            await channel.ExitAsync(255, ct).ConfigureAwait(false);
            return;
        }

        await using (process)
        {
            await start.Request!.AcceptAsync(ct).ConfigureAwait(false);
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var input = PumpInputAsync(channel, process, stop.Token);
            var requests = PumpRequestsAsync(channel, process, stop.Token);
            var output = PumpOutputAsync(process.StandardOutput, channel, stderr: false, stop.Token);
            var error = process.StandardError is { } se ? PumpOutputAsync(se, channel, stderr: true, stop.Token) : Task.CompletedTask;

            ExitResult exit;
            try { exit = await process.Completion.ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning(e, "process in VM {VmId} failed", vmId);
                exit = new ExitResult(255, null);
            }
            // Output drains before exit-status: OpenSSH prints everything the program wrote.
            await Task.WhenAll(output, error).ConfigureAwait(false);
            stop.Cancel();
            await IgnoreCancellation(input).ConfigureAwait(false);
            await IgnoreCancellation(requests).ConfigureAwait(false);

            if (exit.Signal is { } signal)
            {
                await channel.SendExitSignalAsync(signal, exit.CoreDumped, "", ct).ConfigureAwait(false);
                await channel.SendEofAsync(ct).ConfigureAwait(false);
                await channel.CloseAsync(ct).ConfigureAwait(false);
            }
            else
            {
                await channel.ExitAsync((uint)(exit.ExitCode ?? 255) & 0xff, ct).ConfigureAwait(false);
            }
        }
    }

    private static async Task IgnoreCancellation(Task t)
    {
        try { await t.ConfigureAwait(false); } catch (OperationCanceledException) { } catch (IOException) { } catch (ObjectDisposedException) { }
    }

    private static async Task PumpInputAsync(SshChannel channel, IVmProcess process, CancellationToken ct)
    {
        // Owner: this method, between the rent and the return below; an idle session (a shell waiting for its
        // user) holds no buffer: the zero-byte read waits for data first.
        byte[]? buffer = null;
        try
        {
            while (true)
            {
                await channel.ReadAsync(Memory<byte>.Empty, ct).ConfigureAwait(false);
                buffer = ArrayPool<byte>.Shared.Rent(InputBufferBytes);
                int n = await channel.ReadAsync(buffer, ct).ConfigureAwait(false);
                if (n == 0) break;
                await process.StandardInput.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                await process.StandardInput.FlushAsync(ct).ConfigureAwait(false);
                ArrayPool<byte>.Shared.Return(buffer);
                buffer = null;
            }
            // Client EOF (RFC 4254 §5.3) becomes EOF on the program's stdin.
            await process.CloseStandardInputAsync().ConfigureAwait(false);
        }
        catch (IOException) { }
        finally { if (buffer is not null) ArrayPool<byte>.Shared.Return(buffer); }
    }

    private static async Task PumpOutputAsync(Stream source, SshChannel channel, bool stderr, CancellationToken ct)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(CopyBufferBytes);
        try
        {
            while (true)
            {
                int n = await source.ReadAsync(buffer, ct).ConfigureAwait(false);
                if (n == 0) break;
                if (stderr) await channel.WriteExtendedAsync(buffer.AsMemory(0, n), cancellationToken: ct).ConfigureAwait(false);
                else await channel.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
            }
        }
        catch (IOException) { } // includes SshChannelClosedException: the client went away
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    private static async Task PumpRequestsAsync(SshChannel channel, IVmProcess process, CancellationToken ct)
    {
        while (await channel.ReadRequestAsync(ct).ConfigureAwait(false) is { } request)
        {
            switch (request)
            {
                case SshWindowChangeRequest w:
                    await process.ResizeAsync((int)Math.Max(1, w.WidthChars), (int)Math.Max(1, w.HeightRows), ct).ConfigureAwait(false);
                    break;
                case SshSignalRequest s:
                    await process.SignalAsync(s.SignalName, ct).ConfigureAwait(false);
                    if (s.WantReply) await s.AcceptAsync(ct).ConfigureAwait(false);
                    break;
                default:
                    await request.RejectAsync(ct).ConfigureAwait(false);
                    break;
            }
        }
    }
}
