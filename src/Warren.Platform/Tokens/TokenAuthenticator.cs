using Warren.Platform.Accounts;
using Warren.Ssh.Keys;

namespace Warren.Platform.Tokens;

/// <summary>Who a valid token speaks for, and what it may do.</summary>
/// <param name="AllowedCommands">Canonical command paths the token may run (its <c>cmds</c>, or the default list), never null.</param>
/// <param name="CtxRawJson">The payload's <c>ctx</c> bytes verbatim (for X-ExeDev-Token-Ctx), or null.</param>
/// <param name="Vm">The VM the signing key is limited to (generate-api-key --vm), or null.</param>
public sealed record TokenIdentity(
    Account Account,
    AccountKey Key,
    IReadOnlyList<string> AllowedCommands,
    string? CtxRawJson,
    string? Vm,
    DateTimeOffset? ExpiresAt);

/// <summary>Why a token was refused; the HTTPS side maps it to a status code.</summary>
public enum TokenFailure
{
    None,
    /// <summary>401: malformed, bad signature, unknown key, wrong namespace, expired or not yet valid.</summary>
    Invalid,
    /// <summary>403 <c>SSH key has expired</c>: the key row's own expiry passed.</summary>
    KeyExpired,
}

public sealed record TokenAuthResult(TokenIdentity? Identity, TokenFailure Failure, string? Error)
{
    public bool Succeeded => Identity is not null;

    /// <summary>HTTP status for a failure (exe.dev): 401 or 403; 200 on success.</summary>
    public int StatusCode => Failure switch { TokenFailure.None => 200, TokenFailure.KeyExpired => 403, _ => 401 };

    internal static TokenAuthResult Fail(string error, TokenFailure failure = TokenFailure.Invalid) => new(null, failure, error);
}

/// <summary>
/// Verifies <c>exe0</c> tokens and <c>exe1</c> handles (exe.dev) for POST /exec and the HTTPS proxy.
/// </summary>
/// <remarks>
/// Steps: resolve an exe1 to its exe0 → parse the exe0 strictly → read the SSHSIG's embedded key (RSA bounded:
/// <see cref="MaxRsaModulusBits"/>, and the exponent while parsing) → find its fingerprint among registered keys
/// (its owner is the caller) → only then verify the SSHSIG over the exact payload bytes in
/// <c>expectedNamespace</c> → check exp/nbf → check the key row's own expiry → compute the allowed commands.
/// Looking the key up first means a token from a key nobody registered costs a lookup, never a signature check.
/// A token signed by a removed key, or for another namespace, is just "invalid token".
/// </remarks>
public sealed class TokenAuthenticator
{
    /// <summary>exe.dev's default when a token names no <c>cmds</c>.</summary>
    public static readonly IReadOnlyList<string> DefaultCommands = ["help", "ls", "new", "whoami", "ssh-key list", "share show", "exe0-to-exe1"];

    /// <summary>
    /// Largest RSA modulus a token may be signed with. Lower than SSH's 16384 (OpenSSH's maximum, kept there for
    /// compatibility): a token is checked on every request, verification cost grows with the square of the modulus,
    /// and 8192 bits is already far beyond any recommendation (NIST SP 800-57: 3072 for 128-bit security).
    /// </summary>
    public const int MaxRsaModulusBits = 8192;

    private readonly AccountService _accounts;
    private readonly Exe1Store _exe1;
    private readonly TimeProvider _time;

    public TokenAuthenticator(AccountService accounts, Exe1Store exe1, TimeProvider time)
    {
        _accounts = accounts;
        _exe1 = exe1;
        _time = time;
    }

    /// <param name="bearer">The token text (exe0.… or exe1.…), without "Bearer ".</param>
    /// <param name="expectedNamespace"><c>v0@CONTROL-HOST</c> for /exec, <c>v0@NAME.VM-DOMAIN</c> for a VM's proxy.</param>
    public async Task<TokenAuthResult> AuthenticateAsync(string bearer, string expectedNamespace, CancellationToken ct = default)
    {
        if (string.IsNullOrEmpty(bearer)) return TokenAuthResult.Fail(TokenErrors.Invalid);
        string exe0Text = bearer;
        if (Exe1Store.LooksLikeExe1(bearer))
        {
            var resolved = await _exe1.ResolveAsync(bearer, ct);
            if (resolved is null) return TokenAuthResult.Fail(TokenErrors.Invalid);
            exe0Text = resolved;
        }
        var verified = await VerifyAsync(exe0Text, expectedNamespace, checkNotBefore: true, ct);
        if (verified.Error is not null) return TokenAuthResult.Fail(verified.Error);
        var (token, key, account) = (verified.Token!, verified.Key!, verified.Account!);

        var now = _time.GetUtcNow();
        if (key.Permissions is { } perms && perms.IsExpired(now)) return TokenAuthResult.Fail(TokenErrors.KeyExpired, TokenFailure.KeyExpired);

        IReadOnlyList<string> allowed = token.Payload.Cmds ?? DefaultCommands;
        if (key.Permissions?.Cmds is { } keyCmds) allowed = allowed.Where(keyCmds.Contains).ToList();

        try { await _accounts.TouchKeyAsync(key.Fingerprint, ct); }
        catch (Exception e) when (e is not OperationCanceledException) { /* last_used_at is advisory */ }

        DateTimeOffset? expires = token.Payload.Exp is { } exp ? DateTimeOffset.FromUnixTimeSeconds(exp) : null;
        if (key.Permissions?.ExpiresAt is { } keyExp && (expires is null || keyExp < expires)) expires = keyExp;
        return new TokenAuthResult(new TokenIdentity(account, key, allowed, token.Payload.CtxRawJson, key.Permissions?.Vm, expires), TokenFailure.None, null);
    }

    internal sealed record Verified(Exe0Token? Token, AccountKey? Key, Account? Account, string? Error);

    /// <summary>Parse, signature, registered signer, exp (and nbf when asked). Shared with exe0-to-exe1.</summary>
    internal async Task<Verified> VerifyAsync(string exe0Text, string expectedNamespace, bool checkNotBefore, CancellationToken ct)
    {
        if (!Exe0Token.TryParse(exe0Text, out var token, out var error)) return new(null, null, null, error);
        if (!SshSignature.TryReadSigner(token.SignatureBlob, out var named)
            || named is RsaPublicKey { ModulusBits: > MaxRsaModulusBits })
            return new(null, null, null, TokenErrors.Invalid);
        var key = await _accounts.FindKeyByFingerprintAsync(named.Fingerprint, ct);
        if (key is null) return new(null, null, null, TokenErrors.Invalid);
        // The fingerprint names the stored key; compare the keys themselves as well.
        if (!SshPublicKey.TryParseOpenSsh(key.PublicKey, out var stored, out _) || !stored.Equals(named))
            return new(null, null, null, TokenErrors.Invalid);
        if (!SshSignature.TryVerify(token.SignatureBlob, expectedNamespace, token.PayloadBytes, out var signer) || !signer.Equals(named))
            return new(null, null, null, TokenErrors.Invalid);
        var account = await _accounts.GetAsync(key.AccountId, ct);
        if (account is null) return new(null, null, null, TokenErrors.Invalid);

        long now = _time.GetUtcNow().ToUnixTimeSeconds();
        if (token.Payload.Exp is { } exp && now > exp) return new(null, null, null, TokenErrors.Expired);
        if (checkNotBefore && token.Payload.Nbf is { } nbf && now < nbf) return new(null, null, null, TokenErrors.NotYetValid);
        return new(token, key, account, null);
    }
}
