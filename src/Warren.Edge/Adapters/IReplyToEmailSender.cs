namespace Warren.Edge.Adapters;

/// <summary>
/// Mail whose answers go to someone other than the sender: the <c>Reply-To</c> field (RFC 5322 §3.6.2). An access
/// request is answered by the person who asked, not by the platform's relay address.
/// </summary>
public interface IReplyToEmailSender
{
    Task SendAsync(string to, string replyTo, string subject, string textBody, CancellationToken ct);
}
