using System.Buffers;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Platform.Accounts;
using Warren.Platform.Interactive;
using Warren.Platform.Runtime;
using Warren.Platform.Sharing;
using Warren.Platform.Vms;

namespace Warren.Platform.Mail;

/// <summary>
/// <c>share receive-email VM on|off</c> and delivery into the VM: the state lives in the VM record
/// (<see cref="VmRecord.ReceiveEmail"/>), the mail in the login user's <c>~/Maildir</c>.
/// </summary>
/// <remarks>
/// A full mailbox (<see cref="Maildir.MaxNewMessages"/> files in <c>new/</c>) turns receiving off and mails the
/// owner once; the message that found it full gets a temporary failure (452 4.2.2, RFC 3463 "mailbox full" is
/// a persistent transient condition), so nothing is written and the sender keeps it. Later messages are
/// refused at RCPT (550) until the owner turns receiving on again.
/// </remarks>
public sealed partial class ReceiveEmailService
{
    private readonly VmService _vms;
    private readonly ShareService _shares;
    private readonly AccountService _accounts;
    private readonly Maildir _maildir;
    private readonly PlatformOptions _options;
    private readonly TimeProvider _time;
    private readonly IEmailSender? _email;
    private readonly ILogger _log;

    /// <summary>
    /// One delivery per VM at a time: the count of <c>new/</c> and the write are then one step, so concurrent
    /// messages cannot together pass <see cref="Maildir.MaxNewMessages"/>.
    /// </summary>
    private readonly KeyedLock _mailboxes = new();

    public ReceiveEmailService(VmService vms, ShareService shares, AccountService accounts, IVmRuntime runtime,
        PlatformOptions options, TimeProvider time, IEmailSender? email = null, ILogger<ReceiveEmailService>? log = null)
    {
        _vms = vms;
        _shares = shares;
        _accounts = accounts;
        _maildir = new Maildir(runtime, time);
        _options = options;
        _time = time;
        _email = email;
        _log = (ILogger?)log ?? NullLogger.Instance;
    }

    /// <summary>The address shown to people: <c>anything@NAME.&lt;vm-domain&gt;</c>.</summary>
    public string AddressOf(string vmName) => $"anything@{vmName}.{_options.VmDomain}";

    /// <summary>
    /// Owner only (anyone else: "not found or access denied"). The VM must be running: the Maildir is made inside it,
    /// as its login user, before the switch flips, and a welcome message is delivered.
    /// </summary>
    public async Task<VmRecord> EnableAsync(string accountId, string vmName, CancellationToken ct = default)
    {
        var vm = await _shares.OwnedAsync(accountId, vmName, ct).ConfigureAwait(false);
        if (vm.State != VmState.Running)
            throw new PlatformException(PlatformErrorCodes.VmNotRunning,
                $"VM \"{vm.Name}\" is {vm.State.ToWire()}; start it to turn on e-mail (the Maildir is made inside it)");
        VmRecord updated;
        using (await _mailboxes.AcquireAsync(vm.Id, ct).ConfigureAwait(false))
        {
            await _maildir.CreateAsync(vm.Id, LoginUser(vm), ct).ConfigureAwait(false);
            updated = await _shares.SetReceiveEmailAsync(accountId, vm.Name, true, ct).ConfigureAwait(false);
            if (!vm.ReceiveEmail)
            {
                var outcome = await _maildir.DeliverAsync(vm.Id, LoginUser(vm), vm.Name, WelcomeMessage(vm.Name), ct).ConfigureAwait(false);
                if (outcome != MaildirOutcome.Delivered) LogWelcomeNotDelivered(_log, vm.Name, outcome.ToString());
            }
        }
        LogSwitched(_log, vm.Name, "on");
        return updated;
    }

    /// <summary>Owner only. Mail already delivered stays in the VM.</summary>
    public async Task<VmRecord> DisableAsync(string accountId, string vmName, CancellationToken ct = default)
    {
        var updated = await _shares.SetReceiveEmailAsync(accountId, vmName, false, ct).ConfigureAwait(false);
        LogSwitched(_log, updated.Name, "off");
        return updated;
    }

    /// <summary>
    /// Delivers one message for <paramref name="recipient"/>: <c>Delivered-To:</c> first (the envelope recipient,
    /// as exe.dev documents), then <paramref name="traceHeaders"/> (Return-Path and Received, RFC 5321 §4.4), then
    /// the message, with CRLF line ends turned into the LF a Unix Maildir holds.
    /// </summary>
    public async Task<MaildirOutcome> DeliverAsync(VmRecord vm, string recipient, string traceHeaders, ReadOnlyMemory<byte> message, CancellationToken ct = default)
    {
        var bytes = Compose(recipient, traceHeaders, message.Span);
        using (await _mailboxes.AcquireAsync(vm.Id, ct).ConfigureAwait(false))
        {
            var outcome = await _maildir.DeliverAsync(vm.Id, LoginUser(vm), vm.Name, bytes, ct).ConfigureAwait(false);
            if (outcome == MaildirOutcome.Full)
                await TurnOffFullMailboxAsync(vm, ct).ConfigureAwait(false);
            else
                LogDelivery(_log, vm.Name, outcome.ToString(), message.Length);
            return outcome;
        }
    }

    private async Task TurnOffFullMailboxAsync(VmRecord vm, CancellationToken ct)
    {
        var current = await _vms.FindByNameAsync(vm.Name, ct).ConfigureAwait(false);
        if (current is null || current.Id != vm.Id || !current.ReceiveEmail)
            return; // another delivery got here first, or the owner already switched it off
        await _shares.SetReceiveEmailAsync(vm.AccountId, vm.Name, false, ct).ConfigureAwait(false);
        LogMailboxFull(_log, vm.Name, Maildir.MaxNewMessages);
        var owner = await _accounts.GetAsync(vm.AccountId, ct).ConfigureAwait(false);
        if (owner is null || _email is null) return;
        string body = $"""
            {vm.Name}.{_options.VmDomain} has stopped receiving e-mail: ~/Maildir/new/ in the VM holds {Maildir.MaxNewMessages} or more messages.

            Mail sent to it meanwhile is refused, so senders know it was not delivered. Move or delete
            read messages (to ~/Maildir/cur/, say), then turn receiving on again:

                ssh {_options.ControlHost} share receive-email {vm.Name} on

            """;
        try
        {
            await _email.SendAsync(owner.Email, $"{vm.Name}: e-mail receiving turned off (mailbox full)", body, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogOwnerNotMailed(_log, vm.Name, e.GetType().Name);
        }
    }

    private string LoginUser(VmRecord vm) => vm.LoginUser ?? _options.DefaultLoginUser;

    /// <summary>
    /// Header lines + message; CRLF → LF (a lone CR or LF is kept as it is). <c>DKIM-Signature</c> fields (RFC 6376
    /// §3.5), folded lines included, are left out of the message's header section, as exe.dev documents: a signature
    /// is a reusable credential, and the VM gets the mail without it.
    /// </summary>
    public static byte[] Compose(string recipient, string traceHeaders, ReadOnlySpan<byte> message)
    {
        var buffer = new ArrayBufferWriter<byte>(message.Length + traceHeaders.Length + recipient.Length + 32);
        Encoding.ASCII.GetBytes("Delivered-To: " + recipient + "\n", buffer);
        Encoding.ASCII.GetBytes(traceHeaders.Replace("\r\n", "\n", StringComparison.Ordinal), buffer);
        bool inHeader = true, dropping = false;
        while (!message.IsEmpty)
        {
            int crlf = message.IndexOf("\r\n"u8);
            var line = crlf < 0 ? message : message[..crlf];
            message = crlf < 0 ? default : message[(crlf + 2)..];
            if (inHeader)
            {
                if (line.IsEmpty) inHeader = dropping = false;
                else if (line[0] is not ((byte)' ' or (byte)'\t')) dropping = IsField(line, "DKIM-Signature"u8);
                // RFC 5322 §2.2.3: a line starting with white space continues the field before it.
                if (dropping) continue;
            }
            buffer.Write(line);
            if (crlf >= 0) buffer.Write("\n"u8);
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Whether a header line starts field <paramref name="name"/> (case-insensitive, RFC 5322 §1.2.2; obsolete white space before the colon allowed, §4.5).</summary>
    private static bool IsField(ReadOnlySpan<byte> line, ReadOnlySpan<byte> name)
    {
        if (line.Length <= name.Length || !Ascii.EqualsIgnoreCase(line[..name.Length], name)) return false;
        var rest = line[name.Length..].TrimStart(" \t"u8);
        return !rest.IsEmpty && rest[0] == (byte)':';
    }

    private byte[] WelcomeMessage(string vmName)
    {
        string host = $"{vmName}.{_options.VmDomain}";
        var now = _time.GetUtcNow();
        string text = $"""
            Return-Path: <>
            From: Warren <postmaster@{_options.ControlHost}>
            To: <{AddressOf(vmName)}>
            Subject: E-mail to {host} is delivered here
            Date: {RfcDate(now)}
            Message-ID: <{_maildir.UniqueName(vmName)}@{_options.ControlHost}>
            MIME-Version: 1.0
            Content-Type: text/plain; charset=us-ascii

            Mail sent to any address at {host} is now written to ~/Maildir/new/
            in this VM, one file per message (Maildir format).

            Each message starts with a Delivered-To: header naming the address it
            was sent to; use it rather than To: or Cc:.

            Receiving stops by itself when ~/Maildir/new/ holds {Maildir.MaxNewMessages} messages: move
            messages you have read to ~/Maildir/cur/ (or delete them).

            To stop receiving: ssh {_options.ControlHost} share receive-email {vmName} off

            """;
        return Compose("welcome@" + host, "", Encoding.ASCII.GetBytes(text.Replace("\n", "\r\n", StringComparison.Ordinal)));
    }

    /// <summary>RFC 5322 §3.3 date-time in UTC: "Mon, 07 Dec 2026 09:00:00 +0000".</summary>
    public static string RfcDate(DateTimeOffset time) =>
        time.ToUniversalTime().ToString("ddd, dd MMM yyyy HH:mm:ss '+0000'", CultureInfo.InvariantCulture);

    [LoggerMessage(EventId = 2301, EventName = "mail.receive_switched", Level = LogLevel.Information, Message = "mail.receive_switched vm={Vm} receive_email={State}")]
    private static partial void LogSwitched(ILogger log, string vm, string state);

    [LoggerMessage(EventId = 2302, EventName = "mail.delivery", Level = LogLevel.Information, Message = "mail.delivery vm={Vm} outcome={Outcome} bytes={Bytes}")]
    private static partial void LogDelivery(ILogger log, string vm, string outcome, int bytes);

    [LoggerMessage(EventId = 2303, EventName = "mail.mailbox_full", Level = LogLevel.Warning, Message = "mail.mailbox_full vm={Vm} limit={Limit}: receive-email turned off")]
    private static partial void LogMailboxFull(ILogger log, string vm, int limit);

    [LoggerMessage(EventId = 2304, EventName = "mail.owner_not_mailed", Level = LogLevel.Warning, Message = "mail.owner_not_mailed vm={Vm} error={Error}")]
    private static partial void LogOwnerNotMailed(ILogger log, string vm, string error);

    [LoggerMessage(EventId = 2305, EventName = "mail.welcome_not_delivered", Level = LogLevel.Warning, Message = "mail.welcome_not_delivered vm={Vm} outcome={Outcome}")]
    private static partial void LogWelcomeNotDelivered(ILogger log, string vm, string outcome);
}
