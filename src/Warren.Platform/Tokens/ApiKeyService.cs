using System.Buffers;
using System.Globalization;
using System.Text.Json;
using Warren.Platform.Accounts;
using Warren.Ssh.Keys;

namespace Warren.Platform.Tokens;

/// <summary>What <c>ssh-key generate-api-key</c> returns (exe.dev's ssh-key).</summary>
public sealed record ApiKeyResult(string Label, string Token, string Namespace, string Fingerprint, DateTimeOffset? ExpiresAt);

/// <summary>
/// Mints API tokens (<c>ssh-key generate-api-key</c>) and exe1 handles (<c>exe0-to-exe1</c>).
/// </summary>
/// <remarks>
/// Minting: generate a fresh Ed25519 key → register its public key on the account with the token's
/// permissions (label, cmds, vm, exp) → sign the payload with SSHSIG/sha512 in the token's namespace →
/// dispose the private key → return the exe1 handle for the exe0. The server keeps the public key (which
/// verifies) and the sealed exe0 (<see cref="Exe1Store"/>), never anything that can sign.
/// <c>ssh-key remove LABEL</c> deletes the key, which kills the token and its handle.
/// </remarks>
public sealed class ApiKeyService
{
    /// <summary>exe.dev's default label.</summary>
    public const string DefaultLabel = "api-key";

    /// <summary>Longest --exp accepted in days, so that the expiry stays within the payload's time range.</summary>
    private const int MaxExpiryDays = 100 * 365;

    private readonly AccountService _accounts;
    private readonly Exe1Store _exe1;
    private readonly TokenAuthenticator _authenticator;
    private readonly PlatformOptions _options;
    private readonly TimeProvider _time;

    public ApiKeyService(AccountService accounts, Exe1Store exe1, TokenAuthenticator authenticator, PlatformOptions options, TimeProvider time)
    {
        _accounts = accounts;
        _exe1 = exe1;
        _authenticator = authenticator;
        _options = options;
        _time = time;
    }

    /// <summary><c>v0@CONTROL-HOST</c>: tokens for POST /exec.</summary>
    public string ControlNamespace => "v0@" + _options.ControlHost;

    /// <summary><c>v0@NAME.VM-DOMAIN</c>: tokens for one VM's HTTPS proxy.</summary>
    public string VmNamespace(string vmName) => $"v0@{vmName}.{_options.VmDomain}";

    /// <summary>
    /// Mints a token. <paramref name="vm"/> must already be checked (exists, caller owns it);
    /// <paramref name="cmds"/> already resolved to canonical paths (null = default list).
    /// Errors: <c>key_name_in_use</c> (duplicate label), <c>invalid_argument</c>.
    /// </summary>
    /// <param name="tag">Limits the key to the account's VMs with this tag (<see cref="ApiKeyPermissions.Tag"/>), already validated.</param>
    public async Task<ApiKeyResult> GenerateAsync(Account account, string? label, string? vm, IReadOnlyList<string>? cmds, DateTimeOffset? expiresAt, CancellationToken ct = default, string? tag = null)
    {
        string effectiveLabel = string.IsNullOrWhiteSpace(label) ? (vm is null ? DefaultLabel : $"{DefaultLabel}-{vm}") : label;
        if (KeyNames.Sanitize(effectiveLabel).Length == 0)
            throw new PlatformException(PlatformErrorCodes.InvalidArgument, "invalid label");
        long? exp = expiresAt?.ToUnixTimeSeconds();
        if (exp is { } e && (e < TokenPayload.MinTime || e > TokenPayload.MaxTime))
            throw new PlatformException(PlatformErrorCodes.InvalidArgument, "expiry is out of range");
        string ns = vm is null ? ControlNamespace : VmNamespace(vm);
        byte[] payload = BuildPayload(exp, cmds);

        using var key = SshPrivateKey.Generate(Ed25519PublicKey.Name);
        var permissions = new ApiKeyPermissions(effectiveLabel, cmds, vm, exp is { } x ? DateTimeOffset.FromUnixTimeSeconds(x) : null, tag);
        AccountKey row;
        try
        {
            row = await _accounts.AddKeyAsync(account.Id, key.PublicKey, effectiveLabel, permissions, ct);
        }
        catch (PlatformException pe) when (pe.Code == PlatformErrorCodes.KeyNameInUse)
        {
            throw new PlatformException(PlatformErrorCodes.KeyNameInUse, $"an SSH key or API key with label \"{KeyNames.Sanitize(effectiveLabel)}\" already exists", pe);
        }
        byte[] blob = SshSignature.SignBlob(key, ns, payload, SshSignature.Sha512);
        string exe0 = Exe0Token.Format(payload, blob);
        string exe1 = await _exe1.GetOrCreateAsync(exe0, account.Id, row.Fingerprint, permissions.ExpiresAt, ct);
        return new ApiKeyResult(row.Name, exe1, ns, row.Fingerprint, permissions.ExpiresAt);
    }

    /// <summary>
    /// <c>exe0-to-exe1 [--vm=VM] TOKEN</c>: the exe0 must verify in the namespace and be signed by one of
    /// <paramref name="account"/>'s keys; only exp is checked (not nbf). Reuses an existing handle.
    /// Error messages are the token errors.
    /// </summary>
    public async Task<string> ConvertToExe1Async(Account account, string exe0, string? vm, CancellationToken ct = default)
    {
        string ns = vm is null ? ControlNamespace : VmNamespace(vm);
        var v = await _authenticator.VerifyAsync(exe0, ns, checkNotBefore: false, ct);
        if (v.Error is not null) throw new PlatformException(PlatformErrorCodes.InvalidArgument, v.Error);
        if (v.Account!.Id != account.Id) throw new PlatformException(PlatformErrorCodes.InvalidArgument, TokenErrors.Invalid);
        DateTimeOffset? exp = v.Token!.Payload.Exp is { } e ? DateTimeOffset.FromUnixTimeSeconds(e) : null;
        return await _exe1.GetOrCreateAsync(exe0, account.Id, v.Key!.Fingerprint, exp, ct);
    }

    /// <summary>Compact payload: <c>{"exp":N,"cmds":[…]}</c>, keys present only when set.</summary>
    public static byte[] BuildPayload(long? exp, IReadOnlyList<string>? cmds)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            if (exp is { } e) w.WriteNumber("exp", e);
            if (cmds is not null)
            {
                w.WriteStartArray("cmds");
                foreach (var c in cmds) w.WriteStringValue(c);
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>
    /// <c>--exp</c>: N followed by h, d, w, m (30 days) or y (365 days), or "never" (null).
    /// </summary>
    public static bool TryParseExpiry(string text, DateTimeOffset now, out DateTimeOffset? expiresAt, out string? error)
    {
        expiresAt = null;
        error = null;
        if (text == "never") return true;
        if (text.Length >= 2 && int.TryParse(text.AsSpan(0, text.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0)
        {
            TimeSpan? span = text[^1] switch
            {
                'h' => TimeSpan.FromHours(n),
                'd' => TimeSpan.FromDays(n),
                'w' => TimeSpan.FromDays(7.0 * n),
                'm' => TimeSpan.FromDays(30.0 * n),
                'y' => TimeSpan.FromDays(365.0 * n),
                _ => null,
            };
            if (span is { } s && s <= TimeSpan.FromDays(MaxExpiryDays))
            {
                expiresAt = DateTimeOffset.FromUnixTimeSeconds((now + s).ToUnixTimeSeconds());
                if (expiresAt.Value.ToUnixTimeSeconds() <= TokenPayload.MaxTime) return true;
            }
        }
        error = $"invalid --exp \"{text}\": use a number followed by h, d, w, m or y (e.g. 30d, 1y), or never";
        expiresAt = null;
        return false;
    }
}
