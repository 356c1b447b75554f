using System.Text;

namespace Warren.Agent;

/// <summary>
/// Makes the VM's own name resolve: <c>/etc/hosts</c> gets <c>127.0.1.1 NAME</c> (as Debian's installer writes for a
/// machine without a fixed address; hosts(5)) unless a line of the file names it already. Without it, <c>sudo</c> and
/// other tools that look their host up stall on DNS, and images other than ones built for Warren carry no such line.
/// </summary>
/// <remarks>
/// The image's lines are kept as they are: only a line this agent added (it ends with <see cref="Marker"/>) is replaced,
/// which after a rename means the old name's line goes. The file is rewritten in place, not renamed over, because a
/// container engine bind-mounts its own <c>/etc/hosts</c> there. Both runtimes run it: the agent as PID 1 at boot, and
/// the microVM's live rename (<c>warren-agent hostname NAME</c>).
/// </remarks>
internal static class HostsFile
{
    public const string DefaultPath = "/etc/hosts";

    /// <summary>Debian's loopback address for the machine's own name (127.0.0.1 stays "localhost").</summary>
    public const string OwnNameAddress = "127.0.1.1";

    /// <summary>Ends the line this agent adds, so it can tell it from the image's.</summary>
    public const string Marker = "# warren-agent: this VM's name";

    /// <summary>Largest hosts file read; a larger one is left alone.</summary>
    public const int MaxBytes = 1 << 20;

    /// <summary>The kernel's host name (hostname(1) reads the same).</summary>
    public static string? KernelHostname()
    {
        try { return File.ReadAllText("/proc/sys/kernel/hostname").Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Ensures <paramref name="path"/> maps <paramref name="hostname"/>; false (and a log line) when it could not.</summary>
    public static bool EnsureOwnName(string? hostname, Action<string> log, string path = DefaultPath)
    {
        if (!IsPlainName(hostname))
        {
            log($"not adding the host name to {path}: \"{hostname}\" is not a plain host name");
            return false;
        }
        try
        {
            string text = "";
            if (File.Exists(path))
            {
                if (new FileInfo(path).Length > MaxBytes) { log($"{path} is larger than {MaxBytes} bytes; left alone"); return false; }
                text = File.ReadAllText(path);
            }
            if (Rewrite(text, hostname!) is not { } updated) return true;
            // In place (open, truncate, write): a bind-mounted file cannot be replaced by a rename.
            using var stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite);
            var bytes = Encoding.UTF8.GetBytes(updated);
            stream.SetLength(0);
            stream.Write(bytes);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log($"cannot add the host name to {path}: {e.Message}");
            return false;
        }
    }

    /// <summary>
    /// The hosts text with <paramref name="hostname"/> mapped, or null when it is mapped already (nothing to write).
    /// Lines this agent added for another name are dropped; every other line is kept as it is.
    /// </summary>
    internal static string? Rewrite(string text, string hostname)
    {
        var lines = text.Split('\n').ToList();
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1); // after the final newline
        var ours = lines.Where(IsOurs).ToList();
        var theirs = lines.Where(l => !IsOurs(l)).ToList();
        bool theyMapIt = theirs.Any(l => Names(l).Contains(hostname, StringComparer.OrdinalIgnoreCase));
        if (theyMapIt && ours.Count == 0) return null;
        if (!theyMapIt && ours.Count == 1 && Names(ours[0]).SequenceEqual([hostname], StringComparer.OrdinalIgnoreCase)) return null;
        if (theirs.Count == 0) theirs = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"];
        if (!theyMapIt) theirs.Add($"{OwnNameAddress}\t{hostname}\t{Marker}");
        return string.Join('\n', theirs) + "\n";
    }

    private static bool IsOurs(string line) => line.TrimEnd('\r').EndsWith(Marker, StringComparison.Ordinal);

    /// <summary>The host names of one hosts(5) line: the fields after the address, up to a comment.</summary>
    private static List<string> Names(string line)
    {
        int hash = line.IndexOf('#');
        var fields = (hash >= 0 ? line[..hash] : line).Split([' ', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries);
        return fields.Length > 1 ? fields[1..].ToList() : [];
    }

    /// <summary>A name of letters, digits, '-' and '.', 1–64 characters (HOST_NAME_MAX): nothing that could break a line.</summary>
    private static bool IsPlainName(string? name)
        => name is { Length: > 0 and <= 64 } && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.');
}
