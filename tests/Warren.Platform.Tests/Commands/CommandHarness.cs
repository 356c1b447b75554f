using System.Text.Json;
using Warren.Platform.Accounts;
using Warren.Platform.Commands;
using Warren.Platform.Interactive;
using Warren.Platform.Storage;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Tokens;
using Warren.Ssh.Keys;

namespace Warren.Platform.Tests.Commands;

/// <summary>The command dispatcher over a <see cref="TestPlatform"/> (real SQLite, fake runtime).</summary>
public sealed class CommandHarness : IDisposable
{
    public CommandHarness(ILoginLinkIssuer? loginLinks = null)
    {
        P = new TestPlatform();
        // A second handle on the same file that also runs the token schema (TestPlatform registers only the core).
        TokenDb = new WarrenDatabase(P.Options, [Exe1Store.Migration]);
        Exe1 = new Exe1Store(TokenDb, P.Time);
        Authenticator = new TokenAuthenticator(P.Accounts, Exe1, P.Time);
        ApiKeys = new ApiKeyService(P.Accounts, Exe1, Authenticator, P.Options, P.Time);
        Email = new RecordingEmailSender();
        Services = new CommandServices(P.Options, P.Accounts, P.Vms, P.Shares, P.Stats, P.Index, P.Routes, ApiKeys, P.Time, loginLinks, Email, P.Audit);
        Dispatcher = new CommandDispatcher(Services);
    }

    public TestPlatform P { get; }
    public WarrenDatabase TokenDb { get; }
    public Exe1Store Exe1 { get; }
    public TokenAuthenticator Authenticator { get; }
    public ApiKeyService ApiKeys { get; }
    public RecordingEmailSender Email { get; }
    public CommandServices Services { get; }
    public CommandDispatcher Dispatcher { get; }

    /// <summary>An account with one login key; returns the account and that key's row.</summary>
    public async Task<(Account Account, AccountKey Key)> NewUserAsync(string email)
    {
        var key = TestPlatform.NewKey();
        var account = await P.Accounts.CreateAsync(email, key, emailVerified: true);
        var row = (await P.Accounts.ListKeysAsync(account.Id)).Single();
        return (account, row);
    }

    public sealed record Result(int Exit, string Stdout, string Stderr)
    {
        public JsonElement Json
        {
            get
            {
                using var doc = JsonDocument.Parse(Stdout);
                return doc.RootElement.Clone();
            }
        }
    }

    public async Task<Result> RunAsync(Account? account, AccountKey? key, params string[] argv)
        => await RunWithAsync(new CommandContext { Account = account, CurrentKey = key }, "", argv);

    public async Task<Result> RunWithAsync(CommandContext template, string stdin, params string[] argv)
    {
        var stdout = new StringWriter { NewLine = "\n" };
        var stderr = new StringWriter { NewLine = "\n" };
        var ctx = new CommandContext
        {
            Account = template.Account,
            CurrentKey = template.CurrentKey,
            Stdin = new StringReader(stdin),
            Stdout = stdout,
            Stderr = stderr,
            ForceJson = template.ForceJson,
            Interactive = template.Interactive,
            AllowedCommands = template.AllowedCommands,
            TokenVm = template.TokenVm,
        };
        int exit = await Dispatcher.RunAsync(ctx, argv);
        return new Result(exit, stdout.ToString(), stderr.ToString());
    }

    public void Dispose()
    {
        TokenDb.Dispose();
        P.Dispose();
    }
}

public sealed class RecordingEmailSender : IEmailSender
{
    public List<(string To, string Subject, string Body)> Sent { get; } = new();

    public Task SendAsync(string to, string subject, string textBody, CancellationToken ct)
    {
        lock (Sent) Sent.Add((to, subject, textBody));
        return Task.CompletedTask;
    }
}

public static class JsonAssert
{
    /// <summary>The object's property names, in order.</summary>
    public static string[] Keys(JsonElement e) => e.EnumerateObject().Select(p => p.Name).ToArray();

    public static string Str(JsonElement e, string name) => e.GetProperty(name).GetString()!;

    public static string[] Strings(JsonElement e, string name) => e.GetProperty(name).EnumerateArray().Select(x => x.GetString()!).ToArray();
}
