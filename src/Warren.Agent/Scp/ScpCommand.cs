using System.Globalization;
using System.Text;
using Warren.Agent.Native;

namespace Warren.Agent.Scp;

/// <summary>
/// <c>scp [-dprv] -t TARGET</c> / <c>scp [-prv] -f SOURCE...</c>: the remote end of the legacy SCP (RCP) protocol,
/// as OpenSSH's scp runs it on the server for <c>scp -O</c>. Speaks the protocol on stdin/stdout, as the invoking user.
/// </summary>
internal static class ScpMain
{
    public static int Run(string[] args)
    {
        var options = ParseArgs(args);
        using var rawIn = Console.OpenStandardInput();
        using var input = new BufferedStream(rawIn, 64 * 1024);
        using var output = Console.OpenStandardOutput();
        return options.Sink
            ? new ScpSink(input, output, options).Run(options.Paths[0])
            : new ScpSource(input, output, options).Run(options.Paths);
    }

    /// <summary>getopt-style parsing of OpenSSH's remote flags (combined flags like <c>-rt</c> and <c>--</c> accepted).</summary>
    internal static ScpOptions ParseArgs(string[] args)
    {
        var o = new ScpOptions();
        bool sink = false, source = false;
        int i = 0;
        for (; i < args.Length; i++)
        {
            string a = args[i];
            if (a == "--") { i++; break; }
            if (a.Length < 2 || a[0] != '-') break;
            foreach (char c in a.AsSpan(1))
            {
                switch (c)
                {
                    case 't': sink = true; break;
                    case 'f': source = true; break;
                    case 'r': o.Recursive = true; break;
                    case 'p': o.PreserveTimes = true; break;
                    case 'd': o.TargetShouldBeDirectory = true; break;
                    case 'v': case 'q': break; // verbosity: accepted, nothing to say on the protocol channel
                    default: throw new AgentUsageException($"scp: unknown option -{c}");
                }
            }
        }
        if (sink == source) throw new AgentUsageException("scp: exactly one of -t and -f is required");
        o.Sink = sink;
        o.Paths = args.AsSpan(i).ToArray();
        if (sink && o.Paths.Length != 1) throw new AgentUsageException("scp: -t takes exactly one target");
        if (source && o.Paths.Length == 0) throw new AgentUsageException("scp: -f needs at least one source");
        return o;
    }
}

internal sealed class ScpOptions
{
    public bool Sink;
    public bool Recursive;
    public bool PreserveTimes;
    public bool TargetShouldBeDirectory;
    public string[] Paths = [];
}

/// <summary>Protocol constants and helpers shared by both directions.</summary>
internal static class ScpProtocol
{
    /// <summary>Longest control line (C/D/T/E record, or a peer's \1 / \2 message) accepted, newline included.</summary>
    public const int MaxHeaderLength = 4096;

    /// <summary>Copy buffer size (as OpenSSH's COPY_BUFLEN).</summary>
    public const int CopyBufferSize = 16 * 1024;

    public const byte Ok = 0, Warning = 1, Fatal = 2;

    /// <summary>Sends <c>\1scp: MESSAGE\n</c> (a non-fatal error the peer reports and continues past).</summary>
    public static void SendError(Stream output, string message, bool fatal = false)
    {
        // A newline inside the message would end the record early and desynchronise the peer.
        string clean = message.Replace('\n', ' ');
        var bytes = Encoding.UTF8.GetBytes("scp: " + clean + "\n");
        if (bytes.Length > MaxHeaderLength - 1) bytes = [.. bytes.AsSpan(0, MaxHeaderLength - 2), (byte)'\n'];
        output.WriteByte(fatal ? Fatal : Warning);
        output.Write(bytes);
        output.Flush();
    }

    public static void SendOk(Stream output)
    {
        output.WriteByte(Ok);
        output.Flush();
    }

    public static void SendLine(Stream output, string line)
    {
        output.Write(Encoding.UTF8.GetBytes(line));
        output.Flush();
    }

    /// <summary>Reads up to and including '\n' into <paramref name="buffer"/>. Returns the length without the newline,
    /// -1 on EOF, -2 when the line exceeds the buffer.</summary>
    public static int ReadLine(Stream input, byte[] buffer, int start)
    {
        int n = start;
        while (true)
        {
            int b = input.ReadByte();
            if (b < 0) return -1;
            if (b == '\n') return n;
            if (n >= buffer.Length - 1) return -2;
            buffer[n++] = (byte)b;
        }
    }

    public static string ErrnoMessage(int errno) => errno switch
    {
        Libc.EPERM => "Operation not permitted",
        Libc.ENOENT => "No such file or directory",
        Libc.EIO => "Input/output error",
        Libc.EACCES => "Permission denied",
        Libc.EEXIST => "File exists",
        Libc.ENOTDIR => "Not a directory",
        Libc.EISDIR => "Is a directory",
        Libc.EINVAL => "Invalid argument",
        Libc.ENOSPC => "No space left on device",
        Libc.EROFS => "Read-only file system",
        Libc.ENAMETOOLONG => "File name too long",
        Libc.ELOOP => "Too many levels of symbolic links",
        Libc.ENOTEMPTY => "Directory not empty",
        _ => "errno " + errno.ToString(CultureInfo.InvariantCulture),
    };
}
