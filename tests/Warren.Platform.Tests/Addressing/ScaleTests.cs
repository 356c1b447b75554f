using System.Net;
using Dapper;
using Microsoft.Extensions.Configuration;
using Warren.Platform.Addressing;
using Warren.Platform.Tests.TestSupport;
using Xunit;

namespace Warren.Platform.Tests.Addressing;

public sealed class ScaleTests
{
    /// <summary>Issue 5's benchmark shape: 1,016 slots and 100,000 VMs.</summary>
    private const int SlotCount = 1016;
    private const int VmCount = 100_000;
    private const int AccountCount = 500;

    [Fact]
    public async Task RouteTable_With1016Slots_And100kVms_AnswersEveryRoute()
    {
        using var p = new TestPlatform(slotCount: SlotCount);
        // Bulk-load through the allocator's own rules would take minutes; rows are written directly in one
        // transaction, shaped as the allocator makes them (one route per account per slot).
        await p.Db.WriteAsync(async u =>
        {
            for (int a = 0; a < AccountCount; a++)
                await u.ExecuteAsync("INSERT INTO accounts (id, email, created_at) VALUES (@id, @e, 0)", new { id = $"acct_{a}", e = $"u{a}@example.com" });
            using var vm = u.Connection.CreateCommand();
            vm.Transaction = u.Transaction;
            vm.CommandText = """
                INSERT INTO vms (id, name, account_id, image, state, slot_name, cpus, memory_bytes, disk_bytes, command_mode, created_at, updated_at)
                VALUES ($id, $name, $acct, 'img', 'running', $slot, 2, 1, 1, 'auto', 0, 0);
                INSERT INTO ssh_reach (account_id, slot_name, vm_id) VALUES ($acct, $slot, $id);
                """;
            var id = vm.Parameters.Add("$id", Microsoft.Data.Sqlite.SqliteType.Text);
            var name = vm.Parameters.Add("$name", Microsoft.Data.Sqlite.SqliteType.Text);
            var acct = vm.Parameters.Add("$acct", Microsoft.Data.Sqlite.SqliteType.Text);
            var slot = vm.Parameters.Add("$slot", Microsoft.Data.Sqlite.SqliteType.Text);
            for (int i = 0; i < VmCount; i++)
            {
                int a = i % AccountCount, k = i / AccountCount; // account a's k-th VM
                id.Value = $"vm_{i}"; name.Value = $"vm{i}"; acct.Value = $"acct_{a}";
                slot.Value = p.Slots.Slots[(p.Allocator.StartIndex($"acct_{a}") + k) % SlotCount].Name;
                await vm.ExecuteNonQueryAsync();
            }
        });
        var index = new PlatformIndex(p.Db);
        var routes = new SshRouteTable(index, p.Slots, p.Db, p.Options);
        var directory = new VmDirectory(index, p.Slots);
        Assert.Equal(VmCount, index.VmCount);
        for (int i = 0; i < VmCount; i += 997)
        {
            int a = i % AccountCount, k = i / AccountCount;
            var s = p.Slots.Slots[(p.Allocator.StartIndex($"acct_{a}") + k) % SlotCount];
            Assert.Equal($"vm_{i}", routes.Resolve($"acct_{a}", s.LocalIp)?.Id);
            Assert.True(directory.TryGetSlotForName($"vm{i}", out var d));
            Assert.Equal(s.Name, d.Name);
        }
        Assert.Null(routes.Resolve("acct_nobody", p.Slots.Slots[0].LocalIp));
        Assert.Null(routes.Resolve("acct_0", IPAddress.Parse("192.0.2.1")));
    }

    [Fact]
    public void Options_BindFromConfiguration()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Warren:ControlHost"] = "ctl.example",
            ["Warren:VmDomain"] = "vms.example",
            ["Warren:Slots:0:Name"] = "s001",
            ["Warren:Slots:0:PublicIp"] = "203.0.113.1",
            ["Warren:Slots:0:LocalIp"] = "10.0.0.1",
            ["Warren:Resources:DefaultCpus"] = "1",
            ["Warren:Signup:AutoVerify"] = "false",
        }).Build();
        var o = new PlatformOptions();
        config.GetSection(PlatformOptions.SectionName).Bind(o);
        Assert.Equal("ctl.example", o.ControlHost);
        var slot = Assert.Single(o.EffectiveSlots);
        Assert.Equal("203.0.113.1", slot.PublicIp);
        Assert.Equal(1, o.Resources.DefaultCpus);
        Assert.False(o.Signup.AutoVerify);
        Assert.Empty(o.Validate());
    }
}
