using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Warren.Ssh.Auth;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Transport;
using Warren.Ssh.Tests.Keys;

namespace Warren.Ssh.Tests.Interop;

/// <summary>
/// An SshServer on 127.0.0.1 (ephemeral port) with a tiny command language, and
/// an OpenSSH user key made by ssh-keygen, for driving the real ssh client.
/// </summary>
internal sealed class InteropServer : IAsyncDisposable
{
    /// <summary>Bound on one ssh client run; the 200 MiB transfer is the slowest.</summary>
    public static readonly TimeSpan SshTimeout = TimeSpan.FromMinutes(5);

    private readonly CancellationTokenSource _stop = new();
    private readonly Socket _listener;
    private readonly Task _serving;
    private readonly SshKeygen _keygen = new();

    public InteropServer(SshTransportServerOptions? transport = null, IReadOnlyList<SshPrivateKey>? hostKeys = null)
    {
        _keygen.RunOk("-q", "-t", "ed25519", "-N", "", "-f", _keygen.PathOf("id_ed25519"));
        KeyPath = _keygen.PathOf("id_ed25519");
        var pub = File.ReadAllText(KeyPath + ".pub").Trim();
        if (!SshPublicKey.TryParseOpenSsh(pub, out var userKey, out _)) throw new InvalidOperationException("could not parse ssh-keygen output");
        UserKey = userKey;
        App = new InteropApp(userKey);
        HostKeys = hostKeys ?? [Ed25519PrivateKey.Generate()];
        Server = new SshServer(new SshServerOptions { HostKeys = HostKeys, Transport = transport }, App);
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(SshServer.ListenBacklog);
        Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        _serving = Task.Run(() => Server.ServeAsync(_listener, _stop.Token));
    }

    public SshServer Server { get; }
    public InteropApp App { get; }
    public IReadOnlyList<SshPrivateKey> HostKeys { get; }
    public int Port { get; }
    public string KeyPath { get; }
    public SshPublicKey UserKey { get; }
    public string Dir => _keygen.Dir;

    public List<string> SshArgs(params string[] extra)
    {
        var args = new List<string>
        {
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-F", "/dev/null",
            "-i", KeyPath, "-p", Port.ToString(), "-l", "tester",
        };
        args.AddRange(extra);
        return args;
    }

    public Task<ExternalProcess.Result> SshAsync(IEnumerable<string> args, Func<Stream, Task>? stdin = null)
        => ExternalProcess.RunAsync("ssh", args, stdin, SshTimeout);

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Dispose();
        try { await _serving.WaitAsync(TimeSpan.FromSeconds(30)); } catch (Exception) { }
        _keygen.Dispose();
    }
}

/// <summary>
/// The server side of the interop tests. exec commands:
/// "echo TEXT", "exit N", "stderr TEXT" (exit 1), "sha256" (hash stdin), "wait" (until released).
/// Shell: echoes "got: LINE" until "exit". direct-tcpip connects to 127.0.0.1 only.
/// </summary>
internal sealed class InteropApp(SshPublicKey userKey) : ISshServerApplication
{
    public ConcurrentQueue<SshServerConnection> Connections { get; } = new();
    public ConcurrentQueue<SshPtyRequest> Ptys { get; } = new();
    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public TaskCompletionSource<(SshServerConnection Connection, string Address, uint Port)> Forwarded { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ValueTask<SshPermissions?> AuthorizePublicKeyAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken cancellationToken)
        => ValueTask.FromResult(key.Equals(userKey) ? SshPermissions.Granted : null);

    public ValueTask<ISshConnectionHandler> OpenConnectionAsync(SshServerConnection connection)
        => ValueTask.FromResult<ISshConnectionHandler>(new Handler(this, connection));

    private sealed class Handler(InteropApp app, SshServerConnection connection) : ISshConnectionHandler
    {
        public ValueTask RunAsync() => app.RunConnectionAsync(connection);
        public ValueTask<uint?> RequestTcpipForwardAsync(string bindAddress, uint bindPort, CancellationToken cancellationToken)
            => app.RequestTcpipForwardAsync(connection, bindAddress, bindPort, cancellationToken);
        public ValueTask<bool> CancelTcpipForwardAsync(string bindAddress, uint bindPort, CancellationToken cancellationToken)
            => ValueTask.FromResult(true);
    }

    private ValueTask<uint?> RequestTcpipForwardAsync(SshServerConnection connection, string bindAddress, uint bindPort, CancellationToken cancellationToken)
    {
        uint port = bindPort == 0 ? 40000u : bindPort;
        Forwarded.TrySetResult((connection, bindAddress, port));
        return ValueTask.FromResult<uint?>(port);
    }

    private async ValueTask RunConnectionAsync(SshServerConnection connection)
    {
        Connections.Enqueue(connection);
        var work = new List<Task>();
        try
        {
            await foreach (var open in connection.AcceptChannelsAsync(connection.Closing))
            {
                switch (open.ChannelType)
                {
                    case SshChannelTypes.Session:
                        var ch = await open.AcceptAsync();
                        work.Add(Task.Run(() => ServeSessionAsync(ch)));
                        break;
                    case SshChannelTypes.DirectTcpIp when open.Host is "127.0.0.1" or "localhost":
                        var tcp = new TcpClient();
                        try { await tcp.ConnectAsync(IPAddress.Loopback, (int)open.Port); }
                        catch (SocketException)
                        {
                            tcp.Dispose();
                            await open.RejectAsync(SshChannelOpenFailureReason.ConnectFailed, "connect failed");
                            break;
                        }
                        var fwd = await open.AcceptAsync();
                        work.Add(Task.Run(() => PumpAsync(fwd, tcp)));
                        break;
                    default:
                        await open.RejectAsync(SshChannelOpenFailureReason.AdministrativelyProhibited, "not allowed");
                        break;
                }
            }
        }
        catch (OperationCanceledException) { }
        await Task.WhenAll(work).WaitAsync(TimeSpan.FromMinutes(5));
    }

    public static async Task PumpAsync(SshChannel channel, TcpClient tcp)
    {
        using (tcp)
        {
            var net = tcp.GetStream();
            var up = Task.Run(async () =>
            {
                var buf = new byte[32 * 1024];
                int n;
                try { while ((n = await channel.ReadAsync(buf)) > 0) await net.WriteAsync(buf.AsMemory(0, n)); }
                catch (IOException) { }
                try { tcp.Client.Shutdown(SocketShutdown.Send); } catch (SocketException) { }
            });
            var down = Task.Run(async () =>
            {
                var buf = new byte[32 * 1024];
                int n;
                try { while ((n = await net.ReadAsync(buf)) > 0) await channel.WriteAsync(buf.AsMemory(0, n)); }
                catch (IOException) { }
                await channel.SendEofAsync();
            });
            await Task.WhenAll(up, down);
            await channel.CloseAsync();
        }
    }

    private async Task ServeSessionAsync(SshChannel ch)
    {
        try
        {
            while (await ch.ReadRequestAsync() is { } req)
            {
                switch (req)
                {
                    case SshPtyRequest pty:
                        Ptys.Enqueue(pty);
                        await req.AcceptAsync();
                        break;
                    case SshEnvRequest:
                        await req.AcceptAsync();
                        break;
                    case SshExecRequest exec:
                        await req.AcceptAsync();
                        _ = Task.Run(async () => await RunCommandAsync(ch, exec.Command));
                        break;
                    case SshShellRequest:
                        await req.AcceptAsync();
                        _ = Task.Run(async () => await RunShellAsync(ch));
                        break;
                    default:
                        await req.RejectAsync();
                        break;
                }
            }
        }
        catch (SshChannelClosedException) { }
    }

    private async Task RunCommandAsync(SshChannel ch, string command)
    {
        try
        {
            var (verb, arg) = command.IndexOf(' ') is var i and >= 0 ? (command[..i], command[(i + 1)..]) : (command, "");
            switch (verb)
            {
                case "echo":
                    await ch.WriteAsync(Encoding.UTF8.GetBytes(arg + "\n"));
                    await ch.ExitAsync(0);
                    break;
                case "exit":
                    await ch.ExitAsync(uint.Parse(arg));
                    break;
                case "stderr":
                    await ch.WriteExtendedAsync(Encoding.UTF8.GetBytes(arg + "\n"));
                    await ch.ExitAsync(1);
                    break;
                case "sha256":
                    {
                        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                        var buf = new byte[64 * 1024];
                        long total = 0;
                        int n;
                        while ((n = await ch.ReadAsync(buf)) > 0) { sha.AppendData(buf, 0, n); total += n; }
                        await ch.WriteAsync(Encoding.UTF8.GetBytes($"{total} {Convert.ToHexStringLower(sha.GetHashAndReset())}\n"));
                        await ch.ExitAsync(0);
                        break;
                    }
                case "source":
                    {
                        long count = long.Parse(arg);
                        var buf = new byte[64 * 1024];
                        for (long sent = 0; sent < count; sent += buf.Length)
                            await ch.WriteAsync(buf.AsMemory(0, (int)Math.Min(buf.Length, count - sent)));
                        await ch.ExitAsync(0);
                        break;
                    }
                case "wait":
                    await Release.Task.WaitAsync(TimeSpan.FromMinutes(5));
                    await ch.ExitAsync(0);
                    break;
                default:
                    await ch.WriteExtendedAsync(Encoding.UTF8.GetBytes("unknown command\n"));
                    await ch.ExitAsync(127);
                    break;
            }
        }
        catch (SshChannelClosedException) { }
    }

    private static async Task RunShellAsync(SshChannel ch)
    {
        try
        {
            await ch.WriteAsync("$ "u8.ToArray());
            var line = new StringBuilder();
            var buf = new byte[1024];
            int n;
            while ((n = await ch.ReadAsync(buf)) > 0)
            {
                foreach (char c in Encoding.UTF8.GetString(buf, 0, n))
                {
                    if (c is '\r' or '\n')
                    {
                        if (line.Length == 0) continue;
                        var text = line.ToString();
                        line.Clear();
                        if (text == "exit") { await ch.ExitAsync(0); return; }
                        await ch.WriteAsync(Encoding.UTF8.GetBytes($"got: {text}\r\n$ "));
                    }
                    else line.Append(c);
                }
            }
            await ch.ExitAsync(0);
        }
        catch (SshChannelClosedException) { }
    }
}
