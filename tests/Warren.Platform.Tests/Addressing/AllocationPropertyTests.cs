using CsCheck;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Addressing;

/// <summary>
/// THE property (issue 5): over random sequences of new, rm, cp, rename, SSH share add/remove and sign-up for
/// many accounts (and SSH rights toggled on existing shares), no account ever has two directly reachable VMs on one slot, a new VM is direct whenever its
/// owner had a free slot, rename keeps the slot, and the route table and the DNS view always agree with the records.
/// </summary>
public sealed class AllocationPropertyTests
{
    /// <summary>Few slots so that collisions, fallbacks and promotions happen often.</summary>
    private const int Slots = 3;
    private const int Accounts = 5;
    /// <summary>Account 4 signs up late, so shares to it start pending.</summary>
    private const int LateAccount = 4;
    private const int MaxOps = 40;
    private const int Iterations = 25;

    public enum OpKind { New, Remove, Copy, Rename, ShareSsh, Unshare, ToggleSsh, SignUp }

    public sealed record Op(OpKind Kind, int Account, int Target, int Other);

    private static readonly Gen<Op> GenOp = Gen.Select(
        Gen.Frequency((6, Gen.Const(OpKind.New)), (3, Gen.Const(OpKind.Remove)), (2, Gen.Const(OpKind.Copy)),
                      (2, Gen.Const(OpKind.Rename)), (3, Gen.Const(OpKind.ShareSsh)), (1, Gen.Const(OpKind.Unshare)), (1, Gen.Const(OpKind.ToggleSsh)),
                      (1, Gen.Const(OpKind.SignUp))),
        Gen.Int[0, Accounts - 1], Gen.Int[0, 1000], Gen.Int[0, Accounts - 1],
        (k, a, t, o) => new Op(k, a, t, o));

    [Fact]
    public void AllocationInvariant_HoldsForRandomOperationSequences()
    {
        GenOp.Array[1, MaxOps].Sample(ops => Run(ops).GetAwaiter().GetResult(), iter: Iterations, threads: 1,
            print: ops => string.Join(", ", ops.Select(o => $"{o.Kind}({o.Account},{o.Target},{o.Other})")));
    }

    private static async Task Run(Op[] ops)
    {
        using var p = new TestPlatform(slotCount: Slots);
        var ids = new string?[Accounts];
        for (int i = 0; i < Accounts; i++)
            if (i != LateAccount) ids[i] = (await p.NewAccountAsync(Email(i))).Id;
        int counter = 0;
        foreach (var op in ops)
        {
            var acct = ids[op.Account];
            try
            {
                switch (op.Kind)
                {
                    case OpKind.New when acct is not null:
                    {
                        int before = p.Index.SnapshotRoutes().Count(r => r.AccountId == acct);
                        var vm = await p.Vms.CreateAsync(acct, new VmCreateRequest { Name = $"v{counter++}" });
                        Assert.Equal(before < Slots, p.Index.HasRoute(acct, vm.Id));
                        break;
                    }
                    case OpKind.Copy when acct is not null && await Pick(p, acct, op.Target) is { } src:
                    {
                        int before = p.Index.SnapshotRoutes().Count(r => r.AccountId == acct);
                        var vm = await p.Vms.CopyAsync(acct, new VmCopyRequest { SourceName = src.Name, NewName = $"v{counter++}" });
                        Assert.Equal(before < Slots, p.Index.HasRoute(acct, vm.Id));
                        break;
                    }
                    case OpKind.Remove when acct is not null && await Pick(p, acct, op.Target) is { } vm:
                        await p.Vms.RemoveAsync(acct, vm.Name);
                        break;
                    case OpKind.Rename when acct is not null && await Pick(p, acct, op.Target) is { } vm:
                    {
                        var renamed = await p.Vms.RenameAsync(acct, vm.Name, $"v{counter++}");
                        Assert.Equal(vm.SlotName, renamed.SlotName);
                        break;
                    }
                    case OpKind.ShareSsh when acct is not null && op.Other != op.Account && await Pick(p, acct, op.Target) is { } vm:
                        await p.Shares.AddUserAsync(acct, vm.Name, Email(op.Other), ssh: true);
                        break;
                    case OpKind.Unshare when acct is not null && op.Other != op.Account && await Pick(p, acct, op.Target) is { } vm:
                        await p.Shares.RemoveUserAsync(acct, vm.Name, Email(op.Other));
                        break;
                    case OpKind.ToggleSsh when acct is not null && op.Other != op.Account && await Pick(p, acct, op.Target) is { } vm:
                        await p.Shares.SetUserSshAsync(acct, vm.Name, Email(op.Other), ssh: op.Target % 2 == 0);
                        break;
                    case OpKind.SignUp when ids[LateAccount] is null:
                        ids[LateAccount] = (await p.NewAccountAsync(Email(LateAccount))).Id;
                        break;
                }
            }
            catch (PlatformException e) when (e.Code is PlatformErrorCodes.ShareExists or PlatformErrorCodes.ShareNotFound)
            {
                // Repeating a share or removing a missing one is a user error, not a bug.
            }
            Invariants.Check(p);
        }
    }

    private static async Task<VmRecord?> Pick(TestPlatform p, string accountId, int target)
    {
        var vms = await p.Vms.ListAsync(accountId);
        return vms.Count == 0 ? null : vms[target % vms.Count];
    }

    private static string Email(int i) => $"user{i}@example.com";
}
