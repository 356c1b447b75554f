using System.Diagnostics;
using System.Text;

namespace Warren.Edge.Tests.Support;

/// <summary>Runs real client programs (dig, curl). A missing program fails the test (never skips), as CI requires.</summary>
internal static class ExternalTool
{
    /// <summary>Upper bound for one external program run; they normally finish in milliseconds.</summary>
    public static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(60);

    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static string Require(string program)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            var candidate = Path.Combine(dir, program);
            if (File.Exists(candidate))
                return candidate;
        }
        Assert.Fail($"{program} is required for this test but is not installed (install it; see scripts/prereqs.sh)");
        return program;
    }

    public static async Task<Result> RunAsync(string program, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(Require(program))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(RunTimeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} did not finish within {RunTimeout}");
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }
}

/// <summary>A clock that moves only when told (for token buckets and expiry). Timers are the system's.</summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private DateTimeOffset _now = DateTimeOffset.UtcNow;
    private long _ticks;

    public override DateTimeOffset GetUtcNow() => _now;
    public override long GetTimestamp() => Interlocked.Read(ref _ticks);
    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public void Advance(TimeSpan by)
    {
        _now += by;
        Interlocked.Add(ref _ticks, by.Ticks);
    }
}
