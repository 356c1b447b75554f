namespace Warren.Platform.Accounts;

/// <summary>An account: an e-mail address (lower-case) plus one or more SSH keys.</summary>
public sealed record Account(string Id, string Email, DateTimeOffset CreatedAt);

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
/// Scope of an API key (exe.dev <c>generate-api-key --label --cmds --vm --exp</c>). Null <see cref="Cmds"/>
/// means the default command list; <see cref="Vm"/> limits the key to one VM's HTTPS proxy
/// (namespace v0@VM.domain); <see cref="Tag"/> limits it to VMs with that tag.
/// </summary>
public sealed record ApiKeyPermissions(
    string Label,
    IReadOnlyList<string>? Cmds,
    string? Vm,
    DateTimeOffset? ExpiresAt,
    string? Tag = null)
{
    public bool IsExpired(DateTimeOffset now) => ExpiresAt is { } e && now >= e;
}
