using System.Security.Cryptography;
using System.Text.Json;
using Dapper;
using Microsoft.Data.Sqlite;
using Warren.Platform.Accounts;
using Warren.Platform.Storage;
using Warren.Platform.Tokens;
using Warren.Platform.Vms;

namespace Warren.Platform.Integrations;

/// <summary>
/// An account's integrations (exe.dev's docs: integrations, http-proxy, vm-to-vm, reflection): add, list, remove,
/// rename, attach, detach, and the lookup the metadata server's handler makes for each request. Secrets are sealed
/// (<see cref="IntegrationSecretBox"/>) before they reach SQLite and are opened only to build an outbound request.
/// </summary>
/// <remarks>
/// Attachments: <c>vm:NAME</c> is stored by VM id (a rename follows; deleting the VM drops it by foreign key),
/// <c>tag:TAG</c> is matched against the VM's tags at request time (so <c>tag</c>/<c>tag -d</c> take effect at once),
/// <c>auto:all</c> is every VM of the account. A peer integration owns a managed API key <c>peer-NAME</c>; the key's
/// row is referenced from the integration, so <c>ssh-key remove</c> cannot delete it while the integration exists.
/// Every account gets a <c>reflection</c> integration attached <c>auto:all</c> the first time its integrations are
/// read, once; removing it is remembered.
/// </remarks>
public sealed class IntegrationService
{
    public const string DefaultReflectionName = "reflection";
    public const string PeerKeyPrefix = "peer-";

    /// <summary>Schema; register with the database's extra migrations.</summary>
    public static readonly SchemaMigration Migration = new("0200-integrations", """
        CREATE TABLE integrations (
            id                    TEXT PRIMARY KEY,
            account_id            TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
            name                  TEXT NOT NULL,
            type                  TEXT NOT NULL,            -- http-proxy | reflection
            target                TEXT,                     -- https URL without user info
            header_names          TEXT NOT NULL DEFAULT '[]',
            basic_user            TEXT,
            has_bearer            INTEGER NOT NULL DEFAULT 0,
            peer_vm_id            TEXT REFERENCES vms(id) ON DELETE SET NULL,
            -- No ON DELETE action: while this row exists the managed key cannot be deleted.
            peer_key_fingerprint  TEXT REFERENCES account_keys(fingerprint),
            fields                TEXT,                     -- JSON list, reflection only; null = all
            secrets               BLOB,                     -- AES-256-GCM sealed (IntegrationSecretBox), never plain
            created_at            INTEGER NOT NULL,
            UNIQUE (account_id, name)
        );

        CREATE TABLE integration_attachments (
            integration_id  TEXT NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
            kind            TEXT NOT NULL,                  -- vm | tag | auto
            value           TEXT NOT NULL,                  -- VM id, tag, or all
            vm_id           TEXT REFERENCES vms(id) ON DELETE CASCADE,
            PRIMARY KEY (integration_id, kind, value)
        );
        CREATE INDEX integration_attachments_vm ON integration_attachments(vm_id);

        -- Accounts that were given the default integrations (once: removing one is not undone).
        CREATE TABLE integration_defaults (
            account_id  TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
            applied_at  INTEGER NOT NULL
        );
        """);

    /// <summary>
    /// The account's GitHub credential (<c>integrations setup github</c>): a fine-grained personal access token, sealed
    /// like every integration secret; github integrations use it on the way out and never hand it to a VM.
    /// </summary>
    public static readonly SchemaMigration GitHubMigration = new("0201-integration-github", """
        CREATE TABLE integration_github_setup (
            account_id  TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
            secrets     BLOB NOT NULL,                      -- AES-256-GCM sealed (IntegrationSecretBox), never plain
            updated_at  INTEGER NOT NULL
        );
        """);

    private const string Columns = """
        id AS Id, account_id AS AccountId, name AS Name, type AS Type, target AS Target, header_names AS HeaderNames,
        basic_user AS BasicUser, has_bearer AS HasBearer, peer_vm_id AS PeerVmId, peer_key_fingerprint AS PeerKeyFingerprint,
        fields AS Fields, secrets AS Secrets, created_at AS CreatedAt
        """;

    private readonly WarrenDatabase _db;
    private readonly VmService _vms;
    private readonly AccountService _accounts;
    private readonly ApiKeyService? _apiKeys;
    private readonly IntegrationSecretBox _box;
    private readonly PlatformOptions _options;
    private readonly TimeProvider _time;

    public IntegrationService(WarrenDatabase db, VmService vms, AccountService accounts, IntegrationSecretBox box,
        PlatformOptions options, TimeProvider time, ApiKeyService? apiKeys = null)
    {
        _db = db;
        _vms = vms;
        _accounts = accounts;
        _box = box;
        _options = options;
        _time = time;
        _apiKeys = apiKeys;
    }

    /// <summary>The host name a VM uses for an integration: <c>NAME.int.&lt;vm-domain&gt;</c>.</summary>
    public string HostFor(string name) => $"{name}.int.{_options.VmDomain}";

    // ---------------------------------------------------------------- queries

    public async Task<IReadOnlyList<Integration>> ListAsync(string accountId, CancellationToken ct = default)
    {
        await EnsureDefaultsAsync(accountId, ct).ConfigureAwait(false);
        return await _db.ReadAsync(async c =>
        {
            var rows = (await c.QueryAsync<Row>($"SELECT {Columns} FROM integrations WHERE account_id = @accountId ORDER BY name", new { accountId })).ToList();
            var result = new List<Integration>(rows.Count);
            foreach (var r in rows) result.Add(await MapAsync(c, r).ConfigureAwait(false));
            return (IReadOnlyList<Integration>)result;
        }, ct).ConfigureAwait(false);
    }

    /// <summary>The account's integration named <paramref name="name"/>, or null.</summary>
    public async Task<Integration?> FindAsync(string accountId, string name, CancellationToken ct = default)
    {
        await EnsureDefaultsAsync(accountId, ct).ConfigureAwait(false);
        return await _db.ReadAsync(async c =>
        {
            var r = await c.QuerySingleOrDefaultAsync<Row>($"SELECT {Columns} FROM integrations WHERE account_id = @accountId AND name = @name", new { accountId, name });
            return r is null ? null : await MapAsync(c, r).ConfigureAwait(false);
        }, ct).ConfigureAwait(false);
    }

    /// <summary>The account's integrations attached to <paramref name="vm"/> now.</summary>
    public async Task<IReadOnlyList<Integration>> ListAttachedAsync(VmRecord vm, CancellationToken ct = default)
        => (await ListAsync(vm.AccountId, ct).ConfigureAwait(false)).Where(i => i.IsAttachedTo(vm.Id, vm.Tags)).ToList();

    /// <summary>Opens the sealed secrets of <paramref name="integration"/>; only for building an outbound request.</summary>
    public IntegrationSecrets OpenSecrets(Integration integration)
        => integration.SealedSecrets is { Length: > 0 } s ? _box.Unseal(integration.Id, s) : IntegrationSecrets.None;

    // ---------------------------------------------------------------- add / remove / rename

    public async Task<Integration> AddAsync(Account account, IntegrationAddRequest request, CancellationToken ct = default)
    {
        IntegrationValidation.ValidateName(request.Name);
        await EnsureDefaultsAsync(account.Id, ct).ConfigureAwait(false);
        string id = "int_" + Guid.NewGuid().ToString("N");
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        string? target = null, basicUser = null, basicPassword = null, bearer = null, peerVmId = null;
        IReadOnlyList<string>? fields = null;
        VmRecord? peerVm = null;

        switch (request.Type)
        {
            case IntegrationType.Reflection:
                if (request.Target is not null || request.Headers.Count > 0 || request.Bearer is not null || request.Peer || request.Repository is not null)
                    throw IntegrationValidation.Invalid("reflection takes no --target, --header, --bearer, --peer or --repository");
                fields = request.Fields;
                break;
            case IntegrationType.GitHub:
                if (request.Target is not null || request.Headers.Count > 0 || request.Bearer is not null || request.Peer || request.Fields is not null)
                    throw IntegrationValidation.Invalid("github takes --repository OWNER/REPO only; the token comes from integrations setup github");
                target = GitHubRepository.Parse(request.Repository).ToString();
                if (!await HasGitHubSetupAsync(account.Id, ct).ConfigureAwait(false))
                    throw IntegrationValidation.Invalid("GitHub is not set up for this account: run integrations setup github --token TOKEN first");
                break;
            case IntegrationType.HttpProxy when request.Peer:
                if (request.Headers.Count > 0 || request.Bearer is not null)
                    throw IntegrationValidation.Invalid("--peer takes no --header or --bearer: Warren injects the peer's key");
                if (string.IsNullOrWhiteSpace(request.Target)) throw IntegrationValidation.Invalid("missing --target VM");
                peerVm = await _vms.GetByNameAsync(account.Id, request.Target, ct).ConfigureAwait(false);
                peerVmId = peerVm.Id;
                target = peerVm.Name;
                if (_apiKeys is null) throw IntegrationValidation.Invalid("peer integrations are not available: API keys are not configured");
                break;
            case IntegrationType.HttpProxy:
                if (request.Fields is not null) throw IntegrationValidation.Invalid("--fields is for reflection");
                if (request.Repository is not null) throw IntegrationValidation.Invalid("--repository is for github");
                var parsed = IntegrationValidation.ParseTarget(request.Target, _options);
                target = parsed.Url.AbsoluteUri;
                (basicUser, basicPassword) = (parsed.BasicUser, parsed.BasicPassword);
                if (request.Headers.Count > IntegrationLimits.MaxHeaders)
                    throw IntegrationValidation.Invalid($"at most {IntegrationLimits.MaxHeaders} --header flags");
                foreach (var spec in request.Headers)
                {
                    var (n, v) = IntegrationValidation.ParseHeader(spec);
                    if (!headers.TryAdd(n, v)) throw IntegrationValidation.Invalid($"header \"{n}\" given more than once");
                }
                if (request.Bearer is not null)
                {
                    IntegrationValidation.ValidateHeader("Authorization", "Bearer " + request.Bearer);
                    if (request.Bearer.Trim().Length == 0) throw IntegrationValidation.Invalid("--bearer is empty");
                    bearer = request.Bearer.Trim();
                }
                int authSources = (bearer is null ? 0 : 1) + (basicUser is null ? 0 : 1) + (headers.ContainsKey("Authorization") ? 1 : 0);
                if (authSources > 1) throw IntegrationValidation.Invalid("give one of --bearer, --header Authorization:… or user:password in --target");
                break;
        }
        var attachments = new List<(IntegrationAttachment A, string? VmId)>();
        foreach (var spec in request.Attach) attachments.Add(await ParseAttachmentAsync(account.Id, spec, ct).ConfigureAwait(false));

        // The managed key is made before the row (the row references it) and removed again if the row cannot be written.
        ApiKeyResult? peerKey = null;
        if (peerVm is not null)
            peerKey = await _apiKeys!.GenerateAsync(account, PeerKeyPrefix + request.Name, peerVm.Name, cmds: null, expiresAt: null, ct).ConfigureAwait(false);
        var secrets = new IntegrationSecrets(headers, bearer, basicPassword, peerKey?.Token);
        byte[]? sealedSecrets = request.Type is IntegrationType.Reflection or IntegrationType.GitHub ? null : _box.Seal(id, secrets);
        try
        {
            await _db.WriteAsync(async u =>
            {
                long count = await u.ScalarAsync<long>("SELECT COUNT(*) FROM integrations WHERE account_id = @Id", new { account.Id });
                if (count >= IntegrationLimits.MaxIntegrationsPerAccount)
                    throw IntegrationValidation.Invalid($"an account can have at most {IntegrationLimits.MaxIntegrationsPerAccount} integrations");
                if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM integrations WHERE account_id = @Id AND name = @Name", new { account.Id, request.Name }) > 0)
                    throw new PlatformException(PlatformErrorCodes.InvalidArgument, $"an integration named \"{request.Name}\" already exists");
                await u.ExecuteAsync("""
                    INSERT INTO integrations (id, account_id, name, type, target, header_names, basic_user, has_bearer, peer_vm_id,
                        peer_key_fingerprint, fields, secrets, created_at)
                    VALUES (@id, @AccountId, @Name, @Type, @target, @HeaderNames, @basicUser, @HasBearer, @peerVmId, @PeerKey, @Fields, @sealedSecrets, @now)
                    """, new
                {
                    id, AccountId = account.Id, request.Name, Type = request.Type.ToWire(), target,
                    HeaderNames = JsonSerializer.Serialize(headers.Keys.ToList()), basicUser, HasBearer = bearer is null ? 0 : 1,
                    peerVmId, PeerKey = peerKey?.Fingerprint, Fields = fields is null ? null : JsonSerializer.Serialize(fields),
                    sealedSecrets, now = _time.GetUtcNow().ToUnixTimeMilliseconds(),
                });
                foreach (var (a, vmId) in attachments) await InsertAttachmentAsync(u, id, a, vmId);
            }, ct).ConfigureAwait(false);
        }
        catch when (peerKey is not null)
        {
            await RemoveUnusedPeerKeyAsync(account.Id, peerKey.Fingerprint).ConfigureAwait(false);
            throw;
        }
        return (await FindAsync(account.Id, request.Name, ct).ConfigureAwait(false))!;
    }

    public async Task<Integration> RemoveAsync(string accountId, string name, CancellationToken ct = default)
    {
        var existing = await GetAsync(accountId, name, ct).ConfigureAwait(false);
        await _db.WriteAsync(async u =>
        {
            await u.ExecuteAsync("DELETE FROM integrations WHERE id = @Id", new { existing.Id });
            if (existing.PeerKeyFingerprint is { } fp)
                await u.ExecuteAsync("DELETE FROM account_keys WHERE fingerprint = @fp AND account_id = @accountId", new { fp, accountId });
        }, ct).ConfigureAwait(false);
        return existing;
    }

    public async Task<(Integration Before, Integration After)> RenameAsync(string accountId, string name, string newName, CancellationToken ct = default)
    {
        IntegrationValidation.ValidateName(newName);
        var existing = await GetAsync(accountId, name, ct).ConfigureAwait(false);
        if (newName == name) return (existing, existing);
        await _db.WriteAsync(async u =>
        {
            if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM integrations WHERE account_id = @accountId AND name = @newName", new { accountId, newName }) > 0)
                throw IntegrationValidation.Invalid($"an integration named \"{newName}\" already exists");
            await u.ExecuteAsync("UPDATE integrations SET name = @newName WHERE id = @Id", new { newName, existing.Id });
            if (existing.PeerKeyFingerprint is { } fp)
            {
                string keyName = PeerKeyPrefix + newName;
                // The managed key follows the name unless the account already uses that key name for something else.
                if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM account_keys WHERE account_id = @accountId AND name = @keyName", new { accountId, keyName }) == 0)
                    await u.ExecuteAsync("UPDATE account_keys SET name = @keyName WHERE fingerprint = @fp", new { keyName, fp });
            }
        }, ct).ConfigureAwait(false);
        return (existing, (await FindAsync(accountId, newName, ct).ConfigureAwait(false))!);
    }

    /// <summary>
    /// After <c>rename</c> of a VM that peer integrations target: their managed keys sign tokens for the old host name
    /// (a VM token's namespace is <c>v0@VM.&lt;vm-domain&gt;</c>, exe.dev's docs: API tokens), which the renamed target
    /// refuses, so each gets a key for the new name in place of the old one, and the integration shows the new target.
    /// </summary>
    /// <returns>How many integrations were moved to the new name.</returns>
    public async Task<int> FollowVmRenameAsync(Account account, string vmId, string newName, CancellationToken ct = default)
    {
        if (_apiKeys is null) return 0;
        var peers = await _db.ReadAsync(async c => (await c.QueryAsync<Row>(
            $"SELECT {Columns} FROM integrations WHERE account_id = @Id AND peer_vm_id = @vmId", new { account.Id, vmId })).ToList(), ct).ConfigureAwait(false);
        foreach (var row in peers)
        {
            string keyName = PeerKeyPrefix + row.Name;
            // Key names are unique per account: the new key takes a temporary name until the old one is gone.
            string interim = keyName + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
            var key = await _apiKeys.GenerateAsync(account, interim, newName, cmds: null, expiresAt: null, ct).ConfigureAwait(false);
            var secrets = (row.Secrets is { Length: > 0 } sealedOld ? _box.Unseal(row.Id, sealedOld) : IntegrationSecrets.None) with { PeerToken = key.Token };
            byte[] sealedNew = _box.Seal(row.Id, secrets);
            try
            {
                await _db.WriteAsync(async u =>
                {
                    await u.ExecuteAsync("UPDATE integrations SET target = @newName, peer_key_fingerprint = @Fingerprint, secrets = @sealedNew WHERE id = @Id",
                        new { newName, key.Fingerprint, sealedNew, row.Id });
                    if (row.PeerKeyFingerprint is { } old)
                        await u.ExecuteAsync("DELETE FROM account_keys WHERE fingerprint = @old AND account_id = @accountId", new { old, accountId = account.Id });
                    if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM account_keys WHERE account_id = @accountId AND name = @keyName", new { accountId = account.Id, keyName }) == 0)
                        await u.ExecuteAsync("UPDATE account_keys SET name = @keyName WHERE fingerprint = @Fingerprint", new { keyName, key.Fingerprint });
                }, ct).ConfigureAwait(false);
            }
            catch
            {
                await RemoveUnusedPeerKeyAsync(account.Id, key.Fingerprint).ConfigureAwait(false);
                throw;
            }
        }
        return peers.Count;
    }

    /// <summary>Removes a managed key minted for a row that was never written (the write failed); gone already is fine.</summary>
    private async Task RemoveUnusedPeerKeyAsync(string accountId, string fingerprint)
    {
        try { await _accounts.RemoveKeyAsync(accountId, fingerprint, CancellationToken.None).ConfigureAwait(false); }
        catch (PlatformException) { /* already gone */ }
    }

    // ---------------------------------------------------------------- github setup

    private static string GitHubSealId(string accountId) => "github-setup:" + accountId;

    /// <summary><c>integrations setup github --token</c>: stores (or replaces) the account's GitHub token, sealed.</summary>
    public async Task SetGitHubTokenAsync(string accountId, string? token, CancellationToken ct = default)
    {
        token = token?.Trim();
        if (string.IsNullOrEmpty(token)) throw IntegrationValidation.Invalid("missing --token (a GitHub fine-grained personal access token)");
        if (token.Length > 255 || token.Any(c => c <= ' ' || c > '~'))
            throw IntegrationValidation.Invalid("--token is not a GitHub token (printable ASCII without spaces, at most 255 characters)");
        byte[] sealedToken = _box.Seal(GitHubSealId(accountId), IntegrationSecrets.None with { Bearer = token });
        long now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        await _db.WriteAsync(u => u.ExecuteAsync("""
            INSERT INTO integration_github_setup (account_id, secrets, updated_at) VALUES (@accountId, @sealedToken, @now)
            ON CONFLICT (account_id) DO UPDATE SET secrets = excluded.secrets, updated_at = excluded.updated_at
            """, new { accountId, sealedToken, now }), ct).ConfigureAwait(false);
    }

    /// <summary><c>integrations setup github --remove</c>: forgets the token; github integrations answer 403 until a new one is set.</summary>
    public async Task<bool> RemoveGitHubTokenAsync(string accountId, CancellationToken ct = default)
        => await _db.WriteAsync(u => u.ExecuteAsync("DELETE FROM integration_github_setup WHERE account_id = @accountId", new { accountId }), ct).ConfigureAwait(false) > 0;

    /// <summary>When the account's GitHub token was last set, or null when there is none.</summary>
    public async Task<DateTimeOffset?> GitHubSetupTimeAsync(string accountId, CancellationToken ct = default)
    {
        long? ms = await _db.ReadAsync(c => c.ExecuteScalarAsync<long?>(
            "SELECT updated_at FROM integration_github_setup WHERE account_id = @accountId", new { accountId }), ct).ConfigureAwait(false);
        return ms is { } v ? DateTimeOffset.FromUnixTimeMilliseconds(v) : null;
    }

    private async Task<bool> HasGitHubSetupAsync(string accountId, CancellationToken ct)
        => await GitHubSetupTimeAsync(accountId, ct).ConfigureAwait(false) is not null;

    /// <summary>The account's GitHub token in the clear, or null; only for building an outbound request.</summary>
    public async Task<string?> OpenGitHubTokenAsync(string accountId, CancellationToken ct = default)
    {
        byte[]? sealedToken = await _db.ReadAsync(c => c.ExecuteScalarAsync<byte[]?>(
            "SELECT secrets FROM integration_github_setup WHERE account_id = @accountId", new { accountId }), ct).ConfigureAwait(false);
        return sealedToken is null ? null : _box.Unseal(GitHubSealId(accountId), sealedToken).Bearer;
    }

    // ---------------------------------------------------------------- attach / detach

    /// <summary>Attaches to <c>vm:NAME</c>, <c>tag:TAG</c> or <c>auto:all</c>; attaching twice is an error.</summary>
    public async Task<Integration> AttachAsync(string accountId, string name, string spec, CancellationToken ct = default)
    {
        var existing = await GetAsync(accountId, name, ct).ConfigureAwait(false);
        var (a, vmId) = await ParseAttachmentAsync(accountId, spec, ct).ConfigureAwait(false);
        await _db.WriteAsync(async u =>
        {
            long n = await u.ScalarAsync<long>("SELECT COUNT(*) FROM integration_attachments WHERE integration_id = @Id", new { existing.Id });
            if (n >= IntegrationLimits.MaxAttachments) throw IntegrationValidation.Invalid($"an integration can have at most {IntegrationLimits.MaxAttachments} attachments");
            try { await InsertAttachmentAsync(u, existing.Id, a, vmId); }
            catch (SqliteException e) when (SqliteErrors.IsUnique(e))
            {
                throw IntegrationValidation.Invalid($"{name} is already attached to {IntegrationValidation.Shown(spec)}");
            }
        }, ct).ConfigureAwait(false);
        return (await FindAsync(accountId, name, ct).ConfigureAwait(false))!;
    }

    /// <summary>Removes one attachment; requests already refused from the next one on (attachments are read per request).</summary>
    public async Task<Integration> DetachAsync(string accountId, string name, string spec, CancellationToken ct = default)
    {
        var existing = await GetAsync(accountId, name, ct).ConfigureAwait(false);
        var (a, _) = await ParseAttachmentAsync(accountId, spec, ct).ConfigureAwait(false);
        int removed = await _db.WriteAsync(u => u.ExecuteAsync(
            "DELETE FROM integration_attachments WHERE integration_id = @Id AND kind = @Kind AND value = @Value",
            new { existing.Id, Kind = KindToWire(a.Kind), a.Value }), ct).ConfigureAwait(false);
        if (removed == 0) throw IntegrationValidation.Invalid($"{name} is not attached to {IntegrationValidation.Shown(spec)}");
        return (await FindAsync(accountId, name, ct).ConfigureAwait(false))!;
    }

    /// <summary>How an attachment is written back: <c>vm:NAME</c> (the VM's current name), <c>tag:TAG</c>, <c>auto:all</c>.</summary>
    public static string Describe(IntegrationAttachment a, IReadOnlyDictionary<string, string> vmNamesById) => a.Kind switch
    {
        AttachmentKind.Vm => "vm:" + (vmNamesById.TryGetValue(a.Value, out var n) ? n : a.Value),
        AttachmentKind.Tag => "tag:" + a.Value,
        _ => "auto:all",
    };

    private async Task<(IntegrationAttachment, string? VmId)> ParseAttachmentAsync(string accountId, string spec, CancellationToken ct)
    {
        int colon = spec.IndexOf(':');
        string kind = colon < 0 ? spec : spec[..colon];
        string value = colon < 0 ? "" : spec[(colon + 1)..];
        switch (kind)
        {
            case "vm":
                if (value.Length == 0) break;
                // Another account's VM is "not found", never "not yours": names are not an oracle.
                var vm = await _vms.GetByNameAsync(accountId, value, ct).ConfigureAwait(false);
                return (new IntegrationAttachment(AttachmentKind.Vm, vm.Id), vm.Id);
            case "tag":
                VmTags.Validate(value);
                return (new IntegrationAttachment(AttachmentKind.Tag, value), null);
            case "auto" when value == "all":
                return (new IntegrationAttachment(AttachmentKind.All, "all"), null);
        }
        throw IntegrationValidation.Invalid($"invalid attachment \"{IntegrationValidation.Shown(spec)}\": use vm:NAME, tag:TAG or auto:all");
    }

    private static Task InsertAttachmentAsync(UnitOfWork u, string integrationId, IntegrationAttachment a, string? vmId)
        => u.ExecuteAsync("INSERT INTO integration_attachments (integration_id, kind, value, vm_id) VALUES (@integrationId, @Kind, @Value, @vmId)",
            new { integrationId, Kind = KindToWire(a.Kind), a.Value, vmId });

    private static string KindToWire(AttachmentKind k) => k switch { AttachmentKind.Vm => "vm", AttachmentKind.Tag => "tag", _ => "auto" };

    // ---------------------------------------------------------------- defaults

    /// <summary>exe.dev's docs (reflection): new accounts get reflection attached <c>auto:all</c>. Done once per account.</summary>
    public async Task EnsureDefaultsAsync(string accountId, CancellationToken ct = default)
    {
        bool applied = await _db.ReadAsync(c => c.ExecuteScalarAsync<long>(
            "SELECT COUNT(*) FROM integration_defaults WHERE account_id = @accountId", new { accountId }), ct).ConfigureAwait(false) > 0;
        if (applied) return;
        await _db.WriteAsync(async u =>
        {
            long now = _time.GetUtcNow().ToUnixTimeMilliseconds();
            if (await u.ExecuteAsync("INSERT OR IGNORE INTO integration_defaults (account_id, applied_at) VALUES (@accountId, @now)", new { accountId, now }) == 0)
                return;
            if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM integrations WHERE account_id = @accountId AND name = @DefaultReflectionName", new { accountId, DefaultReflectionName }) > 0)
                return;
            string id = "int_" + Guid.NewGuid().ToString("N");
            await u.ExecuteAsync("""
                INSERT INTO integrations (id, account_id, name, type, created_at) VALUES (@id, @accountId, @DefaultReflectionName, 'reflection', @now)
                """, new { id, accountId, DefaultReflectionName, now });
            await InsertAttachmentAsync(u, id, new IntegrationAttachment(AttachmentKind.All, "all"), null);
        }, ct).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- rows

    private async Task<Integration> GetAsync(string accountId, string name, CancellationToken ct)
        => await FindAsync(accountId, name, ct).ConfigureAwait(false) ?? throw NotFound(name);

    public static PlatformException NotFound(string name)
        => new(PlatformErrorCodes.InvalidArgument, $"integration \"{IntegrationValidation.Shown(name)}\" not found");

    private static async Task<Integration> MapAsync(SqliteConnection c, Row r)
    {
        var attachments = (await c.QueryAsync<(string Kind, string Value)>(
            "SELECT kind, value FROM integration_attachments WHERE integration_id = @Id ORDER BY kind, value", new { r.Id }))
            .Select(a => new IntegrationAttachment(a.Kind switch { "vm" => AttachmentKind.Vm, "tag" => AttachmentKind.Tag, _ => AttachmentKind.All }, a.Value))
            .ToList();
        IntegrationTypes.TryParse(r.Type, out var type);
        return new Integration(r.Id, r.AccountId, r.Name, type, r.Target,
            JsonSerializer.Deserialize<List<string>>(r.HeaderNames) ?? [], r.BasicUser, r.HasBearer != 0,
            r.PeerVmId, r.PeerKeyFingerprint, r.Fields is null ? null : JsonSerializer.Deserialize<List<string>>(r.Fields),
            attachments, DateTimeOffset.FromUnixTimeMilliseconds(r.CreatedAt))
        {
            SealedSecrets = r.Secrets,
        };
    }

    private sealed class Row
    {
        public string Id { get; set; } = "";
        public string AccountId { get; set; } = "";
        public string Name { get; set; } = "";
        public string Type { get; set; } = "";
        public string? Target { get; set; }
        public string HeaderNames { get; set; } = "[]";
        public string? BasicUser { get; set; }
        public long HasBearer { get; set; }
        public string? PeerVmId { get; set; }
        public string? PeerKeyFingerprint { get; set; }
        public string? Fields { get; set; }
        public byte[]? Secrets { get; set; }
        public long CreatedAt { get; set; }
    }
}
