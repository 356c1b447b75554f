using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Warren.Platform.Runtime;

namespace Warren.Platform.Mail;

/// <summary>How one delivery into a VM's Maildir ended.</summary>
public enum MaildirOutcome
{
    Delivered,

    /// <summary><c>~/Maildir/new</c> already holds <see cref="Maildir.MaxNewMessages"/> files: nothing was written.</summary>
    Full,

    /// <summary>The VM could not take the message now (stopped, exec failed, disk full): the sender should retry.</summary>
    TemporaryFailure,
}

/// <summary>
/// The login user's <c>~/Maildir</c> inside a VM, reached only through <see cref="IVmRuntime.ExecAsync"/> as that
/// user: Warren never touches the VM's files itself, so it cannot write anywhere the user could not.
/// </summary>
/// <remarks>
/// Delivery follows the Maildir convention (D. J. Bernstein, "Using maildir format"; qmail's maildir(5)): write the
/// message to <c>tmp/UNIQUE</c>, then rename it into <c>new/</c>; the rename is the commit, so a reader never sees
/// a partial message. The shell scripts are constants; the message goes on stdin and the only arguments are the
/// unique name and the limit, both made here from safe characters. No message data ever reaches a command line.
/// </remarks>
public sealed class Maildir
{
    /// <summary>Files in <c>new/</c> at which delivery stops and receive-email is turned off.</summary>
    public const int MaxNewMessages = 1000;

    /// <summary>How long one script may run in the VM before the delivery counts as failed.</summary>
    public static readonly TimeSpan ExecTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Output of a script kept for the error message; the rest is read and dropped.</summary>
    public const int MaxDiagnosticBytes = 1024;

    /// <summary>sysexits.h EX_DATAERR: <c>~/Maildir</c> exists and is no directory.</summary>
    public const int ExitNotADirectory = 65;
    /// <summary>sysexits.h EX_TEMPFAIL: <c>new/</c> is full.</summary>
    public const int ExitFull = 75;
    /// <summary>sysexits.h EX_IOERR: writing or renaming failed.</summary>
    public const int ExitWriteFailed = 74;

    /// <summary>Creates <c>~/Maildir/{new,cur,tmp}</c> (mode 700 for new directories); refuses a <c>~/Maildir</c> that is not a directory.</summary>
    internal const string CreateScript = """
        [ -n "$HOME" ] || { echo "the login user has no home directory" >&2; exit 74; }
        d="$HOME/Maildir"
        if [ -e "$d" ] || [ -L "$d" ]; then
          [ -d "$d" ] || { echo "~/Maildir exists and is not a directory" >&2; exit 65; }
        fi
        umask 077
        mkdir -p "$d/new" "$d/cur" "$d/tmp" || exit 74
        """;

    /// <summary>$1 = unique file name, $2 = limit. Counts new/, writes stdin to tmp/$1, renames it into new/. Exits 0, 75 (<see cref="ExitFull"/>) or 74 (<see cref="ExitWriteFailed"/>).</summary>
    internal const string DeliverScript = """
        d="$HOME/Maildir"
        [ -d "$d/new" ] && [ -d "$d/tmp" ] || { umask 077; mkdir -p "$d/new" "$d/cur" "$d/tmp" || exit 74; }
        n=0
        for f in "$d"/new/*; do
          [ -e "$f" ] || continue
          n=$((n + 1))
          [ "$n" -lt "$2" ] || exit 75
        done
        umask 077
        if cat > "$d/tmp/$1" && mv "$d/tmp/$1" "$d/new/$1"; then exit 0; fi
        rm -f "$d/tmp/$1"
        exit 74
        """;

    private static long s_sequence;
    private readonly IVmRuntime _runtime;
    private readonly TimeProvider _time;

    public Maildir(IVmRuntime runtime, TimeProvider time)
    {
        _runtime = runtime;
        _time = time;
    }

    /// <summary>
    /// Makes the Maildir. Throws <see cref="PlatformException"/> with a message for the owner when
    /// <c>~/Maildir</c> is not a directory or the VM refused.
    /// </summary>
    public async Task CreateAsync(string vmId, string user, CancellationToken ct)
    {
        var (exit, diagnostics) = await RunAsync(vmId, user, CreateScript, [], ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
        if (exit == 0) return;
        throw new PlatformException(PlatformErrorCodes.InvalidArgument, exit == ExitNotADirectory
            ? "~/Maildir exists and is not a directory; move it away and try again"
            : $"could not create ~/Maildir in the VM{(diagnostics.Length > 0 ? ": " + diagnostics : "")}");
    }

    /// <summary>Writes one message (already with its delivery headers, LF line ends) into <c>new/</c>.</summary>
    public async Task<MaildirOutcome> DeliverAsync(string vmId, string user, string host, ReadOnlyMemory<byte> message, CancellationToken ct)
    {
        string name = UniqueName(host);
        var (exit, _) = await RunAsync(vmId, user, DeliverScript,
            [name, MaxNewMessages.ToString(CultureInfo.InvariantCulture)], message, ct).ConfigureAwait(false);
        return exit switch
        {
            0 => MaildirOutcome.Delivered,
            ExitFull => MaildirOutcome.Full,
            _ => MaildirOutcome.TemporaryFailure,
        };
    }

    /// <summary>
    /// "time.unique.host" (maildir(5)): seconds, then M microseconds, P the daemon's pid, Q a per-process
    /// sequence and R 64 random bits, then the host name reduced to [a-z0-9-] (the spec escapes '/' and ':';
    /// removing everything unusual is stricter).
    /// </summary>
    public string UniqueName(string host)
    {
        var now = _time.GetUtcNow();
        long micros = (now.Ticks % TimeSpan.TicksPerSecond) / 10;
        var safeHost = new StringBuilder(host.Length);
        foreach (char c in host.ToLowerInvariant())
            if (c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-') safeHost.Append(c);
        if (safeHost.Length == 0) safeHost.Append("warren");
        return string.Create(CultureInfo.InvariantCulture,
            $"{now.ToUnixTimeSeconds()}.M{micros}P{Environment.ProcessId}Q{Interlocked.Increment(ref s_sequence)}R{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}.{safeHost}");
    }

    /// <summary>Runs a script as <paramref name="user"/> with <paramref name="stdin"/>; (exit code or -1, first stderr/stdout bytes).</summary>
    private async Task<(int Exit, string Diagnostics)> RunAsync(string vmId, string user, string script, string[] args, ReadOnlyMemory<byte> stdin, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(ExecTimeout);
        try
        {
            await using var process = await _runtime.ExecAsync(vmId, new ExecSpec(["/bin/sh", "-c", script, "sh", .. args], User: user), timeout.Token).ConfigureAwait(false);
            var stdout = ReadBoundedAsync(process.StandardOutput, timeout.Token);
            var stderr = process.StandardError is { } err ? ReadBoundedAsync(err, timeout.Token) : Task.FromResult("");
            if (!stdin.IsEmpty)
            {
                try
                {
                    await process.StandardInput.WriteAsync(stdin, timeout.Token).ConfigureAwait(false);
                    await process.StandardInput.FlushAsync(timeout.Token).ConfigureAwait(false);
                }
                catch (IOException)
                {
                    // The script ended before reading everything (a full mailbox exits first): its exit code says why.
                }
            }
            await process.CloseStandardInputAsync().ConfigureAwait(false);
            var result = await process.Completion.WaitAsync(timeout.Token).ConfigureAwait(false);
            string diagnostics = ((await stderr.ConfigureAwait(false)).Trim() + " " + (await stdout.ConfigureAwait(false)).Trim()).Trim();
            return (result.ExitCode ?? -1, diagnostics);
        }
        catch (Exception e) when (!(e is OperationCanceledException && ct.IsCancellationRequested))
        {
            // A stopped VM, a broken session or the timeout: the caller answers "try again later".
            return (-1, e is OperationCanceledException ? "timed out" : e.GetType().Name);
        }
    }

    private static async Task<string> ReadBoundedAsync(Stream stream, CancellationToken ct)
    {
        var kept = new byte[MaxDiagnosticBytes];
        int length = 0;
        var buffer = new byte[4096];
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                int take = Math.Min(n, kept.Length - length);
                buffer.AsSpan(0, take).CopyTo(kept.AsSpan(length));
                length += take;
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
        }
        return Encoding.UTF8.GetString(kept, 0, length);
    }
}
