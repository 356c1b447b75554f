using System.Security.Cryptography;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Audit;
using Warren.Platform.Sharing;
using Warren.Platform.Stats;
using Warren.Platform.Storage;
using Warren.Platform.Vms;
using Warren.Ssh.Keys;

namespace Warren.Platform.Tests.TestSupport;

/// <summary>A settable clock.</summary>
public sealed class ManualTimeProvider(DateTimeOffset start) : TimeProvider
{
    private DateTimeOffset _now = start;
    public override DateTimeOffset GetUtcNow() => _now;
    public void Advance(TimeSpan by) => _now += by;
}

/// <summary>
/// The platform's services over a real SQLite file in a temp directory, with a fake runtime.
/// <see cref="Restart"/> builds a fresh set over the same file and engine, as a daemon restart would.
/// </summary>
public sealed class TestPlatform : IDisposable
{
    private readonly List<WarrenDatabase> _dbs = new();

    public TestPlatform(int slotCount = 4, int maxVmsPerAccount = 100, FakeEngine? engine = null, string? directory = null)
    {
        Directory_ = directory ?? Path.Combine(Path.GetTempPath(), "warren-platform-tests", Guid.NewGuid().ToString("N"));
        Options = new PlatformOptions
        {
            DataDirectory = Directory_,
            MaxVmsPerAccount = maxVmsPerAccount,
            // Loopback-only, like a developer's install (tests that need the code turn it off).
            Signup = new SignupOptions { AutoVerify = true },
            Slots = Enumerable.Range(1, slotCount).Select(i => new AddressSlotOptions
            {
                Name = $"s{i:000}", PublicIp = $"10.0.{i / 250}.{i % 250 + 1}", LocalIp = $"127.1.{i / 250}.{i % 250 + 1}",
            }).ToList(),
        };
        Engine = engine ?? new FakeEngine();
        Runtime = new FakeVmRuntime(Engine);
        Build();
    }

    public string Directory_ { get; }
    public PlatformOptions Options { get; }
    public FakeEngine Engine { get; }
    public FakeVmRuntime Runtime { get; private set; }
    public ManualTimeProvider Time { get; } = new(new DateTimeOffset(2026, 11, 22, 12, 0, 0, TimeSpan.Zero));
    public WarrenDatabase Db { get; private set; } = null!;
    public AddressSlotTable Slots { get; private set; } = null!;
    public AddressSlotAllocator Allocator { get; private set; } = null!;
    public PlatformIndex Index { get; private set; } = null!;
    public SshRouteTable Routes { get; private set; } = null!;
    public VmDirectory Directory { get; private set; } = null!;
    public AccountService Accounts { get; private set; } = null!;
    public VmService Vms { get; private set; } = null!;
    public ShareService Shares { get; private set; } = null!;
    public StatsStore Stats { get; private set; } = null!;
    public AuditLog Audit { get; private set; } = null!;

    private void Build()
    {
        Db = new WarrenDatabase(Options);
        _dbs.Add(Db);
        Slots = new AddressSlotTable(Options);
        Allocator = new AddressSlotAllocator(Slots);
        Index = new PlatformIndex(Db);
        Routes = new SshRouteTable(Index, Slots, Db, Options);
        Directory = new VmDirectory(Index, Slots);
        Accounts = new AccountService(Db, Time, Allocator, Index);
        Vms = new VmService(Db, Runtime, Options, Allocator, Index, Time);
        Shares = new ShareService(Db, Options, Allocator, Index, Time);
        Stats = new StatsStore(Db, Time);
        Audit = new AuditLog(Db);
    }

    /// <summary>A "new process": fresh services and a fresh runtime client over the same database file and engine.</summary>
    public void Restart()
    {
        Runtime = new FakeVmRuntime(Engine);
        Build();
    }

    public static SshPublicKey NewKey() => new Ed25519PublicKey(RandomNumberGenerator.GetBytes(32));

    public Task<Account> NewAccountAsync(string email) => Accounts.CreateAsync(email, NewKey(), emailVerified: true);

    public void Dispose()
    {
        foreach (var db in _dbs)
        {
            try { db.Dispose(); } catch (ObjectDisposedException) { }
        }
        try { System.IO.Directory.Delete(Directory_, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
