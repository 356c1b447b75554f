using Dapper;
using Microsoft.Data.Sqlite;
using Warren.Platform.Storage;
using Warren.Platform.Vms;

namespace Warren.Platform.Addressing;

/// <summary>
/// In-memory snapshot of VM records and SSH routes for the front doors (route lookup, DNS): O(1) lookups by
/// {account, slot}, by name and by id. Loaded from the database at construction and refreshed after every
/// committed change, in commit order (refreshes run under the database's write gate). <see cref="Version"/>
/// grows by one per refresh and <see cref="Changed"/> fires after it.
/// </summary>
public sealed class PlatformIndex
{
    private readonly object _gate = new();
    private readonly Dictionary<string, VmRecord> _byId = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _idByName = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Account, string Slot), string> _routes = new();
    private readonly Dictionary<string, List<(string Account, string Slot)>> _routesByVm = new(StringComparer.Ordinal);
    private long _version;

    public PlatformIndex(WarrenDatabase db)
    {
        using var c = db.OpenConnection();
        LoadAll(c);
    }

    /// <summary>Grows by one after each refresh.</summary>
    public long Version => Interlocked.Read(ref _version);

    /// <summary>Raised after each refresh (outside the index's lock). Handlers must be quick and must not throw.</summary>
    public event Action? Changed;

    public int VmCount { get { lock (_gate) return _byId.Count; } }

    internal void LoadAll(SqliteConnection c)
    {
        var vms = VmStore.All(c).ToList();
        var routes = c.Query<(string AccountId, string SlotName, string VmId)>(
            "SELECT account_id AS AccountId, slot_name AS SlotName, vm_id AS VmId FROM ssh_reach").ToList();
        lock (_gate)
        {
            _byId.Clear(); _idByName.Clear(); _routes.Clear(); _routesByVm.Clear();
            foreach (var v in vms) { _byId[v.Id] = v; _idByName[v.Name] = v.Id; }
            foreach (var (a, s, id) in routes) AddRoute(a, s, id);
            _version++;
        }
        Changed?.Invoke();
    }

    /// <summary>Re-reads these VMs and all their routes from the database (absent rows are dropped).</summary>
    internal void ReloadVms(SqliteConnection c, IReadOnlyCollection<string> vmIds)
    {
        if (vmIds.Count == 0) return;
        var ids = vmIds.Distinct(StringComparer.Ordinal).ToArray();
        var vms = VmStore.ByIds(c, ids).ToDictionary(v => v.Id, StringComparer.Ordinal);
        var routes = c.Query<(string AccountId, string SlotName, string VmId)>(
            "SELECT account_id AS AccountId, slot_name AS SlotName, vm_id AS VmId FROM ssh_reach WHERE vm_id IN @ids", new { ids }).ToList();
        lock (_gate)
        {
            foreach (var id in ids)
            {
                if (_byId.Remove(id, out var old) && _idByName.TryGetValue(old.Name, out var cur) && cur == id) _idByName.Remove(old.Name);
                if (_routesByVm.Remove(id, out var list))
                    foreach (var key in list)
                        if (_routes.TryGetValue(key, out var rv) && rv == id) _routes.Remove(key);
                if (vms.TryGetValue(id, out var v)) { _byId[id] = v; _idByName[v.Name] = id; }
            }
            foreach (var (a, s, id) in routes) AddRoute(a, s, id);
            _version++;
        }
        Changed?.Invoke();
    }

    /// <summary>Schedules <see cref="ReloadVms"/> for after the unit of work commits.</summary>
    internal void ReloadVmsOnCommit(UnitOfWork u, IEnumerable<string> vmIds)
    {
        var ids = vmIds.ToArray();
        if (ids.Length == 0) return;
        u.OnCommitted(c =>
        {
            // The change is committed: a failed partial refresh must not leave the snapshot stale.
            try { ReloadVms(c, ids); }
            catch (SqliteException) { LoadAll(c); }
        });
    }

    /// <summary>
    /// Re-reads everything. For changes made by another process on the same database file (for example
    /// <c>warren user add</c> activating pending SSH shares while the daemon runs).
    /// </summary>
    /// Runs under the database's write gate so it cannot overwrite a newer incremental refresh.
    public Task ReloadAsync(WarrenDatabase db, CancellationToken ct = default)
        => db.WriteAsync(u => { u.OnCommitted(LoadAll); return Task.CompletedTask; }, ct);

    private void AddRoute(string account, string slot, string vmId)
    {
        _routes[(account, slot)] = vmId;
        if (!_routesByVm.TryGetValue(vmId, out var list)) _routesByVm[vmId] = list = new(1);
        list.Add((account, slot));
    }

    public VmRecord? GetById(string id) { lock (_gate) return _byId.GetValueOrDefault(id); }

    public VmRecord? GetByName(string name)
    {
        lock (_gate) return _idByName.TryGetValue(name, out var id) ? _byId.GetValueOrDefault(id) : null;
    }

    /// <summary>The VM <paramref name="accountId"/> reaches on <paramref name="slotName"/>, or null.</summary>
    public VmRecord? GetRoute(string accountId, string slotName)
    {
        lock (_gate) return _routes.TryGetValue((accountId, slotName), out var id) ? _byId.GetValueOrDefault(id) : null;
    }

    /// <summary>True when the account has a direct route to the VM (on the VM's slot).</summary>
    public bool HasRoute(string accountId, string vmId)
    {
        lock (_gate) return _routesByVm.TryGetValue(vmId, out var l) && l.Exists(r => r.Account == accountId);
    }

    /// <summary>Every route, as (account, slot, vm id). For tests and diagnostics; copies under the lock.</summary>
    public IReadOnlyList<(string AccountId, string SlotName, string VmId)> SnapshotRoutes()
    {
        lock (_gate) return _routes.Select(kv => (kv.Key.Account, kv.Key.Slot, kv.Value)).ToList();
    }

    /// <summary>Every VM record. For tests and diagnostics; copies under the lock.</summary>
    public IReadOnlyList<VmRecord> SnapshotVms() { lock (_gate) return _byId.Values.ToList(); }
}
