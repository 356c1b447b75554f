using Microsoft.Extensions.Logging;
using Warren.Platform.Mail;
using Warren.Platform.Vms;

namespace Warren.Edge.Smtp;

/// <summary>
/// <see cref="IInboundMailSink"/> over the platform: <see cref="InboundMailPolicy"/> decides at RCPT,
/// <see cref="ReceiveEmailService"/> writes each recipient's copy into its VM's Maildir.
/// </summary>
/// <remarks>
/// The policy runs again at delivery (the VM may have stopped or been switched off since RCPT). A message
/// for several recipients is answered with the first failure if any copy failed: the sender then retries all
/// of them, and a recipient that already got its copy may get it twice — RFC 5321 §6.1 prefers a duplicate
/// to a loss, and an SMTP reply to DATA cannot speak per recipient.
/// </remarks>
public sealed class PlatformInboundMailSink(InboundMailPolicy policy, ReceiveEmailService mail, ILogger<PlatformInboundMailSink> log) : IInboundMailSink
{
    public SmtpReply CheckRecipient(SmtpAddress recipient) => ReplyFor(policy.Check(recipient.Domain).Decision) ?? SmtpReply.Ok;

    public async Task<SmtpReply> DeliverAsync(InboundMessage message, CancellationToken ct)
    {
        SmtpReply? failure = null;
        foreach (var recipient in message.Recipients)
        {
            var check = policy.Check(recipient.Domain);
            if (check.Decision != RecipientDecision.Accept || check.Vm is not VmRecord vm)
            {
                failure ??= ReplyFor(check.Decision) ?? SmtpReply.DeliveryFailed;
                continue;
            }
            var outcome = await mail.DeliverAsync(vm, recipient.ToString(), message.TraceHeaders(recipient), message.Content, ct).ConfigureAwait(false);
            if (outcome == MaildirOutcome.Full) failure ??= SmtpReply.MailboxFull;
            else if (outcome != MaildirOutcome.Delivered) failure ??= SmtpReply.DeliveryFailed;
        }
        if (failure is { } f)
            log.LogInformation("smtp.delivery id={Id} recipients={Count} reply={Code}", message.Id, message.Recipients.Count, f.Code);
        return failure ?? new SmtpReply(250, "2.0.0", $"delivered as {message.Id}");
    }

    private static SmtpReply? ReplyFor(RecipientDecision decision) => decision switch
    {
        RecipientDecision.Accept => null,
        RecipientDecision.NotOurDomain => SmtpReply.NotOurDomain,
        RecipientDecision.VmNotRunning => SmtpReply.VmNotRunning,
        _ => SmtpReply.NoSuchMailbox,
    };
}
