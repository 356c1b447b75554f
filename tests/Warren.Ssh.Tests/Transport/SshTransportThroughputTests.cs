using System.Diagnostics;
using Warren.Ssh.Crypto;
using Warren.Ssh.Transport;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Ssh.Tests.Transport;

/// <summary>Bulk transfer over loopback for each cipher; reports MB/s (informational, no timing assertion).</summary>
public class SshTransportThroughputTests(ITestOutputHelper output)
{
    /// <summary>32 KiB, the usual SSH channel packet size (OpenSSH CHAN_SES_PACKET_DEFAULT).</summary>
    private const int PayloadSize = 32 * 1024;
    private const int Packets = 1024; // 32 MiB

    [Theory]
    [InlineData(SshAlgorithms.Aes128Gcm, SshAlgorithms.HmacSha256)]
    [InlineData(SshAlgorithms.Aes256Gcm, SshAlgorithms.HmacSha256)]
    [InlineData(SshAlgorithms.ChaCha20Poly1305, SshAlgorithms.HmacSha256)]
    [InlineData(SshAlgorithms.Aes128Ctr, SshAlgorithms.HmacSha256Etm)]
    [InlineData(SshAlgorithms.Aes256Ctr, SshAlgorithms.HmacSha512Etm)]
    public async Task BulkTransfer(string cipher, string mac)
    {
        var (server, client) = await TransportPair.CreateAsync(TransportPair.Server(),
            TransportPair.Client(o => { o.Ciphers = [cipher]; o.Macs = [mac]; o.KexAlgorithms = [SshAlgorithms.KexCurve25519]; }));
        await using var _s = server;
        await using var _c = client;
        var payload = new byte[PayloadSize];
        payload[0] = 94;
        var sw = Stopwatch.StartNew();
        var send = Task.Run(async () =>
        {
            for (int i = 0; i < Packets; i++) await client.SendAsync(payload);
        });
        long received = 0;
        for (int i = 0; i < Packets; i++)
        {
            using var p = await server.ReceiveAsync().AsTask().WaitAsync(TransportPair.Timeout);
            received += p.Payload.Length;
        }
        await send.WaitAsync(TransportPair.Timeout);
        sw.Stop();
        Assert.Equal((long)PayloadSize * Packets, received);
        output.WriteLine($"{cipher} {mac}: {received / sw.Elapsed.TotalSeconds / 1e6:F0} MB/s");
    }
}
