using System.Diagnostics;
using System.Text;

namespace Warren.Ssh.Tests.Interop;

/// <summary>
/// Runs an external program (ssh, sshd, ssh-keygen) with a hard time limit. A
/// missing program is a test FAILURE, never a skip, so CI cannot pass without interop.
/// </summary>
internal static class ExternalProcess
{
    public sealed record Result(int ExitCode, byte[] Stdout, string Stderr)
    {
        public string StdoutText => Encoding.UTF8.GetString(Stdout);
    }

    public static Process Start(string program, IEnumerable<string> args, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            return Process.Start(psi) ?? throw new InvalidOperationException(program + " did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new Xunit.Sdk.XunitException($"{program} (OpenSSH) is required for the interop tests; install openssh-client/openssh-server. {e.Message}");
        }
    }

    /// <summary>Runs to completion; <paramref name="writeStdin"/> feeds stdin (closed afterwards).</summary>
    public static async Task<Result> RunAsync(string program, IEnumerable<string> args, Func<Stream, Task>? writeStdin, TimeSpan timeout)
    {
        using var p = Start(program, args);
        using var cts = new CancellationTokenSource(timeout);
        var stdout = new MemoryStream();
        var outTask = p.StandardOutput.BaseStream.CopyToAsync(stdout, cts.Token);
        var errTask = p.StandardError.ReadToEndAsync(cts.Token);
        try
        {
            try
            {
                if (writeStdin is not null) await writeStdin(p.StandardInput.BaseStream);
            }
            catch (IOException) { /* the program exited before reading everything; its exit code tells */ }
            finally
            {
                try { p.StandardInput.Close(); } catch (IOException) { }
            }
            await p.WaitForExitAsync(cts.Token);
            await outTask;
            return new Result(p.ExitCode, stdout.ToArray(), await errTask);
        }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish within {timeout}; stderr so far may be incomplete");
        }
    }
}
