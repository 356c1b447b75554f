using Xunit;
using System.Collections.Concurrent;
using System.Net;
using Warren.Ssh.Auth;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Tests.Connection;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Tests.Server;

/// <summary>A scriptable <see cref="ISshServerApplication"/> for tests.</summary>
internal sealed class TestServerApplication : ISshServerApplication
{
    public HashSet<SshPublicKey> AcceptedKeys { get; } = [];
    public ConcurrentQueue<SshPublicKey> AcceptabilityQueries { get; } = new();
    public Func<SshAuthContext, string, IKeyboardInteractivePrompter, CancellationToken, ValueTask<bool>>? KeyboardInteractive { get; set; }
    public Func<string, bool>? PasswordCheck { get; set; }
    public Func<SshServerConnection, Task>? Run { get; set; }
    public Func<SshServerConnection, string, uint, uint?>? Forward { get; set; }
    public volatile bool RunFinished;
    public TaskCompletionSource<SshServerConnection> Connected { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ValueTask<SshPermissions?> AuthorizePublicKeyAsync(SshAuthContext context, string user, SshPublicKey key, CancellationToken cancellationToken)
    {
        AcceptabilityQueries.Enqueue(key);
        return ValueTask.FromResult(AcceptedKeys.Contains(key) ? SshPermissions.Granted : null);
    }

    public async ValueTask<SshPermissions?> AuthenticateKeyboardInteractiveAsync(SshAuthContext context, string user, IKeyboardInteractivePrompter prompter, CancellationToken cancellationToken)
        => KeyboardInteractive is not null && await KeyboardInteractive(context, user, prompter, cancellationToken) ? SshPermissions.Granted : null;

    public ValueTask<SshPermissions?> AuthenticatePasswordAsync(SshAuthContext context, string user, string password, CancellationToken cancellationToken)
        => ValueTask.FromResult(PasswordCheck?.Invoke(password) == true ? SshPermissions.Granted : null);

    public ValueTask<ISshConnectionHandler> OpenConnectionAsync(SshServerConnection connection)
        => ValueTask.FromResult<ISshConnectionHandler>(new Handler(this, connection));

    private sealed class Handler(TestServerApplication app, SshServerConnection connection) : ISshConnectionHandler
    {
        public ValueTask RunAsync() => app.RunConnectionAsync(connection);

        public ValueTask<uint?> RequestTcpipForwardAsync(string bindAddress, uint bindPort, CancellationToken cancellationToken)
            => ValueTask.FromResult(app.Forward?.Invoke(connection, bindAddress, bindPort));
    }

    private async ValueTask RunConnectionAsync(SshServerConnection connection)
    {
        Connected.TrySetResult(connection);
        try
        {
            if (Run is not null) await Run(connection);
            else await connection.Completion;
        }
        finally { RunFinished = true; }
    }

    /// <summary>A RunConnectionAsync that serves exec sessions with <paramref name="exec"/>.</summary>
    public static Func<SshServerConnection, Task> ServeSessions(Func<SshChannel, SshExecRequest, Task> exec) => async connection =>
    {
        var tasks = new List<Task>();
        await foreach (var open in connection.AcceptChannelsAsync())
        {
            if (open.ChannelType != SshChannelTypes.Session)
            {
                await open.RejectAsync(SshChannelOpenFailureReason.AdministrativelyProhibited, "no");
                continue;
            }
            var ch = await open.AcceptAsync();
            tasks.Add(Task.Run(async () =>
            {
                while (await ch.ReadRequestAsync() is { } req)
                {
                    if (req is SshExecRequest e)
                    {
                        await req.AcceptAsync();
                        await exec(ch, e);
                        return;
                    }
                    if (req is SshPtyRequest or SshEnvRequest) await req.AcceptAsync();
                    else await req.RejectAsync();
                }
            }));
        }
        await Task.WhenAll(tasks);
    };
}

/// <summary>Builds raw messages for hand-driven peers.</summary>
internal static class Msg
{
    public static byte[] Build(byte number, Action<SshWriter>? body = null)
    {
        var w = new SshWriter();
        w.WriteByte(number);
        body?.Invoke(w);
        return w.ToArray();
    }

    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    public static async Task<byte[]> ExpectAsync(InMemoryPacketChannel ch, byte number)
    {
        var m = await ch.TryReceiveRawAsync(Timeout);
        Assert.NotNull(m);
        Assert.Equal(number, m![0]);
        return m;
    }

    /// <summary>Next message that is not a window adjust.</summary>
    public static async Task<byte[]?> NextSkippingAdjustAsync(InMemoryPacketChannel ch)
    {
        for (int i = 0; i < 10_000; i++)
        {
            var m = await ch.TryReceiveRawAsync(Timeout);
            if (m is null || m[0] != 93) return m;
        }
        return null;
    }
}

/// <summary>An SshServer over one in-memory pair, with a raw client end.</summary>
internal sealed class ServerHarness : IAsyncDisposable
{
    public InMemoryPacketChannel Client { get; }
    public InMemoryPacketChannel ServerEnd { get; }
    public SshServer Server { get; }
    public TestServerApplication App { get; }
    public Task Serving { get; }
    public SshPrivateKey HostKey { get; }

    public ServerHarness(TestServerApplication app, Func<SshServerOptions, SshServerOptions>? configure = null)
    {
        HostKey = Ed25519PrivateKey.Generate();
        (Client, ServerEnd) = InMemoryPacketChannel.CreatePair(HostKey.PublicKey);
        App = app;
        var options = new SshServerOptions { HostKeys = [HostKey] };
        if (configure is not null) options = configure(options);
        Server = new SshServer(options, app);
        Serving = Task.Run(() => Server.HandleConnectionAsync(ServerEnd, new IPEndPoint(IPAddress.Loopback, 22), new IPEndPoint(IPAddress.Loopback, 50000)));
    }

    public async Task SendAsync(byte number, Action<SshWriter>? body = null) => await Client.SendAsync(Msg.Build(number, body));

    /// <summary>Runs SERVICE_REQUEST and a signed publickey request as a raw client.</summary>
    public async Task AuthenticateRawAsync(SshPrivateKey key, string user = "alice")
    {
        App.AcceptedKeys.Add(key.PublicKey);
        await SendAsync(5, w => w.WriteString("ssh-userauth"));
        await Msg.ExpectAsync(Client, 6);
        var data = PublicKeySignatureData.Build(Client.SessionId.Span, user, "ssh-connection", "ssh-ed25519", key.PublicKey.Blob.Span);
        var sig = key.Sign("ssh-ed25519", data);
        await SendAsync(50, w => w.WriteString(user).WriteString("ssh-connection").WriteString("publickey").WriteBoolean(true)
            .WriteString("ssh-ed25519").WriteString(key.PublicKey.Blob.Span).WriteString(sig));
        await Msg.ExpectAsync(Client, 52);
    }

    /// <summary>Opens a session as a raw client; returns the server's channel id.</summary>
    public async Task<uint> OpenSessionRawAsync(uint senderId = 0, uint window = 1 << 20, uint maxPacket = 32768)
    {
        await SendAsync(90, w => w.WriteString("session").WriteUInt32(senderId).WriteUInt32(window).WriteUInt32(maxPacket));
        var confirm = await Msg.ExpectAsync(Client, 91);
        var r = new SshReader(confirm.AsSpan(1));
        Assert.True(r.TryReadUInt32(out var recipient));
        Assert.Equal(senderId, recipient);
        Assert.True(r.TryReadUInt32(out var serverId));
        return serverId;
    }

    public async ValueTask DisposeAsync()
    {
        Client.Close();
        try
        {
            await Serving.WaitAsync(Msg.Timeout);
        }
        catch (TimeoutException) when (App.Connected.Task.IsCompletedSuccessfully)
        {
            var mux = App.Connected.Task.Result.Mux;
            throw new TimeoutException($"server did not finish: reader={mux.ReaderTask?.Status} writer={mux.WriterTask?.Status} globals={mux.GlobalsTask?.Status} completion={mux.Completion.Status} runFinished={App.RunFinished} error={mux.TerminalError}");
        }
    }
}
