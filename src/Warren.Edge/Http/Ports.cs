using System.Net;

namespace Warren.Edge.Http;

// The ports (interfaces) the HTTP front door needs from the platform. The lead (or
// src/Warren.Edge/Adapters) implements them over the account, VM, sharing and token
// services. All are called on the request path: keep them fast (memory or indexed lookups).

/// <summary>A person known to Warren, as the proxy reports it to VMs (<c>X-ExeDev-UserID</c>, <c>X-ExeDev-Email</c>).</summary>
public sealed record WebUser(string UserId, string Email);

/// <summary>
/// What the front door knows about one VM's website.
/// </summary>
/// <param name="VmId">Warren's stable VM id (for <see cref="IWebUpstreamLocator"/>).</param>
/// <param name="Name">The VM name (DNS label).</param>
/// <param name="OwnerUserId">The owner's user id.</param>
/// <param name="DefaultPort">The port the default route goes to: 80 if the image exposes it, else the smallest exposed TCP port ≥ 1024, unless <c>share port</c> overrode it (exe.dev).</param>
/// <param name="IsPublic">True after <c>share set-public</c>: the default route needs no login.</param>
public sealed record WebSite(string VmId, string Name, string OwnerUserId, int DefaultPort, bool IsPublic);

/// <summary>Looks up websites by VM name.</summary>
public interface IWebSiteDirectory
{
    /// <summary>
    /// Called on every proxied request (results are not cached by the front door).
    /// <paramref name="vmName"/> is the lower-case first label of the Host. Returns null when no
    /// such VM exists or its owner is locked out (the front door never reveals which).
    /// </summary>
    ValueTask<WebSite?> FindAsync(string vmName, CancellationToken ct);
}

/// <summary>Sharing decisions for people other than the owner.</summary>
public interface IWebAccessService
{
    /// <summary>
    /// Called for an authenticated non-owner on a private site's default route (alternate ports, 3000–9999, are
    /// the owner's alone, whatever the shares). True when <paramref name="user"/> has an active share of the VM
    /// (by email, team, or an earlier share link).
    /// </summary>
    ValueTask<bool> HasAccessAsync(WebSite site, WebUser user, CancellationToken ct);

    /// <summary>
    /// Called when an authenticated person opens a URL with <c>?share=TOKEN</c>. When the token is a
    /// live share link of the VM, records an email share for the user (it survives the link's removal)
    /// and returns true; otherwise false.
    /// </summary>
    ValueTask<bool> RedeemShareLinkAsync(WebSite site, WebUser user, string shareToken, CancellationToken ct);
}

/// <summary>Where a running VM can be reached from the host.</summary>
public interface IWebUpstreamLocator
{
    /// <summary>
    /// Called on every proxied request. Returns the VM's bridge address (see
    /// <c>IVmRuntime.GetAddressAsync</c>), or null when the VM is stopped or has none.
    /// </summary>
    ValueTask<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct);

    /// <summary>Drops what is known of the VM's address: a forward found nobody there (stopped, restarted, moved).</summary>
    void Forget(string vmId)
    {
    }
}

/// <summary>A login session behind a <c>login-with-exe-&lt;port&gt;</c> cookie.</summary>
/// <param name="SessionKey">Lower-case hex SHA-256 of the cookie value; the store never sees the cookie value itself.</param>
/// <param name="Host">The host the cookie was set for (lower case, with <c>:port</c> when not the default).</param>
public sealed record WebSession(string SessionKey, WebUser User, string Host, DateTimeOffset ExpiresAt);

/// <summary>Server-side storage of login sessions.</summary>
public interface IWebSessionStore
{
    /// <summary>Called after a login link was consumed.</summary>
    ValueTask CreateAsync(WebSession session, CancellationToken ct);

    /// <summary>Called on each request carrying a session cookie. Returns null when unknown. (The front door also checks expiry and host.)</summary>
    ValueTask<WebSession?> FindAsync(string sessionKey, CancellationToken ct);

    /// <summary>Called at logout. Succeeds when already gone.</summary>
    ValueTask DeleteAsync(string sessionKey, CancellationToken ct);

    /// <summary>
    /// Called by the control host's <c>/api/profile</c>: the user's live sessions, latest expiry first, at most
    /// <paramref name="limit"/> of them.
    /// </summary>
    ValueTask<IReadOnlyList<WebSession>> ListForUserAsync(string userId, int limit, CancellationToken ct);
}

/// <summary>One VM as the control host's <c>/api/dashboard</c> lists it.</summary>
/// <param name="Name">The VM name.</param>
/// <param name="Status">As <c>ls --json</c> reports it (running, stopped, ...).</param>
/// <param name="OwnerEmail">The owner's address.</param>
/// <param name="IsPublic">True after <c>share set-public</c>.</param>
/// <param name="Port">The port the default route goes to.</param>
public sealed record WebDashboardVm(string Name, string Status, string OwnerEmail, bool IsPublic, int Port);

/// <summary>What <c>/api/dashboard</c> shows a signed-in person: their VMs, and the VMs other accounts shared with them.</summary>
public sealed record WebDashboard(IReadOnlyList<WebDashboardVm> Vms, IReadOnlyList<WebDashboardVm> SharedVms);

/// <summary>The signed-in person's own VMs and the VMs shared with them (the control host's <c>/api/dashboard</c>).</summary>
public interface IWebDashboardSource
{
    /// <summary>Called per <c>/api/dashboard</c> request, off the socket engine thread. Lists nothing of any other account.</summary>
    ValueTask<WebDashboard> GetDashboardAsync(WebUser user, CancellationToken ct);
}

/// <summary>What a consumed login link grants.</summary>
/// <param name="Host">The site host the link is for (lower case), or null for any site under the VM domain.</param>
public sealed record LoginGrant(WebUser User, string? Host);

/// <summary>One-time login secrets: the control plane's <c>browser</c> command and the email flow issue them; <c>/__exe.dev/auth</c> consumes them.</summary>
public interface ILoginLinkService
{
    /// <summary>Issues a one-time secret for <paramref name="user"/>; build the URL with <see cref="LoginLinks.BuildAuthUrl"/>.</summary>
    ValueTask<string> IssueAsync(WebUser user, string? host, CancellationToken ct);

    /// <summary>Consumes a secret atomically: the first call returns the grant, later calls (and unknown or expired secrets) null.</summary>
    ValueTask<LoginGrant?> ConsumeAsync(string secret, CancellationToken ct);
}

/// <summary>
/// Optional: the "email me a login link" form on the control host's login page. Registered by the lead when SMTP is configured.
/// </summary>
public interface ILoginEmailSender
{
    /// <summary>
    /// Called when someone submits an address on the login page (rate-limited per address). When a
    /// user with that email exists, issue a secret with <see cref="ILoginLinkService.IssueAsync"/> (host =
    /// the control host), build the link with <see cref="Routing.ControlUrls.ControlLoginLink"/> plus
    /// <c>&amp;redirect=</c><paramref name="redirect"/> (a control-host path) and mail it; otherwise do nothing.
    /// The page answers the same either way, so existence is not revealed.
    /// </summary>
    ValueTask SendLoginLinkAsync(string email, string redirect, CancellationToken ct);
}

/// <summary>
/// Optional: the "request access" form on a private site's "You need access" page
/// (<c>/__exe.dev/request-access</c>). Registered by the lead when mail is configured; without it the
/// page shows no form.
/// </summary>
public interface IAccessRequestSender
{
    /// <summary>
    /// Called when a logged-in person without access to <paramref name="site"/> asks for it (the front door has
    /// already checked the anti-CSRF token and the per-requester limits). Tell the owner who asks, with
    /// <paramref name="message"/> (plain text, may be null) and the <c>share add</c> command that grants access.
    /// The requester never learns the owner's address. Throws when the request could not be delivered.
    /// </summary>
    ValueTask SendAccessRequestAsync(WebSite site, WebUser requester, string? message, CancellationToken ct);
}

/// <summary>Outcome of token validation.</summary>
public enum TokenValidationStatus
{
    /// <summary>Good token; <see cref="TokenValidation.Principal"/> is set.</summary>
    Valid,
    /// <summary>Malformed, unknown key, bad signature, wrong namespace, expired or not yet valid → 401 with <see cref="TokenValidation.Error"/>.</summary>
    Invalid,
    /// <summary>The signing key's own registration expired → 403 <c>SSH key has expired</c>.</summary>
    KeyExpired,
    /// <summary>The validator failed (database down) → 500.</summary>
    InternalError,
}

/// <param name="User">Whose key signed the token.</param>
/// <param name="RateLimitKey">Bucket key for /exec: the signing key's fingerprint (exe.dev).</param>
/// <param name="AllowedCommands">Canonical command paths the token allows, defaults already applied when the token names none (exe.dev).</param>
/// <param name="CtxJson">The token's raw <c>ctx</c> JSON bytes as text, or null; forwarded verbatim as <c>X-ExeDev-Token-Ctx</c>.</param>
/// <remarks><see cref="ValidatorState"/> is opaque to the front door: what the validator wants back in <see cref="IExecCommandRunner.RunAsync"/> (the platform's TokenIdentity).</remarks>
public sealed record TokenPrincipal(WebUser User, string RateLimitKey, IReadOnlyCollection<string> AllowedCommands, string? CtxJson)
{
    public object? ValidatorState { get; init; }
}

public sealed record TokenValidation(TokenValidationStatus Status, string? Error = null, TokenPrincipal? Principal = null)
{
    public static TokenValidation Valid(TokenPrincipal principal) => new(TokenValidationStatus.Valid, null, principal);
    public static TokenValidation Invalid(string error = "invalid token") => new(TokenValidationStatus.Invalid, error);
}

/// <summary>Validates API tokens (exe0/exe1). C2's <c>TokenAuthenticator</c> is the implementation.</summary>
public interface IWebTokenValidator
{
    /// <summary>
    /// Called for each request presenting a token. <paramref name="namespace"/> is
    /// <c>v0@&lt;control-host&gt;</c> for /exec and <c>v0@NAME.&lt;vm-domain&gt;</c> for a site.
    /// Never log the token.
    /// </summary>
    ValueTask<TokenValidation> ValidateAsync(string token, string @namespace, CancellationToken ct);
}

/// <summary>A command for /exec after lexing and resolution.</summary>
/// <param name="CanonicalCommand">The resolved command path, e.g. <c>ssh-key list</c>.</param>
public sealed record ExecInvocation(TokenPrincipal Principal, IReadOnlyList<string> Argv, string CanonicalCommand);

/// <summary>What a command printed (stdout, JSON) and its exit status.</summary>
public sealed record ExecOutcome(int ExitCode, string Output);

/// <summary>Runs control-plane commands for <c>POST /exec</c> (over C2's ShellLexer and CommandDispatcher).</summary>
public interface IExecCommandRunner
{
    /// <summary>Splits a command line with the control plane's shell lexer (<c>ShellLexer.TrySplit</c>). False → 400 <c>invalid command syntax</c>.</summary>
    bool TrySplit(string commandLine, out IReadOnlyList<string> argv);

    /// <summary>The canonical command path (<c>CommandDispatcher.Resolve</c>: longest matching prefix, aliases mapped), or null → 404.</summary>
    string? Resolve(IReadOnlyList<string> argv);

    /// <summary>
    /// Whether a token allowing <paramref name="allowedCommands"/> may run <paramref name="argv"/> (<c>CommandDispatcher.IsAllowed</c>:
    /// the canonical path is listed exactly, or <c>ssh VM</c> for <c>ssh VM …</c>). False → 403.
    /// </summary>
    bool IsAllowed(IReadOnlyCollection<string> allowedCommands, IReadOnlyList<string> argv);

    /// <summary>
    /// Runs the command as <see cref="ExecInvocation.Principal"/>'s user with JSON output forced,
    /// no stdin and no pty (<c>CommandDispatcher.RunAsync</c>). Observes <paramref name="ct"/>, which
    /// fires at the /exec time limit. Returns stdout and the exit status.
    /// </summary>
    Task<ExecOutcome> RunAsync(ExecInvocation invocation, CancellationToken ct);
}
