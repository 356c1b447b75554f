using Warren.Platform.Accounts;

namespace Warren.Platform.Commands;

/// <summary>
/// One command invocation's caller and terminal, filled by a front door: the SSH server (exec or the
/// interactive shell) or the HTTPS POST /exec endpoint.
/// </summary>
public sealed class CommandContext
{
    /// <summary>The caller's account; null for a key no account holds (commands then ask to register).</summary>
    public Account? Account { get; init; }

    /// <summary>The key that authenticated the session (SSH), or that signed the token (/exec).</summary>
    public AccountKey? CurrentKey { get; init; }

    public TextReader Stdin { get; init; } = TextReader.Null;
    public TextWriter Stdout { get; init; } = TextWriter.Null;
    public TextWriter Stderr { get; init; } = TextWriter.Null;

    /// <summary>Print JSON whether or not <c>--json</c> was given (POST /exec).</summary>
    public bool ForceJson { get; init; }

    /// <summary>A pty is attached (the REPL): ANSI colour allowed, JSON indented.</summary>
    public bool Interactive { get; init; }

    /// <summary>
    /// Canonical command paths a token allows (<see cref="Tokens.TokenIdentity.AllowedCommands"/>); null
    /// for an SSH-key session (no restriction). Non-null also marks a token session: tokens cannot mint tokens.
    /// </summary>
    public IReadOnlyList<string>? AllowedCommands { get; init; }

    /// <summary>The VM a token's key is limited to (generate-api-key --vm), or null.</summary>
    public string? TokenVm { get; init; }

    /// <summary>Where the caller connected from, for the audit log ("ssh 203.0.113.9:51514", "https …"); optional.</summary>
    public string? Source { get; init; }

    public CancellationToken CancellationToken { get; init; }
}

/// <summary>Issues one-time browser login links for <c>browser</c>; implemented by the HTTPS front door.</summary>
public interface ILoginLinkIssuer
{
    /// <summary>A single-use URL that logs the browser in as <paramref name="account"/> and then expires.</summary>
    Task<Uri> IssueLoginLinkAsync(Account account, CancellationToken ct);
}

/// <summary>A user-facing command failure: printed as one line (or <c>{"error":…}</c>), exit status 1.</summary>
public sealed class CommandException : Exception
{
    public CommandException(string message) : base(message) { }
}
