using System.Text;
using Warren.Platform.Accounts;
using Warren.Platform.Commands;
using Warren.Platform.Interactive;
using Warren.Platform.Sharing;
using Warren.Platform.Tests.Commands;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Interactive;

public sealed class CommandCompleterTests
{
    private static readonly Account Alice = new("acct_a", "alice@example.com", DateTimeOffset.UnixEpoch);
    private readonly CommandCompleter _c = new(id => id == Alice.Id ? ["web", "worker", "db"] : []);

    private IReadOnlyList<string>? Complete(string line) => _c.Complete(Alice, line, line.Length)?.Candidates;

    [Fact]
    public void Commands() => Assert.Equal(["rename", "resize", "restart", "rm"], Complete("r"));

    [Fact]
    public void HiddenAndUnknownGiveNothing()
    {
        Assert.Null(Complete("exe0"));
        Assert.Null(Complete("zzz "));
    }

    [Fact]
    public void Subcommands() => Assert.Equal(["set-private", "set-public"], Complete("share set-p"));

    [Fact]
    public void VmNames_WhereACommandTakesAVm()
    {
        Assert.Equal(["web", "worker"], Complete("restart w"));
        Assert.Equal(["db", "web", "worker"], Complete("share show "));
        Assert.Equal(["web", "worker"], Complete("rm db w"));        // rm takes many VMs
        Assert.Null(Complete("rename web w"));                        // the new name is free text
        Assert.Equal(["db"], Complete("ssh-key generate-api-key --vm d"));
        var eq = _c.Complete(Alice, "ssh-key generate-api-key --vm=w", 31);
        Assert.Equal(30, eq!.Start);
        Assert.Equal(["web", "worker"], eq.Candidates);
    }

    [Fact]
    public void Flags()
    {
        Assert.Equal(["--name="], Complete("new --na"));
        Assert.Equal(["--copy-tags", "--cpu="], Complete("cp web --c"));
        Assert.Equal(["-l"], Complete("ls -l"));
        Assert.Equal(["--json"], Complete("whoami --j"));
    }

    [Fact]
    public void HelpCompletesCommands() => Assert.Equal(["share", "ssh", "ssh-key", "stat"], Complete("help s"));

    [Fact]
    public void MidLineCursor()
    {
        var r = _c.Complete(Alice, "restart w --json", 9);
        Assert.Equal(8, r!.Start);
        Assert.Equal(["web", "worker"], r.Candidates);
    }

    [Fact]
    public void NoAccountNoVms() => Assert.Null(new CommandCompleter(_ => ["web"]).Complete(null, "rm w", 4));
}

public sealed class InteractiveShellTests : IDisposable
{
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    private async Task<string> RunShellAsync(Account account, AccountKey key, string input)
    {
        var shell = new InteractiveShell(_h.Dispatcher, new CommandCompleter(_h.P.Index));
        var output = new MemoryStream();
        int exit = await shell.RunAsync(new CommandContext { Account = account, CurrentKey = key }, new MemoryStream(Encoding.UTF8.GetBytes(input)), output);
        Assert.Equal(0, exit);
        return Encoding.UTF8.GetString(output.ToArray());
    }

    [Fact]
    public async Task RunsCommands_IndentsJson_WritesCrLf_AndExits()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        string output = await RunShellAsync(a, k, "new --name=web\rls --json\rexit\rwhoami\r");
        Assert.Contains("Welcome to Warren on warren.localhost", output);
        Assert.Contains("Ready in ", output);
        Assert.Contains("{\r\n  \"vms\": [\r\n    {\r\n      \"vm_name\": \"web\",", output);
        Assert.DoesNotContain("Email Address", output); // after exit nothing runs
        Assert.DoesNotContain("\n", output.Replace("\r\n", ""));
    }

    [Fact]
    public async Task TabCompletesVmNames()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=website");
        string output = await RunShellAsync(a, k, "share show we\t--json\r");
        Assert.Contains("\"vm_name\": \"website\"", output);
    }

    [Fact]
    public async Task ErrorsAndQuoting()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        string output = await RunShellAsync(a, k, "lss\r'unterminated\rhelp\r\x04");
        Assert.Contains("\x1b[31munknown command \"lss\" (did you mean \"ls\"?)\x1b[0m\r\n", output);
        Assert.Contains("unterminated single quote", output);
        Assert.Contains("exit", output); // interactive help lists exit
    }

    [Fact]
    public async Task ALineEndingInABackslash_ContinuesAfterThePs2Prompt()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        string output = await RunShellAsync(a, k, "whoami \\\r--json\rexit\r");
        Assert.Contains("\r\n> ", output);
        Assert.Contains("\"email\": \"alice@example.com\"", output);
        Assert.DoesNotContain("unknown command", output);
    }

    [Fact]
    public async Task AnInterruptAtTheContinuationPrompt_DropsTheWholeCommand()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        string output = await RunShellAsync(a, k, "whoami \\\r\x03whoami --json\r");
        Assert.Equal(1, output.Split("\"email\": \"alice@example.com\"").Length - 1);
        Assert.DoesNotContain("Email Address", output);
    }

    [Theory]
    [InlineData("ls \\", true)]
    [InlineData("ls \\\\", false)]   // an escaped backslash is a literal one
    [InlineData("ls \\\\\\", true)]
    [InlineData("ls", false)]
    [InlineData("", false)]
    public void LineContinuation_IsAnOddRunOfTrailingBackslashes(string line, bool continues)
        => Assert.Equal(continues, InteractiveShell.EndsWithLineContinuation(line));

    [Fact]
    public async Task History_RecallsThePreviousCommand()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        string output = await RunShellAsync(a, k, "whoami --json\r\x1b[A\r");
        Assert.Equal(2, output.Split("\"email\": \"alice@example.com\"").Length - 1);
    }
}

public sealed class SignupDialogueTests : IDisposable
{
    private readonly TestPlatform _p = new();
    private readonly RecordingEmailSender _mail = new();
    public void Dispose() => _p.Dispose();

    /// <summary>Answers prompts from a script; when the script asks for "{code}", types the last mailed code.</summary>
    private sealed class ScriptedPrompter(IEnumerable<string?> answers, RecordingEmailSender mail) : IPrompter
    {
        private readonly Queue<string?> _answers = new(answers);
        public List<string> Output { get; } = new();

        public Task WriteLineAsync(string text, CancellationToken ct)
        {
            Output.Add(text);
            return Task.CompletedTask;
        }

        public Task<string?> ReadLineAsync(string prompt, CancellationToken ct)
        {
            Output.Add(prompt);
            if (_answers.Count == 0) return Task.FromResult<string?>(null);
            var a = _answers.Dequeue();
            if (a == "{code}")
            {
                var body = mail.Sent[^1].Body;
                a = System.Text.RegularExpressions.Regex.Match(body, @"\d{6}").Value;
            }
            return Task.FromResult(a);
        }
    }

    /// <summary>An owner's VM shared with carol@mail.internal before carol has an account.</summary>
    private async Task<VmRecord> ShareWithCarolAsync()
    {
        var owner = await _p.NewAccountAsync("owner@example.com");
        var vm = await _p.Vms.CreateAsync(owner.Id, new VmCreateRequest { Name = "web" });
        Assert.Equal(ShareStatus.Pending, (await _p.Shares.AddUserAsync(owner.Id, "web", "carol@mail.internal")).Status);
        return vm;
    }

    private async Task<ShareStatus> CarolsShareAsync(VmRecord vm)
        => (await _p.Shares.GetAsync(vm.AccountId, vm.Name)).Users.Single(u => u.Email == "carol@mail.internal").Status;

    [Fact]
    public async Task AClaimOfCarolsAddress_WithoutHerCode_MakesNoAccount_AndHerShareStaysPending()
    {
        _p.Options.Signup.AutoVerify = false; // the production default
        var vm = await ShareWithCarolAsync();
        var mallory = TestPlatform.NewKey();
        var prompter = new ScriptedPrompter(["carol@mail.internal", "000000", "123456", "999999", "424242", "314159"], _mail);
        var result = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail).RunAsync(prompter, mallory);
        Assert.Equal(SignupOutcome.Cancelled, result.Outcome);
        Assert.Equal("carol@mail.internal", Assert.Single(_mail.Sent).To); // the code went to carol, not to the claimant
        Assert.Null(await _p.Accounts.FindByKeyFingerprintAsync(mallory.Fingerprint));
        Assert.Null(await _p.Accounts.FindByEmailAsync("carol@mail.internal"));
        Assert.Equal(ShareStatus.Pending, await CarolsShareAsync(vm));
    }

    [Fact]
    public async Task CarolsOwnCode_VerifiesHerAddress_AndActivatesHerShare()
    {
        _p.Options.Signup.AutoVerify = false;
        var vm = await ShareWithCarolAsync();
        var result = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail)
            .RunAsync(new ScriptedPrompter(["carol@mail.internal", "{code}"], _mail), TestPlatform.NewKey());
        Assert.Equal(SignupOutcome.Created, result.Outcome);
        Assert.True((await _p.Accounts.GetAsync(result.Account!.Id))!.EmailVerified);
        Assert.Equal(ShareStatus.Active, await CarolsShareAsync(vm));
        Assert.True(await _p.Shares.CanAccessWebAsync(vm, result.Account.Id));
    }

    [Fact]
    public async Task AKeyAddedByCode_VerifiesAnAccountWhoseAddressWasNot()
    {
        var vm = await ShareWithCarolAsync();
        var legacy = await _p.Accounts.CreateAsync("carol@mail.internal", TestPlatform.NewKey(), emailVerified: false);
        Assert.Equal(ShareStatus.Pending, await CarolsShareAsync(vm));
        var result = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail)
            .RunAsync(new ScriptedPrompter(["carol@mail.internal", "{code}"], _mail), TestPlatform.NewKey());
        Assert.Equal(SignupOutcome.KeyAdded, result.Outcome);
        Assert.True((await _p.Accounts.GetAsync(legacy.Id))!.EmailVerified);
        Assert.Equal(ShareStatus.Active, await CarolsShareAsync(vm));
    }

    [Fact]
    public async Task AutoVerify_CreatesTheAccount()
    {
        var key = TestPlatform.NewKey();
        var prompter = new ScriptedPrompter(["not-an-email", " Alice@Example.com "], _mail);
        var result = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail).RunAsync(prompter, key);
        Assert.Equal(SignupOutcome.Created, result.Outcome);
        Assert.Equal("alice@example.com", result.Account!.Email);
        Assert.Equal(result.Account.Id, (await _p.Accounts.FindByKeyFingerprintAsync(key.Fingerprint))!.Id);
        Assert.True((await _p.Accounts.GetAsync(result.Account.Id))!.EmailVerified); // loopback dev install: taken as verified
        Assert.Contains(prompter.Output, l => l.StartsWith("Invalid email format"));
        Assert.Contains("Your account has been successfully created.", prompter.Output);
        Assert.Contains(prompter.Output, l => l.Contains(key.Fingerprint));
        Assert.Empty(_mail.Sent);
    }

    [Fact]
    public async Task EmptyInput_Cancels()
    {
        var prompter = new ScriptedPrompter([""], _mail);
        var result = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail).RunAsync(prompter, TestPlatform.NewKey());
        Assert.Equal(SignupOutcome.Cancelled, result.Outcome);
        Assert.Equal("Registration cancelled.", prompter.Output[^1]);
        Assert.Empty(await _p.Accounts.ListAccountsAsync());
    }

    [Fact]
    public async Task Verification_ByCode()
    {
        _p.Options.Signup.AutoVerify = false;
        var prompter = new ScriptedPrompter(["bob@mail.internal", "000000x", "{code}"], _mail);
        var result = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail).RunAsync(prompter, TestPlatform.NewKey());
        Assert.Equal(SignupOutcome.Created, result.Outcome);
        Assert.Equal("bob@mail.internal", Assert.Single(_mail.Sent).To);
        Assert.Contains("Verification email sent to: bob@mail.internal", prompter.Output);
        Assert.Contains("That code is not correct.", prompter.Output);
        Assert.Contains("✓ Email verified successfully!", prompter.Output);
    }

    [Fact]
    public async Task ExistingAccount_NeedsVerification_EvenWithAutoVerify()
    {
        var existing = await _p.NewAccountAsync("carol@mail.internal");
        var key = TestPlatform.NewKey();

        var noMail = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, null).RunAsync(new ScriptedPrompter(["carol@mail.internal"], _mail), key);
        Assert.Equal(SignupOutcome.Unavailable, noMail.Outcome);
        Assert.Null(await _p.Accounts.FindByKeyFingerprintAsync(key.Fingerprint));

        var wrong = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail).RunAsync(new ScriptedPrompter(["carol@mail.internal", "1", "2", "3", "4", "5"], _mail), key);
        Assert.Equal(SignupOutcome.Cancelled, wrong.Outcome);
        Assert.Null(await _p.Accounts.FindByKeyFingerprintAsync(key.Fingerprint));

        var prompter = new ScriptedPrompter(["carol@mail.internal", "{code}"], _mail);
        var ok = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail).RunAsync(prompter, key);
        Assert.Equal(SignupOutcome.KeyAdded, ok.Outcome);
        Assert.Equal(existing.Id, (await _p.Accounts.FindByKeyFingerprintAsync(key.Fingerprint))!.Id);
        Assert.Contains("Your new ssh key has been added to your existing account.", prompter.Output);
    }

    [Fact]
    public async Task PtyPrompter_Works_OverBytes()
    {
        var output = new MemoryStream();
        var prompter = new PtyPrompter(new MemoryStream(Encoding.UTF8.GetBytes("dave@example.com\r")), output);
        var result = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail).RunAsync(prompter, TestPlatform.NewKey());
        Assert.Equal(SignupOutcome.Created, result.Outcome);
        string text = Encoding.UTF8.GetString(output.ToArray());
        Assert.Contains("Please enter your email address: dave@example.com\r\n", text);
        Assert.Contains("Registration complete!\r\n", text);
    }

    [Fact]
    public async Task AnAddressAtAnExampleDomain_IsNotMailed_AndThePersonIsTold()
    {
        _p.Options.Signup.AutoVerify = false;
        var prompter = new ScriptedPrompter(["erin@example.com", ""], _mail);
        var result = await new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail).RunAsync(prompter, TestPlatform.NewKey());
        Assert.Equal(SignupOutcome.Cancelled, result.Outcome);
        Assert.Empty(_mail.Sent);
        Assert.Contains(prompter.Output, line => line.Contains("reserved for examples (RFC 2606)"));
    }

    /// <summary>Waits at every prompt until cancelled: a person who never types the code.</summary>
    private sealed class WaitingPrompter(string email) : IPrompter
    {
        private bool _askedEmail;
        public List<string> Output { get; } = new();
        public Task WriteLineAsync(string text, CancellationToken ct) { lock (Output) Output.Add(text); return Task.CompletedTask; }
        public async Task<string?> ReadLineAsync(string prompt, CancellationToken ct)
        {
            if (!_askedEmail) { _askedEmail = true; return email; }
            await Task.Delay(Timeout.Infinite, ct);
            return null;
        }
    }

    [Fact]
    public async Task TheMailedLink_ConfirmedInABrowser_CompletesTheWaitingDialogue()
    {
        _p.Options.Signup.AutoVerify = false;
        var links = new EmailVerifications(_p.Options, _p.Time, _p.Db);
        var key = TestPlatform.NewKey();
        var prompter = new WaitingPrompter("frank@mail.internal");
        var run = new SignupDialogue(_p.Accounts, _p.Options, _p.Time, _mail, links).RunAsync(prompter, key);
        for (int i = 0; i < 1000 && _mail.Sent.Count == 0; i++) await Task.Delay(10);
        var token = System.Text.RegularExpressions.Regex.Match(_mail.Sent[0].Body, @"verify-email\?token=([A-Za-z0-9_-]+)").Groups[1].Value;
        Assert.NotNull(await links.FindAsync(token)); // a GET of the page changes nothing
        Assert.False(run.IsCompleted);
        Assert.NotNull(await links.ConfirmAsync(token));
        var result = await run;
        Assert.Equal(SignupOutcome.Created, result.Outcome);
        Assert.Equal("frank@mail.internal", result.Account!.Email);
        Assert.True(result.Account.EmailVerified);
        Assert.Null(await links.FindAsync(token));
    }
}
