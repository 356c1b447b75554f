using System.ComponentModel;
using System.Diagnostics;

namespace Warren.Runtime.HostNetwork;

/// <summary>
/// Runs a host tool (nft, mke2fs, mount, …) with an argv — never through a shell, so no argument is ever
/// interpreted — with bounded time, and returns its exit code and output.
/// </summary>
public static class HostCommand
{
    /// <summary>How long a host tool may run before it is killed (they all finish in well under a second).</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Cap on captured output per stream: error messages are short; a tool printing more is cut.</summary>
    private const int MaxCapturedChars = 64 * 1024;

    public readonly record struct Result(int ExitCode, string Stdout, string Stderr)
    {
        public bool Ok => ExitCode == 0;

        /// <summary>The tool's complaint, for an error message: stderr, else stdout, trimmed and bounded.</summary>
        public string Message
        {
            get
            {
                const int MaxMessageChars = 500;
                string text = (string.IsNullOrWhiteSpace(Stderr) ? Stdout : Stderr).Trim();
                return text.Length <= MaxMessageChars ? text : text[..MaxMessageChars] + "…";
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="file"/>; a tool that is not installed is exit code 127 (like a shell) with a message
    /// saying so, not an exception.
    /// </summary>
    public static async Task<Result> RunAsync(string file, IEnumerable<string> args, string? stdin = null,
        TimeSpan? timeout = null, CancellationToken ct = default)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Tools' messages in a stable language, whatever the host's locale.
        psi.Environment["LC_ALL"] = "C";
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new Win32Exception($"cannot start {file}");
        }
        catch (Win32Exception e)
        {
            return new Result(127, "", $"{file}: not installed or not executable ({e.Message})");
        }
        using (process)
        {
            var stdout = ReadBoundedAsync(process.StandardOutput);
            var stderr = ReadBoundedAsync(process.StandardError);
            try
            {
                if (stdin != null) await process.StandardInput.WriteAsync(stdin.AsMemory(), ct);
                process.StandardInput.Close();
            }
            catch (IOException)
            {
                // The tool exited without reading its input; its exit code says why.
            }
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
            limit.CancelAfter(timeout ?? DefaultTimeout);
            try
            {
                await process.WaitForExitAsync(limit.Token);
            }
            catch (OperationCanceledException)
            {
                try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                ct.ThrowIfCancellationRequested();
                throw new TimeoutException($"{file} did not finish within {(timeout ?? DefaultTimeout).TotalSeconds:0} s");
            }
            return new Result(process.ExitCode, await stdout, await stderr);
        }
    }

    private static async Task<string> ReadBoundedAsync(StreamReader reader)
    {
        var buffer = new char[4096];
        var text = new System.Text.StringBuilder();
        int n;
        while ((n = await reader.ReadAsync(buffer)) > 0)
            if (text.Length < MaxCapturedChars) text.Append(buffer, 0, Math.Min(n, MaxCapturedChars - text.Length));
        return text.ToString();
    }
}
