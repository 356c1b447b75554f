using System.Text;
using System.Text.RegularExpressions;
using Dapper;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Runtime;
using Warren.Platform.Storage;

namespace Warren.Platform.Vms;

/// <summary>
/// VM lifecycle over <see cref="IVmRuntime"/>, "record before act": every operation first commits the
/// record in the state that says what is about to happen (Creating, Deleting, the new name/size), then asks
/// the runtime, then commits the outcome. A crash between the two leaves a record that
/// <see cref="ReconcileAsync"/> repairs at the next start. Operations on one VM are serialized in-process.
/// All methods act for <c>accountId</c> and only on VMs it owns; others look like "not found".
/// </summary>
public sealed partial class VmService
{
    /// <summary>exe.dev: setup scripts are at most 10 KiB.</summary>
    public const int MaxSetupScriptBytes = 10 * 1024;
    /// <summary>Longest image reference accepted (Docker's reference grammar has no limit; 512 covers real ones).</summary>
    public const int MaxImageReferenceLength = 512;
    /// <summary>Attempts at a free word-word name before adding a numeric suffix.</summary>
    public const int NameGenerationAttempts = 32;
    /// <summary>Proxy port when the image exposes nothing useful (exe.dev).</summary>
    public const int DefaultProxyPort = 80;
    /// <summary>exe.dev picks the smallest exposed TCP port at or above this when 80 is not exposed.</summary>
    public const int MinAutoProxyPort = 1024;
    /// <summary>Upper bound on re-driving one interrupted create during reconciliation.</summary>
    public static readonly TimeSpan ReconcileRedriveTimeout = TimeSpan.FromMinutes(10);

    private readonly WarrenDatabase _db;
    private readonly IVmRuntime _runtime;
    private readonly PlatformOptions _options;
    private readonly AddressSlotAllocator _allocator;
    private readonly PlatformIndex _index;
    private readonly TimeProvider _time;
    private readonly ILogger _log;
    private readonly KeyedLock _locks = new();
    private readonly ImageAccess _images;

    public VmService(WarrenDatabase db, IVmRuntime runtime, PlatformOptions options, AddressSlotAllocator allocator,
        PlatformIndex index, TimeProvider time, ILogger<VmService>? logger = null)
    {
        _db = db;
        _runtime = runtime;
        _options = options;
        _allocator = allocator;
        _index = index;
        _time = time;
        _log = (ILogger?)logger ?? NullLogger.Instance;
        _images = new ImageAccess(db, runtime, options, time);
    }

    /// <summary>Which images accounts may start, and the registry images each pulled.</summary>
    public ImageAccess Images => _images;

    // ---------------------------------------------------------------- queries

    /// <summary>The account's VM named <paramref name="name"/> ("name.domain" accepted); <c>vm_not_found</c> otherwise.</summary>
    public async Task<VmRecord> GetByNameAsync(string accountId, string name, CancellationToken ct = default)
        => await FindOwnedAsync(accountId, name, ct) ?? throw NotFound(name);

    /// <summary>Like <see cref="GetByNameAsync"/> but null when absent or not owned.</summary>
    public async Task<VmRecord?> FindOwnedAsync(string accountId, string name, CancellationToken ct = default)
    {
        var vm = await FindByNameAsync(name, ct);
        return vm is not null && vm.AccountId == accountId ? vm : null;
    }

    /// <summary>Any account's VM by name ("name.domain" accepted). For front doors; apply access checks yourself.</summary>
    public Task<VmRecord?> FindByNameAsync(string name, CancellationToken ct = default)
    {
        var n = VmNames.Normalize(name, _options.VmDomain);
        return _db.ReadAsync(c => VmStore.GetByNameAsync(c, null, n), ct);
    }

    public Task<VmRecord?> GetByIdAsync(string vmId, CancellationToken ct = default)
        => _db.ReadAsync(c => VmStore.GetByIdAsync(c, null, vmId), ct);

    /// <summary>
    /// The account's VMs, oldest first. <paramref name="pattern"/>: null/empty = all; a glob (<c>*</c>, <c>?</c>,
    /// <c>[…]</c>) is matched against names and tags; anything else matches an exact name or tag.
    /// </summary>
    public async Task<IReadOnlyList<VmRecord>> ListAsync(string accountId, string? pattern = null, CancellationToken ct = default)
    {
        var all = await _db.ReadAsync(c => VmStore.ListByAccountAsync(c, null, accountId), ct);
        if (string.IsNullOrWhiteSpace(pattern)) return all;
        var p = VmNames.Normalize(pattern, _options.VmDomain);
        if (p.IndexOfAny(['*', '?', '[']) >= 0)
        {
            var re = GlobToRegex(p);
            return all.Where(v => re.IsMatch(v.Name) || v.Tags.Any(re.IsMatch)).ToList();
        }
        return all.Where(v => v.Name == p || v.Tags.Contains(p)).ToList();
    }

    /// <summary>Number of VMs the account owns.</summary>
    public Task<long> CountAsync(string accountId, CancellationToken ct = default)
        => _db.ReadAsync(c => c.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM vms WHERE account_id = @accountId", new { accountId }), ct);

    // ---------------------------------------------------------------- new

    /// <summary>
    /// <c>new</c>. Validates everything first, then in ONE transaction: checks the account's VM limit, takes
    /// the name, assigns the slot and inserts the record as Creating. Then prepares the image (choosing the
    /// proxy port), creates the VM in the runtime and marks it Running. If the runtime fails, what was made is
    /// removed and the record deleted (nothing half-done); the error is <c>vm_create_failed</c>. Should that
    /// clean-up fail too, the record stays Failed with the reason.
    /// </summary>
    public async Task<VmRecord> CreateAsync(string accountId, VmCreateRequest request, CancellationToken ct = default)
    {
        if (request.Name is not null) VmNames.Validate(request.Name);
        // new --tag=a,b --tag=a: repeats collapse (the tag command, adding to a VM, refuses them instead).
        var tags = VmTags.Canonical(VmTags.SplitLists(request.Tags));
        var comment = VmComments.Normalize(request.Comment);
        VmEnv.Validate(request.Env);
        var image = ValidateImage(request.Image ?? _options.DefaultImage);
        if (request.SetupScript is { } script && Encoding.UTF8.GetByteCount(script) > MaxSetupScriptBytes)
            throw new PlatformException(PlatformErrorCodes.SetupScriptTooLarge, $"setup script is too large (max {MaxSetupScriptBytes / 1024} KiB)");
        if (request.CommandMode == CommandMode.Custom && (request.CustomCommand is null || request.CustomCommand.Count == 0))
            throw new PlatformException(PlatformErrorCodes.InvalidArgument, "--command=custom needs a command");
        var res = _options.Resources;
        var resources = ValidateResources(request.Cpus ?? res.DefaultCpus, request.MemoryBytes ?? res.DefaultMemoryBytes, request.DiskBytes ?? res.DefaultDiskBytes);

        var now = _time.GetUtcNow();
        var id = AccountService.NewId("vm");
        var draft = new VmRecord(id, request.Name ?? "", accountId, image, VmState.Creating, null, tags, comment,
            resources.Cpus, resources.MemoryBytes, resources.DiskBytes, DefaultProxyPort, [], Trunc(now), Trunc(now),
            new Dictionary<string, string>(request.Env), request.CommandMode)
        {
            CustomCommand = request.CommandMode == CommandMode.Custom ? request.CustomCommand : null,
            SetupScript = request.SetupScript,
            AutoProxyPort = DefaultProxyPort,
            StateReason = "creating",
        };
        // Held from before the insert, so no other operation on this VM can run until the create settles.
        using var _ = await _locks.AcquireAsync(draft.Id, ct);
        var record = await InsertNewAsync(accountId, draft, ct);
        return await DriveCreateAsync(record, request.RegistryAuth, fromReconcile: false, ct);
    }

    private async Task<VmRecord> InsertNewAsync(string accountId, VmRecord draft, CancellationToken ct)
    {
        try
        {
            return await _db.WriteAsync(async u =>
            {
                if (await u.ScalarAsync<long>("SELECT COUNT(*) FROM accounts WHERE id = @accountId", new { accountId }) == 0)
                    throw new PlatformException(PlatformErrorCodes.AccountNotFound, "Account not found.");
                var count = await u.ScalarAsync<long>("SELECT COUNT(*) FROM vms WHERE account_id = @accountId", new { accountId });
                if (count >= _options.MaxVmsPerAccount)
                    throw new PlatformException(PlatformErrorCodes.VmLimitReached, "You have reached the maximum number of VMs allowed on your plan.");
                var name = draft.Name.Length > 0 ? draft.Name : await GenerateNameAsync(u);
                if (!await IsNameFreeAsync(u, name)) throw VmNames.Unavailable(name);
                var rec = draft with { Name = name, SlotName = null };
                await u.ExecuteAsync(VmStore.InsertSql, VmStore.ToParameters(rec));
                var slot = await _allocator.AssignAsync(u, accountId, draft.Id);
                rec = rec with { SlotName = slot.SlotName };
                _index.ReloadVmsOnCommit(u, [rec.Id]);
                return rec;
            }, ct);
        }
        catch (SqliteException e) when (SqliteErrors.IsUnique(e, "vms.name"))
        {
            throw VmNames.Unavailable(draft.Name);
        }
    }

    private async Task<VmRecord> DriveCreateAsync(VmRecord record, RegistryCredential? auth, bool fromReconcile, CancellationToken ct)
    {
        try
        {
            VmRecord prepared;
            if (record.SourceVmId is { } sourceId)
            {
                prepared = record;
                await _runtime.CopyAsync(sourceId, ToSpec(record, null), ct);
            }
            else
            {
                var image = await _images.PrepareAsync(record.AccountId, record.Image, auth, ct);
                var info = image.Info;
                var exposed = info.ExposedTcpPorts.Distinct().Order().ToList();
                var port = ChooseProxyPort(exposed);
                prepared = record with
                {
                    ExposedPorts = exposed, ProxyPort = port, AutoProxyPort = port, ImageDigest = info.Digest,
                    LoginUser = LoginUserFrom(info.User),
                };
                await _db.WriteAsync(async u =>
                {
                    await u.ExecuteAsync("""
                        UPDATE vms SET exposed_ports = @ExposedPorts, proxy_port = @ProxyPort, image_digest = @ImageDigest,
                            login_user = @LoginUser, state_reason = 'starting' WHERE id = @Id AND state = 'creating'
                        """, VmStore.ToParameters(prepared));
                    _index.ReloadVmsOnCommit(u, [record.Id]);
                }, CancellationToken.None);
                await _runtime.CreateAsync(ToSpec(prepared, auth) with { Image = image.RunReference }, ct);
                await GiveDataToLoginUserAsync(prepared, ct);
            }
            return await TransitionAsync(record.Id, VmState.Running, null, extraSql: "source_vm_id = NULL", CancellationToken.None);
        }
        catch (Exception e)
        {
            var reason = Scrub(e is OperationCanceledException ? "cancelled" : e.Message, auth);
            PlatformLog.CreateFailed(_log, record.Id, record.Name, reason);
            if (!fromReconcile)
            {
                try
                {
                    await _runtime.RemoveAsync(record.Id, CancellationToken.None);
                    await DeleteRecordAsync(record.Id, CancellationToken.None);
                }
                catch (Exception cleanup)
                {
                    PlatformLog.CreateCleanupFailed(_log, record.Id, Scrub(cleanup.Message, auth));
                    await TryMarkFailedAsync(record.Id, $"create failed: {reason}");
                }
                throw new PlatformException(PlatformErrorCodes.VmCreateFailed, $"failed to create VM \"{record.Name}\": {reason}", e);
            }
            try { await _runtime.RemoveAsync(record.Id, CancellationToken.None); } catch (Exception) { /* reconcile removes orphans next start */ }
            await TryMarkFailedAsync(record.Id, $"interrupted create could not be completed: {reason}");
            throw new PlatformException(PlatformErrorCodes.VmCreateFailed, $"failed to create VM \"{record.Name}\": {reason}", e);
        }
    }

    /// <summary>Where every VM's persistent volume is mounted.</summary>
    public const string DataPath = "/data";

    /// <summary>
    /// A fresh volume's root belongs to root (mode 755), but people log in as the login user (the image's USER,
    /// else <see cref="PlatformOptions.DefaultLoginUser"/>), who could then not write their own /data. So the new
    /// VM's /data (not its contents) is given to that user, by running chown inside the VM as root. Best effort:
    /// an image without chown or without that user keeps a root-owned /data. Copies keep the source's ownership.
    /// </summary>
    private async Task GiveDataToLoginUserAsync(VmRecord vm, CancellationToken ct)
    {
        var user = vm.LoginUser ?? _options.DefaultLoginUser;
        if (string.IsNullOrEmpty(user) || user == "root") return;
        try
        {
            await using var p = await _runtime.ExecAsync(vm.Id, new ExecSpec(["chown", user, DataPath], User: "root"), ct);
            await p.CloseStandardInputAsync();
            var drainOut = p.StandardOutput.CopyToAsync(Stream.Null, ct);
            var drainErr = p.StandardError?.CopyToAsync(Stream.Null, ct) ?? Task.CompletedTask;
            var exit = await p.Completion;
            await Task.WhenAll(drainOut, drainErr);
            if (exit.ExitCode != 0) LogDataOwnerNotSet(_log, vm.Id, user, $"chown exited with {exit.ExitCode?.ToString() ?? exit.Signal}");
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogDataOwnerNotSet(_log, vm.Id, user, e.Message);
        }
    }

    [LoggerMessage(EventId = 2008, EventName = "vm.data_owner_not_set", Level = LogLevel.Information,
        Message = "vm.data_owner_not_set vm={VmId} user={User} reason={Reason}")]
    private static partial void LogDataOwnerNotSet(ILogger log, string vmId, string user, string reason);

    // ---------------------------------------------------------------- cp

    /// <summary>
    /// <c>cp SRC [NEW]</c>: a new VM (new slot, Creating) from the source's filesystem and /data. Tags are
    /// copied unless <see cref="VmCopyRequest.CopyTags"/> is false; resources default to the source's;
    /// the comment and shares are not copied.
    /// </summary>
    public async Task<VmRecord> CopyAsync(string accountId, VmCopyRequest request, CancellationToken ct = default)
    {
        var source = await GetByNameAsync(accountId, request.SourceName, ct);
        if (source.State is not (VmState.Running or VmState.Stopped))
            throw new PlatformException(PlatformErrorCodes.VmBusy, $"VM \"{source.Name}\" is {source.State.ToWire()}; only a running or stopped VM can be copied");
        if (request.NewName is not null) VmNames.Validate(request.NewName);
        var resources = ValidateResources(request.Cpus ?? source.Cpus, request.MemoryBytes ?? source.MemoryBytes, request.DiskBytes ?? source.DiskBytes);
        if (resources.DiskBytes < source.DiskBytes)
            throw new PlatformException(PlatformErrorCodes.DiskShrink, $"--disk must be at least the source's size ({ByteSize.Format(source.DiskBytes)})");
        var now = _time.GetUtcNow();
        var draft = source with
        {
            Id = AccountService.NewId("vm"),
            Name = request.NewName ?? "",
            State = VmState.Creating,
            StateReason = "copying",
            SlotName = null,
            Tags = request.CopyTags ? source.Tags : [],
            Comment = "",
            Cpus = resources.Cpus, MemoryBytes = resources.MemoryBytes, DiskBytes = resources.DiskBytes,
            ProxyPort = source.AutoProxyPort,
            SetupScript = null,
            SourceVmId = source.Id,
            IsPublic = false,
            ReceiveEmail = false,
            CreatedAt = Trunc(now), UpdatedAt = Trunc(now),
        };
        using var _ = await _locks.AcquireAsync(draft.Id, ct);
        using var __ = await _locks.AcquireAsync(source.Id, ct);
        var record = await InsertNewAsync(accountId, draft, ct);
        return await DriveCreateAsync(record, null, fromReconcile: false, ct);
    }

    // ---------------------------------------------------------------- rm

    /// <summary>
    /// <c>rm</c>: Deleting (routes released at once) → runtime remove → record deleted. If the runtime fails the
    /// record stays Deleting and the error is <c>vm_runtime_failed</c>; <c>rm</c> again or reconciliation finishes it.
    /// </summary>
    public async Task<VmRecord> RemoveAsync(string accountId, string name, CancellationToken ct = default)
    {
        var vm = await GetByNameAsync(accountId, name, ct);
        using var _ = await _locks.AcquireAsync(vm.Id, ct);
        await _db.WriteAsync(async u =>
        {
            var n = await u.ExecuteAsync("UPDATE vms SET state = 'deleting', state_reason = 'deleting', updated_at = @now WHERE id = @Id",
                new { vm.Id, now = _time.GetUtcNow().ToUnixTimeMilliseconds() });
            if (n == 0) throw NotFound(name);
            _index.ReloadVmsOnCommit(u, await _allocator.ReleaseAsync(u, vm.Id));
        }, CancellationToken.None);
        try
        {
            await _runtime.RemoveAsync(vm.Id, CancellationToken.None);
        }
        catch (Exception e)
        {
            PlatformLog.RemoveFailed(_log, vm.Id, e.Message);
            throw new PlatformException(PlatformErrorCodes.VmRuntimeFailed, $"failed to delete VM \"{vm.Name}\": {e.Message}", e);
        }
        await DeleteRecordAsync(vm.Id, CancellationToken.None);
        return vm with { State = VmState.Deleting };
    }

    private Task DeleteRecordAsync(string vmId, CancellationToken ct)
        => _db.WriteAsync(async u =>
        {
            var touched = await _allocator.ReleaseAsync(u, vmId);
            await u.ExecuteAsync("DELETE FROM vm_stats WHERE vm_id = @vmId", new { vmId });
            await u.ExecuteAsync("DELETE FROM vms WHERE id = @vmId", new { vmId });
            _index.ReloadVmsOnCommit(u, touched);
        }, ct);

    // ---------------------------------------------------------------- restart / rename / resize

    /// <summary><c>restart</c>: runtime restart, then Running.</summary>
    public async Task<VmRecord> RestartAsync(string accountId, string name, CancellationToken ct = default)
    {
        var vm = await GetByNameAsync(accountId, name, ct);
        using var _ = await _locks.AcquireAsync(vm.Id, ct);
        vm = await GetByIdAsync(vm.Id, ct) ?? throw NotFound(name);
        if (vm.State is not (VmState.Running or VmState.Stopped or VmState.Failed))
            throw new PlatformException(PlatformErrorCodes.VmBusy, $"VM \"{vm.Name}\" is {vm.State.ToWire()}");
        try { await _runtime.RestartAsync(vm.Id, ct); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new PlatformException(PlatformErrorCodes.VmRuntimeFailed, $"failed to restart VM \"{vm.Name}\": {e.Message}", e);
        }
        return await TransitionAsync(vm.Id, VmState.Running, null, null, CancellationToken.None);
    }

    /// <summary>
    /// <c>rename OLD NEW</c> (names are taken literally, as exe.dev). Keeps id, slot, data and routes. The VM must be
    /// running. Returns the VM unchanged when the names are equal.
    /// </summary>
    public async Task<VmRecord> RenameAsync(string accountId, string oldName, string newName, CancellationToken ct = default)
    {
        var vm = await _db.ReadAsync(c => VmStore.GetByNameAsync(c, null, oldName.Trim()), ct);
        if (vm is null || vm.AccountId != accountId) throw NotFound(oldName);
        if (oldName.Trim() == newName.Trim()) return vm;
        VmNames.Validate(newName);
        using var _ = await _locks.AcquireAsync(vm.Id, ct);
        vm = await GetByIdAsync(vm.Id, ct) ?? throw NotFound(oldName);
        if (vm.State != VmState.Running)
            throw new PlatformException(PlatformErrorCodes.VmNotRunning, "vm rename not supported when vm is not running!");
        try
        {
            await _db.WriteAsync(async u =>
            {
                if (!await IsNameFreeAsync(u, newName)) throw VmNames.Unavailable(newName);
                await u.ExecuteAsync("UPDATE vms SET name = @newName, updated_at = @now WHERE id = @Id",
                    new { newName, vm.Id, now = _time.GetUtcNow().ToUnixTimeMilliseconds() });
                _index.ReloadVmsOnCommit(u, [vm.Id]);
            }, ct);
        }
        catch (SqliteException e) when (SqliteErrors.IsUnique(e, "vms.name")) { throw VmNames.Unavailable(newName); }
        try
        {
            await _runtime.RenameAsync(vm.Id, newName, ct);
        }
        catch (Exception e)
        {
            await _db.WriteAsync(async u =>
            {
                await u.ExecuteAsync("UPDATE vms SET name = @Name WHERE id = @Id", new { vm.Name, vm.Id });
                _index.ReloadVmsOnCommit(u, [vm.Id]);
            }, CancellationToken.None);
            throw new PlatformException(PlatformErrorCodes.VmRuntimeFailed, $"failed to rename VM \"{vm.Name}\": {e.Message}", e);
        }
        return await GetByIdAsync(vm.Id, CancellationToken.None) ?? throw NotFound(newName);
    }

    /// <summary>
    /// <c>resize</c>: new cpu/memory/disk (null = unchanged) within the configured limits; disk only grows, by at most
    /// <see cref="VmResourceOptions.MaxDiskGrowthPerResizeBytes"/>. Recorded first, reverted if the runtime refuses.
    /// </summary>
    public async Task<VmResizeResult> ResizeAsync(string accountId, string name, VmResizeRequest request, CancellationToken ct = default)
    {
        var vm = await GetByNameAsync(accountId, name, ct);
        using var _ = await _locks.AcquireAsync(vm.Id, ct);
        vm = await GetByIdAsync(vm.Id, ct) ?? throw NotFound(name);
        if (vm.State is not (VmState.Running or VmState.Stopped))
            throw new PlatformException(PlatformErrorCodes.VmBusy, $"VM \"{vm.Name}\" is {vm.State.ToWire()}");
        var target = ValidateResources(request.Cpus ?? vm.Cpus, request.MemoryBytes ?? vm.MemoryBytes, request.DiskBytes ?? vm.DiskBytes);
        if (request.DiskBytes is { } d)
        {
            if (d <= vm.DiskBytes)
                throw new PlatformException(PlatformErrorCodes.DiskShrink, $"--disk must be larger than current size ({ByteSize.Format(vm.DiskBytes)})");
            if (d - vm.DiskBytes > _options.Resources.MaxDiskGrowthPerResizeBytes)
                throw new PlatformException(PlatformErrorCodes.ResourceOutOfRange, $"--disk can grow by at most {ByteSize.Format(_options.Resources.MaxDiskGrowthPerResizeBytes)} per resize");
        }
        await SetResourcesAsync(vm.Id, target);
        ResizeOutcome outcome;
        try { outcome = await _runtime.ResizeAsync(vm.Id, target, ct); }
        catch (Exception e)
        {
            await SetResourcesAsync(vm.Id, vm.Resources);
            throw new PlatformException(PlatformErrorCodes.VmRuntimeFailed, $"failed to resize VM \"{vm.Name}\": {e.Message}", e);
        }
        var after = await GetByIdAsync(vm.Id, CancellationToken.None) ?? throw NotFound(name);
        return new VmResizeResult(vm, after, outcome);
    }

    private Task SetResourcesAsync(string id, VmResources r) => _db.WriteAsync(async u =>
    {
        await u.ExecuteAsync("UPDATE vms SET cpus = @Cpus, memory_bytes = @MemoryBytes, disk_bytes = @DiskBytes, updated_at = @now WHERE id = @id",
            new { r.Cpus, r.MemoryBytes, r.DiskBytes, id, now = _time.GetUtcNow().ToUnixTimeMilliseconds() });
        _index.ReloadVmsOnCommit(u, [id]);
    }, CancellationToken.None);

    // ---------------------------------------------------------------- tags / comment

    /// <summary><c>tag VM TAG…</c>: errors when a tag is invalid, repeated, or already on the VM.</summary>
    public Task<VmRecord> TagAsync(string accountId, string name, IReadOnlyList<string> tags, CancellationToken ct = default)
    {
        var add = VmTags.ValidateList(tags);
        return UpdateOwnedAsync(accountId, name, vm =>
        {
            foreach (var t in add)
                if (vm.Tags.Contains(t)) throw new PlatformException(PlatformErrorCodes.TagExists, $"tag \"{t}\" already exists on {vm.Name}");
            if (vm.Tags.Count + add.Count > VmTags.MaxPerVm) throw new PlatformException(PlatformErrorCodes.TagInvalid, $"a VM can have at most {VmTags.MaxPerVm} tags");
            return vm with { Tags = VmTags.Canonical(vm.Tags.Concat(add)) };
        }, ct);
    }

    /// <summary><c>tag -d VM TAG…</c>: errors when a tag is not on the VM.</summary>
    public Task<VmRecord> UntagAsync(string accountId, string name, IReadOnlyList<string> tags, CancellationToken ct = default)
    {
        var remove = VmTags.ValidateList(tags);
        return UpdateOwnedAsync(accountId, name, vm =>
        {
            foreach (var t in remove)
                if (!vm.Tags.Contains(t)) throw new PlatformException(PlatformErrorCodes.TagNotFound, $"tag \"{t}\" not found on {vm.Name}");
            return vm with { Tags = vm.Tags.Where(t => !remove.Contains(t)).ToList() };
        }, ct);
    }

    /// <summary><c>comment VM TEXT</c> (empty text clears it).</summary>
    public Task<VmRecord> SetCommentAsync(string accountId, string name, string? comment, CancellationToken ct = default)
    {
        var c = VmComments.Normalize(comment);
        return UpdateOwnedAsync(accountId, name, vm => vm with { Comment = c }, ct);
    }

    /// <summary>Read-modify-write of an owned VM's tags/comment/sharing fields in one transaction.</summary>
    internal async Task<VmRecord> UpdateOwnedAsync(string accountId, string name, Func<VmRecord, VmRecord> change, CancellationToken ct)
    {
        var n = VmNames.Normalize(name, _options.VmDomain);
        return await _db.WriteAsync(async u =>
        {
            var vm = await VmStore.GetByNameAsync(u.Connection, u.Transaction, n);
            if (vm is null || vm.AccountId != accountId) throw NotFound(name);
            var updated = change(vm) with { UpdatedAt = Trunc(_time.GetUtcNow()) };
            var p = VmStore.ToParameters(updated);
            await u.ExecuteAsync("""
                UPDATE vms SET tags = @Tags, comment = @Comment, is_public = @IsPublic, proxy_port_override = @ProxyPortOverride,
                    receive_email = @ReceiveEmail, updated_at = @UpdatedAt WHERE id = @Id
                """, p);
            _index.ReloadVmsOnCommit(u, [vm.Id]);
            return updated;
        }, ct);
    }

    // ---------------------------------------------------------------- reconcile

    /// <summary>
    /// Brings records and the runtime into agreement; run once at daemon start, before the front doors open.
    /// Deleting → removed from the runtime and the record deleted. Creating → Running when the runtime has it
    /// running, else re-driven (image create or copy; no registry credential is available any more), else
    /// Failed with the reason. Running/Stopped missing in the runtime → Failed; states otherwise follow the
    /// runtime. Runtime VMs without a record are removed.
    /// </summary>
    public async Task<ReconcileReport> ReconcileAsync(CancellationToken ct = default)
    {
        List<string> adopted = [], redriven = [], failed = [], deleted = [], synced = [], orphans = [];
        var runtimeVms = (await _runtime.ListAsync(ct)).GroupBy(v => v.VmId).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var records = await _db.ReadAsync(c => Task.FromResult(VmStore.All(c).ToList()), ct);
        var known = records.Select(r => r.Id).ToHashSet(StringComparer.Ordinal);

        // Deletes first: they free names and slots; then copies wait for their sources below.
        foreach (var r in records.OrderBy(r => r.State == VmState.Deleting ? 0 : 1).ThenBy(r => r.SourceVmId is null ? 0 : 1))
        {
            ct.ThrowIfCancellationRequested();
            using var _ = await _locks.AcquireAsync(r.Id, ct);
            runtimeVms.TryGetValue(r.Id, out var rt);
            try
            {
                switch (r.State)
                {
                    case VmState.Deleting:
                        await _runtime.RemoveAsync(r.Id, ct);
                        await DeleteRecordAsync(r.Id, ct);
                        deleted.Add(r.Name);
                        break;
                    case VmState.Creating when rt is { State: RuntimeVmState.Running }:
                        await TransitionAsync(r.Id, VmState.Running, null, "source_vm_id = NULL", ct);
                        adopted.Add(r.Name);
                        break;
                    case VmState.Creating:
                        if (r.SourceVmId is { } src && await GetByIdAsync(src, ct) is not { State: VmState.Running or VmState.Stopped })
                        {
                            await _runtime.RemoveAsync(r.Id, ct);
                            await TryMarkFailedAsync(r.Id, "interrupted copy: the source VM is gone");
                            failed.Add(r.Name);
                            break;
                        }
                        if (rt is not null && r.SourceVmId is not null) await _runtime.RemoveAsync(r.Id, ct); // partial copy
                        using (var cts = CancellationTokenSource.CreateLinkedTokenSource(ct))
                        {
                            cts.CancelAfter(ReconcileRedriveTimeout);
                            try { await DriveCreateAsync(r, null, fromReconcile: true, cts.Token); redriven.Add(r.Name); }
                            catch (PlatformException) { failed.Add(r.Name); }
                        }
                        break;
                    default:
                        var target = rt?.State switch
                        {
                            null or RuntimeVmState.Missing or RuntimeVmState.Failed => VmState.Failed,
                            RuntimeVmState.Running => VmState.Running,
                            RuntimeVmState.Stopped => VmState.Stopped,
                            _ => r.State, // runtime still creating/starting it: leave as is
                        };
                        if (target == r.State) break;
                        var reason = target == VmState.Failed ? (rt is null ? "missing in the runtime" : "failed in the runtime") : null;
                        await TransitionAsync(r.Id, target, reason, null, ct);
                        (target == VmState.Failed ? failed : synced).Add(r.Name);
                        break;
                }
            }
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
            {
                PlatformLog.ReconcileFailed(_log, r.Id, r.Name, r.State.ToWire(), e.Message);
                if (r.State == VmState.Creating && await TryMarkFailedAsync(r.Id, $"reconciliation failed: {e.Message}")) failed.Add(r.Name);
            }
        }

        foreach (var (id, rt) in runtimeVms)
        {
            if (known.Contains(id)) continue;
            try
            {
                await _runtime.RemoveAsync(id, ct);
                orphans.Add(rt.Name);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                PlatformLog.ReconcileOrphanFailed(_log, id, e.Message);
            }
        }
        var report = new ReconcileReport(adopted, redriven, failed, deleted, synced, orphans);
        PlatformLog.Reconciled(_log, adopted.Count, redriven.Count, failed.Count, deleted.Count, synced.Count, orphans.Count);
        return report;
    }

    /// <summary>
    /// Follows VMs that stopped or started on their own while the daemon runs: a guest that shut itself down
    /// (<c>sudo poweroff</c> in the VM, as on a real machine) becomes Stopped; one the runtime brought back (its
    /// restart policy after a crash of the VM's init) becomes Running again. Only Running ⇄ Stopped is followed;
    /// every other state belongs to an operation. Each change is re-checked under the VM's lock against the runtime's
    /// answer for that one VM, so a <c>restart</c> or <c>new</c> in flight is never overruled by a stale listing.
    /// Returns the names of the VMs whose state changed.
    /// </summary>
    public async Task<IReadOnlyList<string>> SyncRunStatesAsync(CancellationToken ct = default)
    {
        var changed = new List<string>();
        var listed = (await _runtime.ListAsync(ct)).GroupBy(v => v.VmId).ToDictionary(g => g.Key, g => g.First().State, StringComparer.Ordinal);
        foreach (var snapshot in _index.SnapshotVms())
        {
            if (!listed.TryGetValue(snapshot.Id, out var seen) || RunStateFor(snapshot.State, seen) is null) continue;
            using var _ = await _locks.AcquireAsync(snapshot.Id, ct);
            var vm = await GetByIdAsync(snapshot.Id, ct);
            if (vm is null) continue;
            var now = await _runtime.InspectAsync(vm.Id, ct);
            if (now is null || RunStateFor(vm.State, now.State) is not { } target) continue;
            await TransitionAsync(vm.Id, target, null, null, ct);
            PlatformLog.RunStateSynced(_log, vm.Id, vm.Name, vm.State.ToWire(), target.ToWire());
            changed.Add(vm.Name);
        }
        return changed;
    }

    /// <summary>The state a Running/Stopped record takes from what the runtime reports, or null to leave it.</summary>
    private static VmState? RunStateFor(VmState record, RuntimeVmState runtime) => (record, runtime) switch
    {
        (VmState.Running, RuntimeVmState.Stopped) => VmState.Stopped,
        (VmState.Stopped, RuntimeVmState.Running) => VmState.Running,
        _ => null,
    };

    // ---------------------------------------------------------------- helpers

    /// <summary>exe.dev's choice: 80 if exposed, else the smallest exposed TCP port ≥ 1024, else 80.</summary>
    public static int ChooseProxyPort(IReadOnlyCollection<int> exposedTcpPorts)
    {
        if (exposedTcpPorts.Contains(DefaultProxyPort)) return DefaultProxyPort;
        var high = exposedTcpPorts.Where(p => p is >= MinAutoProxyPort and <= 65535).DefaultIfEmpty(DefaultProxyPort).Min();
        return high;
    }

    /// <summary>The VM spec handed to the runtime.</summary>
    public static VmSpec ToSpec(VmRecord vm, RegistryCredential? auth)
        => new(vm.Id, vm.Name, vm.Image, vm.Resources, vm.Env, vm.CommandMode, vm.CustomCommand, vm.SetupScript, auth);

    private VmResources ValidateResources(double cpus, long memory, long disk)
    {
        var r = _options.Resources;
        if (double.IsNaN(cpus) || cpus < r.MinCpus || cpus > r.MaxCpus)
            throw new PlatformException(PlatformErrorCodes.ResourceOutOfRange, $"--cpu must be between {r.MinCpus} and {r.MaxCpus}");
        if (memory < r.MinMemoryBytes || memory > r.MaxMemoryBytes)
            throw new PlatformException(PlatformErrorCodes.ResourceOutOfRange, $"--memory must be between {ByteSize.Format(r.MinMemoryBytes)} and {ByteSize.Format(r.MaxMemoryBytes)}");
        if (disk < r.MinDiskBytes || disk > r.MaxDiskBytes)
            throw new PlatformException(PlatformErrorCodes.ResourceOutOfRange, $"--disk must be between {ByteSize.Format(r.MinDiskBytes)} and {ByteSize.Format(r.MaxDiskBytes)}");
        return new VmResources(cpus, memory, disk);
    }

    private static string ValidateImage(string image)
    {
        var s = image.Trim();
        if (s.Length == 0 || s.Length > MaxImageReferenceLength || s.Any(ch => char.IsWhiteSpace(ch) || char.IsControl(ch)) || s.StartsWith('-'))
            throw new PlatformException(PlatformErrorCodes.InvalidArgument, $"invalid image reference \"{image}\"");
        return s;
    }

    private static string? LoginUserFrom(string? user)
    {
        if (string.IsNullOrWhiteSpace(user)) return null;
        var name = user.Split(':')[0];
        return name.Length == 0 || name.All(char.IsAsciiDigit) ? null : name;
    }

    private async Task<bool> IsNameFreeAsync(UnitOfWork u, string name)
        => !VmNames.IsReserved(name, _options)
           && await u.ScalarAsync<long>("SELECT COUNT(*) FROM vms WHERE name = @name", new { name }) == 0;

    private async Task<string> GenerateNameAsync(UnitOfWork u)
    {
        for (int i = 0; i < NameGenerationAttempts; i++)
        {
            var n = i < NameGenerationAttempts / 2 ? VmNameGenerator.Next(Random.Shared) : VmNameGenerator.NextWithSuffix(Random.Shared);
            if (await IsNameFreeAsync(u, n)) return n;
        }
        throw new PlatformException(PlatformErrorCodes.VmNameUnavailable, "could not generate a free VM name; pass --name");
    }

    /// <summary>Moves a VM to <paramref name="to"/> if its current state allows it; <c>state_conflict</c> otherwise.</summary>
    private async Task<VmRecord> TransitionAsync(string id, VmState to, string? reason, string? extraSql, CancellationToken ct)
    {
        var from = VmStates.From(to).Select(s => s.ToWire()).ToArray();
        return await _db.WriteAsync(async u =>
        {
            var set = extraSql is null ? "" : ", " + extraSql;
            var n = await u.ExecuteAsync($"UPDATE vms SET state = @to, state_reason = @reason, updated_at = @now{set} WHERE id = @id AND state IN @from",
                new { to = to.ToWire(), reason, now = _time.GetUtcNow().ToUnixTimeMilliseconds(), id, from });
            var vm = await VmStore.GetByIdAsync(u.Connection, u.Transaction, id);
            if (n == 0)
                throw new PlatformException(PlatformErrorCodes.StateConflict,
                    vm is null ? "VM not found" : $"VM \"{vm.Name}\" is {vm.State.ToWire()} and cannot become {to.ToWire()}");
            _index.ReloadVmsOnCommit(u, [id]);
            return vm!;
        }, ct);
    }

    private async Task<bool> TryMarkFailedAsync(string id, string reason)
    {
        try
        {
            await TransitionAsync(id, VmState.Failed, reason, "source_vm_id = NULL", CancellationToken.None);
            return true;
        }
        catch (Exception e) when (e is PlatformException or SqliteException)
        {
            PlatformLog.MarkFailedFailed(_log, id, e.Message);
            return false;
        }
    }

    /// <summary>Removes the registry secret from text that may echo it (engine error messages).</summary>
    private static string Scrub(string text, RegistryCredential? auth)
        => auth is { Secret.Length: > 0 } ? text.Replace(auth.Secret, "***", StringComparison.Ordinal) : text;

    internal static PlatformException NotFound(string name)
        => new(PlatformErrorCodes.VmNotFound, $"VM \"{name}\" not found");

    private static DateTimeOffset Trunc(DateTimeOffset t) => DateTimeOffset.FromUnixTimeMilliseconds(t.ToUnixTimeMilliseconds());

    private static Regex GlobToRegex(string glob)
    {
        var sb = new StringBuilder("^");
        for (int i = 0; i < glob.Length; i++)
        {
            char ch = glob[i];
            switch (ch)
            {
                case '*': sb.Append(".*"); break;
                case '?': sb.Append('.'); break;
                case '[':
                    int close = glob.IndexOf(']', i + 1);
                    if (close < 0) { sb.Append(@"\["); break; }
                    var body = glob[(i + 1)..close];
                    if (body.StartsWith('!')) body = "^" + body[1..];
                    sb.Append('[').Append(body.Replace(@"\", @"\\")).Append(']');
                    i = close;
                    break;
                default: sb.Append(Regex.Escape(ch.ToString())); break;
            }
        }
        return new Regex(sb.Append('$').ToString(), RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
    }
}
