using Warren.Edge.Http;
using Warren.Edge.Http.Access;
using Warren.Edge.Http.Identity;
using Warren.Platform;

namespace Warren.Edge.Integrations;

/// <summary>What <see cref="PeerAccessCheck"/> decided: forward as <see cref="User"/>, or refuse with <see cref="Error"/>.</summary>
public readonly record struct PeerAccess(WebUser? User, string? TokenCtx, string? Error)
{
    public bool Allowed => User is not null;
}

/// <summary>
/// A peer integration's call presents its managed key to the target VM's site the way an authorised HTTPS client
/// would (exe.dev's docs: http-proxy, peer integrations): the token is checked by the front door's own token
/// validator in the target's namespace (<c>v0@TARGET.&lt;vm-domain&gt;</c>) and the front door's access stage
/// (<see cref="SiteAccessPolicy"/>) decides on the identity it names, so a private target admits the call on the
/// token, and a revoked, expired or renamed-away key is refused. Unlike a browser's call, a failed token never falls
/// back to anonymous access: the integration's key is the only credential a peer call has.
/// </summary>
public sealed class PeerAccessCheck
{
    public const string Refused = "the target refused the peer integration key";

    private readonly IWebTokenValidator _tokens;
    private readonly IWebSiteDirectory _sites;
    private readonly SiteAccessPolicy _policy;
    private readonly PlatformOptions _platform;

    public PeerAccessCheck(IWebTokenValidator tokens, IWebSiteDirectory sites, SiteAccessPolicy policy, PlatformOptions platform)
    {
        _tokens = tokens;
        _sites = sites;
        _policy = policy;
        _platform = platform;
    }

    /// <summary>Decides the call to <paramref name="targetVmName"/>'s default route carrying <paramref name="token"/>.</summary>
    public async ValueTask<PeerAccess> AuthorizeAsync(string? token, string targetVmName, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(token)) return new PeerAccess(null, null, Refused);
        var site = await _sites.FindAsync(targetVmName, ct).ConfigureAwait(false);
        if (site is null) return new PeerAccess(null, null, Refused);
        var validation = await _tokens.ValidateAsync(token, $"v0@{targetVmName}.{_platform.VmDomain}", ct).ConfigureAwait(false);
        var identity = validation is { Status: TokenValidationStatus.Valid, Principal: { } principal }
            ? new WebIdentity(principal.User, principal.CtxJson, FromAuthorizationHeader: true, TokenFailed: false, Rejected: false)
            : new WebIdentity(null, null, FromAuthorizationHeader: true, TokenFailed: true, Rejected: false);
        var decision = await _policy.DecideAsync(identity, site, alternatePort: null, ct).ConfigureAwait(false);
        return decision is { Verdict: AccessVerdict.Forward, ForwardAs: { } user }
            ? new PeerAccess(user, identity.TokenCtx, null)
            : new PeerAccess(null, null, Refused);
    }
}
