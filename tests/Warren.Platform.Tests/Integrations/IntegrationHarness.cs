using Warren.Platform.Accounts;
using Warren.Platform.Commands;
using Warren.Platform.Integrations;
using Warren.Platform.Storage;
using Warren.Platform.Tests.Commands;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Tokens;

namespace Warren.Platform.Tests.Integrations;

/// <summary>The command dispatcher with integrations, over a <see cref="TestPlatform"/> (real SQLite, fake runtime).</summary>
public sealed class IntegrationHarness : IDisposable
{
    public IntegrationHarness()
    {
        P = new TestPlatform();
        // A second handle on the same file that also runs the token and integration schemas.
        Db = new WarrenDatabase(P.Options, [Exe1Store.Migration, IntegrationService.Migration, IntegrationService.GitHubMigration]);
        var exe1 = new Exe1Store(Db, P.Time);
        Authenticator = new TokenAuthenticator(P.Accounts, exe1, P.Time);
        ApiKeys = new ApiKeyService(P.Accounts, exe1, Authenticator, P.Options, P.Time);
        Box = IntegrationSecretBox.Open(P.Options, _ => null);
        Integrations = new IntegrationService(Db, P.Vms, P.Accounts, Box, P.Options, P.Time, ApiKeys);
        Services = new CommandServices(P.Options, P.Accounts, P.Vms, P.Shares, P.Stats, P.Index, P.Routes, ApiKeys, P.Time,
            audit: P.Audit, integrations: Integrations);
        Dispatcher = new CommandDispatcher(Services);
    }

    public TestPlatform P { get; }
    public WarrenDatabase Db { get; }
    public TokenAuthenticator Authenticator { get; }
    public ApiKeyService ApiKeys { get; }
    public IntegrationSecretBox Box { get; }
    public IntegrationService Integrations { get; }
    public CommandServices Services { get; }
    public CommandDispatcher Dispatcher { get; }

    public async Task<(Account Account, AccountKey Key)> NewUserAsync(string email)
    {
        var account = await P.Accounts.CreateAsync(email, TestPlatform.NewKey(), emailVerified: true);
        return (account, (await P.Accounts.ListKeysAsync(account.Id)).Single());
    }

    public async Task<CommandHarness.Result> RunAsync((Account Account, AccountKey Key) user, params string[] argv)
    {
        var stdout = new StringWriter { NewLine = "\n" };
        var stderr = new StringWriter { NewLine = "\n" };
        var ctx = new CommandContext { Account = user.Account, CurrentKey = user.Key, Stdout = stdout, Stderr = stderr };
        int exit = await Dispatcher.RunAsync(ctx, argv);
        return new CommandHarness.Result(exit, stdout.ToString(), stderr.ToString());
    }

    public void Dispose()
    {
        Db.Dispose();
        P.Dispose();
    }
}
