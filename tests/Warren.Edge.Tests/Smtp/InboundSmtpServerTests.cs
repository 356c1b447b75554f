using System.Net;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Warren.Edge.Smtp;
using Warren.Edge.Tls;

namespace Warren.Edge.Tests.Smtp;

/// <summary>The SMTP front door on 127.0.0.1 (real sockets, real TLS), with a recording sink in place of the platform.</summary>
public sealed class InboundSmtpServerTests : IAsyncLifetime
{
    private readonly RecordingSink _sink = new();
    private readonly string _tlsDirectory = Directory.CreateTempSubdirectory("warren-smtp-tls-").FullName;
    private TlsCertificateProvider _certificates = null!;
    private readonly List<InboundSmtpServer> _servers = new();

    public Task InitializeAsync()
    {
        _certificates = TlsCertificateProvider.Create(new TlsOptions { DataDirectory = _tlsDirectory });
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        foreach (var s in _servers) await s.DisposeAsync();
        _certificates.Dispose();
        Directory.Delete(_tlsDirectory, recursive: true);
    }

    private async Task<IPEndPoint> StartAsync(Action<InboundSmtpOptions>? configure = null, bool tls = true)
    {
        var options = new InboundSmtpOptions { Endpoints = [new IPEndPoint(IPAddress.Loopback, 0)], ServerName = "mx.test" };
        configure?.Invoke(options);
        var server = new InboundSmtpServer(options, _sink, tls ? _certificates : null, TimeProvider.System, NullLogger<InboundSmtpServer>.Instance);
        _servers.Add(server);
        await server.StartAsync(CancellationToken.None);
        return server.BoundEndpoints[0];
    }

    private static async Task<SmtpTestClient> GreetedAsync(IPEndPoint endpoint)
    {
        var c = await SmtpTestClient.ConnectAsync(endpoint);
        var greeting = await c.ReadReplyAsync();
        Assert.Equal(220, greeting.Code);
        Assert.StartsWith("220 mx.test ESMTP", greeting.Text);
        return c;
    }

    /// <summary>EHLO, MAIL, one accepted RCPT and DATA (354): the client is ready to send the message.</summary>
    private static async Task OpenTransactionAsync(SmtpTestClient c, string mailArguments = "")
    {
        Assert.Equal(250, (await c.CommandAsync("EHLO client.example")).Code);
        Assert.Equal(250, (await c.CommandAsync("MAIL FROM:<a@b.example>" + mailArguments)).Code);
        Assert.Equal(250, (await c.CommandAsync("RCPT TO:<x@ok.example>")).Code);
        Assert.Equal(354, (await c.CommandAsync("DATA")).Code);
    }

    [Fact]
    public async Task Ehlo_AdvertisesExtensions()
    {
        await using var c = await GreetedAsync(await StartAsync());
        var ehlo = await c.CommandAsync("EHLO client.example");
        Assert.Equal(250, ehlo.Code);
        Assert.Equal(["250-mx.test", "250-SIZE 1048576", "250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250 STARTTLS"], ehlo.Lines);
        Assert.Equal("250 mx.test", (await c.CommandAsync("HELO client.example")).Text);
        Assert.Equal(501, (await c.CommandAsync("EHLO bad_name")).Code);
    }

    [Fact]
    public async Task Transaction_DeliversDotUnstuffedContent_WithTraceHeaders()
    {
        await using var c = await GreetedAsync(await StartAsync());
        await c.CommandAsync("EHLO client.example");
        Assert.Equal(250, (await c.CommandAsync("MAIL FROM:<a@sender.example> BODY=8BITMIME SIZE=100")).Code);
        Assert.Equal(250, (await c.CommandAsync("RCPT TO:<x@ok.example>")).Code);
        Assert.Equal("550 5.1.1 mailbox unavailable", (await c.CommandAsync("RCPT TO:<x@elsewhere.example>")).Text);
        Assert.Equal(550, (await c.CommandAsync("RCPT TO:<Postmaster>")).Code);
        Assert.Equal(354, (await c.CommandAsync("DATA")).Code);
        await c.SendRawAsync("Subject: hi\r\n\r\n..leading dot\r\nline two\r\n.\r\n");
        var done = await c.ReadReplyAsync();
        Assert.Equal(250, done.Code);
        var m = Assert.Single(_sink.Messages);
        Assert.Equal("Subject: hi\r\n\r\n.leading dot\r\nline two\r\n", Encoding.ASCII.GetString(m.Content.Span));
        Assert.Equal("a@sender.example", m.Sender!.ToString());
        Assert.Equal("x@ok.example", Assert.Single(m.Recipients).ToString());
        string trace = m.TraceHeaders(m.Recipients[0]);
        Assert.StartsWith("Return-Path: <a@sender.example>\r\nReceived: from client.example ([127.0.0.1])\r\n\tby mx.test (Warren) with ESMTP id ", trace);
        Assert.Contains("\tfor <x@ok.example>; ", trace);
        Assert.Equal(221, (await c.CommandAsync("QUIT")).Code);
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task Pipelining_RepliesInOrder()
    {
        await using var c = await GreetedAsync(await StartAsync());
        await c.CommandAsync("EHLO client.example");
        await c.SendRawAsync("MAIL FROM:<>\r\nRCPT TO:<a@ok.example>\r\nRCPT TO:<b@nope.example>\r\nRCPT TO:<c@ok.example>\r\nDATA\r\n");
        Assert.Equal(250, (await c.ReadReplyAsync()).Code);
        Assert.Equal(250, (await c.ReadReplyAsync()).Code);
        Assert.Equal(550, (await c.ReadReplyAsync()).Code);
        Assert.Equal(250, (await c.ReadReplyAsync()).Code);
        Assert.Equal(354, (await c.ReadReplyAsync()).Code);
        await c.SendRawAsync("x\r\n.\r\nNOOP\r\n");
        Assert.Equal(250, (await c.ReadReplyAsync()).Code);
        Assert.Equal(250, (await c.ReadReplyAsync()).Code);
        Assert.Equal(["a@ok.example", "c@ok.example"], Assert.Single(_sink.Messages).Recipients.Select(r => r.ToString()));
        Assert.Null(_sink.Messages[0].Sender);
    }

    [Fact]
    public async Task Size_DeclaredAndActual_AreEnforced()
    {
        await using var c = await GreetedAsync(await StartAsync(o => o.MaxMessageBytes = 100));
        await c.CommandAsync("EHLO client.example");
        Assert.Equal("552 5.3.4 message exceeds fixed maximum message size", (await c.CommandAsync("MAIL FROM:<a@b.example> SIZE=101")).Text);
        Assert.Equal(250, (await c.CommandAsync("MAIL FROM:<a@b.example> SIZE=100")).Code);
        await c.CommandAsync("RCPT TO:<x@ok.example>");
        Assert.Equal(354, (await c.CommandAsync("DATA")).Code);
        await c.SendRawAsync(string.Concat(Enumerable.Repeat(new string('y', 50) + "\r\n", 3)) + ".\r\n");
        Assert.Equal(552, (await c.ReadReplyAsync()).Code);
        Assert.Empty(_sink.Messages);
        // The session goes on: a message within the limit is taken.
        await c.CommandAsync("MAIL FROM:<a@b.example>");
        await c.CommandAsync("RCPT TO:<x@ok.example>");
        await c.CommandAsync("DATA");
        await c.SendRawAsync("small\r\n.\r\n");
        Assert.Equal(250, (await c.ReadReplyAsync()).Code);
    }

    [Fact]
    public async Task Recipients_AreBounded()
    {
        await using var c = await GreetedAsync(await StartAsync(o => o.MaxRecipients = 3));
        await c.CommandAsync("EHLO client.example");
        await c.CommandAsync("MAIL FROM:<a@b.example>");
        for (int i = 0; i < 3; i++) Assert.Equal(250, (await c.CommandAsync($"RCPT TO:<r{i}@ok.example>")).Code);
        Assert.Equal("452 4.5.3 too many recipients", (await c.CommandAsync("RCPT TO:<r9@ok.example>")).Text);
    }

    [Fact]
    public async Task Sequence_IsChecked()
    {
        await using var c = await GreetedAsync(await StartAsync());
        Assert.Equal(503, (await c.CommandAsync("MAIL FROM:<a@b.example>")).Code);
        await c.CommandAsync("EHLO client.example");
        Assert.Equal(503, (await c.CommandAsync("RCPT TO:<x@ok.example>")).Code);
        Assert.Equal(503, (await c.CommandAsync("DATA")).Code);
        await c.CommandAsync("MAIL FROM:<a@b.example>");
        Assert.Equal(503, (await c.CommandAsync("MAIL FROM:<a@b.example>")).Code);
        Assert.Equal("554 5.5.1 no valid recipients", (await c.CommandAsync("DATA")).Text);
        Assert.Equal(250, (await c.CommandAsync("RSET")).Code);
        Assert.Equal(252, (await c.CommandAsync("VRFY x@ok.example")).Code);
        Assert.Equal(502, (await c.CommandAsync("EXPN list")).Code);
        Assert.Equal(500, (await c.CommandAsync("XYZZY")).Code);
    }

    [Fact]
    public async Task LongLine_IsRefused_AndTheSessionGoesOn()
    {
        await using var c = await GreetedAsync(await StartAsync());
        Assert.Equal("500 5.5.6 line too long", (await c.CommandAsync("NOOP " + new string('x', 5000))).Text);
        Assert.Equal(250, (await c.CommandAsync("NOOP")).Code);
        await OpenTransactionAsync(c);
        await c.SendRawAsync(new string('z', 1200) + "\r\n.\r\n");
        Assert.Equal(500, (await c.ReadReplyAsync()).Code);
        Assert.Empty(_sink.Messages);
    }

    [Fact]
    public async Task BareLineFeed_EndsTheSession_SoNoSmuggledMessage()
    {
        await using var c = await GreetedAsync(await StartAsync());
        await OpenTransactionAsync(c);
        // "\n.\n" must not end DATA (SMTP smuggling); the second "message" must never be taken.
        await c.SendRawAsync("first\r\n\n.\nMAIL FROM:<evil@b.example>\r\nRCPT TO:<y@ok.example>\r\nDATA\r\nsmuggled\r\n.\r\n");
        Assert.Equal(500, (await c.ReadReplyAsync()).Code);
        Assert.True(await c.IsClosedAsync());
        Assert.Empty(_sink.Messages);
    }

    [Fact]
    public async Task NonAscii_Command_IsRefused()
    {
        await using var c = await GreetedAsync(await StartAsync());
        await c.SendRawAsync([.. "EHLO h\u00e9"u8.ToArray(), 0xFF, (byte)'\r', (byte)'\n']);
        Assert.Equal(500, (await c.ReadReplyAsync()).Code);
    }

    [Fact]
    public async Task TooManyErrors_CloseTheConnection()
    {
        await using var c = await GreetedAsync(await StartAsync(o => o.MaxErrorsPerConnection = 3));
        Assert.Equal(500, (await c.CommandAsync("BAD1")).Code);
        Assert.Equal(500, (await c.CommandAsync("BAD2")).Code);
        Assert.Equal(500, (await c.CommandAsync("BAD3")).Code);
        Assert.Equal("421 4.7.0 too many errors, closing connection", (await c.ReadReplyAsync()).Text);
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task ConnectionsPerSource_AreBounded()
    {
        var endpoint = await StartAsync(o => o.MaxConnectionsPerSource = 2);
        await using var first = await GreetedAsync(endpoint);
        await using var second = await GreetedAsync(endpoint);
        await using (var third = await SmtpTestClient.ConnectAsync(endpoint))
        {
            Assert.Equal("421 4.7.0 too many connections from your network, try again later", (await third.ReadReplyAsync()).Text);
            Assert.True(await third.IsClosedAsync());
        }
        Assert.Equal(221, (await first.CommandAsync("QUIT")).Code);
        Assert.True(await first.IsClosedAsync());
        // A slot is free again once a connection ended (the server frees it as the session finishes; poll, bounded).
        for (int attempt = 0; ; attempt++)
        {
            await using var again = await SmtpTestClient.ConnectAsync(endpoint);
            var reply = await again.ReadReplyAsync();
            if (reply.Code == 220) break;
            Assert.True(attempt < 100, "the per-source slot was never released");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task IdleClient_GetsTimeoutReply()
    {
        await using var c = await GreetedAsync(await StartAsync(o => o.CommandTimeout = TimeSpan.FromMilliseconds(200)));
        Assert.Equal("421 4.4.2 timeout, closing connection", (await c.ReadReplyAsync()).Text);
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task DeliveryFailure_IsATemporaryReply_NotACrash()
    {
        _sink.ThrowOnDelivery = true;
        var endpoint = await StartAsync();
        await using var c = await GreetedAsync(endpoint);
        await OpenTransactionAsync(c);
        await c.SendRawAsync("x\r\n.\r\n");
        Assert.Equal("451 4.3.0 local error in processing, try again later", (await c.ReadReplyAsync()).Text);
        await using var next = await GreetedAsync(endpoint);
    }

    [Fact]
    public async Task StartTls_UsesTheVmDomainCertificate_AndResetsTheSession()
    {
        await using var c = await GreetedAsync(await StartAsync());
        Assert.Equal(503, (await c.CommandAsync("STARTTLS")).Code); // EHLO first
        await c.CommandAsync("EHLO client.example");
        Assert.Equal(220, (await c.CommandAsync("STARTTLS")).Code);
        await c.StartTlsAsync("web.box.localhost");
        Assert.Contains("*.box.localhost", c.TlsServerSubject);
        Assert.Equal(503, (await c.CommandAsync("MAIL FROM:<a@b.example>")).Code); // EHLO again after TLS (RFC 3207 §4.2)
        var ehlo = await c.CommandAsync("EHLO client.example");
        Assert.DoesNotContain(ehlo.Lines, l => l.Contains("STARTTLS"));
        await c.CommandAsync("MAIL FROM:<a@b.example>");
        await c.CommandAsync("RCPT TO:<x@ok.example>");
        await c.CommandAsync("DATA");
        await c.SendRawAsync("secret\r\n.\r\n");
        Assert.Equal(250, (await c.ReadReplyAsync()).Code);
        Assert.Contains(" with ESMTPS id ", Assert.Single(_sink.Messages).TraceHeaders(_sink.Messages[0].Recipients[0]));
    }

    [Fact]
    public async Task StartTls_WithPipelinedCleartext_IsRefused()
    {
        await using var c = await GreetedAsync(await StartAsync());
        await c.CommandAsync("EHLO client.example");
        await c.SendRawAsync("STARTTLS\r\nMAIL FROM:<injected@b.example>\r\n");
        Assert.Equal(554, (await c.ReadReplyAsync()).Code);
        Assert.True(await c.IsClosedAsync());
    }

    [Fact]
    public async Task WithoutCertificates_StartTlsIsNotOffered()
    {
        await using var c = await GreetedAsync(await StartAsync(tls: false));
        var ehlo = await c.CommandAsync("EHLO client.example");
        Assert.DoesNotContain(ehlo.Lines, l => l.Contains("STARTTLS"));
        Assert.Equal(502, (await c.CommandAsync("STARTTLS")).Code);
    }
}
