using Warren.Ssh.Auth;
using Warren.Ssh.Client;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Tests.Connection;
using Warren.Ssh.Tests.Server;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;
using Xunit;

namespace Warren.Ssh.Tests.Auth;

public sealed class ServerAuthenticationTests
{
    private static async Task StartUserauthAsync(ServerHarness h)
    {
        await h.SendAsync(5, w => w.WriteString("ssh-userauth"));
        await Msg.ExpectAsync(h.Client, 6);
    }

    private static Task SendSignedAsync(ServerHarness h, SshPrivateKey key, ReadOnlySpan<byte> sessionId, string user = "alice", string service = "ssh-connection")
    {
        var data = PublicKeySignatureData.Build(sessionId, user, service, "ssh-ed25519", key.PublicKey.Blob.Span);
        var sig = key.Sign("ssh-ed25519", data);
        var blob = key.PublicKey.Blob.ToArray();
        return h.SendAsync(50, w => w.WriteString(user).WriteString(service).WriteString("publickey").WriteBoolean(true)
            .WriteString("ssh-ed25519").WriteString(blob).WriteString(sig));
    }

    private static Task SendQueryAsync(ServerHarness h, SshPrivateKey key, string user = "alice")
    {
        var blob = key.PublicKey.Blob.ToArray();
        return h.SendAsync(50, w => w.WriteString(user).WriteString("ssh-connection").WriteString("publickey").WriteBoolean(false)
            .WriteString("ssh-ed25519").WriteString(blob));
    }

    [Fact]
    public async Task None_ListsOfferedMethods()
    {
        await using var h = new ServerHarness(new TestServerApplication(), o => new SshServerOptions
        {
            HostKeys = o.HostKeys,
            AuthenticationMethods = SshAuthMethodSet.PublicKey | SshAuthMethodSet.KeyboardInteractive,
        });
        await StartUserauthAsync(h);
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("none"));
        var failure = await Msg.ExpectAsync(h.Client, 51);
        var r = new SshReader(failure.AsSpan(1));
        Assert.True(r.TryReadNameList(out var methods));
        Assert.Equal(["publickey", "keyboard-interactive"], methods);
        Assert.True(r.TryReadBoolean(out var partial));
        Assert.False(partial);
    }

    [Fact]
    public async Task ServiceOtherThanUserauth_DisconnectsServiceNotAvailable()
    {
        await using var h = new ServerHarness(new TestServerApplication());
        await h.SendAsync(5, w => w.WriteString("ssh-connection"));
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.ServiceNotAvailable, h.Client.ReceivedDisconnect?.Reason);
    }

    [Fact]
    public async Task Query_AcceptableKey_GetsPkOk()
    {
        var key = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        app.AcceptedKeys.Add(key.PublicKey);
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        await SendQueryAsync(h, key);
        var pkok = await Msg.ExpectAsync(h.Client, 60);
        var r = new SshReader(pkok.AsSpan(1));
        Assert.True(r.TryReadUtf8(out var alg));
        Assert.Equal("ssh-ed25519", alg);
        Assert.True(r.TryReadString(out var blob));
        Assert.True(blob.SequenceEqual(key.PublicKey.Blob.Span));
    }

    [Fact]
    public async Task Query_UnacceptableKey_GetsFailure()
    {
        var key = Ed25519PrivateKey.Generate();
        await using var h = new ServerHarness(new TestServerApplication());
        await StartUserauthAsync(h);
        await SendQueryAsync(h, key);
        await Msg.ExpectAsync(h.Client, 51);
    }

    [Fact]
    public async Task SignedRequest_VerifiedOverSessionId_Succeeds()
    {
        var key = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        app.AcceptedKeys.Add(key.PublicKey);
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        await SendSignedAsync(h, key, h.Client.SessionId.Span);
        await Msg.ExpectAsync(h.Client, 52);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.Equal(key.PublicKey, conn.AuthenticatedKey);
        Assert.Equal("alice", conn.User);
        Assert.Equal("publickey", conn.AuthenticationMethod);
    }

    [Fact]
    public async Task Signature_OverOtherSessionId_IsRejected()
    {
        var key = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        app.AcceptedKeys.Add(key.PublicKey);
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        var otherSession = new byte[32];
        await SendSignedAsync(h, key, otherSession);
        await Msg.ExpectAsync(h.Client, 51);
        Assert.False(app.Connected.Task.IsCompleted);
    }

    [Fact]
    public async Task Signature_ForOtherService_IsRejected()
    {
        // The service name is inside the signed data (RFC 4252 §7); a request for
        // "ssh-connection" carrying a signature made for another service must fail.
        var key = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        app.AcceptedKeys.Add(key.PublicKey);
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        var data = PublicKeySignatureData.Build(h.Client.SessionId.Span, "alice", "other-service", "ssh-ed25519", key.PublicKey.Blob.Span);
        var sig = key.Sign("ssh-ed25519", data);
        var blob = key.PublicKey.Blob.ToArray();
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("publickey").WriteBoolean(true)
            .WriteString("ssh-ed25519").WriteString(blob).WriteString(sig));
        await Msg.ExpectAsync(h.Client, 51);
    }

    [Fact]
    public async Task AuthenticatedKey_IsTheVerifiedKey_NotTheLastQueried()
    {
        // CVE-2024-45337: a client queries key A (accepted → PK_OK) but proves key B.
        // The identity must be B, the key whose signature verified.
        var keyA = Ed25519PrivateKey.Generate();
        var keyB = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        app.AcceptedKeys.Add(keyA.PublicKey);
        app.AcceptedKeys.Add(keyB.PublicKey);
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        await SendQueryAsync(h, keyA);
        await Msg.ExpectAsync(h.Client, 60);
        await SendSignedAsync(h, keyB, h.Client.SessionId.Span);
        await Msg.ExpectAsync(h.Client, 52);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.Equal(keyB.PublicKey, conn.AuthenticatedKey);
    }

    [Fact]
    public async Task QueriedKeyWithBadSignature_NeverBecomesIdentity()
    {
        var keyA = Ed25519PrivateKey.Generate();
        var keyB = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        app.AcceptedKeys.Add(keyA.PublicKey);
        app.AcceptedKeys.Add(keyB.PublicKey);
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        await SendQueryAsync(h, keyA);
        await Msg.ExpectAsync(h.Client, 60);
        // A "signature" for key A that was made by key B.
        var data = PublicKeySignatureData.Build(h.Client.SessionId.Span, "alice", "ssh-connection", "ssh-ed25519", keyA.PublicKey.Blob.Span);
        var forged = keyB.Sign("ssh-ed25519", data);
        var blobA = keyA.PublicKey.Blob.ToArray();
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("publickey").WriteBoolean(true)
            .WriteString("ssh-ed25519").WriteString(blobA).WriteString(forged));
        await Msg.ExpectAsync(h.Client, 51);
        await SendSignedAsync(h, keyB, h.Client.SessionId.Span);
        await Msg.ExpectAsync(h.Client, 52);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.Equal(keyB.PublicKey, conn.AuthenticatedKey);
    }

    [Fact]
    public async Task ValidSignature_ForUnacceptedKey_IsRejected()
    {
        var key = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        await SendSignedAsync(h, key, h.Client.SessionId.Span);
        await Msg.ExpectAsync(h.Client, 51);
    }

    [Fact]
    public async Task MaxAuthAttempts_NoneCounts_ThenDisconnectNoMoreAuthMethods()
    {
        await using var h = new ServerHarness(new TestServerApplication(), o => new SshServerOptions { HostKeys = o.HostKeys, MaxAuthAttempts = 3 });
        await StartUserauthAsync(h);
        for (int i = 0; i < 2; i++)
        {
            await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("none"));
            await Msg.ExpectAsync(h.Client, 51);
        }
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("none"));
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.NoMoreAuthMethodsAvailable, h.Client.ReceivedDisconnect?.Reason);
    }

    [Fact]
    public async Task UserNameChange_DuringAuthentication_IsProtocolError()
    {
        await using var h = new ServerHarness(new TestServerApplication());
        await StartUserauthAsync(h);
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("none"));
        await Msg.ExpectAsync(h.Client, 51);
        await h.SendAsync(50, w => w.WriteString("bob").WriteString("ssh-connection").WriteString("none"));
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.ProtocolError, h.Client.ReceivedDisconnect?.Reason);
    }

    [Fact]
    public async Task OverlongUserName_IsIllegalUserName()
    {
        await using var h = new ServerHarness(new TestServerApplication());
        await StartUserauthAsync(h);
        var name = new string('a', SshAuthLimits.MaxUserNameBytes + 1);
        await h.SendAsync(50, w => w.WriteString(name).WriteString("ssh-connection").WriteString("none"));
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.IllegalUserName, h.Client.ReceivedDisconnect?.Reason);
    }

    [Fact]
    public async Task TruncatedUserauthRequest_IsProtocolError()
    {
        await using var h = new ServerHarness(new TestServerApplication());
        await StartUserauthAsync(h);
        await h.SendAsync(50, w => w.WriteUInt32(uint.MaxValue));
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.ProtocolError, h.Client.ReceivedDisconnect?.Reason);
    }

    [Fact]
    public async Task Banner_IsSentBeforeFirstAnswer()
    {
        await using var h = new ServerHarness(new TestServerApplication(), o => new SshServerOptions { HostKeys = o.HostKeys, Banner = "hello\r\n" });
        await StartUserauthAsync(h);
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("none"));
        var banner = await Msg.ExpectAsync(h.Client, 53);
        var r = new SshReader(banner.AsSpan(1));
        Assert.True(r.TryReadUtf8(out var text));
        Assert.Equal("hello\r\n", text);
        await Msg.ExpectAsync(h.Client, 51);
    }

    [Fact]
    public async Task LoginGraceTime_Expiry_Disconnects()
    {
        var time = new ManualTimeProvider();
        await using var h = new ServerHarness(new TestServerApplication(), o => new SshServerOptions
        {
            HostKeys = o.HostKeys, TimeProvider = time, LoginGraceTime = TimeSpan.FromSeconds(120),
        });
        await StartUserauthAsync(h);
        time.Advance(TimeSpan.FromSeconds(121));
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.ByApplication, h.Client.ReceivedDisconnect?.Reason);
        Assert.Equal(0, h.Server.UnauthenticatedConnectionCount);
    }

    [Fact]
    public async Task UnauthenticatedCap_PerSource_RefusesExtraConnection()
    {
        var app = new TestServerApplication();
        var hostKey = Ed25519PrivateKey.Generate();
        var server = new SshServer(new SshServerOptions { HostKeys = [hostKey], MaxUnauthenticatedConnectionsPerSource = 1 }, app);
        var (c1, s1) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        var (c2, s2) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        var remote = new System.Net.IPEndPoint(System.Net.IPAddress.Parse("192.0.2.7"), 1000);
        var local = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 22);
        var first = Task.Run(() => server.HandleConnectionAsync(s1, local, remote));
        for (int i = 0; i < 1000 && server.UnauthenticatedConnectionCount == 0; i++) await Task.Delay(10);
        await server.HandleConnectionAsync(s2, local, new System.Net.IPEndPoint(remote.Address, 1001)).WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.TooManyConnections, c2.ReceivedDisconnect?.Reason);
        c1.Close();
        await first.WaitAsync(Msg.Timeout);
        Assert.Equal(0, server.UnauthenticatedConnectionCount);
    }

    /// <summary>An IPv6 client holds a whole /64: rotating addresses inside it does not get past the per-source cap.</summary>
    [Fact]
    public async Task UnauthenticatedCap_PerSource_CountsAnIpv6Slash64AsOneSource()
    {
        var app = new TestServerApplication();
        var hostKey = Ed25519PrivateKey.Generate();
        var server = new SshServer(new SshServerOptions { HostKeys = [hostKey], MaxUnauthenticatedConnectionsPerSource = 1 }, app);
        var (c1, s1) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        var (c2, s2) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        var (c3, s3) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        var local = new System.Net.IPEndPoint(System.Net.IPAddress.IPv6Loopback, 22);
        var first = Task.Run(() => server.HandleConnectionAsync(s1, local, new System.Net.IPEndPoint(System.Net.IPAddress.Parse("2001:db8:0:7::1"), 1000)));
        for (int i = 0; i < 1000 && server.UnauthenticatedConnectionCount == 0; i++) await Task.Delay(10);
        await server.HandleConnectionAsync(s2, local, new System.Net.IPEndPoint(System.Net.IPAddress.Parse("2001:db8:0:7:ffff:1:2:3"), 1001)).WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.TooManyConnections, c2.ReceivedDisconnect?.Reason);
        Assert.Equal(SshServer.TooManyConnectionsMessage, c2.ReceivedDisconnect?.Description);
        // The neighbouring /64 is another source.
        var third = Task.Run(() => server.HandleConnectionAsync(s3, local, new System.Net.IPEndPoint(System.Net.IPAddress.Parse("2001:db8:0:8::1"), 1002)));
        for (int i = 0; i < 1000 && server.UnauthenticatedConnectionCount < 2; i++) await Task.Delay(10);
        Assert.Equal(2, server.UnauthenticatedConnectionCount);
        c1.Close();
        c3.Close();
        await first.WaitAsync(Msg.Timeout);
        await third.WaitAsync(Msg.Timeout);
        Assert.Equal(0, server.UnauthenticatedConnectionCount);
    }

    [Fact]
    public async Task KeyboardInteractive_PromptsAndChecksAnswers()
    {
        var app = new TestServerApplication
        {
            KeyboardInteractive = async (ctx, user, prompter, ct) =>
            {
                var answers = await prompter.PromptAsync("Login", "Answer please", [new SshPrompt("Code: ", false), new SshPrompt("Name: ", true)], ct);
                return answers is ["1234", "alice"];
            },
        };
        var hostKey = Ed25519PrivateKey.Generate();
        var server = new SshServer(new SshServerOptions { HostKeys = [hostKey], AuthenticationMethods = SshAuthMethodSet.KeyboardInteractive }, app);
        var (c, s) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        var serving = Task.Run(() => server.HandleConnectionAsync(s, new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 22), new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 5)));
        var seen = new List<SshPrompt>();
        await using var client = await SshClient.ConnectAsync(c, new SshClientOptions
        {
            User = "alice",
            HostKeyValidator = k => ValueTask.FromResult(k.Equals(hostKey.PublicKey)),
            KeyboardInteractiveResponder = (name, instruction, prompts, ct) =>
            {
                seen.AddRange(prompts);
                return ValueTask.FromResult<IReadOnlyList<string>>(["1234", "alice"]);
            },
        }).WaitAsync(Msg.Timeout);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.Null(conn.AuthenticatedKey);
        Assert.Equal("keyboard-interactive", conn.AuthenticationMethod);
        Assert.Equal([new SshPrompt("Code: ", false), new SshPrompt("Name: ", true)], seen);
    }

    [Fact]
    public async Task KeyboardInteractive_WrongAnswers_Fail()
    {
        var app = new TestServerApplication
        {
            KeyboardInteractive = async (ctx, user, prompter, ct) => (await prompter.PromptAsync("", "", [new SshPrompt("Code: ", false)], ct)) is ["1234"],
        };
        var hostKey = Ed25519PrivateKey.Generate();
        var server = new SshServer(new SshServerOptions { HostKeys = [hostKey], AuthenticationMethods = SshAuthMethodSet.KeyboardInteractive }, app);
        var (c, s) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        _ = Task.Run(() => server.HandleConnectionAsync(s, new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 22), new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 5)));
        await Assert.ThrowsAsync<SshAuthenticationException>(() => SshClient.ConnectAsync(c, new SshClientOptions
        {
            User = "alice",
            HostKeyValidator = _ => ValueTask.FromResult(true),
            KeyboardInteractiveResponder = (_, _, _, _) => ValueTask.FromResult<IReadOnlyList<string>>(["0000"]),
        }).WaitAsync(Msg.Timeout));
    }

    [Fact]
    public async Task KeyboardInteractive_WrongResponseCount_IsProtocolError()
    {
        var app = new TestServerApplication
        {
            KeyboardInteractive = async (ctx, user, prompter, ct) => (await prompter.PromptAsync("", "", [new SshPrompt("Code: ", false)], ct)).Count == 1,
        };
        await using var h = new ServerHarness(app, o => new SshServerOptions { HostKeys = o.HostKeys, AuthenticationMethods = SshAuthMethodSet.KeyboardInteractive });
        await StartUserauthAsync(h);
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("keyboard-interactive").WriteString("").WriteString(""));
        await Msg.ExpectAsync(h.Client, 60);
        await h.SendAsync(61, w => w.WriteUInt32(2).WriteString("a").WriteString("b"));
        await h.Serving.WaitAsync(Msg.Timeout);
        Assert.Equal(SshDisconnectReason.ProtocolError, h.Client.ReceivedDisconnect?.Reason);
    }

    [Fact]
    public async Task Password_OnlyWhenConfigured()
    {
        var app = new TestServerApplication { PasswordCheck = p => p == "secret" };
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("password").WriteBoolean(false).WriteString("secret"));
        await Msg.ExpectAsync(h.Client, 51);
        Assert.False(app.Connected.Task.IsCompleted);
    }

    [Fact]
    public async Task Client_PublicKey_AgainstServer_ReportsVerifiedKey()
    {
        var key = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        app.AcceptedKeys.Add(key.PublicKey);
        var hostKey = Ed25519PrivateKey.Generate();
        var server = new SshServer(new SshServerOptions { HostKeys = [hostKey] }, app);
        var (c, s) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        _ = Task.Run(() => server.HandleConnectionAsync(s, new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 22), new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 5)));
        var other = Ed25519PrivateKey.Generate();
        await using var client = await SshClient.ConnectAsync(c, new SshClientOptions
        {
            User = "alice", Keys = [other, key], HostKeyValidator = k => ValueTask.FromResult(k.Equals(hostKey.PublicKey)),
        }).WaitAsync(Msg.Timeout);
        Assert.Equal(key.PublicKey, client.AuthenticatedKey);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.Equal(key.PublicKey, conn.AuthenticatedKey);
    }

    [Fact]
    public async Task Client_UntrustedHostKey_Throws()
    {
        var hostKey = Ed25519PrivateKey.Generate();
        var (c, _) = InMemoryPacketChannel.CreatePair(hostKey.PublicKey);
        await Assert.ThrowsAsync<SshAuthenticationException>(() => SshClient.ConnectAsync(c, new SshClientOptions
        {
            User = "alice", HostKeyValidator = _ => ValueTask.FromResult(false),
        }));
        Assert.Equal(SshDisconnectReason.HostKeyNotVerifiable, c.SentDisconnect?.Reason);
    }

    [Fact]
    public async Task SignatureAlgorithm_NotMatchingKeyType_IsRejected()
    {
        var key = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication();
        app.AcceptedKeys.Add(key.PublicKey);
        await using var h = new ServerHarness(app);
        await StartUserauthAsync(h);
        var data = PublicKeySignatureData.Build(h.Client.SessionId.Span, "alice", "ssh-connection", "rsa-sha2-512", key.PublicKey.Blob.Span);
        var sig = key.Sign("ssh-ed25519", data);
        var blob = key.PublicKey.Blob.ToArray();
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("publickey").WriteBoolean(true)
            .WriteString("rsa-sha2-512").WriteString(blob).WriteString(sig));
        await Msg.ExpectAsync(h.Client, 51);
        Assert.False(app.Connected.Task.IsCompleted);
    }

    [Fact]
    public async Task PublicKey_NotOffered_WhenMethodDisabled()
    {
        var key = Ed25519PrivateKey.Generate();
        var app = new TestServerApplication { PasswordCheck = p => p == "pw" };
        app.AcceptedKeys.Add(key.PublicKey);
        await using var h = new ServerHarness(app, o => new SshServerOptions { HostKeys = o.HostKeys, AuthenticationMethods = SshAuthMethodSet.Password });
        await StartUserauthAsync(h);
        await SendSignedAsync(h, key, h.Client.SessionId.Span);
        var failure = await Msg.ExpectAsync(h.Client, 51);
        var r = new SshReader(failure.AsSpan(1));
        Assert.True(r.TryReadNameList(out var methods));
        Assert.Equal(["password"], methods);
        await h.SendAsync(50, w => w.WriteString("alice").WriteString("ssh-connection").WriteString("password").WriteBoolean(false).WriteString("pw"));
        await Msg.ExpectAsync(h.Client, 52);
        var conn = await app.Connected.Task.WaitAsync(Msg.Timeout);
        Assert.Null(conn.AuthenticatedKey);
        Assert.Equal("password", conn.AuthenticationMethod);
    }
}

/// <summary>A TimeProvider whose clock moves only when told (tests never sleep for time-outs).</summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private readonly object _gate = new();
    private readonly List<ManualTimer> _timers = [];
    private DateTimeOffset _now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow() { lock (_gate) return _now; }

    public void Advance(TimeSpan by)
    {
        List<ManualTimer> due;
        lock (_gate)
        {
            _now += by;
            due = _timers.Where(t => t.DueAt <= _now).ToList();
        }
        foreach (var t in due) t.Fire();
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var t = new ManualTimer(this, callback, state);
        t.Change(dueTime, period);
        return t;
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public DateTimeOffset DueAt = DateTimeOffset.MaxValue;

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (owner._gate)
            {
                owner._timers.Remove(this);
                if (dueTime == Timeout.InfiniteTimeSpan) { DueAt = DateTimeOffset.MaxValue; return true; }
                DueAt = owner._now + dueTime;
                owner._timers.Add(this);
            }
            return true;
        }

        public void Fire()
        {
            lock (owner._gate) owner._timers.Remove(this);
            callback(state);
        }

        public void Dispose() { lock (owner._gate) owner._timers.Remove(this); }
        public ValueTask DisposeAsync() { Dispose(); return ValueTask.CompletedTask; }
    }
}
