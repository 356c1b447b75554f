using System.Diagnostics;
using System.Text;

namespace Warren.Runtime.MicroVm;

/// <summary>
/// Runs the host tools that build disks (mke2fs, qemu-img, tar, du) with an argument list (never a shell string) and a
/// time limit; a failure throws with the tool's own message (its stderr, bounded).
/// </summary>
internal static class HostCommand
{
    private const int MaxErrorChars = 2000;

    public static async Task<string> RunAsync(string file, IReadOnlyList<string> args, TimeSpan timeout, CancellationToken ct, Stream? stdin = null)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin != null,
            UseShellExecute = false,
        };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = new Process { StartInfo = start };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new MicroVmException(MicroVmErrors.HostToolMissing, $"cannot run {file}: {e.Message} (run scripts/prereqs.sh)", e);
        }
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(timeout);
        var stdout = process.StandardOutput.ReadToEndAsync(limit.Token);
        var stderr = process.StandardError.ReadToEndAsync(limit.Token);
        try
        {
            if (stdin != null)
            {
                await stdin.CopyToAsync(process.StandardInput.BaseStream, limit.Token).ConfigureAwait(false);
                process.StandardInput.Close();
            }
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            if (ct.IsCancellationRequested) throw;
            throw new MicroVmException(MicroVmErrors.HostToolFailed, $"{Path.GetFileName(file)} did not finish within {timeout.TotalSeconds:0} s");
        }
        catch (IOException e)
        {
            // The tool closed its input early (tar failing on a bad archive): its exit status says why.
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
            if (process.ExitCode == 0) throw new MicroVmException(MicroVmErrors.HostToolFailed, $"{Path.GetFileName(file)}: {e.Message}", e);
        }
        string output = await stdout.ConfigureAwait(false);
        string error = await stderr.ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            var message = new StringBuilder($"{Path.GetFileName(file)} failed (exit {process.ExitCode})");
            if (error.Length > 0) message.Append(": ").Append(error.Length > MaxErrorChars ? error[..MaxErrorChars] + "…" : error.TrimEnd());
            throw new MicroVmException(MicroVmErrors.HostToolFailed, message.ToString());
        }
        return output;
    }
}
