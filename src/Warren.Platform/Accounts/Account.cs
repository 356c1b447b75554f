namespace Warren.Platform.Accounts;

/// <summary>An account: an e-mail address (lower-case) plus one or more SSH keys.</summary>
public sealed record Account(string Id, string Email, DateTimeOffset CreatedAt)
{
    /// <summary>
    /// Whether the address was proven to be the account's (a code or login link mailed to it, or the operator
    /// adding the account). Only then do shares made to the address give access, and only then do sites hear
    /// who the account is (<c>X-ExeDev-Email</c>, <c>X-ExeDev-UserID</c>).
    /// </summary>
    public bool EmailVerified { get; init; }
}

/// <summary>
/// A registered SSH public key. <see cref="PublicKey"/> is the OpenSSH line "type base64" (no comment);
/// <see cref="Fingerprint"/> is "SHA256:…". <see cref="Permissions"/> is set for keys minted by
/// <c>ssh-key generate-api-key</c>.
/// </summary>
public sealed record AccountKey(
    string Id,
    string AccountId,
    string PublicKey,
    string Fingerprint,
    string Name,
    DateTimeOffset AddedAt,
    DateTimeOffset? LastUsedAt,
    ApiKeyPermissions? Permissions);

/// <summary>
/// Scope of a limited key. Two kinds share it, because a token signed by either key is held to the same limits
/// (<c>TokenAuthenticator</c> intersects the token's commands with <see cref="Cmds"/>):
/// <list type="bullet">
/// <item>an API key (exe.dev <c>generate-api-key --label --cmds --vm --exp</c>): the server made it and kept no
/// private key. Null <see cref="Cmds"/> means the token default list; <see cref="Vm"/> limits the key to one VM's
/// HTTPS proxy (namespace v0@VM.domain);</item>
/// <item>a scoped SSH key (<see cref="IsSshKey"/>, <c>ssh-key add --cmds --vm</c>): the user holds its private key
/// and logs in with it. <see cref="Cmds"/> is never null; <see cref="Vm"/> makes it a key for that VM's SSH only
/// (<see cref="KeyScope"/>).</item>
/// </list>
/// <see cref="Tag"/> limits either to VMs with that tag.
/// </summary>
public sealed record ApiKeyPermissions(
    string Label,
    IReadOnlyList<string>? Cmds,
    string? Vm,
    DateTimeOffset? ExpiresAt,
    string? Tag = null)
{
    /// <summary>A key its owner logs in with (<c>ssh-key add --cmds/--vm</c>), not a server-made API key.</summary>
    public bool IsSshKey { get; init; }

    public bool IsExpired(DateTimeOffset now) => ExpiresAt is { } e && now >= e;
}

/// <summary>
/// "This account proved its address", as SQL over <c>accounts</c>: for every query that lets an address stand for a
/// person (shares, login sessions). One definition, so no such query can forget it.
/// </summary>
public static class VerifiedAddressSql
{
    /// <summary>The condition on an <c>accounts</c> row; prefix it with the table's alias when joined (<c>a.</c>).</summary>
    public const string Condition = "email_verified = 1";
}
