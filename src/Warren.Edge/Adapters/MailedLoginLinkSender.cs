using Warren.Edge.Http;
using Warren.Edge.Http.Routing;
using Warren.Platform.Accounts;
using Warren.Platform.Interactive;

namespace Warren.Edge.Adapters;

/// <summary>
/// The login page's "email me a link": a one-time control-host login link mailed through the
/// platform's relay to an existing account's address. Unknown addresses get nothing, and the page
/// answers the same either way; addresses at domains reserved for examples (RFC 2606) are never mailed. Using the link verifies the address (<see cref="MailVerifiedLoginLinks"/>).
/// </summary>
public sealed class MailedLoginLinkSender(
    AccountService accounts,
    MailVerifiedLoginLinks links,
    ControlUrls urls,
    HttpFrontDoorOptions options,
    IEmailSender email) : ILoginEmailSender
{
    public async ValueTask SendLoginLinkAsync(string address, string redirect, CancellationToken ct)
    {
        if (!EmailAddress.TryNormalize(address, out var normalized) || ReservedEmailDomains.IsReserved(normalized)) return;
        var account = await accounts.FindByEmailAsync(normalized, ct).ConfigureAwait(false);
        if (account is null) return;
        var secret = await links.IssueMailedAsync(new WebUser(account.Id, account.Email), options.ControlHost, ct).ConfigureAwait(false);
        var link = urls.ControlLoginLink(secret) + "&redirect=" + Uri.EscapeDataString(redirect);
        await email.SendAsync(account.Email, $"Log in to {options.ControlHost}",
            $"Open this link to log in (it works once):\n\n{link}\n\n"
            + (account.EmailVerified ? "" : $"Opening it also confirms that {account.Email} is yours: do so only if you signed up at {options.ControlHost}.\n\n")
            + "If you did not ask for it, ignore this message.\n", ct).ConfigureAwait(false);
    }
}
