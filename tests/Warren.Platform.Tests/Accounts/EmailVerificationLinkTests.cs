using CsCheck;
using Warren.Platform.Accounts;
using Warren.Platform.Storage;
using Warren.Platform.Tests.TestSupport;
using Xunit;

namespace Warren.Platform.Tests.Accounts;

public sealed class EmailVerificationLinkTests
{
    private static readonly PlatformOptions Options = new() { ControlHost = "warren.localhost", HttpsPort = 8443 };

    [Theory]
    [InlineData("a@example.com", true)]
    [InlineData("a@mail.example.net", true)]
    [InlineData("a@example.org", true)]
    [InlineData("a@shop.example", true)]
    [InlineData("a@host.test", true)]
    [InlineData("a@x.invalid", true)]
    [InlineData("a@dev.localhost", true)]
    [InlineData("a@example.co", false)]
    [InlineData("a@myexample.com", false)]
    [InlineData("a@test.org", false)]
    [InlineData("a@mail.internal", false)]
    public void ReservedDomains_AreRfc2606s(string email, bool reserved)
        => Assert.Equal(reserved, ReservedEmailDomains.IsReserved(email));

    /// <summary>A real SQLite database in a fresh directory, removed afterwards.</summary>
    private sealed class Store : IDisposable
    {
        private readonly string _directory = Path.Combine(Path.GetTempPath(), "warren-verification-tests", Guid.NewGuid().ToString("N"));
        public WarrenDatabase Db { get; private set; }
        public Store() => Db = new WarrenDatabase(Path.Combine(_directory, "warren.db"));

        /// <summary>Closes and opens the database file again, as a daemon restart does.</summary>
        public void Reopen()
        {
            Db.Dispose();
            Db = new WarrenDatabase(Path.Combine(_directory, "warren.db"));
        }

        public void Dispose()
        {
            Db.Dispose();
            try { Directory.Delete(_directory, recursive: true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Find_UsesNothingUp_Confirm_WorksOnce()
    {
        using var store = new Store();
        var time = new ManualTimeProvider(DateTimeOffset.UnixEpoch.AddYears(56));
        var v = new EmailVerifications(Options, time, store.Db);
        var (token, pending) = (await v.CreateAsync("a@mail.internal", VerificationPurpose.SshSignup))!.Value;
        Assert.StartsWith("https://warren.localhost:8443/verify-email?token=", v.Link(token));
        Assert.Same(pending, await v.FindAsync(token));
        Assert.Same(pending, await v.FindAsync(token));
        Assert.False(pending.Confirmed.IsCompleted);
        Assert.Same(pending, await v.ConfirmAsync(token));
        Assert.True(pending.Confirmed.IsCompletedSuccessfully);
        Assert.Null(await v.ConfirmAsync(token));
        Assert.Null(await v.FindAsync(token));
    }

    [Fact]
    public async Task AnExpiredLink_IsNotValid()
    {
        using var store = new Store();
        var time = new ManualTimeProvider(DateTimeOffset.UnixEpoch.AddYears(56));
        var v = new EmailVerifications(Options, time, store.Db);
        var (token, _) = (await v.CreateAsync("a@mail.internal", VerificationPurpose.WebSignup, "/login"))!.Value;
        time.Advance(Options.Signup.VerificationTimeout);
        Assert.Null(await v.FindAsync(token));
        Assert.Null(await v.ConfirmAsync(token));
    }

    [Fact]
    public async Task ALink_SurvivesARestart_WorksOnce_AndTheTableHoldsNoToken()
    {
        using var store = new Store();
        var time = new ManualTimeProvider(DateTimeOffset.UnixEpoch.AddYears(56));
        var (web, _) = (await new EmailVerifications(Options, time, store.Db).CreateAsync("w@mail.internal", VerificationPurpose.WebSignup, "/next"))!.Value;
        var (ssh, _) = (await new EmailVerifications(Options, time, store.Db).CreateAsync("s@mail.internal", VerificationPurpose.SshSignup))!.Value;
        store.Reopen();
        var after = new EmailVerifications(Options, time, store.Db);
        var found = await after.FindAsync(web);
        Assert.Equal(("w@mail.internal", VerificationPurpose.WebSignup, "/next"), (found!.Email, found.Purpose, found.Redirect));
        Assert.NotNull(await after.ConfirmAsync(web));
        Assert.Null(await after.ConfirmAsync(web));
        // The SSH dialogue that mailed this one died with the old process: confirming says so and completes nothing.
        Assert.True((await after.ConfirmAsync(ssh))!.WaiterGone);
        await new EmailVerifications(Options, time, store.Db).CreateAsync("x@mail.internal", VerificationPurpose.WebSignup);
        var stored = await store.Db.ReadAsync(c => Dapper.SqlMapper.QueryAsync<string>(c, "SELECT token_hash FROM email_verifications"));
        Assert.All(stored, h => Assert.Matches("^[0-9A-F]{64}$", h));
    }

    [Fact]
    public async Task OneAddress_HoldsAtMostFiveLinks_TheOldestGoFirst_AndExpiredRowsArePurged()
    {
        using var store = new Store();
        var time = new ManualTimeProvider(DateTimeOffset.UnixEpoch.AddYears(56));
        var v = new EmailVerifications(Options, time, store.Db);
        var tokens = new List<string>();
        for (int i = 0; i < EmailVerifications.MaxPendingPerEmail + 2; i++)
        {
            tokens.Add((await v.CreateAsync("many@mail.internal", VerificationPurpose.WebSignup))!.Value.Token);
            time.Advance(TimeSpan.FromSeconds(1));
        }
        Assert.Null(await v.FindAsync(tokens[0]));
        Assert.Null(await v.FindAsync(tokens[1]));
        Assert.NotNull(await v.FindAsync(tokens[^1]));
        await v.CreateAsync("other@mail.internal", VerificationPurpose.WebSignup);
        time.Advance(Options.Signup.VerificationTimeout);
        await v.CreateAsync("late@mail.internal", VerificationPurpose.WebSignup);
        Assert.Equal(1L, await store.Db.ReadAsync(c => Dapper.SqlMapper.ExecuteScalarAsync<long>(c, "SELECT COUNT(*) FROM email_verifications")));
    }

    [Fact]
    public async Task ArbitraryTokens_NeverMatch_NorThrow()
    {
        using var store = new Store();
        var v = new EmailVerifications(Options, TimeProvider.System, store.Db);
        await v.CreateAsync("a@mail.internal", VerificationPurpose.SshSignup);
        await Gen.String.SampleAsync(async t =>
        {
            Assert.Null(await v.FindAsync(t));
            Assert.Null(await v.ConfirmAsync(t));
        }, iter: 500);
        Assert.Null(await v.FindAsync(null));
    }
}
