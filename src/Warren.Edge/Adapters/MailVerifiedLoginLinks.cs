using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Warren.Edge.Http;
using Warren.Platform.Accounts;

namespace Warren.Edge.Adapters;

/// <summary>
/// The front door's <see cref="ILoginLinkService"/>, plus one rule: a link that was mailed to the account's
/// address (<see cref="IssueMailedAsync"/>, the login page's "email me a link") proves, when it is used, that its
/// user reads that mailbox, so the address counts as verified from then on
/// (<see cref="AccountService.MarkEmailVerifiedAsync"/>). Links shown in a terminal (<c>browser</c>) prove nothing
/// of the sort and pass through unchanged. Over <see cref="SqliteLoginLinks"/> (the daemon's) the "mailed" mark is
/// a column of the link's row, so it survives a restart with the link; over another service it is remembered here.
/// </summary>
public sealed class MailVerifiedLoginLinks : ILoginLinkService
{
    /// <summary>Mailed links remembered at most (as many as the in-memory service keeps); beyond it a link still logs in but does not verify.</summary>
    public const int MaxOutstandingMailedLinks = InMemoryLoginLinkService.MaxOutstandingLinks;

    private readonly ILoginLinkService _inner;
    private readonly AccountService _accounts;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, (string AccountId, string Email, DateTimeOffset ExpiresAt)> _mailed = new(StringComparer.Ordinal);

    public MailVerifiedLoginLinks(ILoginLinkService inner, AccountService accounts, TimeProvider time)
    {
        _inner = inner;
        _accounts = accounts;
        _time = time;
    }

    public ValueTask<string> IssueAsync(WebUser user, string? host, CancellationToken ct) => _inner.IssueAsync(user, host, ct);

    /// <summary>Issues a link that is about to be mailed to <paramref name="user"/>'s address.</summary>
    public async ValueTask<string> IssueMailedAsync(WebUser user, string? host, CancellationToken ct)
    {
        if (_inner is SqliteLoginLinks persistent)
            return await persistent.IssueAsync(user, host, mailed: true, ct).ConfigureAwait(false);
        string secret = await _inner.IssueAsync(user, host, ct).ConfigureAwait(false);
        var now = _time.GetUtcNow();
        if (_mailed.Count >= MaxOutstandingMailedLinks)
        {
            foreach (var (key, value) in _mailed)
                if (value.ExpiresAt <= now) _mailed.TryRemove(key, out _);
        }
        if (_mailed.Count < MaxOutstandingMailedLinks)
            _mailed[LoginLinks.Hash(secret)] = (user.UserId, user.Email, now + LoginLinks.LinkLifetime);
        return secret;
    }

    public async ValueTask<LoginGrant?> ConsumeAsync(string secret, CancellationToken ct)
    {
        if (_inner is SqliteLoginLinks persistent)
        {
            var link = await persistent.ConsumeLinkAsync(secret, ct).ConfigureAwait(false);
            if (link is { Mailed: true })
                await _accounts.MarkEmailVerifiedAsync(link.Grant.User.UserId, link.Grant.User.Email, ct).ConfigureAwait(false);
            return link?.Grant;
        }
        var grant = await _inner.ConsumeAsync(secret, ct).ConfigureAwait(false);
        if (_mailed.TryRemove(LoginLinks.Hash(secret), out var mailed) && grant is not null && grant.User.UserId == mailed.AccountId
            && mailed.ExpiresAt > _time.GetUtcNow())
            await _accounts.MarkEmailVerifiedAsync(mailed.AccountId, mailed.Email, ct).ConfigureAwait(false);
        return grant;
    }

    /// <summary>
    /// Wraps the <see cref="ILoginLinkService"/> registered so far (the front door's in-memory one by default) so that
    /// the front door and <see cref="MailedLoginLinkSender"/> share one instance of this class.
    /// </summary>
    internal static void Register(IServiceCollection services)
    {
        var existing = services.LastOrDefault(d => d.ServiceType == typeof(ILoginLinkService));
        if (existing is null || services.Any(d => d.ServiceType == typeof(MailVerifiedLoginLinks))) return; // none, or wrapped already
        services.Remove(existing);
        services.AddSingleton(sp => new MailVerifiedLoginLinks(Create(sp, existing), sp.GetRequiredService<AccountService>(), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<ILoginLinkService>(sp => sp.GetRequiredService<MailVerifiedLoginLinks>());
    }

    private static ILoginLinkService Create(IServiceProvider sp, ServiceDescriptor d)
        => (ILoginLinkService)(d.ImplementationInstance
            ?? d.ImplementationFactory?.Invoke(sp)
            ?? ActivatorUtilities.CreateInstance(sp, d.ImplementationType!));
}
