using System.Collections.Concurrent;
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
/// <remarks>
/// Reads take no lock: every SSH connection resolves its VM here, and one lock shared by all of them made
/// two threads slower than one. Readers probe concurrent maps whose values are immutable records, so each
/// answer is a whole old value or a whole new one. A refresh (refreshes are serialised by
/// <see cref="_writeGate"/>) writes new values over old ones before it removes the keys that went away, so a
/// key present both before and after a refresh never reads as missing in between; a reader may see some keys
/// of a refresh before others, never a torn record. A full reload builds a new <see cref="State"/> and swaps
/// it in with one reference write. <see cref="Version"/> grows after a refresh's writes, so a reader that saw
/// version N sees at least refresh N's data.
/// </remarks>
public sealed class PlatformIndex
{
    /// <summary>Serialises refreshes; readers never take it.</summary>
    private readonly object _writeGate = new();

    /// <summary>VM id → the route keys leading to it. Writer-side bookkeeping, guarded by <see cref="_writeGate"/>.</summary>
    private readonly Dictionary<string, List<RouteKey>> _routesByVm = new(StringComparer.Ordinal);

    private State _state = new();
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

    public int VmCount => Volatile.Read(ref Volatile.Read(ref _state).VmCount);

    /// <summary>What readers see. The maps are replaced only as a whole, by <see cref="LoadAll"/>.</summary>
    private sealed class State
    {
        // The default comparer (ordinal for strings) on purpose: it starts with the runtime's fast
        // non-randomized string hash (switching only if collisions pile up); an explicit StringComparer.Ordinal does not.
        public readonly ConcurrentDictionary<string, VmRecord> ById = new();
        public readonly ConcurrentDictionary<string, VmRecord> ByName = new();
        public readonly ConcurrentDictionary<RouteKey, VmRecord> Routes = new();
        /// <summary>ById's size, kept by the writer (ConcurrentDictionary.Count takes every bucket lock).</summary>
        public int VmCount;
    }

    /// <summary>
    /// {account, slot name}: the ssh_reach primary key. Slot names are interned (here and in
    /// <see cref="AddressSlotTable"/>), so comparing the slot is a reference compare on a hit; a miss
    /// usually ends at the stored hash code without touching the key's strings.
    /// </summary>
    private readonly record struct RouteKey(string Account, string Slot)
    {
        public bool Equals(RouteKey other) =>
            string.Equals(Account, other.Account, StringComparison.Ordinal)
            && (ReferenceEquals(Slot, other.Slot) || string.Equals(Slot, other.Slot, StringComparison.Ordinal));

        public override int GetHashCode() => HashCode.Combine(Account.GetHashCode(), Slot.GetHashCode());
    }

    private static RouteKey Key(string account, string slot) => new(account, string.Intern(slot));

    internal void LoadAll(SqliteConnection c)
    {
        var vms = VmStore.All(c).ToList();
        var routes = ReadRoutes(c, null);
        var next = new State();
        foreach (var v in vms) { next.ById[v.Id] = v; next.ByName[v.Name] = v; }
        next.VmCount = next.ById.Count; // published by the Volatile.Write of the state below
        lock (_writeGate)
        {
            _routesByVm.Clear();
            foreach (var (account, slot, vmId) in routes)
            {
                // A route to a VM without a row cannot exist (foreign key); skip it rather than publish a null.
                if (!next.ById.TryGetValue(vmId, out var vm)) continue;
                var key = Key(account, slot);
                next.Routes[key] = vm;
                NoteRoute(key, vmId);
            }
            Volatile.Write(ref _state, next);
            Interlocked.Increment(ref _version);
        }
        Changed?.Invoke();
    }

    /// <summary>Re-reads these VMs and all their routes from the database (absent rows are dropped).</summary>
    internal void ReloadVms(SqliteConnection c, IReadOnlyCollection<string> vmIds)
    {
        if (vmIds.Count == 0) return;
        var ids = vmIds.Distinct(StringComparer.Ordinal).ToArray();
        var vms = VmStore.ByIds(c, ids).ToDictionary(v => v.Id, StringComparer.Ordinal);
        var routes = ReadRoutes(c, ids);
        lock (_writeGate)
        {
            var s = _state;

            // Records: new values over old first, then the names that went away (renamed or removed),
            // unless another VM of this refresh took them.
            var oldNames = new List<(string Name, string Id)>();
            foreach (var id in ids)
            {
                if (s.ById.TryGetValue(id, out var old)) oldNames.Add((old.Name, id));
                if (vms.TryGetValue(id, out var v))
                {
                    s.ById[id] = v;
                    s.ByName[v.Name] = v;
                }
                else s.ById.TryRemove(id, out _);
            }
            foreach (var (name, id) in oldNames)
                if (s.ByName.TryGetValue(name, out var current) && current.Id == id && !(vms.TryGetValue(id, out var v) && v.Name == name))
                    s.ByName.TryRemove(name, out _);
            Volatile.Write(ref s.VmCount, s.ById.Count);

            // Routes: write the current ones (their records are new), then drop the keys no longer routed.
            var before = new List<(RouteKey Key, string VmId)>();
            foreach (var id in ids)
                if (_routesByVm.Remove(id, out var keys))
                    foreach (var k in keys) before.Add((k, id));
            var now = new HashSet<RouteKey>();
            foreach (var (account, slot, vmId) in routes)
            {
                if (!vms.TryGetValue(vmId, out var vm)) continue;
                var key = Key(account, slot);
                s.Routes[key] = vm;
                NoteRoute(key, vmId);
                now.Add(key);
            }
            foreach (var (key, vmId) in before)
                if (!now.Contains(key) && s.Routes.TryGetValue(key, out var routed) && routed.Id == vmId)
                    s.Routes.TryRemove(key, out _);
            Interlocked.Increment(ref _version);
        }
        Changed?.Invoke();
    }

    private static List<(string AccountId, string SlotName, string VmId)> ReadRoutes(SqliteConnection c, string[]? vmIds) =>
        (vmIds is null
            ? c.Query<(string, string, string)>("SELECT account_id AS AccountId, slot_name AS SlotName, vm_id AS VmId FROM ssh_reach")
            : c.Query<(string, string, string)>("SELECT account_id AS AccountId, slot_name AS SlotName, vm_id AS VmId FROM ssh_reach WHERE vm_id IN @ids", new { ids = vmIds }))
        .ToList();

    /// <summary>Caller holds <see cref="_writeGate"/>.</summary>
    private void NoteRoute(RouteKey key, string vmId)
    {
        if (!_routesByVm.TryGetValue(vmId, out var list)) _routesByVm[vmId] = list = new(1);
        list.Add(key);
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

    public VmRecord? GetById(string id) => Volatile.Read(ref _state).ById.GetValueOrDefault(id);

    public VmRecord? GetByName(string name) => Volatile.Read(ref _state).ByName.GetValueOrDefault(name);

    /// <summary>The VM <paramref name="accountId"/> reaches on <paramref name="slotName"/>, or null.</summary>
    public VmRecord? GetRoute(string accountId, string slotName)
        => Volatile.Read(ref _state).Routes.GetValueOrDefault(new RouteKey(accountId, slotName));

    /// <summary>True when the account has a direct route to the VM (routes are always on the VM's own slot).</summary>
    public bool HasRoute(string accountId, string vmId)
    {
        var s = Volatile.Read(ref _state);
        return s.ById.TryGetValue(vmId, out var vm) && vm.SlotName is { } slot
            && s.Routes.TryGetValue(new RouteKey(accountId, slot), out var routed) && routed.Id == vmId;
    }

    /// <summary>Every route, as (account, slot, vm id). For tests and diagnostics; a copy, taken without locking.</summary>
    public IReadOnlyList<(string AccountId, string SlotName, string VmId)> SnapshotRoutes()
    {
        var list = new List<(string, string, string)>();
        foreach (var (key, vm) in Volatile.Read(ref _state).Routes) list.Add((key.Account, key.Slot, vm.Id));
        return list;
    }

    /// <summary>Every VM record. For tests and diagnostics; a copy, taken without locking.</summary>
    public IReadOnlyList<VmRecord> SnapshotVms()
    {
        var list = new List<VmRecord>();
        foreach (var (_, v) in Volatile.Read(ref _state).ById) list.Add(v);
        return list;
    }
}
