using Warren.Platform.Accounts;
using Warren.Platform.Commands;
using Warren.Platform.Sharing;
using Warren.Platform.Tests.Commands;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Accounts;

/// <summary>
/// An address stands for a person only once it was proven: an account whose address is not verified (one that
/// claimed it under the old AutoVerify default, say) does not activate shares made to it, reaches nothing through
/// them, and gets no browser login (which would announce the address to sites).
/// </summary>
public sealed class EmailVerificationTests : IDisposable
{
    private readonly CommandHarness _h = new(new FixedLoginLinks());
    private TestPlatform P => _h.P;
    public void Dispose() => _h.Dispose();

    private sealed class FixedLoginLinks : ILoginLinkIssuer
    {
        public Task<Uri> IssueLoginLinkAsync(Account account, CancellationToken ct) => Task.FromResult(new Uri("https://warren.localhost/__exe.dev/auth?secret=x"));
    }

    private async Task<(Account Owner, VmRecord Vm)> OwnerWithVmAsync()
    {
        var owner = await P.NewAccountAsync("owner@example.com");
        return (owner, await P.Vms.CreateAsync(owner.Id, new VmCreateRequest { Name = "web" }));
    }

    [Fact]
    public async Task AnUnverifiedClaim_ActivatesNoShare_ReachesNothing_UntilTheAddressIsProven()
    {
        var (owner, vm) = await OwnerWithVmAsync();
        await P.Shares.AddUserAsync(owner.Id, "web", "carol@example.com", ssh: true);
        var claim = await P.Accounts.CreateAsync("carol@example.com", TestPlatform.NewKey(), emailVerified: false);
        Assert.False(claim.EmailVerified);

        Assert.Equal(ShareStatus.Pending, (await P.Shares.GetAsync(owner.Id, "web")).Users.Single().Status);
        Assert.False(await P.Shares.CanAccessWebAsync(vm, claim.Id));
        Assert.False(await P.Shares.CanSshAsync(vm, claim.Id));
        Assert.Empty(await P.Shares.ListSharedWithAsync(claim.Id));
        Assert.Null(await P.Routes.ResolveByNameAsync(claim.Id, "web"));
        // A share made after the claim is pending too.
        var other = await P.Vms.CreateAsync(owner.Id, new VmCreateRequest { Name = "web2" });
        Assert.Equal(ShareStatus.Pending, (await P.Shares.AddUserAsync(owner.Id, "web2", "carol@example.com")).Status);

        // Proof for another address changes nothing; proof for this one activates both shares.
        Assert.False(await P.Accounts.MarkEmailVerifiedAsync(claim.Id, "someone-else@example.com"));
        Assert.True(await P.Accounts.MarkEmailVerifiedAsync(claim.Id, "carol@example.com"));
        Assert.True((await P.Accounts.GetAsync(claim.Id))!.EmailVerified);
        Assert.All((await P.Shares.GetAsync(owner.Id, "web")).Users, u => Assert.Equal(ShareStatus.Active, u.Status));
        Assert.True(await P.Shares.CanAccessWebAsync(vm, claim.Id));
        Assert.True(await P.Shares.CanSshAsync(vm, claim.Id));
        Assert.True(await P.Shares.CanAccessWebAsync(other, claim.Id));
        Assert.NotNull(await P.Routes.ResolveByNameAsync(claim.Id, "web"));
        Invariants.Check(P);
    }

    [Fact]
    public async Task Browser_IsRefusedToAnUnverifiedAccount()
    {
        var key = TestPlatform.NewKey();
        var claim = await P.Accounts.CreateAsync("carol@example.com", key, emailVerified: false);
        var row = (await P.Accounts.ListKeysAsync(claim.Id)).Single();
        var refused = await _h.RunAsync(claim, row, "browser", "--json");
        Assert.Equal(1, refused.Exit);
        Assert.Contains("not verified", refused.Stdout);
        Assert.DoesNotContain("secret=", refused.Stdout);

        await P.Accounts.MarkEmailVerifiedAsync(claim.Id, "carol@example.com");
        var ok = await _h.RunAsync(claim, row, "browser", "--json");
        Assert.True(ok.Exit == 0, ok.Stdout + ok.Stderr);
    }

    [Theory]
    [InlineData("127.0.0.1", "127.0.1.1", true)]
    [InlineData("127.0.0.1", "10.0.0.5", false)]
    [InlineData("0.0.0.0", "127.0.1.1", false)]
    [InlineData("::1", "127.0.1.1", true)]
    public void AutoVerify_IsRefusedUnlessEveryListenerIsOnLoopback(string control, string slot, bool allowed)
    {
        var o = new PlatformOptions
        {
            ControlLocalIp = control,
            Slots = [new AddressSlotOptions { Name = "s001", PublicIp = "203.0.113.1", LocalIp = slot }],
            Signup = new SignupOptions { AutoVerify = true },
        };
        Assert.Equal(allowed, !o.Validate().Any(p => p.Contains("AutoVerify")));
        o.Signup.AutoVerify = false;
        Assert.DoesNotContain(o.Validate(), p => p.Contains("AutoVerify"));
    }

    [Fact]
    public void AutoVerify_IsOffByDefault() => Assert.False(new PlatformOptions().Signup.AutoVerify);
}
