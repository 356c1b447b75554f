using System.Diagnostics.CodeAnalysis;
using Dapper;
using Warren.Platform.Runtime;
using Warren.Platform.Storage;

namespace Warren.Platform.Vms;

/// <summary>An image a VM may be made from, as <see cref="ImageAccess"/> resolved it for one account.</summary>
/// <param name="Info">What the image's config says.</param>
/// <param name="RunReference">What the runtime creates the VM from: a provided image's configured name, or
/// <c>repository@digest</c> of the manifest the registry served to this account.</param>
public sealed record AccountImage(ImageInfo Info, string RunReference);

/// <summary>
/// Which images an account may start. <c>--image</c> takes named references only (<see cref="ImageReference"/>);
/// an account may start (a) an operator-provided image (<see cref="ImageOptions.EffectiveProvided"/> and the
/// default image), used from the engine's store, or (b) a registry image it pulls itself, now, with its own
/// credential or anonymously: the registry's answer is the access check, so a private image another account
/// pulled is not handed out by name. The pull of an image already present is a manifest check; the grant
/// (account, reference, digest) is recorded and the VM is made from that exact manifest.
/// Engine ids, id prefixes and runtime snapshots are refused with the text of a missing image, so a refusal
/// says nothing about what the engine holds.
/// </summary>
public sealed class ImageAccess
{
    private readonly WarrenDatabase _db;
    private readonly IVmRuntime _runtime;
    private readonly TimeProvider _time;
    /// <summary>Canonical provided reference → the text the operator configured (what the engine's store knows).</summary>
    private readonly Dictionary<string, string> _provided = new(StringComparer.Ordinal);

    /// <summary>
    /// Repository namespace of runtime snapshots (cp, rename; the Docker runtime commits them as
    /// <c>warren-vm/&lt;vm id&gt;:TAG</c>): Warren's, reached through VM records, never a user's image.
    /// </summary>
    public const string SnapshotNamespace = "warren-vm/";

    public ImageAccess(WarrenDatabase db, IVmRuntime runtime, PlatformOptions options, TimeProvider time)
    {
        _db = db;
        _runtime = runtime;
        _time = time;
        foreach (var configured in options.Images.EffectiveProvided.Append(options.DefaultImage))
            if (ImageReference.TryParse(configured, out var r)) _provided.TryAdd(r.Canonical, configured);
    }

    /// <summary>The configured name when <paramref name="reference"/> is operator-provided, else null.</summary>
    public string? Provided(ImageReference reference) => _provided.GetValueOrDefault(reference.Canonical);

    /// <summary>
    /// Resolves <paramref name="text"/> for <paramref name="accountId"/> (see the class summary). Refusals and
    /// registry failures surface as the runtime's exception or a <see cref="PlatformException"/> whose message is
    /// <see cref="ImageMessages.NotFound"/>.
    /// </summary>
    public async Task<AccountImage> PrepareAsync(string accountId, string text, RegistryCredential? auth, CancellationToken ct)
    {
        if (Refuses(text, out var reference))
            throw new PlatformException(PlatformErrorCodes.ImageNotFound, ImageMessages.NotFound(reference?.Canonical ?? text));
        if (Provided(reference) is { } configured)
            return new AccountImage(await _runtime.PrepareImageAsync(configured, null, ct), configured);
        // The canonical form names the registry, so the runtime asks it every time, cached or not.
        var info = await _runtime.PrepareImageAsync(reference.Canonical, auth, ct);
        await RecordGrantAsync(accountId, reference, info.Digest, ct);
        return new AccountImage(info, reference.PinnedTo(info.Digest));
    }

    /// <summary>
    /// True when <paramref name="text"/> is not something an account may name: outside the reference grammar,
    /// an engine id (<c>sha256:…</c>) or a bare hex word (what the engine would take as an id prefix), or a snapshot.
    /// </summary>
    public static bool Refuses(string text, [NotNullWhen(false)] out ImageReference? reference)
    {
        if (!ImageReference.TryParse(text, out reference)) return true;
        if (reference.Domain == ImageReference.DefaultDomain && reference.Path.StartsWith(SnapshotNamespace, StringComparison.Ordinal)) return true;
        if (reference.HasExplicitDomain || text.Contains('/')) return false;
        // A single word: "library/WORD" on Docker Hub. "sha256:…" is an id; all-hex is how the engine abbreviates ids.
        var word = reference.Path[(reference.Path.IndexOf('/') + 1)..];
        return word == "sha256" || word.All(char.IsAsciiHexDigitLower);
    }

    /// <summary>The registry images this account pulled through Warren, newest first.</summary>
    public Task<IReadOnlyList<ImageGrant>> ListGrantsAsync(string accountId, CancellationToken ct = default)
        => _db.ReadAsync<IReadOnlyList<ImageGrant>>(async c => (await c.QueryAsync<(string Reference, string Digest, long GrantedAt)>(
                "SELECT reference AS Reference, digest AS Digest, granted_at AS GrantedAt FROM image_grants WHERE account_id = @accountId ORDER BY granted_at DESC, reference",
                new { accountId }))
            .Select(g => new ImageGrant(accountId, g.Reference, g.Digest, DateTimeOffset.FromUnixTimeMilliseconds(g.GrantedAt))).ToList(), ct);

    private Task RecordGrantAsync(string accountId, ImageReference reference, string digest, CancellationToken ct)
        => _db.WriteAsync(u => u.ExecuteAsync("""
            INSERT INTO image_grants (account_id, reference, digest, granted_at) VALUES (@accountId, @reference, @digest, @now)
            ON CONFLICT (account_id, reference, digest) DO UPDATE SET granted_at = excluded.granted_at
            """, new { accountId, reference = reference.Canonical, digest, now = _time.GetUtcNow().ToUnixTimeMilliseconds() }), ct);
}

/// <summary>A registry's confirmation that <see cref="AccountId"/> may pull <see cref="Reference"/> at <see cref="Digest"/>.</summary>
public sealed record ImageGrant(string AccountId, string Reference, string Digest, DateTimeOffset GrantedAt);
