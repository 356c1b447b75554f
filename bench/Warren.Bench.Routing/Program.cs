using System.Diagnostics;
using System.Net;
using Dapper;
using Warren.Platform;
using Warren.Platform.Addressing;
using Warren.Platform.Storage;
using Warren.Platform.Vms;

// usage: Warren.Bench.Routing [SLOTS=1016] [VMS=100000] [VMS_PER_ACCOUNT=5] [SECONDS_PER_CASE=3]
// Builds a real WarrenDatabase (schema from CoreMigrations) in a temp directory, inserts VMS running VM
// records and their ssh_reach routes in one transaction (each account's VMs on distinct slots, accounts
// spread over the pool), loads PlatformIndex from it, then times SshRouteTable.Resolve(accountId, localIp)
// for hits and misses, on one thread and on every core (reads take no lock, so they should scale with cores).
// Baseline: one Dictionary<(string, IPAddress), VmRecord> lookup, the floor any {account, address} → VM table pays.
var slotCount = args.Length > 0 ? int.Parse(args[0]) : 1016;
var vmCount = args.Length > 1 ? int.Parse(args[1]) : 100_000;
var perAccount = args.Length > 2 ? int.Parse(args[2]) : 5;
var seconds = args.Length > 3 ? double.Parse(args[3]) : 3;
if (perAccount > slotCount) throw new ArgumentException("VMS_PER_ACCOUNT must not exceed SLOTS");

var dir = Directory.CreateTempSubdirectory("warren-bench-routing-");
try
{
    var slots = Enumerable.Range(1, slotCount).Select(i => new AddressSlotOptions
    {
        Name = $"s{i:D3}",
        PublicIp = $"198.18.{i / 256}.{i % 256}",
        LocalIp = $"127.1.{i / 256}.{i % 256}",
    }).ToArray();
    var options = new PlatformOptions { DataDirectory = dir.FullName, Slots = slots };
    var problems = options.Validate();
    if (problems.Count > 0) throw new InvalidOperationException(string.Join("; ", problems));

    using var db = new WarrenDatabase(options);
    var accountCount = (vmCount + perAccount - 1) / perAccount;
    var accounts = Enumerable.Range(0, accountCount).Select(i => $"acct_{i:D8}").ToArray();

    var sw = Stopwatch.StartNew();
    await db.WriteAsync(async u =>
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        foreach (var (a, i) in accounts.Select((a, i) => (a, i)))
            await u.ExecuteAsync("INSERT INTO accounts (id, email, created_at) VALUES (@a, @e, @now)", new { a, e = $"u{i}@example.com", now });
        for (var v = 0; v < vmCount; v++)
        {
            var acct = v / perAccount;
            // Spread: account i's k-th VM on slot (i * 7919 + k) mod SLOTS — distinct per account because perAccount <= SLOTS.
            var slot = slots[(int)(((long)acct * 7919 + v % perAccount) % slotCount)].Name;
            var id = $"vm_{v:D8}";
            await u.ExecuteAsync("""
                INSERT INTO vms (id, name, account_id, image, state, slot_name, cpus, memory_bytes, disk_bytes, command_mode, created_at, updated_at)
                VALUES (@id, @name, @a, 'warren/busybox:1', 'running', @slot, 2, 8589934592, 26843545600, 'auto', @now, @now)
                """, new { id, name = $"vm{v}", a = accounts[acct], slot, now });
            await u.ExecuteAsync("INSERT INTO ssh_reach (account_id, slot_name, vm_id) VALUES (@a, @slot, @id)", new { a = accounts[acct], slot, id });
        }
    });
    var insertMs = sw.Elapsed.TotalMilliseconds;

    sw.Restart();
    var index = new PlatformIndex(db);
    var loadMs = sw.Elapsed.TotalMilliseconds;
    sw.Restart();
    await index.ReloadAsync(db);
    var reloadMs = sw.Elapsed.TotalMilliseconds;
    var slotTable = new AddressSlotTable(options);
    var routes = new SshRouteTable(index, slotTable, db, options);

    // Queries: the real routes (hits) and the same accounts on slots where they have nothing (misses).
    var snapshot = index.SnapshotRoutes();
    if (snapshot.Count != vmCount || index.VmCount != vmCount) throw new InvalidOperationException($"expected {vmCount} routes, have {snapshot.Count}");
    var rng = new Random(42);
    var ipBySlot = slotTable.Slots.ToDictionary(s => s.Name, s => s.LocalIp);
    var hits = Enumerable.Range(0, 1 << 16).Select(_ => snapshot[rng.Next(snapshot.Count)]).Select(r => (r.AccountId, Ip: ipBySlot[r.SlotName])).ToArray();
    var routeSet = snapshot.Select(r => (r.AccountId, r.SlotName)).ToHashSet();
    var misses = new List<(string AccountId, IPAddress Ip)>();
    while (misses.Count < 1 << 16)
    {
        var a = accounts[rng.Next(accounts.Length)];
        var s = slotTable.Slots[rng.Next(slotCount)];
        if (!routeSet.Contains((a, s.Name))) misses.Add((a, s.LocalIp));
    }
    // Fresh IPAddress instances, as a socket's LocalEndPoint would give (no reference-equality shortcut).
    hits = hits.Select(q => (q.AccountId, new IPAddress(q.Ip.GetAddressBytes()))).ToArray();
    var missArr = misses.Select(q => (q.AccountId, new IPAddress(q.Ip.GetAddressBytes()))).ToArray();

    var baseline = new Dictionary<(string, IPAddress), VmRecord>();
    foreach (var (a, s, id) in snapshot) baseline[(a, ipBySlot[s])] = index.GetById(id)!;

    foreach (var q in hits) if (routes.Resolve(q.AccountId, q.Item2) is null) throw new InvalidOperationException("hit resolved to null");
    foreach (var q in missArr) if (routes.Resolve(q.AccountId, q.Item2) is not null) throw new InvalidOperationException("miss resolved to a VM");

    Console.WriteLine($"# date: {DateTime.UtcNow:yyyy-MM-ddTHH:mm:ssZ}  nproc: {Environment.ProcessorCount}  load: {File.ReadAllText("/proc/loadavg").Split(' ').Take(3).Aggregate((x, y) => x + " " + y)}");
    Console.WriteLine($"# {slotCount} slots, {vmCount} VMs, {accountCount} accounts ({perAccount} VMs each); insert {insertMs:F0} ms (one transaction), PlatformIndex load {loadMs:F0} ms, ReloadAsync {reloadMs:F0} ms");
    Console.WriteLine($"# heap after load: {GC.GetTotalMemory(true) / 1024 / 1024} MiB");

    Run("Resolve hit", hits, q => routes.Resolve(q.Item1, q.Item2), 1);
    Run("Resolve miss", missArr, q => routes.Resolve(q.Item1, q.Item2), 1);
    Run("baseline Dictionary hit", hits, q => baseline.GetValueOrDefault(q), 1);
    Run("baseline Dictionary miss", missArr, q => baseline.GetValueOrDefault(q), 1);
    var threads = Environment.ProcessorCount;
    Run("Resolve hit", hits, q => routes.Resolve(q.Item1, q.Item2), threads);
    Run("Resolve miss", missArr, q => routes.Resolve(q.Item1, q.Item2), threads);
    Run("baseline Dictionary hit", hits, q => baseline.GetValueOrDefault(q), threads);
    Run("baseline Dictionary miss", missArr, q => baseline.GetValueOrDefault(q), threads);
}
finally
{
    Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
    dir.Delete(recursive: true);
}


void Run(string label, (string, IPAddress)[] queries, Func<(string, IPAddress), VmRecord?> lookup, int threads)
{
    // Warm-up (JIT tiering), then timed passes over the query array until SECONDS_PER_CASE elapse.
    for (var w = 0; w < 5; w++) foreach (var q in queries) lookup(q);
    var mask = queries.Length - 1;
    var counts = new long[threads];
    var sinks = new int[threads];
    var deadline = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
    var total = Stopwatch.StartNew();
    var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
    {
        long n = 0; var found = 0; var i = t * 7777;
        while (Stopwatch.GetTimestamp() < deadline)
            for (var k = 0; k < 4096; k++, n++) if (lookup(queries[i++ & mask]) is not null) found++;
        counts[t] = n; sinks[t] = found;
    })).ToArray();
    foreach (var w in workers) w.Start();
    foreach (var w in workers) w.Join();
    var elapsed = total.Elapsed.TotalSeconds;
    var ops = counts.Sum();
    Console.WriteLine($"lookup case=\"{label}\" threads={threads} ops={ops} ns_per_op={elapsed * 1e9 * threads / ops:F1} ops_per_s={ops / elapsed:F0} found={sinks.Sum()}");
}
