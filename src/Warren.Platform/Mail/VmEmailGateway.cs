using Dapper;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Platform.Accounts;
using Warren.Platform.Interactive;
using Warren.Platform.Sharing;
using Warren.Platform.Storage;

namespace Warren.Platform.Mail;

/// <summary>What a VM asks the email gateway to send (exe.dev's docs: send email — <c>to</c>, <c>subject</c>, <c>body</c>, optional <c>reply_to</c>).</summary>
public sealed record VmEmailRequest(string? To, string? Subject, string? Body, string? ReplyTo);

public enum VmEmailOutcome
{
    Sent,
    /// <summary>A field is missing, too long or not an address.</summary>
    Invalid,
    /// <summary><c>to</c> is not the owner or someone the VM is shared with.</summary>
    RecipientNotAllowed,
    /// <summary>No outgoing mail relay is configured.</summary>
    Unavailable,
    /// <summary>The relay did not take the message.</summary>
    RelayFailed,
}

public sealed record VmEmailResult(VmEmailOutcome Outcome, string? Error)
{
    public static readonly VmEmailResult Sent = new(VmEmailOutcome.Sent, null);
}

/// <summary>
/// Mail out from a VM (exe.dev's docs: send email): plain text through the installation's SMTP relay, only to the
/// VM's owner and to people the VM is shared with whose address has proven itself with an account — which includes
/// everyone who signed in to the VM's site through a share link. An address that was only typed into
/// <c>share add</c> (a pending invitation with no account) is not mailed: claiming an address is not owning it, and
/// the gateway must not become a way to mail strangers. People who completed a verified login on the VM's site
/// (<see cref="SiteVisitorLog"/>) may be mailed too, as exe.dev's docs allow. The caller (the metadata service) has identified the VM and
/// applies the per-VM rate limit.
/// </summary>
/// <param name="sendWithReplyTo">Sends with a Reply-To (RFC 5322 §3.6.2) when the relay's sender can; else reply_to is dropped.</param>
public sealed class VmEmailGateway(WarrenDatabase db, IEmailSender? sender, VmEmailGateway.ReplyToSend? sendWithReplyTo = null,
    ILogger<VmEmailGateway>? log = null)
{
    public delegate Task ReplyToSend(string to, string replyTo, string subject, string textBody, CancellationToken ct);

    /// <summary>RFC 5322 §2.1.1: a line is at most 998 characters; the subject is one header line.</summary>
    public const int MaxSubjectLength = 998;
    /// <summary>Plain-text notes, not bulk: 64 KiB of text.</summary>
    public const int MaxBodyLength = 64 * 1024;

    private readonly ILogger _log = (ILogger?)log ?? NullLogger.Instance;

    public bool Enabled => sender is not null;

    /// <summary>Sends for VM <paramref name="vmId"/> of account <paramref name="ownerAccountId"/>, as identified by the caller.</summary>
    public async Task<VmEmailResult> SendAsync(string vmId, string ownerAccountId, VmEmailRequest request, CancellationToken ct)
    {
        if (Validate(request) is { } invalid) return invalid;
        string to = EmailAddress.Normalize(request.To);
        string? replyTo = string.IsNullOrWhiteSpace(request.ReplyTo) ? null : EmailAddress.Normalize(request.ReplyTo);
        if (sender is null) return new(VmEmailOutcome.Unavailable, "email is not configured on this server");
        if (!await MayReceiveAsync(vmId, ownerAccountId, to, ct))
            return new(VmEmailOutcome.RecipientNotAllowed,
                "recipient not allowed: to must be the VM's owner, someone the VM is shared with who has signed in, or someone who logged into the VM's site");
        try
        {
            if (replyTo is not null && sendWithReplyTo is not null)
                await sendWithReplyTo(to, replyTo, request.Subject!, request.Body!, ct);
            else
                await sender.SendAsync(to, request.Subject!, request.Body!, ct);
        }
        catch (IOException)
        {
            return new(VmEmailOutcome.RelayFailed, "the mail relay did not accept the message; try again later");
        }
        _log.LogInformation("vm.email-sent: VM {VmId} sent mail to {To}", vmId, to);
        return VmEmailResult.Sent;
    }

    /// <summary>The first problem with the request, or null. Pure, so property tests can drive it.</summary>
    public static VmEmailResult? Validate(VmEmailRequest request)
    {
        if (string.IsNullOrWhiteSpace(request.To)) return Invalid("to is required");
        if (request.Subject is null) return Invalid("subject is required");
        if (request.Body is null) return Invalid("body is required");
        if (!EmailAddress.TryNormalize(request.To, out _)) return Invalid("to is not an email address");
        if (!string.IsNullOrWhiteSpace(request.ReplyTo) && !EmailAddress.TryNormalize(request.ReplyTo, out _))
            return Invalid("reply_to is not an email address");
        if (request.Subject.Length > MaxSubjectLength) return Invalid($"subject is longer than {MaxSubjectLength} characters");
        if (request.Subject.AsSpan().IndexOfAny('\r', '\n') >= 0) return Invalid("subject must be one line");
        if (request.Body.Length > MaxBodyLength) return Invalid($"body is longer than {MaxBodyLength} characters");
        return null;
    }

    private static VmEmailResult Invalid(string message) => new(VmEmailOutcome.Invalid, message);

    /// <summary>The owner's proven address, the proven address of an account the VM is shared with, or of one that logged into the VM's site (<see cref="SiteVisitorLog"/>).</summary>
    private Task<bool> MayReceiveAsync(string vmId, string ownerAccountId, string to, CancellationToken ct) =>
        db.ReadAsync(async c => await c.ExecuteScalarAsync<long>($"""
            SELECT (SELECT COUNT(*) FROM accounts WHERE id = @owner AND email = @to AND {VerifiedAddressSql.Condition})
                 + (SELECT COUNT(*) FROM {ShareGrantees.VerifiedJoin} WHERE s.vm_id = @vm AND s.email = @to)
                 + (SELECT COUNT(*) FROM {SiteVisitorLog.RecipientJoin} WHERE v.vm_id = @vm AND v.email = @to)
            """, new { owner = ownerAccountId, vm = vmId, to }) > 0, ct);
}
