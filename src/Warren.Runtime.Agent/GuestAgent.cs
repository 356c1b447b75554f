using System.Globalization;
using Warren.Platform.Runtime;

namespace Warren.Runtime.Agent;

/// <summary>
/// The guest agent as the host starts it: where it is inside every VM and which of its subcommands serve an SSH
/// session kind (src/Warren.Agent: <c>sftp</c>, <c>scp</c>, <c>listen</c>). Every runtime whose VMs run the agent
/// turns <see cref="ExecSessionKind"/>s into programs here, so the SSH front door never names the agent.
/// </summary>
public static class GuestAgent
{
    /// <summary>Path of the agent inside every VM (mounted read-only by the Docker runtime, in the microVM's initramfs).</summary>
    public const string Path = "/.warren/agent";

    /// <summary>
    /// Sessions start in the login user's home directory, as sshd starts them (relative scp/sftp
    /// paths and `cd` expectations depend on it); HOME is set from /etc/passwd.
    /// </summary>
    private const string InHome = "cd \"$HOME\" 2>/dev/null; ";

    /// <summary>
    /// The plain-process form of <paramref name="spec"/>: a login shell, `sh -c COMMAND` as sshd does, or the
    /// agent's sftp server. The remote side of legacy `scp -O` (`scp -t`/`scp -f`) runs the agent's own
    /// implementation so it works in images without an scp binary; the shell still expands the paths as it would
    /// for a real scp. Throws <see cref="ArgumentException"/> for a command kind without exactly one command line.
    /// </summary>
    public static ExecSpec ToProcess(ExecSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        IReadOnlyList<string> argv;
        switch (spec.Kind)
        {
            case ExecSessionKind.Process:
                return spec;
            case ExecSessionKind.Shell:
                argv = ["/bin/sh", "-c", InHome + "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi"];
                break;
            case ExecSessionKind.Command:
                if (spec.Command.Count != 1) throw new ArgumentException("a command session carries exactly one command line", nameof(spec));
                var line = spec.Command[0];
                argv = IsLegacyScp(line) ? ["/bin/sh", "-c", InHome + "exec " + Path + " " + line] : ["/bin/sh", "-c", InHome + line];
                break;
            case ExecSessionKind.Sftp:
                argv = [Path, "sftp"];
                break;
            default:
                throw new ArgumentException($"unknown session kind {spec.Kind}", nameof(spec));
        }
        return spec with { Command = argv, Kind = ExecSessionKind.Process };
    }

    /// <summary>`scp [flags] -t|-f ...` as OpenSSH's scp client sends it in -O mode.</summary>
    internal static bool IsLegacyScp(string command)
    {
        var words = command.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (words.Length < 2 || words[0] != "scp") return false;
        foreach (var w in words.Skip(1))
        {
            if (w == "--" || !w.StartsWith('-')) break;
            if (w.Contains('t') || w.Contains('f')) return true;
        }
        return false;
    }

    /// <summary>The agent's <c>listen</c> command line for <paramref name="spec"/> (src/Warren.Agent/ListenCommand.cs).</summary>
    internal static IReadOnlyList<string> ListenArgv(ListenSpec spec) => spec.Host is null
        ? [Path, "listen", "--unix"]
        : [Path, "listen", spec.Host, spec.Port.ToString(CultureInfo.InvariantCulture)];
}
