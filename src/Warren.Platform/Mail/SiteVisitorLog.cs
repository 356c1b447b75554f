using Warren.Platform.Accounts;
using Warren.Platform.Storage;

namespace Warren.Platform.Mail;

/// <summary>
/// Who logged into a VM's site (exe.dev's docs: send email — a VM may mail "users who have logged into your VM's
/// site"). One row per (VM, account), refreshed on each verified login; rows go with the VM or the account (foreign
/// keys), and each VM keeps at most <see cref="MaxVisitorsPerVm"/>, the oldest logins dropped first, so a busy public
/// site cannot grow the table without bound.
/// </summary>
/// <param name="maxVisitorsPerVm">The bound per VM; <see cref="MaxVisitorsPerVm"/> unless a test wants a small one.</param>
public sealed class SiteVisitorLog(WarrenDatabase db, TimeProvider time, int maxVisitorsPerVm = SiteVisitorLog.MaxVisitorsPerVm)
{
    /// <summary>Site logins remembered per VM.</summary>
    public const int MaxVisitorsPerVm = 1000;

    /// <summary>Schema; part of <see cref="CoreMigrations.All"/> so the email gateway can always ask it.</summary>
    public static readonly SchemaMigration Migration = new("0010-vm-site-visitors", """
        CREATE TABLE vm_site_visitors (
            vm_id         TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
            account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            email         TEXT NOT NULL,            -- the account's address at login time
            logged_in_at  INTEGER NOT NULL,         -- unix ms of the latest login
            PRIMARY KEY (vm_id, account_id)
        );
        CREATE INDEX vm_site_visitors_recent ON vm_site_visitors(vm_id, logged_in_at);
        """);

    /// <summary>
    /// The SQL condition (alias <c>v</c>, parameters <c>@vm</c> and <c>@to</c>) for "<c>@to</c> logged into VM
    /// <c>@vm</c>'s site and still owns that verified address".
    /// </summary>
    public const string RecipientJoin = "vm_site_visitors v JOIN accounts va ON va.id = v.account_id AND va.email = v.email AND va."
        + VerifiedAddressSql.Condition;

    /// <summary>Records that account <paramref name="accountId"/> (<paramref name="email"/>) completed a verified login on VM <paramref name="vmId"/>'s site.</summary>
    public Task RecordAsync(string vmId, string accountId, string email, CancellationToken ct = default)
    {
        long now = time.GetUtcNow().ToUnixTimeMilliseconds();
        email = EmailAddress.Normalize(email);
        return db.WriteAsync(async u =>
        {
            // The VM may be gone by now (deleted between login and here): nothing to record then.
            if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM vms WHERE id = @vmId", new { vmId }) == 0) return;
            await u.ExecuteAsync("""
                INSERT INTO vm_site_visitors (vm_id, account_id, email, logged_in_at) VALUES (@vmId, @accountId, @email, @now)
                ON CONFLICT (vm_id, account_id) DO UPDATE SET email = excluded.email, logged_in_at = excluded.logged_in_at
                """, new { vmId, accountId, email, now });
            await u.ExecuteAsync("""
                DELETE FROM vm_site_visitors WHERE vm_id = @vmId AND account_id NOT IN (
                    SELECT account_id FROM vm_site_visitors WHERE vm_id = @vmId ORDER BY logged_in_at DESC, account_id LIMIT @maxVisitorsPerVm)
                """, new { vmId, maxVisitorsPerVm });
        }, ct);
    }

    /// <summary>How many site logins VM <paramref name="vmId"/> remembers.</summary>
    public Task<long> CountAsync(string vmId, CancellationToken ct = default)
        => db.ReadAsync(c => Dapper.SqlMapper.ExecuteScalarAsync<long>(c, "SELECT COUNT(*) FROM vm_site_visitors WHERE vm_id = @vmId", new { vmId }), ct);
}
