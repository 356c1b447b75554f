using System.Security.Cryptography;
using System.Text;
using Warren.Platform.Accounts;
using Warren.Ssh.Keys;

namespace Warren.Platform.Interactive;

/// <summary>Terminal I/O for a dialogue: lines out, one line in.</summary>
public interface IPrompter
{
    Task WriteLineAsync(string text, CancellationToken ct);

    /// <summary>One line typed after <paramref name="prompt"/>; null at end of input. ^C gives "".</summary>
    Task<string?> ReadLineAsync(string prompt, CancellationToken ct);
}

/// <summary>An <see cref="IPrompter"/> over a raw pty (the SSH session), using <see cref="LineEditor"/>.</summary>
public sealed class PtyPrompter : IPrompter
{
    private readonly LineEditor _editor;
    private readonly Stream _output;

    public PtyPrompter(Stream input, Stream output)
    {
        _editor = new LineEditor(input, output);
        _output = output;
    }

    public async Task WriteLineAsync(string text, CancellationToken ct)
    {
        await _output.WriteAsync(Encoding.UTF8.GetBytes(text.Replace("\n", "\r\n") + "\r\n"), ct);
        await _output.FlushAsync(ct);
    }

    public Task<string?> ReadLineAsync(string prompt, CancellationToken ct) => _editor.ReadLineAsync(prompt, ct);

    /// <summary>The editor, for the shell that follows on the same pty (it holds what was typed ahead).</summary>
    public LineEditor Editor => _editor;
}

public enum SignupOutcome
{
    /// <summary>A new account was made with the key.</summary>
    Created,
    /// <summary>The key was added to the (verified) account that already had the address.</summary>
    KeyAdded,
    /// <summary>Empty input, ^C, end of input, too many bad answers, or timeout.</summary>
    Cancelled,
    /// <summary>Sign-up cannot run (verification needed but no mail relay; the key became registered meanwhile).</summary>
    Unavailable,
}

public sealed record SignupResult(SignupOutcome Outcome, Account? Account);

/// <summary>
/// The sign-up dialogue for a key no account holds: ask the e-mail address, validate it, verify it (a code and a
/// one-click link sent by e-mail, unless <c>Signup:AutoVerify</c>, which only a loopback-only install may set), then create the
/// account with the key, its address verified — or add the key to the existing account for that address.
/// </summary>
/// <remarks>
/// Adding a key to an EXISTING account always requires e-mail verification, even with AutoVerify:
/// otherwise anyone could attach their key to someone else's account by typing the address.
/// </remarks>
public sealed class SignupDialogue
{
    /// <summary>Wrong e-mail formats or codes tolerated before giving up.</summary>
    public const int MaxAttempts = 5;

    /// <summary>Digits in a verification code (10^6 codes, at most <see cref="MaxAttempts"/> guesses per code).</summary>
    public const int CodeDigits = 6;

    private readonly AccountService _accounts;
    private readonly PlatformOptions _options;
    private readonly IEmailSender? _email;
    private readonly TimeProvider _time;
    private readonly EmailVerifications? _links;

    /// <param name="links">Verification links mailed beside the code (<see cref="EmailVerifications"/>); null: the code only.</param>
    public SignupDialogue(AccountService accounts, PlatformOptions options, TimeProvider time, IEmailSender? email = null, EmailVerifications? links = null)
    {
        _accounts = accounts;
        _options = options;
        _time = time;
        _email = email;
        _links = links;
    }

    public async Task<SignupResult> RunAsync(IPrompter prompter, SshPublicKey key, CancellationToken ct = default)
    {
        await prompter.WriteLineAsync($"WARREN ({_options.ControlHost}): get a VM over ssh", ct);
        await prompter.WriteLineAsync($"This SSH key is not registered yet: {key.KeyType} {key.Fingerprint}", ct);
        await prompter.WriteLineAsync("It is the first key your client offered; it will be the key of your account.", ct);
        await prompter.WriteLineAsync("To sign up, please verify your email.", ct);

        string? email = null;
        Account? existing = null;
        bool mustVerify = false;
        for (int attempt = 0; attempt < MaxAttempts && email is null; attempt++)
        {
            var input = await prompter.ReadLineAsync("Please enter your email address: ", ct);
            if (string.IsNullOrWhiteSpace(input)) return await CancelledAsync(prompter, ct);
            if (!EmailAddress.TryNormalize(input, out var normalized))
            {
                await prompter.WriteLineAsync("Invalid email format. Please enter an address like you@example.com.", ct);
                continue;
            }
            existing = await _accounts.FindByEmailAsync(normalized, ct);
            mustVerify = !_options.Signup.AutoVerify || existing is not null;
            // No mail can reach a domain reserved for examples: say so now instead of waiting for a code that never comes.
            if (mustVerify && _email is not null && ReservedEmailDomains.IsReserved(normalized))
            {
                await prompter.WriteLineAsync(ReservedEmailDomains.Message(normalized), ct);
                continue;
            }
            email = normalized;
        }
        if (email is null) return await CancelledAsync(prompter, ct);

        if (mustVerify)
        {
            if (_email is null)
            {
                await prompter.WriteLineAsync(existing is not null
                    ? "An account with this address exists; adding a key to it needs e-mail verification, and no mail relay is configured."
                    : "Sign-up needs e-mail verification, and no mail relay is configured. Ask the administrator.", ct);
                return new SignupResult(SignupOutcome.Unavailable, null);
            }
            if (!await VerifyAsync(prompter, email, ct)) return await CancelledAsync(prompter, ct);
            await prompter.WriteLineAsync("✓ Email verified successfully!", ct);
        }

        try
        {
            if (existing is not null)
            {
                await _accounts.AddKeyAsync(existing.Id, key, null, null, ct);
                // The code reached the address: it is this account's now, if it was not proven before.
                await _accounts.MarkEmailVerifiedAsync(existing.Id, email, ct);
                await prompter.WriteLineAsync("Registration complete!", ct);
                await prompter.WriteLineAsync("Your new ssh key has been added to your existing account.", ct);
                return new SignupResult(SignupOutcome.KeyAdded, existing);
            }
            // Verified by the mailed code, or taken as verified by AutoVerify (allowed on a loopback-only install only).
            var account = await _accounts.CreateAsync(email, key, emailVerified: true, null, ct);
            await prompter.WriteLineAsync("Registration complete!", ct);
            await prompter.WriteLineAsync("Your account has been successfully created.", ct);
            return new SignupResult(SignupOutcome.Created, account);
        }
        catch (PlatformException e) when (e.Code is PlatformErrorCodes.KeyInUse or PlatformErrorCodes.AccountExists)
        {
            // Another session registered this key or address meanwhile.
            await prompter.WriteLineAsync(e.UserMessage + " Please reconnect.", ct);
            return new SignupResult(SignupOutcome.Unavailable, null);
        }
    }

    /// <summary>
    /// Mails a code and, when links are available, a verification link; true once either is used: the code typed
    /// here, or the link confirmed in a browser (its page's button) while this waits.
    /// </summary>
    private async Task<bool> VerifyAsync(IPrompter prompter, string email, CancellationToken ct)
    {
        string code = RandomNumberGenerator.GetString("0123456789", CodeDigits);
        var link = _links is null ? null : await _links.CreateAsync(email, VerificationPurpose.SshSignup, ct: ct);
        int minutes = (int)_options.Signup.VerificationTimeout.TotalMinutes;
        string body = $"Your verification code for {_options.ControlHost} is {code}.\n\n"
            + (link is { } l ? $"Or open this link and confirm (it works once, from any device):\n\n{_links!.Link(l.Token)}\n\n" : "")
            + $"It expires in {minutes} minutes. If you did not try to sign up, ignore this message.\n";
        try
        {
            await _email!.SendAsync(email, "Your Warren verification code", body, ct);
            await prompter.WriteLineAsync($"Verification email sent to: {email}", ct);
            if (link is not null) await prompter.WriteLineAsync("Type the code from it, or open its link and confirm.", ct);
            using var timeout = new CancellationTokenSource(_options.Signup.VerificationTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
            var confirmed = link?.Pending.Confirmed ?? Task.Delay(Timeout.Infinite, linked.Token);
            try
            {
                for (int attempt = 0; attempt < MaxAttempts; attempt++)
                {
                    using var reading = CancellationTokenSource.CreateLinkedTokenSource(linked.Token);
                    var typedTask = prompter.ReadLineAsync("Enter the code from the email: ", reading.Token);
                    if (await Task.WhenAny(typedTask, confirmed) != typedTask)
                    {
                        await reading.CancelAsync();
                        try { await typedTask; } catch (OperationCanceledException) { }
                        if (confirmed.IsCompletedSuccessfully) { await prompter.WriteLineAsync("", ct); return true; }
                        linked.Token.ThrowIfCancellationRequested();
                    }
                    var typed = await typedTask;
                    if (string.IsNullOrWhiteSpace(typed)) return false;
                    if (CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(typed.Trim()), Encoding.ASCII.GetBytes(code))) return true;
                    await prompter.WriteLineAsync("That code is not correct.", ct);
                }
                return false;
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
            {
                await prompter.WriteLineAsync("Verification timed out.", ct);
                return false;
            }
        }
        finally
        {
            // Not with the session's token: a dialogue that ends because its session closed still drops its link.
            if (link is { } used) await _links!.ForgetAsync(used.Token, CancellationToken.None);
        }
    }

    private static async Task<SignupResult> CancelledAsync(IPrompter prompter, CancellationToken ct)
    {
        await prompter.WriteLineAsync("Registration cancelled.", ct);
        return new SignupResult(SignupOutcome.Cancelled, null);
    }
}
