using System.Buffers.Binary;
using System.Text;

namespace Warren.Agent.Serve;

/// <summary>A request the agent refuses with an ERROR frame (the message goes to the host).</summary>
internal sealed class RequestRefused(string message) : Exception(message);

/// <summary>What an OPEN asks for, after the token.</summary>
internal abstract record SessionRequest;

/// <summary>The exec fields of OPEN.</summary>
internal sealed record ExecRequest(string User, string Cwd, string Term, uint Columns, uint Rows, string[] Argv, string[] Env) : SessionRequest
{
    public bool Tty => Term.Length > 0;
}

/// <summary>The connect fields of OPEN.</summary>
internal sealed record ConnectRequest(string Host, int Port) : SessionRequest;

/// <summary>
/// Decodes the OPEN payload (docs/AGENT-PROTOCOL.md). The token is checked by the caller before anything else is
/// decoded, so an unauthenticated peer learns nothing about the rest of the format.
/// </summary>
internal ref struct OpenReader(ReadOnlySpan<byte> payload)
{
    /// <summary>argc bounds: a command is needed; 4096 arguments is far above any real session and keeps OPEN small.</summary>
    public const int MaxArgs = 4096;

    /// <summary>envc bound.</summary>
    public const int MaxEnv = 1024;

    private ReadOnlySpan<byte> _rest = payload;

    /// <summary>The token's raw bytes (compared, never decoded or logged).</summary>
    public ReadOnlySpan<byte> ReadTokenBytes() => ReadBytes();

    public SessionRequest ReadRequest()
    {
        string kind = ReadString("kind");
        SessionRequest request = kind switch
        {
            "exec" => ReadExec(),
            "connect" => ReadConnect(),
            _ => throw new RequestRefused($"bad request: unknown kind '{Printable(kind)}'"),
        };
        if (_rest.Length != 0) throw new RequestRefused("bad request: trailing bytes after OPEN");
        return request;
    }

    private ExecRequest ReadExec()
    {
        string user = ReadString("user"), cwd = ReadString("cwd"), term = ReadString("term");
        uint columns = ReadUInt32("columns"), rows = ReadUInt32("rows");
        uint argc = ReadUInt32("argc");
        if (argc is < 1 or > MaxArgs) throw new RequestRefused($"bad request: argc {argc} not in 1..{MaxArgs}");
        var argv = new string[argc];
        for (int i = 0; i < argv.Length; i++) argv[i] = ReadString("argv");
        uint envc = ReadUInt32("envc");
        if (envc > MaxEnv) throw new RequestRefused($"bad request: envc {envc} over {MaxEnv}");
        var env = new string[envc];
        for (int i = 0; i < env.Length; i++)
        {
            env[i] = ReadString("env");
            if (env[i].IndexOf('=') < 1) throw new RequestRefused("bad request: env entry is not KEY=VALUE");
        }
        return new ExecRequest(user, cwd, term, columns, rows, argv, env);
    }

    private ConnectRequest ReadConnect()
    {
        string host = ReadString("host");
        uint port = ReadUInt32("port");
        if (host.Length == 0) throw new RequestRefused("bad request: empty host");
        if (port is < 1 or > 65535) throw new RequestRefused($"bad request: port {port} not in 1..65535");
        return new ConnectRequest(host, (int)port);
    }

    private uint ReadUInt32(string field)
    {
        if (_rest.Length < 4) throw new RequestRefused($"bad request: OPEN ends inside {field}");
        uint value = BinaryPrimitives.ReadUInt32BigEndian(_rest);
        _rest = _rest[4..];
        return value;
    }

    private ReadOnlySpan<byte> ReadBytes(string field = "token")
    {
        uint length = ReadUInt32(field);
        if (length > (uint)_rest.Length) throw new RequestRefused($"bad request: OPEN ends inside {field}");
        var bytes = _rest[..(int)length];
        _rest = _rest[(int)length..];
        return bytes;
    }

    /// <summary>A UTF-8 string; NUL is refused since every string ends up in a C string (argv, env, paths).</summary>
    private string ReadString(string field)
    {
        var bytes = ReadBytes(field);
        if (bytes.IndexOf((byte)0) >= 0) throw new RequestRefused($"bad request: NUL in {field}");
        return Encoding.UTF8.GetString(bytes);
    }

    /// <summary>A peer-supplied string made safe to echo in a message.</summary>
    public static string Printable(string s)
    {
        const int MaxEcho = 64;
        var sb = new StringBuilder();
        foreach (char c in s.Length > MaxEcho ? s[..MaxEcho] : s) sb.Append(char.IsControl(c) ? '?' : c);
        return sb.ToString();
    }
}
