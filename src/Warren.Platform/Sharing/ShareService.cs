using System.Security.Cryptography;
using System.Text;
using Dapper;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Storage;
using Warren.Platform.Vms;

namespace Warren.Platform.Sharing;

public enum ShareStatus { Pending, Active }

/// <summary>
/// Who a share reaches, as SQL for every access query: the account holding the share's address, and only once that
/// account has proven it (<see cref="Accounts.Account.EmailVerified"/>). Claiming an address is not owning it.
/// </summary>
internal static class ShareGrantees
{
    /// <summary><c>vm_shares s</c> joined to the verified account <c>a</c> holding the share's address.</summary>
    public const string VerifiedJoin = "vm_shares s JOIN accounts a ON a.email = s.email AND a." + VerifiedAddressSql.Condition;
}

/// <summary>A VM shared with an e-mail address. Active once that address has an account. <see cref="Ssh"/>: may also SSH in.</summary>
public sealed record VmUserShare(string VmId, string Email, ShareStatus Status, bool Ssh, DateTimeOffset InvitedAt);

/// <summary>
/// A share link. The token is shown once, when made (<see cref="ShareService.AddLinkAsync"/>); the database keeps
/// only its SHA-256 and <see cref="TokenHint"/> (its first characters) to tell links apart.
/// </summary>
public sealed record VmShareLink(string VmId, string TokenHint, DateTimeOffset CreatedAt, long UseCount, DateTimeOffset? LastUsedAt);

/// <summary>Everything <c>share show</c> prints.</summary>
public sealed record VmShareSettings(VmRecord Vm, bool IsPublic, int Port, bool ReceiveEmail, IReadOnlyList<VmUserShare> Users, IReadOnlyList<VmShareLink> Links);

/// <summary>
/// Sharing records and access checks. Mutations are owner-only; anyone else gets exe.dev's
/// <c>VM "x" not found or access denied</c>. Giving an account SSH rights runs the slot invariant for it
/// (a route on the VM's slot when that account has none there; otherwise it uses vm+NAME@).
/// </summary>
public sealed class ShareService
{
    /// <summary>exe.dev: <c>share port</c> accepts 3000–9999.</summary>
    public const int MinSharePort = 3000;
    public const int MaxSharePort = 9999;
    /// <summary>Share-link token: 32 random bytes, base64url.</summary>
    public const int LinkTokenBytes = 32;
    /// <summary>Characters of the token kept in clear to tell links apart.</summary>
    public const int LinkTokenHintLength = 6;

    /// <summary>The account that holds and has proven address <c>@e</c>, if any.</summary>
    private const string VerifiedAccountByEmailSql = "SELECT id FROM accounts WHERE email = @e AND " + VerifiedAddressSql.Condition;

    private readonly WarrenDatabase _db;
    private readonly PlatformOptions _options;
    private readonly AddressSlotAllocator _allocator;
    private readonly PlatformIndex _index;
    private readonly TimeProvider _time;

    public ShareService(WarrenDatabase db, PlatformOptions options, AddressSlotAllocator allocator, PlatformIndex index, TimeProvider time)
    {
        _db = db;
        _options = options;
        _allocator = allocator;
        _index = index;
        _time = time;
    }

    public async Task<VmShareSettings> GetAsync(string ownerAccountId, string vmName, CancellationToken ct = default)
    {
        var vm = await OwnedAsync(ownerAccountId, vmName, ct);
        return await _db.ReadAsync(async c =>
        {
            var users = (await c.QueryAsync<ShareRow>("SELECT vm_id AS VmId, email AS Email, status AS Status, ssh AS Ssh, invited_at AS InvitedAt FROM vm_shares WHERE vm_id = @Id ORDER BY invited_at, email", new { vm.Id }))
                .Select(Map).ToList();
            var links = (await c.QueryAsync<LinkRow>("SELECT vm_id AS VmId, token_hint AS TokenHint, created_at AS CreatedAt, use_count AS UseCount, last_used_at AS LastUsedAt FROM share_links WHERE vm_id = @Id ORDER BY created_at", new { vm.Id }))
                .Select(l => new VmShareLink(l.VmId, l.TokenHint, Ms(l.CreatedAt), l.UseCount, l.LastUsedAt is { } u ? Ms(u) : null)).ToList();
            return new VmShareSettings(vm, vm.IsPublic, vm.ProxyPort, vm.ReceiveEmail, users, links);
        }, ct);
    }

    /// <summary><c>share set-public</c> / <c>set-private</c>.</summary>
    public Task<VmRecord> SetPublicAsync(string ownerAccountId, string vmName, bool isPublic, CancellationToken ct = default)
        => UpdateVmAsync(ownerAccountId, vmName, "is_public = @v", new { v = isPublic ? 1 : 0 }, ct);

    /// <summary><c>share port VM N</c>: 3000–9999 (exe.dev's message otherwise). Returns the VM after the change.</summary>
    public Task<VmRecord> SetPortAsync(string ownerAccountId, string vmName, int port, CancellationToken ct = default)
    {
        if (port is < MinSharePort or > MaxSharePort)
            throw new PlatformException(PlatformErrorCodes.PortInvalid, $"port must be between {MinSharePort} and {MaxSharePort}, got \"{port}\"");
        return UpdateVmAsync(ownerAccountId, vmName, "proxy_port_override = @v", new { v = port }, ct);
    }

    /// <summary><c>share receive-email VM on|off</c>.</summary>
    public Task<VmRecord> SetReceiveEmailAsync(string ownerAccountId, string vmName, bool enabled, CancellationToken ct = default)
        => UpdateVmAsync(ownerAccountId, vmName, "receive_email = @v", new { v = enabled ? 1 : 0 }, ct);

    /// <summary>
    /// <c>share add VM EMAIL</c>: active when the address has an account, else pending. With <paramref name="ssh"/>
    /// the grantee may also SSH in and gets a route on the VM's slot if its own is free there.
    /// Errors: <c>invalid_email</c>, <c>share_exists</c> ("x is already shared with e").
    /// </summary>
    public async Task<VmUserShare> AddUserAsync(string ownerAccountId, string vmName, string email, bool ssh = false, CancellationToken ct = default)
    {
        var e = EmailAddress.Normalize(email);
        var vm = await OwnedAsync(ownerAccountId, vmName, ct);
        var now = _time.GetUtcNow();
        return await _db.WriteAsync(async u =>
        {
            if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM vm_shares WHERE vm_id = @Id AND email = @e", new { vm.Id, e }) > 0)
                throw new PlatformException(PlatformErrorCodes.ShareExists, $"{vm.Name} is already shared with {e}");
            // Active only for an account that proved the address: claiming it at sign-up is not enough.
            var grantee = await u.ScalarAsync<string?>(VerifiedAccountByEmailSql, new { e });
            var status = grantee is null ? ShareStatus.Pending : ShareStatus.Active;
            await u.ExecuteAsync("INSERT INTO vm_shares (vm_id, email, status, ssh, invited_at) VALUES (@Id, @e, @s, @ssh, @at)",
                new { vm.Id, e, s = Wire(status), ssh = ssh ? 1 : 0, at = now.ToUnixTimeMilliseconds() });
            if (grantee is not null && ssh && grantee != vm.AccountId) await _allocator.TryGrantAsync(u, grantee, vm.Id);
            _index.ReloadVmsOnCommit(u, [vm.Id]);
            return new VmUserShare(vm.Id, e, status, ssh, DateTimeOffset.FromUnixTimeMilliseconds(now.ToUnixTimeMilliseconds()));
        }, ct);
    }

    /// <summary>
    /// Grants or withdraws SSH rights on an existing share (running the slot invariant for the grantee either way).
    /// Error: <c>share_not_found</c>.
    /// </summary>
    public async Task<VmUserShare> SetUserSshAsync(string ownerAccountId, string vmName, string email, bool ssh, CancellationToken ct = default)
    {
        var e = EmailAddress.Normalize(email);
        var vm = await OwnedAsync(ownerAccountId, vmName, ct);
        return await _db.WriteAsync(async u =>
        {
            var row = await u.QuerySingleOrDefaultAsync<ShareRow>(
                "SELECT vm_id AS VmId, email AS Email, status AS Status, ssh AS Ssh, invited_at AS InvitedAt FROM vm_shares WHERE vm_id = @Id AND email = @e", new { vm.Id, e })
                ?? throw new PlatformException(PlatformErrorCodes.ShareNotFound, $"no share found for {e}");
            await u.ExecuteAsync("UPDATE vm_shares SET ssh = @v WHERE vm_id = @Id AND email = @e", new { v = ssh ? 1 : 0, vm.Id, e });
            var grantee = await u.ScalarAsync<string?>(ssh ? VerifiedAccountByEmailSql : "SELECT id FROM accounts WHERE email = @e", new { e });
            IReadOnlyList<string> touched = [vm.Id];
            if (grantee is not null && grantee != vm.AccountId && row.Status == "active")
            {
                if (ssh) await _allocator.TryGrantAsync(u, grantee, vm.Id);
                else touched = await _allocator.RevokeAsync(u, grantee, vm.Id);
            }
            _index.ReloadVmsOnCommit(u, touched);
            return Map(row) with { Ssh = ssh };
        }, ct);
    }

    /// <summary><c>share remove VM EMAIL</c>: drops the share and any SSH route it gave. Error: <c>share_not_found</c>.</summary>
    public async Task RemoveUserAsync(string ownerAccountId, string vmName, string email, CancellationToken ct = default)
    {
        var e = EmailAddress.Normalize(email);
        var vm = await OwnedAsync(ownerAccountId, vmName, ct);
        await _db.WriteAsync(async u =>
        {
            var n = await u.ExecuteAsync("DELETE FROM vm_shares WHERE vm_id = @Id AND email = @e", new { vm.Id, e });
            if (n == 0) throw new PlatformException(PlatformErrorCodes.ShareNotFound, $"no share found for {e}");
            var grantee = await u.ScalarAsync<string?>("SELECT id FROM accounts WHERE email = @e", new { e });
            var touched = grantee is not null && grantee != vm.AccountId ? await _allocator.RevokeAsync(u, grantee, vm.Id) : [vm.Id];
            _index.ReloadVmsOnCommit(u, touched);
        }, ct);
    }

    /// <summary>
    /// A fresh link token. It never starts with '-' or '_': the owner passes it back as an argument
    /// (<c>share remove-link VM TOKEN</c>), where a leading '-' reads as a flag.
    /// </summary>
    private static string NewLinkToken()
    {
        while (true)
        {
            var token = Base64Url(RandomNumberGenerator.GetBytes(LinkTokenBytes));
            if (char.IsAsciiLetterOrDigit(token[0])) return token;
        }
    }

    /// <summary><c>share add-link VM</c>: returns the token (shown once) and the link record.</summary>
    public async Task<(string Token, VmShareLink Link)> AddLinkAsync(string ownerAccountId, string vmName, CancellationToken ct = default)
    {
        var vm = await OwnedAsync(ownerAccountId, vmName, ct);
        var token = NewLinkToken();
        var now = _time.GetUtcNow();
        var link = new VmShareLink(vm.Id, token[..LinkTokenHintLength], DateTimeOffset.FromUnixTimeMilliseconds(now.ToUnixTimeMilliseconds()), 0, null);
        await _db.WriteAsync(u => u.ExecuteAsync("INSERT INTO share_links (token_hash, vm_id, token_hint, created_at) VALUES (@h, @Id, @hint, @at)",
            new { h = Hash(token), vm.Id, hint = link.TokenHint, at = now.ToUnixTimeMilliseconds() }), ct);
        return (token, link);
    }

    /// <summary><c>share remove-link VM TOKEN</c> (the full token, or its hint when that is unambiguous). Shares already made by the link stay.</summary>
    public async Task RemoveLinkAsync(string ownerAccountId, string vmName, string token, CancellationToken ct = default)
    {
        var vm = await OwnedAsync(ownerAccountId, vmName, ct);
        await _db.WriteAsync(async u =>
        {
            var n = await u.ExecuteAsync("DELETE FROM share_links WHERE vm_id = @Id AND token_hash = @h", new { vm.Id, h = Hash(token.Trim()) });
            if (n == 0 && token.Trim().Length >= LinkTokenHintLength)
            {
                var hint = token.Trim()[..LinkTokenHintLength];
                if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM share_links WHERE vm_id = @Id AND token_hint = @hint", new { vm.Id, hint }) == 1)
                    n = await u.ExecuteAsync("DELETE FROM share_links WHERE vm_id = @Id AND token_hint = @hint", new { vm.Id, hint });
            }
            if (n == 0) throw new PlatformException(PlatformErrorCodes.ShareLinkNotFound, "Share link not found");
        }, ct);
    }

    /// <summary>
    /// A logged-in visitor used <c>?share=TOKEN</c>: counts the use and gives the account an active (web) share.
    /// Returns the VM, or null for an unknown token.
    /// </summary>
    public async Task<VmRecord?> RedeemLinkAsync(string token, string accountId, CancellationToken ct = default)
    {
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var vmId = await _db.WriteAsync(async u =>
        {
            var id = await u.ScalarAsync<string?>("SELECT vm_id FROM share_links WHERE token_hash = @h", new { h = Hash(token) });
            if (id is null) return null;
            await u.ExecuteAsync("UPDATE share_links SET use_count = use_count + 1, last_used_at = @now WHERE token_hash = @h", new { now, h = Hash(token) });
            var email = await u.ScalarAsync<string?>("SELECT email FROM accounts WHERE id = @accountId", new { accountId });
            var owner = await u.ScalarAsync<string?>("SELECT account_id FROM vms WHERE id = @id", new { id });
            if (email is not null && owner != accountId)
                await u.ExecuteAsync("INSERT OR IGNORE INTO vm_shares (vm_id, email, status, ssh, invited_at) VALUES (@id, @email, 'active', 0, @now)", new { id, email, now });
            return id;
        }, ct);
        return vmId is null ? null : await _db.ReadAsync(c => VmStore.GetByIdAsync(c, null, vmId), ct);
    }

    /// <summary>Web (HTTPS proxy, default port) access: public VM, owner, or an active share.</summary>
    public async Task<bool> CanAccessWebAsync(VmRecord vm, string? accountId, CancellationToken ct = default)
    {
        if (vm.IsPublic) return true;
        if (accountId is null) return false;
        if (vm.AccountId == accountId) return true;
        return await HasActiveShareAsync(vm.Id, accountId, sshOnly: false, ct);
    }

    /// <summary>SSH access: owner, or an active share with SSH rights.</summary>
    public async Task<bool> CanSshAsync(VmRecord vm, string accountId, CancellationToken ct = default)
        => vm.AccountId == accountId || await HasActiveShareAsync(vm.Id, accountId, sshOnly: true, ct);

    /// <summary>VMs of other accounts shared with this account (active shares).</summary>
    public Task<IReadOnlyList<VmRecord>> ListSharedWithAsync(string accountId, CancellationToken ct = default)
        => _db.ReadAsync<IReadOnlyList<VmRecord>>(async c => (await c.QueryAsync<string>($"""
            SELECT s.vm_id FROM {ShareGrantees.VerifiedJoin}
            WHERE a.id = @accountId AND s.status = 'active'
            """, new { accountId })).Select(id => _index.GetById(id)).Where(v => v is not null && v.AccountId != accountId).Select(v => v!).ToList(), ct);

    private Task<bool> HasActiveShareAsync(string vmId, string accountId, bool sshOnly, CancellationToken ct)
        => _db.ReadAsync(async c => await c.ExecuteScalarAsync<long>($"""
            SELECT COUNT(*) FROM {ShareGrantees.VerifiedJoin}
            WHERE s.vm_id = @vmId AND a.id = @accountId AND s.status = 'active' {(sshOnly ? "AND s.ssh = 1" : "")}
            """, new { vmId, accountId }) > 0, ct);

    /// <summary>The caller's VM, or exe.dev's "not found or access denied" for anyone else's (also used by receive-email).</summary>
    internal async Task<VmRecord> OwnedAsync(string ownerAccountId, string vmName, CancellationToken ct)
    {
        var n = VmNames.Normalize(vmName, _options.VmDomain);
        var vm = await _db.ReadAsync(c => VmStore.GetByNameAsync(c, null, n), ct);
        if (vm is null || vm.AccountId != ownerAccountId || vm.State == VmState.Deleting)
            throw new PlatformException(PlatformErrorCodes.VmAccessDenied, $"VM \"{vmName}\" not found or access denied");
        return vm;
    }

    private async Task<VmRecord> UpdateVmAsync(string ownerAccountId, string vmName, string set, object args, CancellationToken ct)
    {
        var vm = await OwnedAsync(ownerAccountId, vmName, ct);
        var p = new DynamicParameters(args);
        p.Add("id", vm.Id);
        p.Add("now", _time.GetUtcNow().ToUnixTimeMilliseconds());
        await _db.WriteAsync(async u =>
        {
            await u.Connection.ExecuteAsync($"UPDATE vms SET {set}, updated_at = @now WHERE id = @id", p, u.Transaction);
            _index.ReloadVmsOnCommit(u, [vm.Id]);
        }, ct);
        return await _db.ReadAsync(c => VmStore.GetByIdAsync(c, null, vm.Id), ct) ?? throw VmService.NotFound(vmName);
    }

    private static string Hash(string token) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)));
    private static string Base64Url(byte[] b) => Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    private static string Wire(ShareStatus s) => s == ShareStatus.Active ? "active" : "pending";
    private static DateTimeOffset Ms(long ms) => DateTimeOffset.FromUnixTimeMilliseconds(ms);
    private static VmUserShare Map(ShareRow r) => new(r.VmId, r.Email, r.Status == "active" ? ShareStatus.Active : ShareStatus.Pending, r.Ssh != 0, Ms(r.InvitedAt));

    private sealed class ShareRow { public string VmId { get; set; } = ""; public string Email { get; set; } = ""; public string Status { get; set; } = ""; public long Ssh { get; set; } public long InvitedAt { get; set; } }
    private sealed class LinkRow { public string VmId { get; set; } = ""; public string TokenHint { get; set; } = ""; public long CreatedAt { get; set; } public long UseCount { get; set; } public long? LastUsedAt { get; set; } }
}
