using Dapper;
using Warren.Platform.Storage;
using Xunit;

namespace Warren.Platform.Tests.Storage;

public sealed class WarrenDatabaseTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "warren-platform-tests", Guid.NewGuid().ToString("N"));
    private string DbPath => Path.Combine(_dir, "warren.db");

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public void Migrations_RunOnce_AndReopeningIsIdempotent()
    {
        IReadOnlyList<string> first;
        using (var db = new WarrenDatabase(DbPath)) first = db.AppliedMigrations();
        Assert.NotEmpty(first);
        using (var db = new WarrenDatabase(DbPath))
        {
            Assert.Equal(first, db.AppliedMigrations());
            using var c = db.OpenConnection();
            Assert.Equal(first.Count, c.ExecuteScalar<long>("SELECT COUNT(*) FROM schema_migrations"));
        }
    }

    [Fact]
    public void ExtraMigrations_ApplyInIdOrder_Once()
    {
        var extra = new[] { new SchemaMigration("0100-extra", "CREATE TABLE extra_things (id INTEGER PRIMARY KEY);") };
        using (var db = new WarrenDatabase(DbPath, extra)) Assert.Contains("0100-extra", db.AppliedMigrations());
        using (var db = new WarrenDatabase(DbPath, extra))
        {
            Assert.Equal(db.AppliedMigrations().Order(StringComparer.Ordinal), db.AppliedMigrations());
            using var c = db.OpenConnection();
            Assert.Equal(0, c.ExecuteScalar<long>("SELECT COUNT(*) FROM extra_things"));
        }
    }

    [Fact]
    public void DuplicateMigrationIds_AreRefused()
    {
        var extra = new[] { new SchemaMigration("0001-core", "SELECT 1;") };
        Assert.Throws<InvalidOperationException>(() => new WarrenDatabase(DbPath, extra));
    }

    [Fact]
    public void Connections_UseWal_ForeignKeys_AndBusyTimeout()
    {
        using var db = new WarrenDatabase(DbPath);
        using var c = db.OpenConnection();
        Assert.Equal("wal", c.ExecuteScalar<string>("PRAGMA journal_mode"));
        Assert.Equal(1, c.ExecuteScalar<long>("PRAGMA foreign_keys"));
        Assert.Equal(WarrenDatabase.BusyTimeoutMilliseconds, c.ExecuteScalar<long>("PRAGMA busy_timeout"));
    }

    [Fact]
    public async Task Write_RollsBackOnError_AndRunsCallbacksOnlyAfterCommit()
    {
        using var db = new WarrenDatabase(DbPath);
        bool called = false;
        await Assert.ThrowsAsync<InvalidOperationException>(() => db.WriteAsync(async u =>
        {
            await u.ExecuteAsync("INSERT INTO accounts (id, email, created_at) VALUES ('a', 'a@example.com', 0)");
            u.OnCommitted(_ => called = true);
            throw new InvalidOperationException("boom");
        }));
        Assert.False(called);
        Assert.Equal(0, await db.ReadAsync(c => c.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM accounts")));
        await db.WriteAsync(async u =>
        {
            await u.ExecuteAsync("INSERT INTO accounts (id, email, created_at) VALUES ('a', 'a@example.com', 0)");
            u.OnCommitted(_ => called = true);
        });
        Assert.True(called);
    }

    [Fact]
    public async Task ParallelWriters_AreSerialized()
    {
        using var db = new WarrenDatabase(DbPath);
        const int Writers = 16;
        await Task.WhenAll(Enumerable.Range(0, Writers).Select(i => Task.Run(() => db.WriteAsync(u =>
            u.ExecuteAsync("INSERT INTO accounts (id, email, created_at) VALUES (@id, @e, 0)", new { id = $"a{i}", e = $"a{i}@example.com" })))));
        Assert.Equal(Writers, await db.ReadAsync(c => c.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM accounts")));
    }
}
