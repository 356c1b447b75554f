using System.Buffers.Text;
using System.Diagnostics;
using System.Text;
using Warren.Platform.Commands;
using Warren.Platform.Tests.Commands;
using Warren.Platform.Tokens;
using Warren.Ssh.Keys;
using Xunit;
using static Warren.Platform.Tests.Commands.JsonAssert;

namespace Warren.Platform.Tests.Tokens;

public sealed class TokenTests : IDisposable
{
    private const string ControlNs = "v0@warren.localhost";
    private readonly CommandHarness _h = new();
    public void Dispose() => _h.Dispose();

    private static long Unix(DateTimeOffset t) => t.ToUnixTimeSeconds();

    /// <summary>An exe0 signed by our own SSHSIG code with <paramref name="key"/>.</summary>
    private static string Sign(SshPrivateKey key, string payload, string ns = ControlNs)
        => Exe0Token.Format(Encoding.UTF8.GetBytes(payload), SshSignature.SignBlob(key, ns, Encoding.UTF8.GetBytes(payload)));

    [Fact]
    public async Task GenerateApiKey_Json_AndTheTokenAuthenticates()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--label=ci", "--cmds=ls,new,whoami", "--exp=30d", "--json");
        Assert.Equal(0, r.Exit);
        var j = r.Json;
        Assert.Equal(["label", "token", "namespace", "fingerprint", "expires_at"], Keys(j));
        Assert.Equal("ci", Str(j, "label"));
        Assert.Equal(ControlNs, Str(j, "namespace"));
        Assert.Matches("^exe1\\.[A-Z2-7]{26}$", Str(j, "token"));
        Assert.Equal("2026-12-22T12:00:00Z", Str(j, "expires_at"));

        var auth = await _h.Authenticator.AuthenticateAsync(Str(j, "token"), ControlNs);
        Assert.True(auth.Succeeded, auth.Error);
        Assert.Equal(a.Id, auth.Identity!.Account.Id);
        Assert.Equal(["ls", "new", "whoami"], auth.Identity.AllowedCommands);
        Assert.Equal(Str(j, "fingerprint"), auth.Identity.Key.Fingerprint);

        // The exe1 stands for an exe0 whose SSHSIG uses ed25519 with sha512 and whose payload is exactly the flags.
        var exe0 = await _h.Exe1.ResolveAsync(Str(j, "token"));
        Assert.True(Exe0Token.TryParse(exe0, out var parsed, out _));
        Assert.Equal($"{{\"exp\":{Unix(_h.P.Time.GetUtcNow().AddDays(30))},\"cmds\":[\"ls\",\"new\",\"whoami\"]}}", Encoding.UTF8.GetString(parsed.PayloadBytes));
        Assert.True(parsed.SignatureBlob.AsSpan().IndexOf("sha512"u8) >= 0);
        Assert.True(parsed.SignatureBlob.AsSpan().IndexOf("ssh-ed25519"u8) >= 0);

        // The server keeps only the public key: the account now has an API key row with permissions.
        var row = (await _h.P.Accounts.ListKeysAsync(a.Id)).Single(x => x.Name == "ci");
        Assert.Equal(["ls", "new", "whoami"], row.Permissions!.Cmds);

        // Wrong namespace (a VM proxy) → invalid.
        var wrong = await _h.Authenticator.AuthenticateAsync(Str(j, "token"), "v0@web.box.localhost");
        Assert.Equal(TokenErrors.Invalid, wrong.Error);
        Assert.Equal(401, wrong.StatusCode);
    }

    [Fact]
    public async Task GenerateApiKey_Defaults_DuplicateLabel_Revoke()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--json");
        Assert.Equal("api-key", Str(r.Json, "label"));
        Assert.False(r.Json.TryGetProperty("expires_at", out _));
        var auth = await _h.Authenticator.AuthenticateAsync(Str(r.Json, "token"), ControlNs);
        Assert.Equal(TokenAuthenticator.DefaultCommands, auth.Identity!.AllowedCommands);

        var dup = await _h.RunAsync(a, k, "ssh-key", "generate-api-key");
        Assert.Equal(1, dup.Exit);
        Assert.Contains("already exists", dup.Stderr);

        var rm = await _h.RunAsync(a, k, "ssh-key", "remove", "api-key");
        Assert.Equal("Revoked API key \"api-key\"\n", rm.Stdout);
        var after = await _h.Authenticator.AuthenticateAsync(Str(r.Json, "token"), ControlNs);
        Assert.Equal(TokenErrors.Invalid, after.Error);
    }

    [Fact]
    public async Task GenerateApiKey_ForVm_UsesTheVmNamespace()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        await _h.RunAsync(a, k, "new", "--name=web");
        var r = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--vm", "web", "--json");
        Assert.Equal(0, r.Exit);
        Assert.Equal("api-key-web", Str(r.Json, "label"));
        Assert.Equal("v0@web.box.localhost", Str(r.Json, "namespace"));
        var auth = await _h.Authenticator.AuthenticateAsync(Str(r.Json, "token"), "v0@web.box.localhost");
        Assert.True(auth.Succeeded);
        Assert.Equal("web", auth.Identity!.Vm);
        Assert.False((await _h.Authenticator.AuthenticateAsync(Str(r.Json, "token"), ControlNs)).Succeeded);
        var missing = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--vm", "ghost");
        Assert.Equal("VM \"ghost\" not found\n", missing.Stderr);
    }

    [Theory]
    [InlineData("--cmds=ls,bogus", "unknown command \"bogus\" in --cmds")]
    [InlineData("--cmds=ssh-key lst", "unknown command \"ssh-key lst\" in --cmds (did you mean \"ssh-key list\"?)")]
    [InlineData("--exp=10x", "invalid --exp \"10x\"")]
    [InlineData("--exp=0d", "invalid --exp \"0d\"")]
    public async Task GenerateApiKey_RejectsBadFlags(string flag, string message)
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", flag);
        Assert.Equal(1, r.Exit);
        Assert.StartsWith(message, r.Stderr);
    }

    [Fact]
    public void ParseCmds_AcceptsQuotedSshEntries()
        => Assert.Equal(["ls", "ssh my-vm", "ssh-key list"], CommandDispatcher_ParseCmds("ls,'ssh my-vm', ssh-key list"));

    private static IReadOnlyList<string> CommandDispatcher_ParseCmds(string s) => CommandDispatcher.ParseCmds(s);

    [Fact]
    public async Task ATokenCannotMintTokens()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var ctx = new CommandContext { Account = a, CurrentKey = k, ForceJson = true, AllowedCommands = ["ssh-key generate-api-key"] };
        var r = await _h.RunWithAsync(ctx, "", "ssh-key", "generate-api-key");
        Assert.Equal(1, r.Exit);
        Assert.Contains("API tokens cannot create API tokens", r.Stdout);

        // Even without AllowedCommands, a caller authenticated by an API key's row cannot mint.
        var minted = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--label=first", "--json");
        var apiRow = (await _h.P.Accounts.ListKeysAsync(a.Id)).Single(x => x.Name == "first");
        var again = await _h.RunAsync(a, apiRow, "ssh-key", "generate-api-key", "--label=second");
        Assert.Equal(1, again.Exit);
        Assert.Contains("API tokens cannot create API tokens", again.Stderr);
        Assert.Equal(0, minted.Exit);
    }

    [Fact]
    public async Task SelfSignedExe0_WithAnAccountKey()
    {
        using var key = SshPrivateKey.Generate(Ed25519PublicKey.Name);
        var account = await _h.P.Accounts.CreateAsync("dev@example.com", key.PublicKey, emailVerified: true);
        long now = Unix(_h.P.Time.GetUtcNow());

        var ok = await _h.Authenticator.AuthenticateAsync(Sign(key, $"{{\"exp\":{now + 3600},\"cmds\":[\"ls\"],\"ctx\":{{\"who\":\"ci\"}}}}"), ControlNs);
        Assert.True(ok.Succeeded, ok.Error);
        Assert.Equal(account.Id, ok.Identity!.Account.Id);
        Assert.Equal(["ls"], ok.Identity.AllowedCommands);
        Assert.Equal("{\"who\":\"ci\"}", ok.Identity.CtxRawJson);

        Assert.Equal(TokenErrors.Expired, (await _h.Authenticator.AuthenticateAsync(Sign(key, $"{{\"exp\":{now - 1}}}"), ControlNs)).Error);
        Assert.Equal(TokenErrors.NotYetValid, (await _h.Authenticator.AuthenticateAsync(Sign(key, $"{{\"nbf\":{now + 60}}}"), ControlNs)).Error);
        Assert.Equal("invalid token: unknown field \"sub\"", (await _h.Authenticator.AuthenticateAsync(Sign(key, "{\"sub\":1}"), ControlNs)).Error);
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync(Sign(key, "{}", "v0@other.host"), ControlNs)).Error);

        // An unregistered key, and a payload swapped under a valid signature.
        using var stranger = SshPrivateKey.Generate(Ed25519PublicKey.Name);
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync(Sign(stranger, "{}"), ControlNs)).Error);
        var good = Sign(key, "{\"cmds\":[\"ls\"]}");
        var forged = Exe0Token.Prefix + Base64Url.EncodeToString("{\"cmds\":[\"rm\"]}"u8) + good[good.LastIndexOf('.')..];
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync(forged, ControlNs)).Error);
    }

    [Fact]
    public async Task Exe0ToExe1_ReusesTheHandle_AndOnlyForTheSigner()
    {
        using var key = SshPrivateKey.Generate(Ed25519PublicKey.Name);
        var account = await _h.P.Accounts.CreateAsync("dev@example.com", key.PublicKey, emailVerified: true);
        var row = (await _h.P.Accounts.ListKeysAsync(account.Id)).Single();
        long now = Unix(_h.P.Time.GetUtcNow());
        string exe0 = Sign(key, $"{{\"nbf\":{now + 600}}}"); // nbf is not checked by exe0-to-exe1

        var r1 = await _h.RunAsync(account, row, "exe0-to-exe1", exe0, "--json");
        Assert.Equal(0, r1.Exit);
        Assert.Equal(["token"], Keys(r1.Json));
        var r2 = await _h.RunAsync(account, row, "exe0-to-exe1", exe0, "--json");
        Assert.Equal(Str(r1.Json, "token"), Str(r2.Json, "token"));

        var (b, bk) = await _h.NewUserAsync("bob@example.com");
        var other = await _h.RunAsync(b, bk, "exe0-to-exe1", exe0);
        Assert.Equal(1, other.Exit);
        Assert.Equal("invalid token\n", other.Stderr);

        // --vm names the caller's own VM only; another account's VM and a missing one read the same.
        Assert.Equal(0, (await _h.RunAsync(b, bk, "new", "--name=bobs-vm", "--no-email")).Exit);
        foreach (var vm in new[] { "bobs-vm", "no-such-vm" })
        {
            var denied = await _h.RunAsync(account, row, "exe0-to-exe1", "--vm=" + vm, exe0);
            Assert.Equal(1, denied.Exit);
            Assert.Equal($"VM \"{vm}\" not found or access denied\n", denied.Stderr);
        }

        // The exe1 is re-validated: not valid before nbf, valid after.
        Assert.Equal(TokenErrors.NotYetValid, (await _h.Authenticator.AuthenticateAsync(Str(r1.Json, "token"), ControlNs)).Error);
        _h.P.Time.Advance(TimeSpan.FromMinutes(11));
        Assert.True((await _h.Authenticator.AuthenticateAsync(Str(r1.Json, "token"), ControlNs)).Succeeded);
    }

    [Fact]
    public async Task ExpiredApiKey_ViaExe1_SaysExpired()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--exp=1h", "--json");
        _h.P.Time.Advance(TimeSpan.FromHours(2));
        Assert.Equal(TokenErrors.Expired, (await _h.Authenticator.AuthenticateAsync(Str(r.Json, "token"), ControlNs)).Error);
    }

    [Fact]
    public async Task KeyRowExpiry_Is403()
    {
        using var key = SshPrivateKey.Generate(Ed25519PublicKey.Name);
        var (a, _) = await _h.NewUserAsync("alice@example.com");
        var expires = _h.P.Time.GetUtcNow().AddMinutes(5);
        await _h.P.Accounts.AddKeyAsync(a.Id, key.PublicKey, "short", new global::Warren.Platform.Accounts.ApiKeyPermissions("short", null, null, expires));
        string token = Sign(key, "{}");
        Assert.True((await _h.Authenticator.AuthenticateAsync(token, ControlNs)).Succeeded);
        _h.P.Time.Advance(TimeSpan.FromMinutes(6));
        var auth = await _h.Authenticator.AuthenticateAsync(token, ControlNs);
        Assert.Equal(TokenErrors.KeyExpired, auth.Error);
        Assert.Equal(403, auth.StatusCode);
    }

    [Fact]
    public async Task Exe1_UnknownOrMalformedHandles_AreInvalid()
    {
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync("exe1.AAAAAAAAAAAAAAAAAAAAAAAAAA", ControlNs)).Error);
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync("exe1.short", ControlNs)).Error);
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync("", ControlNs)).Error);
        Assert.Equal(TokenErrors.Invalid, (await _h.Authenticator.AuthenticateAsync("Bearer x", ControlNs)).Error);
    }

    [Fact]
    public async Task Exe1Store_KeepsNoSecretInTheClear()
    {
        var (a, k) = await _h.NewUserAsync("alice@example.com");
        var r = await _h.RunAsync(a, k, "ssh-key", "generate-api-key", "--json");
        string exe1 = Str(r.Json, "token");
        byte[] file = await File.ReadAllBytesAsync(_h.P.Options.DatabasePath).ContinueWith(t => t.Result);
        var wal = _h.P.Options.DatabasePath + "-wal";
        byte[] walBytes = File.Exists(wal) ? await ReadSharedAsync(wal) : [];
        string all = Encoding.Latin1.GetString(file) + Encoding.Latin1.GetString(walBytes);
        Assert.DoesNotContain(exe1[Exe1Store.Prefix.Length..], all);
        Assert.DoesNotContain("exe0.", all);
    }

    private static async Task<byte[]> ReadSharedAsync(string path)
    {
        await using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var ms = new MemoryStream();
        await fs.CopyToAsync(ms);
        return ms.ToArray();
    }

    /// <summary>A token made exactly as a user would: the real <c>ssh-keygen -Y sign</c>.</summary>
    [Theory]
    [InlineData("ed25519")]
    [InlineData("ecdsa")]
    [InlineData("rsa")]
    public async Task TokenSignedWithRealSshKeygen_Verifies(string type)
    {
        string dir = Path.Combine(Path.GetTempPath(), "warren-token-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string keyFile = Path.Combine(dir, "id");
            await RunAsync("ssh-keygen", "-q", "-t", type, "-N", "", "-C", "test", "-f", keyFile);
            var pub = (await File.ReadAllTextAsync(keyFile + ".pub")).Trim();
            Assert.True(SshPublicKey.TryParseOpenSsh(pub, out var publicKey, out _));
            var account = await _h.P.Accounts.CreateAsync("dev@example.com", publicKey, emailVerified: true);

            long exp = Unix(_h.P.Time.GetUtcNow()) + 3600;
            string payload = $"{{\"exp\":{exp},\"cmds\":[\"ls\",\"whoami\"]}}";
            string payloadFile = Path.Combine(dir, "payload");
            await File.WriteAllBytesAsync(payloadFile, Encoding.UTF8.GetBytes(payload));
            await RunAsync("ssh-keygen", "-Y", "sign", "-n", ControlNs, "-f", keyFile, payloadFile);
            Assert.True(SshSignature.TryUnarmor(await File.ReadAllTextAsync(payloadFile + ".sig"), out var blob));

            string token = Exe0Token.Format(Encoding.UTF8.GetBytes(payload), blob);
            var auth = await _h.Authenticator.AuthenticateAsync(token, ControlNs);
            Assert.True(auth.Succeeded, auth.Error);
            Assert.Equal(account.Id, auth.Identity!.Account.Id);
            Assert.Equal(["ls", "whoami"], auth.Identity.AllowedCommands);

            // Same signature, other namespace → invalid.
            Assert.False((await _h.Authenticator.AuthenticateAsync(token, "v0@web.box.localhost")).Succeeded);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        string err = await p.StandardError.ReadToEndAsync(cts.Token);
        await p.WaitForExitAsync(cts.Token);
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)} failed: {err}");
    }
}
