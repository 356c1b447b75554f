using System.Net;
using System.Text;
using CsCheck;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Edge.Smtp;

namespace Warren.Edge.Tests.Smtp;

/// <summary>
/// Hostile clients: random mixes of valid commands, broken commands, long lines, bare CR/LF and binary noise.
/// Whatever arrives, every line the server sends is a reply with a code, the session ends (QUIT, an error limit
/// or the end of input) and the server keeps accepting connections.
/// </summary>
public sealed class SmtpSessionFuzzTests : IAsyncLifetime
{
    /// <summary>One of the given values, uniformly.</summary>
    private static Gen<T> Pick<T>(params T[] values) => Gen.Int[0, values.Length - 1].Select(i => values[i]);

    /// <summary>Sessions per run: bounded so the test stays short on a loaded machine.</summary>
    private const int Sessions = 150;

    private readonly RecordingSink _sink = new();
    private InboundSmtpServer _server = null!;
    private IPEndPoint _endpoint = null!;

    public async Task InitializeAsync()
    {
        _server = new InboundSmtpServer(new InboundSmtpOptions
        {
            Endpoints = [new IPEndPoint(IPAddress.Loopback, 0)],
            ServerName = "mx.test",
            MaxMessageBytes = 4096,
            MaxRecipients = 5,
            // Generous: a fuzz session is one client at a time, but closing ones may still be counted.
            MaxConnectionsPerSource = 50,
        }, _sink, null, TimeProvider.System, NullLogger<InboundSmtpServer>.Instance);
        await _server.StartAsync(CancellationToken.None);
        _endpoint = _server.BoundEndpoints[0];
    }

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private static readonly Gen<byte[]> Piece = Gen.OneOf(
        Pick("EHLO a.example\r\n", "HELO a.example\r\n", "MAIL FROM:<s@a.example>\r\n", "MAIL FROM:<>\r\n",
            "RCPT TO:<r@ok.example>\r\n", "RCPT TO:<r@x.example>\r\n", "DATA\r\n", ".\r\n", "..\r\n", "RSET\r\n", "NOOP\r\n",
            "VRFY x\r\n", "STARTTLS\r\n", "MAIL FROM:<bad\r\n", "RCPT TO:<>\r\n", "\r\n", "\n", "\r", ".\n", "\r\n.\r\n",
            "MAIL FROM:<s@a.example> SIZE=999999999\r\n", "DATA extra\r\n", "BDAT 10 LAST\r\n")
            .Select(s => Encoding.ASCII.GetBytes(s)),
        Gen.Byte.Array[0, 64],
        Gen.Char['A', 'z'].Array[990, 1100].Select(cs => Encoding.ASCII.GetBytes(new string(cs) + "\r\n")));

    [Fact]
    public void RandomSessions_AlwaysGetCodedReplies_AndNeverStopTheServer()
    {
        Piece.Array[1, 40].Sample(pieces =>
        {
            RunSessionAsync(pieces).GetAwaiter().GetResult();
        }, iter: Sessions, threads: 1);
        // Still serving after everything above.
        using var tcp = new System.Net.Sockets.TcpClient();
        tcp.Connect(_endpoint);
        var greeting = new byte[64];
        int n = tcp.GetStream().ReadAsync(greeting).AsTask().WaitAsync(SmtpTestClient.ReplyTimeout).GetAwaiter().GetResult();
        Assert.StartsWith("220 ", Encoding.ASCII.GetString(greeting, 0, n));
    }

    private async Task RunSessionAsync(byte[][] pieces)
    {
        await using var c = await SmtpTestClient.ConnectAsync(_endpoint);
        Assert.Equal(220, (await c.ReadReplyAsync()).Code);
        try
        {
            foreach (var p in pieces) await c.SendRawAsync(p);
            await c.SendRawAsync("\r\n.\r\nQUIT\r\n");
        }
        catch (IOException)
        {
            // The server may close first (bare LF, too many errors); what it sent is still checked below.
        }
        // Read everything until the server closes; each line must be a coded reply.
        int lines = 0;
        while (true)
        {
            string? line;
            try { line = await c.ReadLineAsync(); }
            catch (IOException) { break; }
            if (line is null) break;
            Assert.Matches(@"^\d{3}[ -]", line);
            Assert.True(++lines < 10_000, "unbounded reply stream");
        }
    }
}
