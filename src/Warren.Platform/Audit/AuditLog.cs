using System.Text.Json;
using Dapper;
using Warren.Platform.Commands;
using Warren.Platform.Storage;

namespace Warren.Platform.Audit;

/// <summary>One audited command. <see cref="Arguments"/> are redacted before storing (<see cref="AuditRedaction"/>).</summary>
public sealed record AuditEntry(
    DateTimeOffset At,
    string? AccountId,
    string? KeyFingerprint,
    string? Source,
    string Command,
    IReadOnlyList<string> Arguments,
    string Result,
    string? ErrorCode,
    TimeSpan? Duration)
{
    public long Id { get; init; }
}

/// <summary>
/// Masks secrets in command arguments by reading them as the command parser does (<see cref="ArgParser.RedactSecrets"/>):
/// the values of the command's secret flags in every spelling, of flags it does not have, and its secret positionals;
/// then anything that looks like a Warren token.
/// </summary>
public static class AuditRedaction
{
    public const string Mask = "***";

    private static readonly string[] TokenPrefixes = ["exe0.", "exe1.", "exeapp_", "warren0.", "warren1."];

    /// <summary>
    /// <paramref name="args"/> of <paramref name="command"/> (a canonical path such as "new"), redacted. The arguments
    /// may start with the command's words (a full argv) or not; for an unknown command every flag value is masked.
    /// </summary>
    public static IReadOnlyList<string> Redact(string command, IReadOnlyList<string> args)
    {
        var restIndexes = new List<int>();
        var def = CommandCatalog.Resolve(args, out var rest, restIndexes, out _, out _);
        if (def is null || def.Path != command)
        {
            def = CommandCatalog.FindPath(command);
            rest = args.ToList();
            restIndexes = Enumerable.Range(0, args.Count).ToList();
        }
        var redactedRest = ArgParser.RedactSecrets(rest, def?.Flags ?? [], def?.StopAtFirstPositional ?? false, def?.SecretArgs ?? [], Mask);
        var result = args.ToArray();
        for (int i = 0; i < redactedRest.Length; i++) result[restIndexes[i]] = redactedRest[i];
        for (int i = 0; i < result.Length; i++)
            if (TokenPrefixes.Any(p => result[i].Contains(p, StringComparison.Ordinal))) result[i] = Mask;
        return result;
    }
}

/// <summary>Append-only record of who did what. Never holds secrets: arguments pass through <see cref="AuditRedaction"/>.</summary>
public sealed class AuditLog
{
    /// <summary>Largest number of entries one <see cref="TailAsync"/> returns.</summary>
    public const int MaxTail = 10_000;

    private readonly WarrenDatabase _db;

    public AuditLog(WarrenDatabase db) => _db = db;

    public Task<long> AppendAsync(AuditEntry e, CancellationToken ct = default)
        => _db.WriteAsync(u => u.Connection.ExecuteScalarAsync<long>("""
            INSERT INTO audit_log (at, account_id, key_fingerprint, source, command, arguments, result, error_code, duration_ms)
            VALUES (@At, @AccountId, @KeyFingerprint, @Source, @Command, @Arguments, @Result, @ErrorCode, @DurationMs);
            SELECT last_insert_rowid();
            """, new
            {
                At = e.At.ToUnixTimeMilliseconds(), e.AccountId, e.KeyFingerprint, e.Source, e.Command,
                Arguments = JsonSerializer.Serialize(AuditRedaction.Redact(e.Command, e.Arguments)), e.Result, e.ErrorCode,
                DurationMs = e.Duration is { } d ? (long?)d.TotalMilliseconds : null,
            }, u.Transaction), ct);

    /// <summary>The last <paramref name="count"/> entries (optionally of one account), oldest first.</summary>
    public Task<IReadOnlyList<AuditEntry>> TailAsync(int count, string? accountId = null, CancellationToken ct = default)
    {
        count = Math.Clamp(count, 0, MaxTail);
        return _db.ReadAsync<IReadOnlyList<AuditEntry>>(async c => (await c.QueryAsync<Row>($"""
            SELECT id AS Id, at AS At, account_id AS AccountId, key_fingerprint AS KeyFingerprint, source AS Source, command AS Command,
                   arguments AS Arguments, result AS Result, error_code AS ErrorCode, duration_ms AS DurationMs
            FROM audit_log {(accountId is null ? "" : "WHERE account_id = @accountId")} ORDER BY id DESC LIMIT @count
            """, new { accountId, count }))
            .Reverse()
            .Select(r => new AuditEntry(DateTimeOffset.FromUnixTimeMilliseconds(r.At), r.AccountId, r.KeyFingerprint, r.Source, r.Command,
                JsonSerializer.Deserialize<List<string>>(r.Arguments ?? "[]") ?? [], r.Result, r.ErrorCode,
                r.DurationMs is { } ms ? TimeSpan.FromMilliseconds(ms) : null) { Id = r.Id })
            .ToList(), ct);
    }

    private sealed class Row
    {
        public long Id { get; set; }
        public long At { get; set; }
        public string? AccountId { get; set; }
        public string? KeyFingerprint { get; set; }
        public string? Source { get; set; }
        public string Command { get; set; } = "";
        public string? Arguments { get; set; }
        public string Result { get; set; } = "";
        public string? ErrorCode { get; set; }
        public long? DurationMs { get; set; }
    }
}
