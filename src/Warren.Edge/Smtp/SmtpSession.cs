using System.Buffers;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Warren.Edge.Tls;

namespace Warren.Edge.Smtp;

/// <summary>
/// One inbound SMTP connection (RFC 5321 server side, with ESMTP extensions SIZE (RFC 1870), PIPELINING (RFC 2920),
/// 8BITMIME (RFC 6152), ENHANCEDSTATUSCODES (RFC 2034) and STARTTLS (RFC 3207)). Every read is bounded in
/// length and time; every malformed command gets a reply and counts toward <see cref="InboundSmtpOptions.MaxErrorsPerConnection"/>.
/// </summary>
internal sealed class SmtpSession
{
    private readonly Stream _network;
    private readonly IPAddress _client;
    private readonly InboundSmtpOptions _options;
    private readonly IInboundMailSink _sink;
    private readonly TlsCertificateProvider? _certificates;
    private readonly TimeProvider _time;
    private readonly ILogger _log;
    private readonly SmtpLineReader _reader;
    private readonly ArrayBufferWriter<byte> _replies = new(1024);
    private Stream _stream;

    private string? _helo;
    private bool _extended;
    private bool _tls;
    private bool _inTransaction;
    private SmtpAddress? _sender;
    private readonly List<SmtpAddress> _recipients = new();
    private int _errors;
    private int _commands;
    private int _messages;

    public SmtpSession(Stream network, IPAddress client, InboundSmtpOptions options, IInboundMailSink sink,
        TlsCertificateProvider? certificates, TimeProvider time, ILogger log)
    {
        _network = _stream = network;
        _client = client;
        _options = options;
        _sink = sink;
        _certificates = certificates;
        _time = time;
        _log = log;
        _reader = new SmtpLineReader(network) { BeforeWait = FlushAsync };
    }

    public async Task RunAsync(CancellationToken ct)
    {
        try
        {
            Reply(new SmtpReply(220, null, $"{_options.ServerName} ESMTP Warren"));
            while (await NextCommandAsync(ct).ConfigureAwait(false)) { }
            await TryFlushAsync().ConfigureAwait(false);
            if (_stream is SslStream ssl)
            {
                // close_notify (RFC 8446 §6.1), so the client sees a clean end rather than a truncation.
                await ssl.ShutdownAsync().WaitAsync(TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
            }
        }
        catch (TimeoutException)
        {
            // The peer did not take close_notify within 5 seconds: the connection just ends.
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            await TryFinalReplyAsync(SmtpReply.ShuttingDown).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The TLS handshake took longer than TlsHandshakeTimeout: the connection just ends.
        }
        catch (Exception e) when (e is IOException or AuthenticationException or ObjectDisposedException)
        {
            // The peer went away or broke TLS: nothing to answer.
        }
        finally
        {
            if (!ReferenceEquals(_stream, _network))
                await _stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Reads and answers one command; false ends the session.</summary>
    private async Task<bool> NextCommandAsync(CancellationToken ct)
    {
        var (status, timedOut) = await ReadLineAsync(SmtpLimits.MaxCommandLineBytes, _options.CommandTimeout, ct).ConfigureAwait(false);
        if (timedOut) return await CloseWithAsync(SmtpReply.Timeout).ConfigureAwait(false);
        switch (status)
        {
            case SmtpLineStatus.EndOfStream:
                return false;
            case SmtpLineStatus.BareLineFeed:
                return await CloseWithAsync(SmtpReply.BareLineFeed).ConfigureAwait(false);
            case SmtpLineStatus.TooLong:
                return Error(SmtpReply.LineTooLong);
        }
        if (++_commands > _options.MaxCommandsPerConnection)
            return await CloseWithAsync(SmtpReply.TooManyCommands).ConfigureAwait(false);
        if (!IsPrintableAscii(_reader.Line.Span))
            return Error(SmtpReply.NonAscii);
        var command = SmtpCommandParser.ParseLine(Encoding.ASCII.GetString(_reader.Line.Span));
        switch (command.Verb)
        {
            case SmtpVerb.Ehlo:
            case SmtpVerb.Helo:
                return Hello(command);
            case SmtpVerb.Mail:
                return Mail(command.Argument);
            case SmtpVerb.Rcpt:
                return Rcpt(command.Argument);
            case SmtpVerb.Data:
                return await DataAsync(command.Argument, ct).ConfigureAwait(false);
            case SmtpVerb.Rset:
                if (command.Argument.Length > 0) return Error(new SmtpReply(501, "5.5.4", "RSET takes no argument"));
                ResetTransaction();
                Reply(SmtpReply.Ok);
                return true;
            case SmtpVerb.Noop:
                Reply(SmtpReply.Ok);
                return true;
            case SmtpVerb.Quit:
                Reply(new SmtpReply(221, "2.0.0", $"{_options.ServerName} closing connection"));
                await FlushAsync(ct).ConfigureAwait(false);
                return false;
            case SmtpVerb.Vrfy:
                // RFC 5321 §3.5.3: 252 when the server will not verify; no mailbox is confirmed or denied.
                Reply(new SmtpReply(252, "2.5.2", "cannot VRFY; send some mail and it will be tried"));
                return true;
            case SmtpVerb.Help:
                Reply(new SmtpReply(214, "2.0.0", "mail to anything@NAME.<vm-domain> is delivered to that VM when its owner turned receiving on"));
                return true;
            case SmtpVerb.StartTls:
                return await StartTlsAsync(command.Argument, ct).ConfigureAwait(false);
            case SmtpVerb.Expn:
                return Error(SmtpReply.NotImplemented);
            default:
                return Error(SmtpReply.SyntaxError);
        }
    }

    private bool Hello(SmtpCommand command)
    {
        if (!SmtpCommandParser.IsValidHeloArgument(command.Argument))
            return Error(new SmtpReply(501, "5.5.4", "give your host name: EHLO host.example"));
        ResetTransaction();
        _helo = command.Argument;
        _extended = command.Verb == SmtpVerb.Ehlo;
        if (!_extended)
        {
            Reply(new SmtpReply(250, null, _options.ServerName));
            return true;
        }
        var lines = new List<string>
        {
            _options.ServerName,
            $"SIZE {_options.MaxMessageBytes}",
            "PIPELINING",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        };
        if (_certificates is not null && !_tls) lines.Add("STARTTLS");
        for (int i = 0; i < lines.Count; i++)
            WriteLine($"250{(i < lines.Count - 1 ? '-' : ' ')}{lines[i]}");
        return true;
    }

    private bool Mail(string argument)
    {
        if (_helo is null) return Error(new SmtpReply(503, "5.5.1", "say EHLO first"));
        if (_inTransaction) return Error(new SmtpReply(503, "5.5.1", "sender already given"));
        if (_messages >= _options.MaxMessagesPerConnection)
            return Error(new SmtpReply(452, "4.5.3", "too many messages in one connection; reconnect"));
        if (!SmtpCommandParser.TryParseMailFrom(argument, out var sender, out var size, out var error))
            return Error(error);
        if (size > _options.MaxMessageBytes)
        {
            Reply(SmtpReply.MessageTooBig);
            return true;
        }
        _sender = sender;
        _inTransaction = true;
        Reply(new SmtpReply(250, "2.1.0", "sender OK"));
        return true;
    }

    private bool Rcpt(string argument)
    {
        if (!_inTransaction) return Error(new SmtpReply(503, "5.5.1", "need MAIL before RCPT"));
        if (!SmtpCommandParser.TryParseRcptTo(argument, out var recipient, out var error) || recipient is null)
            return Error(error);
        if (_recipients.Count >= _options.MaxRecipients)
        {
            Reply(SmtpReply.TooManyRecipients);
            return true;
        }
        var verdict = _sink.CheckRecipient(recipient);
        if (verdict.IsPositive) _recipients.Add(recipient);
        Reply(verdict.IsPositive ? new SmtpReply(250, "2.1.5", "recipient OK") : verdict);
        return true;
    }

    private async Task<bool> DataAsync(string argument, CancellationToken ct)
    {
        if (argument.Length > 0) return Error(new SmtpReply(501, "5.5.4", "DATA takes no argument"));
        if (!_inTransaction) return Error(new SmtpReply(503, "5.5.1", "need MAIL before DATA"));
        if (_recipients.Count == 0) return Error(SmtpReply.NoValidRecipients);
        Reply(new SmtpReply(354, null, "end data with <CR><LF>.<CR><LF>"));

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.DataTimeout);
        var content = new ArrayBufferWriter<byte>(16 * 1024);
        bool tooBig = false, lineTooLong = false;
        try
        {
            while (true)
            {
                var status = await _reader.ReadLineAsync(SmtpLimits.MaxTextLineBytes, timeout.Token).ConfigureAwait(false);
                if (status == SmtpLineStatus.EndOfStream) return false;
                // A bare LF is never a line end here, so "\n.\n" cannot end DATA early (the SMTP smuggling attack).
                if (status == SmtpLineStatus.BareLineFeed) return await CloseWithAsync(SmtpReply.BareLineFeed).ConfigureAwait(false);
                if (status == SmtpLineStatus.TooLong) { lineTooLong = true; continue; }
                var line = _reader.Line.Span;
                if (line.Length == 1 && line[0] == (byte)'.') break;
                // RFC 5321 §4.5.2: a leading dot was doubled by the client.
                if (line.Length > 0 && line[0] == (byte)'.') line = line[1..];
                if (tooBig || content.WrittenCount + line.Length + 2 > _options.MaxMessageBytes)
                {
                    tooBig = true;
                    continue;
                }
                content.Write(line);
                content.Write("\r\n"u8);
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return await CloseWithAsync(SmtpReply.Timeout).ConfigureAwait(false);
        }

        var sender = _sender;
        var recipients = _recipients.ToArray();
        ResetTransaction();
        _messages++;
        if (tooBig) { Reply(SmtpReply.MessageTooBig); return true; }
        if (lineTooLong) { Reply(SmtpReply.TextLineTooLong); return true; }

        var message = new InboundMessage(sender, recipients, _helo!, _client, _options.ServerName,
            (_extended ? "ESMTP" : "SMTP") + (_tls ? "S" : ""), NewId(), _time.GetUtcNow(), content.WrittenMemory);
        SmtpReply reply;
        using (var delivery = CancellationTokenSource.CreateLinkedTokenSource(ct))
        {
            delivery.CancelAfter(_options.DeliveryTimeout);
            try
            {
                reply = await _sink.DeliverAsync(message, delivery.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                // Never a crash for one bad delivery: the sender keeps the message and retries.
                _log.LogWarning("smtp.delivery_error id={Id} error={Error}", message.Id, e.GetType().Name);
                reply = SmtpReply.DeliveryFailed;
            }
        }
        Reply(reply);
        return true;
    }

    private async Task<bool> StartTlsAsync(string argument, CancellationToken ct)
    {
        if (_certificates is null) return Error(SmtpReply.NotImplemented);
        if (argument.Length > 0) return Error(new SmtpReply(501, "5.5.4", "STARTTLS takes no argument"));
        if (_tls) return Error(new SmtpReply(503, "5.5.1", "TLS already active"));
        if (_helo is null || !_extended) return Error(new SmtpReply(503, "5.5.1", "say EHLO first"));
        if (_reader.Buffered > 0)
        {
            // Commands pipelined after STARTTLS were sent in the clear and must not count as sent over TLS
            // (RFC 3207 §4.2, the STARTTLS command-injection attack): refuse and close.
            return await CloseWithAsync(new SmtpReply(554, "5.5.1", "data after STARTTLS")).ConfigureAwait(false);
        }
        Reply(new SmtpReply(220, "2.0.0", "ready to start TLS"));
        await FlushAsync(ct).ConfigureAwait(false);
        var ssl = new SslStream(_network, leaveInnerStreamOpen: false);
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct))
        {
            timeout.CancelAfter(_options.TlsHandshakeTimeout);
            var certificates = _certificates;
            // The certificate is picked by SNI, as for HTTPS: the VM domain's wildcard covers NAME.<vm-domain>.
            await ssl.AuthenticateAsServerAsync((_, hello, _, _) => ValueTask.FromResult(new SslServerAuthenticationOptions
            {
                ServerCertificateContext = certificates.Select(hello.ServerName),
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificateRequired = false,
            }), null, timeout.Token).ConfigureAwait(false);
        }
        _stream = ssl;
        _reader.SwitchTo(ssl);
        _tls = true;
        // RFC 3207 §4.2: forget everything learned before TLS, EHLO included.
        _helo = null;
        _extended = false;
        ResetTransaction();
        return true;
    }

    private void ResetTransaction()
    {
        _inTransaction = false;
        _sender = null;
        _recipients.Clear();
    }

    /// <summary>Answers a rejected command; too many of them close the connection.</summary>
    private bool Error(SmtpReply reply)
    {
        Reply(reply);
        if (++_errors < _options.MaxErrorsPerConnection) return true;
        Reply(SmtpReply.TooManyErrors);
        return false;
    }

    private async Task<bool> CloseWithAsync(SmtpReply reply)
    {
        await TryFinalReplyAsync(reply).ConfigureAwait(false);
        return false;
    }

    private Task TryFinalReplyAsync(SmtpReply reply)
    {
        Reply(reply);
        return TryFlushAsync();
    }

    /// <summary>Sends what is buffered before the connection closes; a peer that does not read gets 5 seconds.</summary>
    private async Task TryFlushAsync()
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await FlushAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    private async Task<(SmtpLineStatus Status, bool TimedOut)> ReadLineAsync(int maxBytes, TimeSpan timeout, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            return (await _reader.ReadLineAsync(maxBytes, cts.Token).ConfigureAwait(false), false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return (SmtpLineStatus.EndOfStream, true);
        }
    }

    private void Reply(SmtpReply reply) => WriteLine(reply.ToString());

    private void WriteLine(string line)
    {
        Encoding.ASCII.GetBytes(line, _replies);
        _replies.Write("\r\n"u8);
    }

    private async ValueTask FlushAsync(CancellationToken ct)
    {
        if (_replies.WrittenCount == 0) return;
        await _stream.WriteAsync(_replies.WrittenMemory, ct).ConfigureAwait(false);
        await _stream.FlushAsync(ct).ConfigureAwait(false);
        _replies.ResetWrittenCount();
    }

    private static bool IsPrintableAscii(ReadOnlySpan<byte> line) => !line.ContainsAnyExceptInRange((byte)' ', (byte)'~');

    /// <summary>A queue id for logs and the Received line: 12 random hex digits.</summary>
    private static string NewId() => Convert.ToHexString(RandomNumberGenerator.GetBytes(6));
}
