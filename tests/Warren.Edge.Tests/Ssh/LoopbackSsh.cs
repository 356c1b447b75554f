using System.Net;
using System.Net.Sockets;
using Warren.Ssh.Auth;
using Warren.Ssh.Client;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;

namespace Warren.Edge.Tests.Ssh;

/// <summary>A Warren.Ssh server on 127.0.0.1 running <c>run</c> per connection, and one authenticated client.</summary>
internal sealed class LoopbackSsh : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly CancellationTokenSource _stop = new();
    private Task _serving = Task.CompletedTask;

    private LoopbackSsh() { }

    public SshClient Client { get; private set; } = null!;

    public static async Task<LoopbackSsh> StartAsync(Func<SshServerConnection, Task> run)
    {
        var pair = new LoopbackSsh();
        var clientKey = Ed25519PrivateKey.Generate();
        pair._listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        pair._listener.Listen(8);
        var server = new SshServer(new SshServerOptions { HostKeys = [Ed25519PrivateKey.Generate()] }, new App(clientKey.PublicKey, run));
        pair._serving = server.ServeAsync(pair._listener, pair._stop.Token);
        pair.Client = await SshClient.ConnectAsync("127.0.0.1", ((IPEndPoint)pair._listener.LocalEndPoint!).Port, new SshClientOptions
        {
            User = "test",
            Keys = [clientKey],
            HostKeyValidator = _ => ValueTask.FromResult(true),
        }).WaitAsync(Timeout);
        return pair;
    }

    private sealed class App(SshPublicKey clientKey, Func<SshServerConnection, Task> run) : ISshServerApplication
    {
        public ValueTask<SshPermissions?> AuthorizePublicKeyAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken cancellationToken)
            => ValueTask.FromResult(key.Equals(clientKey) ? SshPermissions.Granted : null);

        public ValueTask<ISshConnectionHandler> OpenConnectionAsync(SshServerConnection connection)
            => ValueTask.FromResult<ISshConnectionHandler>(new Handler(run, connection));

        private sealed class Handler(Func<SshServerConnection, Task> run, SshServerConnection connection) : ISshConnectionHandler
        {
            public async ValueTask RunAsync() => await run(connection);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        _stop.Cancel();
        _listener.Dispose();
        try { await _serving.WaitAsync(Timeout); } catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { }
        _stop.Dispose();
    }
}
