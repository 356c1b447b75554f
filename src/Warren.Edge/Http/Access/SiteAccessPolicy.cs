namespace Warren.Edge.Http.Access;

/// <summary>What the access stage decided for a request to a site (<see cref="SiteAccessPolicy.DecideAsync"/>).</summary>
public enum AccessVerdict
{
    /// <summary>Forward to the VM, as <see cref="AccessDecision.ForwardAs"/> (null: anonymously).</summary>
    Forward,
    /// <summary>Anonymous: to the site's login page, coming back afterwards.</summary>
    RedirectToLogin,
    /// <summary>A token was presented and is not valid: 401 with the "invalid authentication" page.</summary>
    InvalidAuthentication,
    /// <summary>No such site for this person, or an alternate port of someone else's site: the "Access Denied" page.</summary>
    AccessDenied,
    /// <summary>Signed in, not allowed: 401 with the "You need access" page (and its request-access form).</summary>
    NeedAccess,
}

/// <param name="Owner">The person is the site's owner (an unreachable VM then says which port is unbound).</param>
public readonly record struct AccessDecision(AccessVerdict Verdict, WebUser? ForwardAs = null, bool Owner = false);

/// <summary>
/// The access stage: given who the request is (<see cref="Identity.WebIdentity"/>) and the site it names, forward,
/// redirect, or which page. The existence of a VM is never revealed to people without access.
/// </summary>
/// <remarks>
/// exe.dev's rules: a public site is open to everyone on its default route; a private one to its owner and the
/// people it is shared with; alternate ports (3000–9999) to the owner alone, since a share or the public flag covers
/// the default route only. A failed token in <c>Authorization</c> on a public site is the app's own credential: the
/// request goes on anonymously with the header untouched.
/// </remarks>
public sealed class SiteAccessPolicy
{
    private readonly IWebAccessService _access;

    public SiteAccessPolicy(IWebAccessService access) => _access = access;

    /// <summary>An anonymous request to <paramref name="site"/>'s default route needs nothing but forwarding.</summary>
    public static bool AdmitsAnonymous(WebSite site) => site.IsPublic;

    public async ValueTask<AccessDecision> DecideAsync(Identity.WebIdentity identity, WebSite? site, int? alternatePort, CancellationToken ct)
    {
        var user = identity.User;
        if (site is null)
            return new AccessDecision(identity.TokenFailed ? AccessVerdict.InvalidAuthentication
                : user is null ? AccessVerdict.RedirectToLogin : AccessVerdict.AccessDenied);

        bool owner = user is not null && user.UserId == site.OwnerUserId;
        bool allowed;
        if (alternatePort is not null)
        {
            if (user is not null && !owner && !identity.TokenFailed)
                return new AccessDecision(AccessVerdict.AccessDenied);
            allowed = owner;
        }
        else if (AdmitsAnonymous(site) && (!identity.TokenFailed || identity.FromAuthorizationHeader))
            allowed = true;
        else
            allowed = user is not null && (owner || await _access.HasAccessAsync(site, user, ct).ConfigureAwait(false));

        if (!allowed)
            return new AccessDecision(identity.TokenFailed ? AccessVerdict.InvalidAuthentication
                : user is null ? AccessVerdict.RedirectToLogin : AccessVerdict.NeedAccess, Owner: owner);
        // A failed Authorization token on a public site belongs to the app: forwarded untouched, anonymously.
        return new AccessDecision(AccessVerdict.Forward, identity.TokenFailed ? null : user, owner);
    }

    /// <summary>
    /// A signed-in person's <c>?share=TOKEN</c> on the default route admits them (the owner needs nothing). The
    /// caller drops the parameter from the URL.
    /// </summary>
    public ValueTask<bool> RedeemShareLinkAsync(WebSite site, WebUser user, string token, CancellationToken ct) =>
        user.UserId == site.OwnerUserId ? ValueTask.FromResult(true) : _access.RedeemShareLinkAsync(site, user, token, ct);
}
