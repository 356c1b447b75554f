using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Addressing;

public sealed class ConcurrencyTests
{
    private const int Slots = 4;
    private const int Accounts = 4;
    private const int CreatesPerAccount = 6;

    [Fact]
    public async Task ParallelCreates_NeverViolateTheInvariant()
    {
        using var p = new TestPlatform(slotCount: Slots);
        var accounts = new List<string>();
        for (int i = 0; i < Accounts; i++) accounts.Add((await p.NewAccountAsync($"u{i}@example.com")).Id);

        var tasks = accounts.SelectMany((a, i) => Enumerable.Range(0, CreatesPerAccount)
            .Select(j => Task.Run(() => p.Vms.CreateAsync(a, new VmCreateRequest { Name = $"a{i}-vm{j}" })))).ToList();
        // Two creates racing for one name: exactly one wins.
        tasks.Add(Task.Run(() => p.Vms.CreateAsync(accounts[0], new VmCreateRequest { Name = "contested" })));
        tasks.Add(Task.Run(() => p.Vms.CreateAsync(accounts[1], new VmCreateRequest { Name = "contested" })));
        var results = await Task.WhenAll(tasks.Select(async t => { try { return await t; } catch (PlatformException) { return null; } }));

        Assert.Equal(Accounts * CreatesPerAccount + 1, results.Count(r => r is not null));
        foreach (var a in accounts)
        {
            int owned = (await p.Vms.ListAsync(a)).Count;
            Assert.Equal(Math.Min(owned, Slots), p.Index.SnapshotRoutes().Count(r => r.AccountId == a));
        }
        Invariants.Check(p);

        // Parallel removes and creates interleaved.
        var mixed = accounts.SelectMany((a, i) => new[]
        {
            Task.Run(() => p.Vms.RemoveAsync(a, $"a{i}-vm0")),
            Task.Run(() => p.Vms.CreateAsync(a, new VmCreateRequest { Name = $"a{i}-late" })),
        });
        await Task.WhenAll(mixed);
        Invariants.Check(p);
    }

    /// <summary>Refreshes that touch a VM (incremental and full) while it is being looked up.</summary>
    private const int Refreshes = 150;

    [Fact]
    public async Task Lookups_DuringRefreshes_NeverMissARouteThatStays()
    {
        // Reads take no lock: a refresh writes new values over old before removing keys, so a route,
        // id or name present before and after a refresh must never read as missing in between.
        using var p = new TestPlatform(slotCount: Slots);
        var a = await p.NewAccountAsync("reader@example.com");
        var steady = await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "steady" });
        await p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "mover" });
        Assert.True(p.Slots.TryGetByName(steady.SlotName!, out var slot));
        // A fresh address instance, as a socket's LocalEndPoint gives, and its IPv4-mapped IPv6 form.
        var local = new System.Net.IPAddress(slot.LocalIp.GetAddressBytes());
        var mapped = local.MapToIPv6();

        using var done = new CancellationTokenSource();
        int lookups = 0;
        var readers = Enumerable.Range(0, 2).Select(_ => Task.Run(() =>
        {
            while (!done.IsCancellationRequested)
            {
                Assert.Equal(steady.Id, p.Routes.Resolve(a.Id, local)?.Id);
                Assert.Equal(steady.Id, p.Routes.Resolve(a.Id, mapped)?.Id);
                Assert.Equal(steady.Id, p.Index.GetByName("steady")?.Id);
                Assert.Equal(steady.Id, p.Index.GetById(steady.Id)?.Id);
                Assert.True(p.Index.HasRoute(a.Id, steady.Id));
                Interlocked.Increment(ref lookups);
            }
        })).ToList();
        try
        {
            // The refreshes must meet running readers: on a loaded machine the readers may not have started yet.
            var started = DateTime.UtcNow;
            while (Volatile.Read(ref lookups) == 0 && !readers.Any(r => r.IsCompleted) && DateTime.UtcNow - started < TimeSpan.FromSeconds(30))
                await Task.Delay(1);
            for (int i = 0; i < Refreshes; i++)
            {
                // New record for the same route, a rename of another VM, and now and then a full reload.
                await p.Vms.SetCommentAsync(a.Id, "steady", $"refresh {i}");
                await p.Vms.RenameAsync(a.Id, i % 2 == 0 ? "mover" : "moved", i % 2 == 0 ? "moved" : "mover");
                if (i % 10 == 0) await p.Index.ReloadAsync(p.Db);
                if (readers.Any(r => r.IsCompleted)) break; // a failed assertion ends its reader: stop early
            }
        }
        finally
        {
            done.Cancel();
            await Task.WhenAll(readers);
        }
        Assert.True(lookups > 0);
        Assert.Equal($"refresh {Refreshes - 1}", p.Index.GetById(steady.Id)!.Comment);
        Invariants.Check(p);
    }

    [Fact]
    public void Accounts_SpreadOverSlots()
    {
        using var p = new TestPlatform(slotCount: 16);
        var starts = Enumerable.Range(0, 200).Select(i => p.Allocator.StartIndex($"acct_{i}")).ToList();
        // Not everyone's first VM on s001: many distinct start slots, and stable for the same id.
        Assert.True(starts.Distinct().Count() > 8);
        Assert.Equal(starts[7], p.Allocator.StartIndex("acct_7"));
    }
}
