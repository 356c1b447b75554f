namespace Warren.Platform.Interactive;

/// <summary>Sends plain-text e-mail (verification codes, share invitations); the SMTP front door implements it.</summary>
public interface IEmailSender
{
    Task SendAsync(string to, string subject, string textBody, CancellationToken ct);
}
