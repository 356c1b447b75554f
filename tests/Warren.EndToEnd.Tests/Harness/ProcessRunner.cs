using System.Diagnostics;
using System.Text;

namespace Warren.EndToEnd.Tests.Harness;

public sealed record ProcessResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>Runs real programs (ssh, scp, sftp, curl, dig, ssh-keygen) with a bounded wait.</summary>
public static class ProcessRunner
{
    /// <summary>Upper bound for one client command in a test; a hang fails the test instead of blocking CI.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(120);

    public static async Task<ProcessResult> RunAsync(string fileName, IEnumerable<string> args, string? stdin = null,
        TimeSpan? timeout = null, IDictionary<string, string>? env = null, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (workingDirectory is not null) psi.WorkingDirectory = workingDirectory;
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {fileName}");
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var outTask = Task.Run(async () => { stdout.Append(await p.StandardOutput.ReadToEndAsync()); });
        var errTask = Task.Run(async () => { stderr.Append(await p.StandardError.ReadToEndAsync()); });
        if (stdin is not null) await p.StandardInput.WriteAsync(stdin);
        p.StandardInput.Close();
        using var cts = new CancellationTokenSource(timeout ?? DefaultTimeout);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch { }
            throw new TimeoutException($"{fileName} {string.Join(' ', args)} did not finish in time\nstdout: {stdout}\nstderr: {stderr}");
        }
        await Task.WhenAll(outTask, errTask);
        return new ProcessResult(p.ExitCode, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Fails under CI when a required program is missing; elsewhere too (tests are meant to run with ./test.sh).</summary>
    public static string Require(string program)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            var candidate = Path.Combine(dir, program);
            if (File.Exists(candidate)) return candidate;
        }
        foreach (var dir in new[] { "/usr/sbin", "/sbin" })
            if (File.Exists(Path.Combine(dir, program))) return Path.Combine(dir, program);
        throw new InvalidOperationException($"required program '{program}' is not installed; run ./test.sh, which installs it");
    }
}
