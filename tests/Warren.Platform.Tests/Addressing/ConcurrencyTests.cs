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
