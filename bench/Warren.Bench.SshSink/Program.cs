using System.Buffers;
using System.Net;
using Warren.Ssh.Auth;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;

// usage: Warren.Bench.SshSink PORT AUTHORIZED_KEYS_FILE HOSTKEY_DIR
// exec "true" exits 0; any other exec reads stdin to the end and exits 0 (the `cat > /dev/null` sink).
var port = int.Parse(args[0]);
var authorized = AuthorizedKeysFile.Parse(File.ReadAllText(args[1])).Entries.Select(e => e.Key).ToHashSet();
var hostKeys = SshHostKeyStore.LoadOrCreate(args[2]);
var server = new SshServer(new SshServerOptions
{
    HostKeys = hostKeys,
    // The benchmark opens many connections at once from one source.
    MaxUnauthenticatedConnections = 4096,
    MaxUnauthenticatedConnectionsPerSource = 4096,
}, new SinkApplication(authorized));
using var cts = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); };
AppDomain.CurrentDomain.ProcessExit += (_, _) => cts.Cancel();
Console.WriteLine($"sink listening on 127.0.0.1:{port}");
try { await server.ServeAsync(new IPEndPoint(IPAddress.Loopback, port), cts.Token); }
catch (OperationCanceledException) { }

sealed class SinkApplication(HashSet<SshPublicKey> authorized) : ISshServerApplication
{
    public ValueTask<SshPermissions?> AuthorizePublicKeyAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken ct)
        => ValueTask.FromResult(authorized.Contains(key) ? SshPermissions.Granted : null);

    public ValueTask<ISshConnectionHandler> OpenConnectionAsync(SshServerConnection connection)
        => ValueTask.FromResult<ISshConnectionHandler>(new Handler(connection));

    private sealed class Handler(SshServerConnection connection) : ISshConnectionHandler
    {
        public ValueTask RunAsync() => RunConnectionAsync(connection);
    }

    private static async ValueTask RunConnectionAsync(SshServerConnection connection)
    {
        var ct = connection.Closing;
        try
        {
            await foreach (var open in connection.AcceptChannelsAsync(ct))
            {
                if (open.ChannelType != SshChannelTypes.Session) { await open.RejectAsync(SshChannelOpenFailureReason.UnknownChannelType, "", ct); continue; }
                var channel = await open.AcceptAsync(ct);
                _ = ServeSessionAsync(channel, ct);
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
    }

    private static async Task ServeSessionAsync(SshChannel channel, CancellationToken ct)
    {
        try
        {
            while (await channel.ReadRequestAsync(ct) is { } request)
            {
                if (request is SshExecRequest exec)
                {
                    await exec.AcceptAsync(ct);
                    if (exec.Command.Trim() != "true")
                    {
                        var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
                        try { while (await channel.ReadAsync(buffer, ct) > 0) { } }
                        finally { ArrayPool<byte>.Shared.Return(buffer); }
                    }
                    await channel.ExitAsync(0, ct);
                    return;
                }
                await request.RejectAsync(ct);
            }
        }
        catch (OperationCanceledException) { }
        catch (IOException) { }
    }
}
