using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Warren.Edge.Smtp;

namespace Warren.Edge.Tests.Smtp;

/// <summary>A raw SMTP client over TCP (optionally TLS) that reads whole replies, bounded in time.</summary>
internal sealed partial class SmtpTestClient : IAsyncDisposable
{
    /// <summary>Bound for one reply; replies on loopback take milliseconds.</summary>
    public static readonly TimeSpan ReplyTimeout = TimeSpan.FromSeconds(30);

    private readonly TcpClient _tcp;
    private Stream _stream;
    private readonly byte[] _buffer = new byte[8192];
    private int _start, _end;

    private SmtpTestClient(TcpClient tcp)
    {
        _tcp = tcp;
        _stream = tcp.GetStream();
    }

    public static async Task<SmtpTestClient> ConnectAsync(IPEndPoint endpoint)
    {
        var tcp = new TcpClient(endpoint.AddressFamily);
        await tcp.ConnectAsync(endpoint);
        return new SmtpTestClient(tcp);
    }

    public Task SendRawAsync(byte[] bytes) => _stream.WriteAsync(bytes).AsTask();
    public Task SendRawAsync(string text) => SendRawAsync(Encoding.ASCII.GetBytes(text));
    public Task SendAsync(string line) => SendRawAsync(line + "\r\n");

    /// <summary>Sends a command and returns its (possibly multi-line) reply.</summary>
    public async Task<Reply> CommandAsync(string line)
    {
        await SendAsync(line);
        return await ReadReplyAsync();
    }

    public sealed record Reply(int Code, IReadOnlyList<string> Lines)
    {
        public string Text => string.Join("\n", Lines);
        public override string ToString() => Text;
    }

    /// <summary>Reads one reply; null when the server closed the connection first.</summary>
    public async Task<Reply> ReadReplyAsync()
    {
        var lines = new List<string>();
        while (true)
        {
            var line = await ReadLineAsync() ?? throw new IOException("connection closed; got so far: " + string.Join("|", lines));
            Assert.Matches(ReplyLine(), line);
            lines.Add(line);
            if (line[3] == ' ') return new Reply(int.Parse(line[..3]), lines);
        }
    }

    /// <summary>True when the server closes the connection (after any remaining bytes).</summary>
    public async Task<bool> IsClosedAsync()
    {
        try { return await ReadLineAsync() is null; }
        catch (IOException) { return true; }
    }

    public async Task<string?> ReadLineAsync()
    {
        using var timeout = new CancellationTokenSource(ReplyTimeout);
        while (true)
        {
            int lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (lf >= 0)
            {
                string line = Encoding.ASCII.GetString(_buffer, _start, lf - _start).TrimEnd('\r');
                _start = lf + 1;
                return line;
            }
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            int n = await _stream.ReadAsync(_buffer.AsMemory(_end), timeout.Token);
            if (n == 0) return null;
            _end += n;
        }
    }

    public async Task StartTlsAsync(string serverName)
    {
        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false, (_, _, _, _) => true);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = serverName });
        _stream = ssl;
    }

    public string? TlsServerSubject => (_stream as SslStream)?.RemoteCertificate?.Subject;

    [GeneratedRegex(@"^\d{3}[ -]")]
    private static partial Regex ReplyLine();

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _tcp.Dispose();
    }
}

/// <summary>An <see cref="IInboundMailSink"/> that accepts <c>*@ok.example</c>, refuses the rest, and keeps messages.</summary>
internal sealed class RecordingSink : IInboundMailSink
{
    public List<InboundMessage> Messages { get; } = new();
    public SmtpReply DeliveryReply { get; set; } = SmtpReply.Delivered;
    public bool ThrowOnDelivery { get; set; }

    public SmtpReply CheckRecipient(SmtpAddress recipient) =>
        recipient.Domain.Equals("ok.example", StringComparison.OrdinalIgnoreCase) ? SmtpReply.Ok : SmtpReply.NoSuchMailbox;

    public Task<SmtpReply> DeliverAsync(InboundMessage message, CancellationToken ct)
    {
        if (ThrowOnDelivery) throw new InvalidOperationException("sink failure");
        lock (Messages) Messages.Add(message with { Content = message.Content.ToArray() });
        return Task.FromResult(DeliveryReply);
    }
}
