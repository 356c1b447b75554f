using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Edge.Limits;
using Warren.Edge.Ssh;
using Warren.Edge.Tests.Support;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Storage;
using Warren.Ssh.Keys;
using Warren.Ssh.Server;

namespace Warren.Edge.Tests.Ssh;

/// <summary>
/// What turning a key into an identity costs: a real OpenSSH client (which queries its key, then signs: RFC 4252 §7)
/// against <see cref="WarrenSshApplication"/> over a real SQLite database. The account is looked up once per
/// connection and carried on it.
/// </summary>
public sealed class IdentityLookupTests : IDisposable
{
    /// <summary>A slot address from the tests' loopback pool; the account has no VM there, so the session prints a message.</summary>
    private const string SlotIp = "127.0.1.9";

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "warren-edge-identity-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task OneConnection_ReadsTheAccountOnce()
    {
        Directory.CreateDirectory(_dir);
        var keyPath = Path.Combine(_dir, "id");
        var keygen = await ExternalTool.RunAsync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", keyPath]);
        Assert.Equal(0, keygen.ExitCode);
        Assert.True(SshPublicKey.TryParseOpenSsh(await File.ReadAllTextAsync(keyPath + ".pub"), out var publicKey, out _));

        var options = new PlatformOptions
        {
            DataDirectory = _dir,
            Slots = [new AddressSlotOptions { Name = "s001", PublicIp = "10.0.0.1", LocalIp = SlotIp }],
        };
        using var db = new WarrenDatabase(options);
        var slots = new AddressSlotTable(options);
        var index = new PlatformIndex(db);
        var routes = new SshRouteTable(index, slots, db, options);
        var accounts = new AccountService(db, TimeProvider.System, new AddressSlotAllocator(slots), index);
        await accounts.CreateAsync("alice@example.com", publicKey, emailVerified: true);

        // A slot connection without a VM reaches neither the runtime nor the control plane: those stay unset.
        var app = new WarrenSshApplication(accounts, routes, index, runtime: null!, options, controlPlane: null!, relay: null!, loginUsers: null!,
            new KeyedTokenBucket(TimeProvider.System, 10, 1, overdraft: 0), TimeProvider.System, NullLogger<WarrenSshApplication>.Instance);
        var server = new SshServer(new SshServerOptions { HostKeys = [Ed25519PrivateKey.Generate()] }, app);
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Parse(SlotIp), 0));
        listener.Listen(8);
        using var stop = new CancellationTokenSource();
        var serving = server.ServeAsync(listener, stop.Token);

        long before = db.ReadCount;
        var ssh = await ExternalTool.RunAsync("ssh", ["-F", "/dev/null", "-i", keyPath, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-p", ((IPEndPoint)listener.LocalEndPoint!).Port.ToString(), $"root@{SlotIp}", "true"]);
        long reads = db.ReadCount - before;

        Assert.Equal(1, ssh.ExitCode);
        Assert.Contains("you have no VM", ssh.Stderr);
        Assert.True(reads == 1, $"one connection made {reads} database reads; expected 1 (the key with its account)");

        stop.Cancel();
        try { await serving; } catch (OperationCanceledException) { }
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
