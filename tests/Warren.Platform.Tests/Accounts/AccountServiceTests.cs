using Warren.Platform.Accounts;
using Warren.Platform.Tests.TestSupport;
using Xunit;

namespace Warren.Platform.Tests.Accounts;

public sealed class AccountServiceTests : IDisposable
{
    private readonly TestPlatform _p = new();
    public void Dispose() => _p.Dispose();

    [Fact]
    public async Task Create_LowercasesEmail_AndNamesFirstKeyKey1()
    {
        var key = TestPlatform.NewKey();
        var a = await _p.Accounts.CreateAsync("Alice@Example.com", key, emailVerified: true);
        Assert.Equal("alice@example.com", a.Email);
        Assert.Equal(a, await _p.Accounts.FindByKeyFingerprintAsync(key.Fingerprint));
        Assert.Equal(a, await _p.Accounts.FindByEmailAsync("ALICE@example.com"));
        Assert.Equal(a, await _p.Accounts.GetAsync(a.Id));
        var keys = await _p.Accounts.ListKeysAsync(a.Id);
        Assert.Equal("key-1", Assert.Single(keys).Name);
        Assert.Equal(key.ToOpenSshString(), keys[0].PublicKey);
    }

    [Fact]
    public async Task Create_DuplicateEmailOrKey_Refused()
    {
        var key = TestPlatform.NewKey();
        await _p.Accounts.CreateAsync("alice@example.com", key, emailVerified: true);
        Assert.Equal(PlatformErrorCodes.AccountExists,
            (await Assert.ThrowsAsync<PlatformException>(() => _p.Accounts.CreateAsync("alice@example.com", TestPlatform.NewKey(), emailVerified: true))).Code);
        Assert.Equal(PlatformErrorCodes.KeyInUse,
            (await Assert.ThrowsAsync<PlatformException>(() => _p.Accounts.CreateAsync("bob@example.com", key, emailVerified: true))).Code);
        Assert.Equal(PlatformErrorCodes.InvalidEmail,
            (await Assert.ThrowsAsync<PlatformException>(() => _p.Accounts.CreateAsync("not-an-email", TestPlatform.NewKey(), emailVerified: true))).Code);
        Assert.Single(await _p.Accounts.ListAccountsAsync());
    }

    [Fact]
    public async Task Keys_AddRenameRemove_AsExeDev()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var b = await _p.NewAccountAsync("bob@example.com");
        var k2 = await _p.Accounts.AddKeyAsync(a.Id, TestPlatform.NewKey());
        Assert.Equal("key-2", k2.Name);
        var named = await _p.Accounts.AddKeyAsync(a.Id, TestPlatform.NewKey(), "my laptop;");
        Assert.Equal("my-laptop", named.Name);
        // A key belongs to at most one account platform-wide.
        var shared = TestPlatform.NewKey();
        await _p.Accounts.AddKeyAsync(a.Id, shared);
        Assert.Equal(PlatformErrorCodes.KeyInUse, (await Assert.ThrowsAsync<PlatformException>(() => _p.Accounts.AddKeyAsync(b.Id, shared))).Code);

        var (before, after) = await _p.Accounts.RenameKeyAsync(a.Id, k2.Fingerprint, "ci runner");
        Assert.Equal("key-2", before.Name);
        Assert.Equal("ci-runner", after.Name);
        Assert.Equal(PlatformErrorCodes.KeyNameInUse,
            (await Assert.ThrowsAsync<PlatformException>(() => _p.Accounts.RenameKeyAsync(a.Id, "ci-runner", "my-laptop"))).Code);

        var removed = await _p.Accounts.RemoveKeyAsync(a.Id, "ci-runner");
        Assert.Equal(k2.Id, removed.Id);
        Assert.Null(await _p.Accounts.FindByKeyFingerprintAsync(k2.Fingerprint));
        Assert.Equal(PlatformErrorCodes.KeyNotFound,
            (await Assert.ThrowsAsync<PlatformException>(() => _p.Accounts.RemoveKeyAsync(a.Id, k2.Fingerprint))).Code);
        // Another account's key cannot be removed through this account.
        var bKey = Assert.Single(await _p.Accounts.ListKeysAsync(b.Id));
        Assert.Equal(PlatformErrorCodes.KeyNotFound,
            (await Assert.ThrowsAsync<PlatformException>(() => _p.Accounts.RemoveKeyAsync(a.Id, bKey.Fingerprint))).Code);
        // The last login key stays.
        Assert.Equal(PlatformErrorCodes.LastKey,
            (await Assert.ThrowsAsync<PlatformException>(() => _p.Accounts.RemoveKeyAsync(b.Id, bKey.Fingerprint))).Code);
    }

    [Fact]
    public async Task ApiKeyPermissions_RoundTrip_AndTouchRecordsLastUse()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var perms = new ApiKeyPermissions("deploy", ["ls", "new"], null, _p.Time.GetUtcNow().AddDays(90));
        var k = await _p.Accounts.AddKeyAsync(a.Id, TestPlatform.NewKey(), "deploy", perms);
        var stored = (await _p.Accounts.FindKeyByFingerprintAsync(k.Fingerprint))!;
        Assert.Equal("deploy", stored.Permissions!.Label);
        Assert.Equal(["ls", "new"], stored.Permissions.Cmds);
        Assert.Null(stored.LastUsedAt);
        _p.Time.Advance(TimeSpan.FromMinutes(5));
        await _p.Accounts.TouchKeyAsync(k.Fingerprint);
        Assert.Equal(_p.Time.GetUtcNow(), (await _p.Accounts.FindKeyByFingerprintAsync(k.Fingerprint))!.LastUsedAt);
    }
}
