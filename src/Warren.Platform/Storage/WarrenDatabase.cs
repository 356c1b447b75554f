using System.Data;
using Dapper;
using Microsoft.Data.Sqlite;

using Warren.Threading;

namespace Warren.Platform.Storage;

/// <summary>
/// One ordered schema change. Ids are compared ordinally, so name them to sort:
/// "0001-core", "0100-tokens". Each runs once, in its own transaction, recorded in <c>schema_migrations</c>.
/// Other parts of Warren (Tokens, …) contribute theirs by registering <see cref="SchemaMigration"/> singletons.
/// </summary>
public sealed record SchemaMigration(string Id, string Sql);

/// <summary>
/// The SQLite database at <c>{DataDirectory}/warren.db</c>: WAL journal, foreign keys on, a busy timeout,
/// migrations run when it opens. Writers are serialized in-process by one gate (SQLite has a single writer;
/// queuing here avoids SQLITE_BUSY storms) and run in a BEGIN IMMEDIATE transaction. Readers use their own
/// pooled connections and see the last committed state (WAL snapshot isolation).
/// </summary>
public sealed class WarrenDatabase : IDisposable
{
    /// <summary>How long SQLite waits for a lock held by another connection or process before SQLITE_BUSY.</summary>
    public const int BusyTimeoutMilliseconds = 10_000;

    private readonly SemaphoreSlim _writeGate = new(1, 1);
    private readonly string _connectionString;
    private readonly SqliteConnection _keepAlive;
    private bool _disposed;

    public WarrenDatabase(string path, IEnumerable<SchemaMigration>? extraMigrations = null)
    {
        DatabasePath = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(DatabasePath)!);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = DatabasePath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
            ForeignKeys = true,
            DefaultTimeout = BusyTimeoutMilliseconds / 1000,
        }.ToString();

        // Held open for the database's lifetime: keeps the WAL index alive and lets Dispose checkpoint.
        _keepAlive = OpenConnection();
        using (var cmd = _keepAlive.CreateCommand())
        {
            cmd.CommandText = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
            cmd.ExecuteNonQuery();
        }
        Migrations = CoreMigrations.All.Concat(extraMigrations ?? []).OrderBy(m => m.Id, StringComparer.Ordinal).ToArray();
        var dup = Migrations.GroupBy(m => m.Id).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new InvalidOperationException($"Two schema migrations share the id \"{dup.Key}\".");
        Migrate();
    }

    public WarrenDatabase(PlatformOptions options, IEnumerable<SchemaMigration>? extraMigrations = null)
        : this(options.DatabasePath, extraMigrations) { }

    public string DatabasePath { get; }

    /// <summary>Every migration this database knows, in the order they apply.</summary>
    public IReadOnlyList<SchemaMigration> Migrations { get; }

    /// <summary>Opens a new connection (pooled) with foreign keys and the busy timeout set. Caller disposes.</summary>
    public SqliteConnection OpenConnection()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = new SqliteConnection(_connectionString);
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = $"PRAGMA busy_timeout={BusyTimeoutMilliseconds}; PRAGMA foreign_keys=ON;";
        cmd.ExecuteNonQuery();
        return c;
    }

    /// <summary>Ids of the migrations applied to the file, in order.</summary>
    public IReadOnlyList<string> AppliedMigrations()
    {
        using var c = OpenConnection();
        return c.Query<string>("SELECT id FROM schema_migrations ORDER BY id").AsList();
    }

    private void Migrate()
    {
        _writeGate.Wait();
        try
        {
            using var c = OpenConnection();
            c.Execute("CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)");
            foreach (var m in Migrations)
            {
                using var tx = c.BeginTransaction(deferred: false);
                var done = c.ExecuteScalar<long>("SELECT COUNT(*) FROM schema_migrations WHERE id = @Id", new { m.Id }, tx);
                if (done > 0) { tx.Rollback(); continue; }
                c.Execute(m.Sql, transaction: tx);
                c.Execute("INSERT INTO schema_migrations (id, applied_at) VALUES (@Id, @At)",
                    new { m.Id, At = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() }, tx);
                tx.Commit();
            }
        }
        finally { _writeGate.Release(); }
    }

    private long _reads;

    /// <summary>Reads run so far (<see cref="ReadAsync{T}"/> calls): lets tests count what one operation costs.</summary>
    public long ReadCount => Interlocked.Read(ref _reads);

    /// <summary>Runs a read on its own connection.</summary>
    public async Task<T> ReadAsync<T>(Func<SqliteConnection, Task<T>> work, CancellationToken ct = default)
    {
        ct.ThrowIfCancellationRequested();
        Interlocked.Increment(ref _reads);
        // SQLite calls block (a write may wait BusyTimeoutMilliseconds for another process's lock): never on a
        // socket engine thread, where the code after an awaited Docker answer, say, would otherwise run.
        await SocketThread.Leave();
        await using var c = OpenConnection();
        return await work(c).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs <paramref name="work"/> as one transaction (BEGIN IMMEDIATE), serialized with every other writer
    /// in this process. Commits when it returns, rolls back when it throws. Callbacks registered with
    /// <see cref="UnitOfWork.OnCommitted"/> run after the commit while the write gate is still held, so
    /// in-memory views update in commit order.
    /// </summary>
    public async Task<T> WriteAsync<T>(Func<UnitOfWork, Task<T>> work, CancellationToken ct = default)
    {
        // SQLite calls block (a write may wait BusyTimeoutMilliseconds for another process's lock): never on a
        // socket engine thread, where the code after an awaited Docker answer, say, would otherwise run.
        await SocketThread.Leave();
        await _writeGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await using var c = OpenConnection();
            T result;
            UnitOfWork uow;
            using (var tx = c.BeginTransaction(deferred: false))
            {
                uow = new UnitOfWork(c, tx);
                result = await work(uow).ConfigureAwait(false);
                tx.Commit();
            }
            foreach (var cb in uow.Callbacks) cb(c);
            return result;
        }
        finally { _writeGate.Release(); }
    }

    public Task WriteAsync(Func<UnitOfWork, Task> work, CancellationToken ct = default)
        => WriteAsync<bool>(async u => { await work(u).ConfigureAwait(false); return true; }, ct);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        // Close idle pooled connections first, then fold the WAL back without waiting on anyone still reading.
        SqliteConnection.ClearPool(new SqliteConnection(_connectionString));
        try
        {
            using var cmd = _keepAlive.CreateCommand();
            cmd.CommandText = "PRAGMA busy_timeout=0; PRAGMA wal_checkpoint(TRUNCATE);";
            cmd.CommandTimeout = 1;
            cmd.ExecuteNonQuery();
        }
        catch (SqliteException) { /* best effort: another connection may still read */ }
        _keepAlive.Dispose();
        SqliteConnection.ClearPool(new SqliteConnection(_connectionString));
        _writeGate.Dispose();
    }
}

/// <summary>One write transaction. Use <see cref="Connection"/> with <see cref="Transaction"/> for every command.</summary>
public sealed class UnitOfWork
{
    internal UnitOfWork(SqliteConnection connection, SqliteTransaction transaction)
    {
        Connection = connection;
        Transaction = transaction;
    }

    public SqliteConnection Connection { get; }
    public SqliteTransaction Transaction { get; }
    internal List<Action<SqliteConnection>> Callbacks { get; } = new();

    /// <summary>Runs <paramref name="callback"/> after a successful commit (not after a rollback), with the connection, outside the transaction.</summary>
    public void OnCommitted(Action<SqliteConnection> callback) => Callbacks.Add(callback);

    public Task<int> ExecuteAsync(string sql, object? param = null) => Connection.ExecuteAsync(sql, param, Transaction);
    public Task<T?> ScalarAsync<T>(string sql, object? param = null) => Connection.ExecuteScalarAsync<T>(sql, param, Transaction);
    public Task<IEnumerable<T>> QueryAsync<T>(string sql, object? param = null) => Connection.QueryAsync<T>(sql, param, Transaction);
    public Task<T?> QuerySingleOrDefaultAsync<T>(string sql, object? param = null) => Connection.QuerySingleOrDefaultAsync<T>(sql, param, Transaction);
}

/// <summary>SQLite error helpers.</summary>
internal static class SqliteErrors
{
    /// <summary>SQLITE_CONSTRAINT (19): UNIQUE, FOREIGN KEY, CHECK, NOT NULL.</summary>
    private const int SqliteConstraint = 19;

    public static bool IsConstraint(SqliteException e) => e.SqliteErrorCode == SqliteConstraint;
    public static bool IsUnique(SqliteException e, string? tableDotColumn = null)
        => IsConstraint(e) && e.Message.Contains("UNIQUE", StringComparison.Ordinal)
           && (tableDotColumn is null || e.Message.Contains(tableDotColumn, StringComparison.Ordinal));
}
