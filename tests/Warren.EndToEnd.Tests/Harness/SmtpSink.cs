using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;

namespace Warren.EndToEnd.Tests.Harness;

/// <summary>
/// A receiving SMTP endpoint on loopback (RFC 5321's minimal command set) that keeps each
/// message's DATA, so a test can read what the daemon's relay client (MailKit) sent.
/// </summary>
public sealed class SmtpSink : IAsyncDisposable
{
    /// <summary>Longest line accepted; RFC 5321 §4.5.3.1.6 caps a text line at 1000 octets.</summary>
    private const int MaxLineLength = 1000;

    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public Channel<string> Messages { get; } = Channel.CreateUnbounded<string>();
    public int Port { get; }

    /// <summary>
    /// The next message that contains <paramref name="text"/> once CRs and quoted-printable soft line breaks are removed
    /// (so a test sees whole lines), skipping others; null when none came within <paramref name="timeout"/>.
    /// </summary>
    public async Task<string?> NextContainingAsync(string text, TimeSpan timeout)
    {
        using var wait = new CancellationTokenSource(timeout);
        try
        {
            while (true)
            {
                var mail = (await Messages.Reader.ReadAsync(wait.Token)).Replace("\r", "").Replace("=\n", "");
                if (mail.Contains(text, StringComparison.Ordinal))
                    return mail;
            }
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    public SmtpSink()
    {
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _loop = AcceptLoopAsync();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (OperationCanceledException) { return; }
            catch (ObjectDisposedException) { return; }
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using var _ = client;
        var stream = client.GetStream();
        var reader = new StreamReader(stream, Encoding.ASCII);
        var writer = new StreamWriter(stream, Encoding.ASCII) { NewLine = "\r\n", AutoFlush = true };
        await writer.WriteLineAsync("220 sink ESMTP");
        while (await reader.ReadLineAsync(_stop.Token) is { } line)
        {
            if (line.Length > MaxLineLength) { await writer.WriteLineAsync("500 line too long"); return; }
            var verb = line.Split(' ', 2)[0].ToUpperInvariant();
            switch (verb)
            {
                case "EHLO": await writer.WriteLineAsync("250-sink\r\n250 8BITMIME"); break;
                case "HELO": case "MAIL": case "RCPT": case "RSET": case "NOOP": await writer.WriteLineAsync("250 ok"); break;
                case "DATA":
                    await writer.WriteLineAsync("354 end with .");
                    var body = new StringBuilder();
                    while (await reader.ReadLineAsync(_stop.Token) is { } dataLine && dataLine != ".")
                        body.AppendLine(dataLine.StartsWith("..") ? dataLine[1..] : dataLine);
                    Messages.Writer.TryWrite(body.ToString());
                    await writer.WriteLineAsync("250 queued");
                    break;
                case "QUIT": await writer.WriteLineAsync("221 bye"); return;
                default: await writer.WriteLineAsync("502 not implemented"); break;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        try { await _loop; } catch { }
    }
}
