using System.Net;
using System.Runtime.CompilerServices;
using Warren.Edge.Http;
using Warren.Edge.Http.Routing;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Addressing;
using Warren.Platform.Commands;
using Warren.Platform.Runtime;
using Warren.Platform.Sharing;
using Warren.Platform.Tokens;
using Warren.Platform.Vms;

namespace Warren.Edge.Adapters;

/// <summary><see cref="IWebSiteDirectory"/> over the in-memory <see cref="PlatformIndex"/>. User ids are account ids.</summary>
public sealed class PlatformWebSiteDirectory : IWebSiteDirectory
{
    private readonly PlatformIndex _index;

    /// <summary>
    /// One <see cref="WebSite"/> per index record: the index replaces a VM's record whenever it changes, so a site made
    /// from a record is valid exactly as long as that record is current, and a lookup on the HTTPS lane allocates
    /// nothing.
    /// </summary>
    private readonly ConditionalWeakTable<VmRecord, WebSite> _sites = new();

    public PlatformWebSiteDirectory(PlatformIndex index) => _index = index;

    public ValueTask<WebSite?> FindAsync(string vmName, CancellationToken ct)
    {
        var vm = _index.GetByName(vmName);
        if (vm is null || vm.State == VmState.Deleting)
            return ValueTask.FromResult<WebSite?>(null);
        return ValueTask.FromResult<WebSite?>(_sites.GetValue(vm, static v => new WebSite(v.Id, v.Name, v.AccountId, v.ProxyPort, v.IsPublic)));
    }
}

/// <summary><see cref="IWebAccessService"/> over <see cref="ShareService"/>.</summary>
public sealed class PlatformWebAccessService : IWebAccessService
{
    private readonly ShareService _shares;
    private readonly PlatformIndex _index;

    public PlatformWebAccessService(ShareService shares, PlatformIndex index)
    {
        _shares = shares;
        _index = index;
    }

    public async ValueTask<bool> HasAccessAsync(WebSite site, WebUser user, CancellationToken ct)
    {
        var vm = _index.GetById(site.VmId);
        if (vm is null)
            return false;
        // The front door asks about shares only; "public" is its own decision (and never covers alternate ports).
        return await _shares.CanAccessWebAsync(vm with { IsPublic = false }, user.UserId, ct).ConfigureAwait(false);
    }

    public async ValueTask<bool> RedeemShareLinkAsync(WebSite site, WebUser user, string shareToken, CancellationToken ct)
    {
        var vm = await _shares.RedeemLinkAsync(shareToken, user.UserId, ct).ConfigureAwait(false);
        return vm is not null && vm.Id == site.VmId;
    }
}

/// <summary>
/// <see cref="IWebUpstreamLocator"/> over <see cref="IVmRuntime.GetAddressAsync"/>, cached briefly so a
/// busy site does not ask the container engine on every request.
/// </summary>
/// <remarks>
/// An address must never carry one VM's traffic to another. Entries are keyed by VM id (never by name, which a
/// rename or a new VM may take over) and each remembers the VM's record in <see cref="PlatformIndex"/> as it was
/// read <i>before</i> the engine was asked: the index swaps in a new record on every committed change (rm, restart,
/// rename, resize, a state found by reconciliation), so an entry is used only while its VM's record is the very
/// same object and Running. The platform writes the record before it asks the runtime to act (rm marks the VM
/// Deleting first), so the entry is gone before the engine frees the address. What a record cannot show (a
/// container that died or restarted on its own) is bounded by <see cref="CacheLifetime"/>, and covered by the
/// runtime's quarantine of freed addresses, which must outlast it; a forward that finds nobody at the address
/// drops the entry (<see cref="Forget"/>).
/// </remarks>
public sealed class RuntimeWebUpstreamLocator : IWebUpstreamLocator
{
    /// <summary>
    /// How long a known address is reused without asking the engine again. Short: a VM stopped behind the
    /// platform's back is noticed within it. Absent addresses are not cached.
    /// </summary>
    public static readonly TimeSpan CacheLifetime = TimeSpan.FromSeconds(2);

    private readonly Func<string, CancellationToken, Task<IPAddress?>> _lookup;
    private readonly Func<string, object?> _currentRecord;
    private readonly TimeProvider _time;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Entry> _cache = new(StringComparer.Ordinal);

    private sealed record Entry(IPAddress Address, long Stamp, object Record);

    public RuntimeWebUpstreamLocator(IVmRuntime runtime, PlatformIndex index, TimeProvider time)
        : this(runtime.GetAddressAsync, id => index.GetById(id) is { State: VmState.Running } vm ? vm : null, time)
    {
    }

    /// <param name="lookup">The engine's answer for a VM id.</param>
    /// <param name="currentRecord">The VM's current record when it is running, else null; a new object on every change.</param>
    internal RuntimeWebUpstreamLocator(Func<string, CancellationToken, Task<IPAddress?>> lookup, Func<string, object?> currentRecord, TimeProvider time)
    {
        _lookup = lookup;
        _currentRecord = currentRecord;
        _time = time;
    }

    public async ValueTask<IPAddress?> GetAddressAsync(string vmId, CancellationToken ct)
    {
        var record = _currentRecord(vmId);
        if (record is null)
        {
            _cache.TryRemove(vmId, out _);
            return null;
        }
        long now = _time.GetTimestamp();
        if (_cache.TryGetValue(vmId, out var entry) && ReferenceEquals(entry.Record, record)
            && _time.GetElapsedTime(entry.Stamp, now) < CacheLifetime)
            return entry.Address;
        var address = await _lookup(vmId, ct).ConfigureAwait(false);
        if (address is null)
            _cache.TryRemove(vmId, out _);
        else
            _cache[vmId] = new Entry(address, now, record);
        return address;
    }

    public void Forget(string vmId) => _cache.TryRemove(vmId, out _);
}

/// <summary><see cref="IWebTokenValidator"/> over C2's <see cref="TokenAuthenticator"/>.</summary>
public sealed class PlatformTokenValidator : IWebTokenValidator
{
    /// <summary>Why a token of an account with an unverified address is refused, and what to do.</summary>
    public const string UnverifiedAddress = "the token's account has not verified its e-mail address; log in once with a link sent by e-mail to verify it";

    /// <summary>Why a token of a VM- or tag-scoped key is refused at another VM's proxy.</summary>
    public const string OutOfKeyScope = "the token's key is not scoped to this VM";

    private readonly TokenAuthenticator _authenticator;
    private readonly PlatformIndex? _index;
    private readonly string? _vmNamespaceSuffix;

    public PlatformTokenValidator(TokenAuthenticator authenticator, PlatformIndex? index = null, PlatformOptions? options = null)
    {
        _authenticator = authenticator;
        _index = index;
        _vmNamespaceSuffix = options is null ? null : "." + options.VmDomain;
    }

    public async ValueTask<TokenValidation> ValidateAsync(string token, string @namespace, CancellationToken ct)
    {
        var result = await _authenticator.AuthenticateAsync(token, @namespace, ct).ConfigureAwait(false);
        // A principal names a person to the VM (X-ExeDev-Email, X-ExeDev-UserID): only an account that proved its
        // address may be one. Otherwise an address typed at sign-up would be announced as an identity.
        if (result.Identity is { Account.EmailVerified: false })
            return TokenValidation.Invalid(UnverifiedAddress);
        if (result.Identity is { } identity)
        {
            // A key limited to a VM or a tag (ssh-key add --vm/--tag) signs tokens for any namespace: its scope is
            // checked here for the VM's proxy (v0@NAME.VM-DOMAIN), as the commands and SSH check it.
            if (_index is not null && _vmNamespaceSuffix is not null && identity.Key.Permissions is not null
                && @namespace.StartsWith("v0@", StringComparison.Ordinal) && @namespace.EndsWith(_vmNamespaceSuffix, StringComparison.Ordinal))
            {
                string vmName = @namespace[3..^_vmNamespaceSuffix.Length];
                if (!KeyScope.AllowsVmToken(identity.Key, vmName, _index.GetByName(vmName)))
                    return TokenValidation.Invalid(OutOfKeyScope);
            }
            return TokenValidation.Valid(new TokenPrincipal(
                new WebUser(identity.Account.Id, identity.Account.Email),
                identity.Key.Fingerprint,
                identity.AllowedCommands,
                identity.CtxRawJson) { ValidatorState = identity });
        }
        return result.Failure == TokenFailure.KeyExpired
            ? new TokenValidation(TokenValidationStatus.KeyExpired, result.Error)
            : TokenValidation.Invalid(result.Error ?? "invalid token");
    }
}

/// <summary><see cref="IExecCommandRunner"/> over <see cref="ShellLexer"/> and <see cref="CommandDispatcher"/>.</summary>
public sealed class PlatformExecCommandRunner : IExecCommandRunner
{
    private readonly CommandDispatcher _dispatcher;

    public PlatformExecCommandRunner(CommandDispatcher dispatcher) => _dispatcher = dispatcher;

    public bool TrySplit(string commandLine, out IReadOnlyList<string> argv)
    {
        bool ok = ShellLexer.TrySplit(commandLine, out var list, out _);
        argv = list ?? new List<string>();
        return ok;
    }

    public string? Resolve(IReadOnlyList<string> argv) => CommandDispatcher.Resolve(argv);

    public bool IsAllowed(IReadOnlyCollection<string> allowedCommands, IReadOnlyList<string> argv) =>
        CommandDispatcher.IsAllowed(allowedCommands as IReadOnlyList<string> ?? allowedCommands.ToList(), argv);

    public async Task<ExecOutcome> RunAsync(ExecInvocation invocation, CancellationToken ct)
    {
        var identity = invocation.Principal.ValidatorState as TokenIdentity
            ?? throw new InvalidOperationException("the principal was not made by PlatformTokenValidator");
        // exe.dev: everything goes to stdout.
        using var output = new StringWriter();
        var context = new CommandContext
        {
            Account = identity.Account,
            CurrentKey = identity.Key,
            Stdout = output,
            Stderr = output,
            ForceJson = true,
            Interactive = false,
            AllowedCommands = identity.AllowedCommands,
            TokenVm = identity.Vm,
            Source = "https /exec",
            CancellationToken = ct,
        };
        int exit = await _dispatcher.RunAsync(context, invocation.Argv).ConfigureAwait(false);
        return new ExecOutcome(exit, output.ToString());
    }
}

/// <summary>
/// The platform's <see cref="ILoginLinkIssuer"/> (the <c>browser</c> command): a one-time link that logs
/// the browser in on the control host, from where every site it may see logs it in with one redirect.
/// </summary>
public sealed class FrontDoorLoginLinkIssuer : ILoginLinkIssuer
{
    private readonly ILoginLinkService _links;
    private readonly ControlUrls _urls;

    public FrontDoorLoginLinkIssuer(ILoginLinkService links, ControlUrls urls)
    {
        _links = links;
        _urls = urls;
    }

    public async Task<Uri> IssueLoginLinkAsync(Account account, CancellationToken ct)
    {
        string secret = await _links.IssueAsync(new WebUser(account.Id, account.Email), _urls.ControlHost, ct).ConfigureAwait(false);
        return new Uri(_urls.ControlLoginLink(secret));
    }
}
