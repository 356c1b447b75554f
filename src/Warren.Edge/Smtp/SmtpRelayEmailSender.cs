using MailKit.Net.Smtp;
using MailKit.Security;
using Microsoft.Extensions.Logging;
using MimeKit;
using Warren.Edge.Adapters;
using Warren.Platform.Interactive;

namespace Warren.Edge.Smtp;

/// <summary>
/// Sends the platform's plain-text mail (sign-up codes, share invitations) through the configured
/// SMTP relay with MailKit. One connection per message: mail is rare and a held connection would
/// go stale behind the relay's idle timeout.
/// </summary>
public sealed class SmtpRelayEmailSender(SmtpRelayOptions options, ILogger<SmtpRelayEmailSender> logger) : IEmailSender, IReplyToEmailSender
{
    public Task SendAsync(string to, string subject, string textBody, CancellationToken ct) => SendAsync(to, replyTo: null, subject, textBody, ct);

    public async Task SendAsync(string to, string? replyTo, string subject, string textBody, CancellationToken ct)
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(options.From));
        message.To.Add(MailboxAddress.Parse(to));
        if (replyTo is not null)
            message.ReplyTo.Add(MailboxAddress.Parse(replyTo));
        message.Subject = subject;
        message.Body = new TextPart("plain") { Text = textBody };

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.Timeout);
        using var client = new SmtpClient();
        var security = options.Security switch
        {
            "None" => SecureSocketOptions.None,
            "SslOnConnect" => SecureSocketOptions.SslOnConnect,
            _ => SecureSocketOptions.StartTlsWhenAvailable,
        };
        try
        {
            await client.ConnectAsync(options.Host, options.Port, security, timeout.Token).ConfigureAwait(false);
            if (!string.IsNullOrEmpty(options.Username))
                await client.AuthenticateAsync(options.Username, options.Password ?? "", timeout.Token).ConfigureAwait(false);
            await client.SendAsync(message, timeout.Token).ConfigureAwait(false);
            await client.DisconnectAsync(quit: true, timeout.Token).ConfigureAwait(false);
            logger.LogInformation("mail \"{Subject}\" sent to {To} via {Host}:{Port}", subject, to, options.Host, options.Port);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            // The relay's reply text can echo what we sent; only the exception type is logged.
            logger.LogWarning("mail to {To} via {Host}:{Port} failed: {Error}", to, options.Host, options.Port, e.GetType().Name);
            throw new IOException($"the mail relay {options.Host}:{options.Port} did not accept the message");
        }
    }
}
