using Dapper;
using Microsoft.Data.Sqlite;
using Warren.Platform.Storage;
using Xunit;

namespace Warren.Platform.Tests.Storage;

/// <summary>
/// What the upgrade does to rows made before addresses were verified: they cannot be told apart from claims the old
/// AutoVerify default let through, so every account starts unverified, shares to them go back to pending and the SSH
/// routes those shares gave are dropped; owners keep their own VMs and routes.
/// </summary>
public sealed class EmailVerifiedMigrationTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "warren-migration-tests", Guid.NewGuid().ToString("N"));
    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public void ExistingAccounts_StartUnverified_TheirSharesPending_OwnersKeepTheirRoutes()
    {
        Directory.CreateDirectory(_dir);
        string path = Path.Combine(_dir, "warren.db");
        using (var c = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            // A database as the release before this change left it: only the core schema applied.
            c.Open();
            c.Execute("CREATE TABLE schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)");
            c.Execute(CoreMigrations.All.Single(m => m.Id == "0001-core").Sql);
            c.Execute("INSERT INTO schema_migrations VALUES ('0001-core', 0)");
            c.Execute("INSERT INTO accounts VALUES ('acct_owner', 'owner@example.com', 0), ('acct_carol', 'carol@example.com', 0)");
            c.Execute("""
                INSERT INTO vms (id, name, account_id, image, state, slot_name, cpus, memory_bytes, disk_bytes, command_mode, created_at, updated_at)
                VALUES ('vm_1', 'web', 'acct_owner', 'warren/busybox:1', 'running', 's001', 1, 1, 1, 'auto', 0, 0)
                """);
            c.Execute("INSERT INTO vm_shares VALUES ('vm_1', 'carol@example.com', 'active', 1, 0)");
            c.Execute("INSERT INTO ssh_reach VALUES ('acct_owner', 's001', 'vm_1'), ('acct_carol', 's001', 'vm_1')");
        }

        using var db = new WarrenDatabase(path);
        Assert.Contains("0002-account-email-verified", db.AppliedMigrations());
        using var after = db.OpenConnection();
        Assert.Equal(0L, after.ExecuteScalar<long>("SELECT COUNT(*) FROM accounts WHERE email_verified = 1"));
        Assert.Equal("pending", after.ExecuteScalar<string>("SELECT status FROM vm_shares WHERE email = 'carol@example.com'"));
        Assert.Equal(["acct_owner"], after.Query<string>("SELECT account_id FROM ssh_reach ORDER BY account_id"));
        Assert.Equal(1L, after.ExecuteScalar<long>("SELECT COUNT(*) FROM vms"));
    }
}
