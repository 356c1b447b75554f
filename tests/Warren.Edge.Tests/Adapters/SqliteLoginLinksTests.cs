using Warren.Edge.Adapters;
using Warren.Edge.Http;
using Warren.Edge.Tests.Support;
using Warren.Platform.Storage;

namespace Warren.Edge.Tests.Adapters;

/// <summary>
/// Login links in SQLite: a link survives the database being closed and opened again (a daemon restart), works once,
/// expires, is kept only as a hash, keeps the mailed mark, and each account holds a bounded number.
/// </summary>
public sealed class SqliteLoginLinksTests : IDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "warren-login-links-" + Guid.NewGuid().ToString("N"));
    private readonly ManualTimeProvider _time = new();
    private WarrenDatabase _db;

    public SqliteLoginLinksTests() => _db = Open();

    private WarrenDatabase Open() => new(Path.Combine(_directory, "warren.db"), [SqliteLoginLinks.Migration]);

    public void Dispose()
    {
        _db.Dispose();
        try { Directory.Delete(_directory, recursive: true); } catch (IOException) { }
    }

    private static readonly WebUser Ann = new("acct_ann", "ann@mail.internal");
    private static readonly WebUser Bob = new("acct_bob", "bob@mail.internal");

    [Fact]
    public async Task ALink_SurvivesAReopen_WorksOnce_ForItsUserAndHost()
    {
        var links = new SqliteLoginLinks(_db, _time);
        string secret = await links.IssueAsync(Ann, "Warren.Localhost", mailed: true, CancellationToken.None);
        string other = await links.IssueAsync(Bob, null, CancellationToken.None);
        _db.Dispose();
        _db = Open();
        links = new SqliteLoginLinks(_db, _time);

        var used = await links.ConsumeLinkAsync(secret, CancellationToken.None);
        Assert.Equal(new ConsumedLoginLink(new LoginGrant(Ann, "warren.localhost"), Mailed: true), used);
        Assert.Null(await links.ConsumeLinkAsync(secret, CancellationToken.None));
        Assert.Equal(new LoginGrant(Bob, null), await links.ConsumeAsync(other, CancellationToken.None));
        var stored = await _db.ReadAsync(c => Dapper.SqlMapper.QueryAsync<string>(c, "SELECT secret_hash FROM login_links"));
        Assert.Empty(stored);
    }

    [Fact]
    public async Task ALink_Expires_AndOnlyItsHashIsStored()
    {
        var links = new SqliteLoginLinks(_db, _time);
        string secret = await links.IssueAsync(Ann, null, CancellationToken.None);
        var stored = await _db.ReadAsync(c => Dapper.SqlMapper.QuerySingleAsync<string>(c, "SELECT secret_hash FROM login_links"));
        Assert.Equal(LoginLinks.Hash(secret), stored);
        Assert.DoesNotContain(secret, stored);
        _time.Advance(LoginLinks.LinkLifetime);
        Assert.Null(await links.ConsumeAsync(secret, CancellationToken.None));
    }

    [Fact]
    public async Task OneAccount_HoldsABoundedNumber_TheOldestGoFirst_AndExpiredRowsArePurged()
    {
        var links = new SqliteLoginLinks(_db, _time);
        var secrets = new List<string>();
        for (int i = 0; i < SqliteLoginLinks.MaxOutstandingPerAccount + 3; i++)
        {
            secrets.Add(await links.IssueAsync(Ann, null, CancellationToken.None));
            _time.Advance(TimeSpan.FromSeconds(1));
        }
        long Count() => _db.ReadAsync(c => Dapper.SqlMapper.ExecuteScalarAsync<long>(c, "SELECT COUNT(*) FROM login_links")).Result;
        Assert.Equal(SqliteLoginLinks.MaxOutstandingPerAccount, Count());
        Assert.Null(await links.ConsumeAsync(secrets[0], CancellationToken.None));
        Assert.NotNull(await links.ConsumeAsync(secrets[^1], CancellationToken.None));
        // Another account's links are not pushed out by Ann's, and expired ones go when a new one is issued.
        string bobs = await links.IssueAsync(Bob, null, CancellationToken.None);
        _time.Advance(LoginLinks.LinkLifetime);
        await links.IssueAsync(Bob, null, CancellationToken.None);
        Assert.Equal(1, Count());
        Assert.Null(await links.ConsumeAsync(bobs, CancellationToken.None));
    }

    [Fact]
    public async Task ArbitrarySecrets_NeverMatch_NorThrow()
    {
        var links = new SqliteLoginLinks(_db, _time);
        await links.IssueAsync(Ann, null, CancellationToken.None);
        foreach (var s in new[] { "", "x", new string('A', 43), new string('A', HeaderParsing.MaxTokenLength + 1), "' OR 1=1 --", "\0" })
            Assert.Null(await links.ConsumeAsync(s, CancellationToken.None));
    }
}
