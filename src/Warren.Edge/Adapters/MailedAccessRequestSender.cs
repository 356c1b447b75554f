using Microsoft.Extensions.Logging;
using Warren.Edge.Http;
using Warren.Platform;
using Warren.Platform.Accounts;
using Warren.Platform.Audit;
using Warren.Platform.Commands;
using Warren.Platform.Interactive;

namespace Warren.Edge.Adapters;

/// <summary>
/// The "request access" form: mails the site's owner through the platform's relay who asks, their
/// optional message, and the <c>share add</c> command that lets them in, with the requester's address as
/// <c>Reply-To</c>; records the request in the audit log. The requester never sees the owner's address.
/// </summary>
public sealed class MailedAccessRequestSender(
    AccountService accounts,
    PlatformOptions platform,
    IEmailSender email,
    AuditLog audit,
    TimeProvider time,
    ILogger<MailedAccessRequestSender> logger) : IAccessRequestSender
{
    /// <summary>The audit log's command name for a request made on the web.</summary>
    public const string AuditCommand = "request-access";

    public async ValueTask SendAccessRequestAsync(WebSite site, WebUser requester, string? message, CancellationToken ct)
    {
        var owner = await accounts.GetAsync(site.OwnerUserId, ct).ConfigureAwait(false)
            ?? throw new InvalidOperationException($"the owner of {site.Name} has no account");
        string ssh = platform.SshPort == 22 ? $"ssh {platform.ControlHost}" : $"ssh -p {platform.SshPort} {platform.ControlHost}";
        string grant = $"{ssh} share add {ShellLexer.Quote(site.Name)} {ShellLexer.Quote(requester.Email)}";
        string url = platform.HttpsPort == 443
            ? $"https://{site.Name}.{platform.VmDomain}/"
            : $"https://{site.Name}.{platform.VmDomain}:{platform.HttpsPort}/";
        var body = new System.Text.StringBuilder()
            .Append(requester.Email).Append(" asks for access to ").Append(url).Append(".\n\n");
        if (message is not null)
        {
            body.Append("Their message:\n\n");
            foreach (var line in message.Split('\n'))
                body.Append("> ").Append(line).Append('\n');
            body.Append('\n');
        }
        body.Append("To let them in, run:\n\n    ").Append(grant).Append("\n\n")
            .Append("If you do not know them, ignore this message.\n");
        string subject = $"{requester.Email} asks for access to {site.Name}";
        // Answering the mail reaches the person who asked (RFC 5322 §3.6.2 Reply-To), never the relay's own address.
        if (email is IReplyToEmailSender withReplyTo)
            await withReplyTo.SendAsync(owner.Email, requester.Email, subject, body.ToString(), ct).ConfigureAwait(false);
        else
            await email.SendAsync(owner.Email, subject, body.ToString(), ct).ConfigureAwait(false);
        try
        {
            await audit.AppendAsync(new AuditEntry(time.GetUtcNow(), requester.UserId, KeyFingerprint: null, Source: "https",
                AuditCommand, [site.Name], Result: "ok", ErrorCode: null, Duration: null), CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // The mail is out; a missing audit line must not turn that into a failure for the requester.
            logger.LogWarning(e, "Could not write the audit entry for {UserId}'s access request for {Vm}", requester.UserId, site.Name);
        }
    }
}
