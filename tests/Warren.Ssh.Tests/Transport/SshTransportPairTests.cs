using Xunit;
using Warren.Ssh.Crypto;
using Warren.Ssh.Transport;

namespace Warren.Ssh.Tests.Transport;

public class SshTransportPairTests
{
    public static TheoryData<string, string, string> Matrix()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var kex in SshAlgorithms.SupportedKexAlgorithms)
        {
            foreach (var cipher in SshAlgorithms.SupportedCiphers)
            {
                bool aead = cipher.Contains("gcm") || cipher.Contains("chacha");
                foreach (var mac in aead ? [SshAlgorithms.HmacSha256] : SshAlgorithms.SupportedMacs)
                    data.Add(kex, cipher, mac);
            }
        }
        return data;
    }

    private static async Task ExchangeAsync(SshTransport from, SshTransport to, int size, int seed)
    {
        var payload = new byte[size];
        new Random(seed).NextBytes(payload);
        payload[0] = 100 + 0; // an upper-layer message number
        await from.SendAsync(payload).AsTask().WaitAsync(TransportPair.Timeout);
        using var packet = await to.ReceiveAsync().AsTask().WaitAsync(TransportPair.Timeout);
        Assert.Equal(payload, packet.Payload.ToArray());
    }

    [Theory]
    [MemberData(nameof(Matrix))]
    public async Task Handshake_And_Data_RoundTrip(string kex, string cipher, string mac)
    {
        var (server, client) = await TransportPair.CreateAsync(
            TransportPair.Server(),
            TransportPair.Client(o => { o.KexAlgorithms = [kex]; o.Ciphers = [cipher]; o.Macs = [mac]; }));
        await using var _s = server;
        await using var _c = client;
        Assert.Equal(kex, client.Algorithms!.KeyExchange);
        Assert.Equal(cipher, server.Algorithms!.CipherServerToClient);
        Assert.Equal(client.SessionId.ToArray(), server.SessionId.ToArray());
        Assert.True(client.IsStrictKex && server.IsStrictKex);
        foreach (var size in new[] { 1, 17, 1000, 32768 + 100 })
        {
            await ExchangeAsync(client, server, size, size);
            await ExchangeAsync(server, client, size, size + 1);
        }
    }

    [Theory]
    [InlineData(SshAlgorithms.KexCurve25519, SshAlgorithms.ChaCha20Poly1305, SshAlgorithms.HmacSha256)]
    [InlineData(SshAlgorithms.KexMlKem768X25519, SshAlgorithms.Aes256Gcm, SshAlgorithms.HmacSha256)]
    [InlineData(SshAlgorithms.KexSntrup761X25519OpenSsh, SshAlgorithms.Aes128Ctr, SshAlgorithms.HmacSha512Etm)]
    [InlineData(SshAlgorithms.KexEcdhNistP384, SshAlgorithms.Aes192Ctr, SshAlgorithms.HmacSha256)]
    [InlineData(SshAlgorithms.KexDhGroup14Sha256, SshAlgorithms.Aes256Ctr, SshAlgorithms.HmacSha512)]
    public async Task Rekey_MidStream_PreservesOrderAndData(string kex, string cipher, string mac)
    {
        var (server, client) = await TransportPair.CreateAsync(
            TransportPair.Server(),
            TransportPair.Client(o => { o.KexAlgorithms = [kex]; o.Ciphers = [cipher]; o.Macs = [mac]; }));
        await using var _s = server;
        await using var _c = client;
        const int Messages = 200;
        var send = Task.Run(async () =>
        {
            for (int i = 0; i < Messages; i++)
            {
                if (i == 50) client.StartRekey();
                if (i == 120)
                {
                    // StartRekey is a no-op while an exchange is still finishing on that side.
                    await WaitForKexCountAsync(client, 2);
                    await WaitForKexCountAsync(server, 2);
                    server.StartRekey();
                }
                var p = new byte[1 + 4 + i * 13];
                p[0] = 94;
                System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(1), i);
                await client.SendAsync(p);
            }
        });
        for (int i = 0; i < Messages; i++)
        {
            using var packet = await server.ReceiveAsync().AsTask().WaitAsync(TransportPair.Timeout);
            Assert.Equal(i, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(packet.Payload.Span[1..]));
            Assert.Equal(1 + 4 + i * 13, packet.Payload.Length);
        }
        await send.WaitAsync(TransportPair.Timeout);
        // Data flows both ways after the rekeys.
        await ExchangeAsync(server, client, 5000, 1);
        await ExchangeAsync(client, server, 5000, 2);
        await WaitForKexCountAsync(client, 3);
        await WaitForKexCountAsync(server, 3);
    }

    /// <summary>Polls (bounded in count) until the transport completed <paramref name="count"/> key exchanges.</summary>
    internal static async Task WaitForKexCountAsync(SshTransport t, int count)
    {
        for (int i = 0; i < 6000 && t.KeyExchangeCount < count; i++) await Task.Delay(10);
        Assert.True(t.KeyExchangeCount >= count, $"kex count {t.KeyExchangeCount}, expected {count}");
    }

    [Fact]
    public async Task Rekey_ByByteLimit_HappensAutomatically()
    {
        var (server, client) = await TransportPair.CreateAsync(
            TransportPair.Server(),
            TransportPair.Client(o => { o.RekeyBytes = 64 * 1024; o.KexAlgorithms = [SshAlgorithms.KexCurve25519]; }));
        await using var _s = server;
        await using var _c = client;
        for (int i = 0; i < 40; i++) await ExchangeAsync(client, server, 8000, i);
        Assert.True(client.KeyExchangeCount >= 3, $"kex count {client.KeyExchangeCount}");
    }

    [Fact]
    public async Task ExtInfo_ServerSigAlgs_ReachTheClient()
    {
        var (server, client) = await TransportPair.CreateAsync(TransportPair.Server(), TransportPair.Client());
        await using var _s = server;
        await using var _c = client;
        // EXT_INFO precedes any upper-layer packet from the server.
        await ExchangeAsync(server, client, 10, 3);
        Assert.Contains(SshAlgorithms.HostKeyEd25519, client.PeerServerSigAlgs);
        Assert.Contains(SshAlgorithms.HostKeyRsaSha512, client.PeerServerSigAlgs);
        Assert.Empty(server.PeerServerSigAlgs);
    }

    [Theory]
    [InlineData(SshAlgorithms.HostKeyEd25519)]
    [InlineData(SshAlgorithms.HostKeyEcdsaNistP256)]
    [InlineData(SshAlgorithms.HostKeyEcdsaNistP384)]
    [InlineData(SshAlgorithms.HostKeyEcdsaNistP521)]
    [InlineData(SshAlgorithms.HostKeyRsaSha512)]
    [InlineData(SshAlgorithms.HostKeyRsaSha256)]
    public async Task HostKeyAlgorithm_IsNegotiated_AndVerified(string alg)
    {
        var (server, client) = await TransportPair.CreateAsync(TransportPair.Server(), TransportPair.Client(o => o.HostKeyAlgorithms = [alg]));
        await using var _s = server;
        await using var _c = client;
        Assert.Equal(alg, client.Algorithms!.HostKey);
        Assert.Equal(TestHostKeys.For(alg).PublicKey, client.ServerHostKey);
        Assert.Null(server.ServerHostKey);
    }

    [Fact]
    public async Task HostKeyRejected_FailsConnect_WithHostKeyNotVerifiable()
    {
        var (s, c) = await TransportPair.LoopbackStreamsAsync();
        using var cts = new CancellationTokenSource(TransportPair.Timeout);
        var serverTask = SshTransport.AcceptAsync(s, TransportPair.Server(), cts.Token);
        var clientTask = SshTransport.ConnectAsync(c, TransportPair.Client(o => o.HostKeyValidator = _ => ValueTask.FromResult(false)), cts.Token);
        var e = await Assert.ThrowsAsync<SshProtocolException>(() => clientTask);
        Assert.Equal(SshDisconnectReason.HostKeyNotVerifiable, e.Reason);
        await Assert.ThrowsAnyAsync<Exception>(() => serverTask);
    }

    [Fact]
    public async Task NoCommonCipher_FailsWithKeyExchangeFailed()
    {
        var (s, c) = await TransportPair.LoopbackStreamsAsync();
        using var cts = new CancellationTokenSource(TransportPair.Timeout);
        var serverTask = SshTransport.AcceptAsync(s, TransportPair.Server(o => o.Ciphers = [SshAlgorithms.Aes128Gcm]), cts.Token);
        var clientTask = SshTransport.ConnectAsync(c, TransportPair.Client(o => o.Ciphers = [SshAlgorithms.Aes256Ctr]), cts.Token);
        var e = await Assert.ThrowsAsync<SshProtocolException>(() => serverTask);
        Assert.Equal(SshDisconnectReason.KeyExchangeFailed, e.Reason);
        await Assert.ThrowsAnyAsync<Exception>(() => clientTask);
    }

    [Fact]
    public async Task Disconnect_ClosesBothEnds()
    {
        var (server, client) = await TransportPair.CreateAsync(TransportPair.Server(), TransportPair.Client());
        await using var _s = server;
        await using var _c = client;
        await client.DisconnectAsync(SshDisconnectReason.ByApplication, "bye");
        await server.Completion.WaitAsync(TransportPair.Timeout);
        await client.Completion.WaitAsync(TransportPair.Timeout);
        Assert.Null(server.CloseReason);
        await Assert.ThrowsAsync<SshConnectionClosedException>(() => server.ReceiveAsync().AsTask());
        await Assert.ThrowsAsync<SshConnectionClosedException>(() => client.SendAsync(new byte[] { 94 }).AsTask());
    }

    [Fact]
    public async Task Deterministic_Randomness_ReproducesTheSessionId()
    {
        async Task<byte[]> Run()
        {
            var (server, client) = await TransportPair.CreateAsync(
                TransportPair.Server(o => { o.Random = new SeededRandom(1); o.HostKeys = [TestHostKeys.Ed25519]; }),
                TransportPair.Client(o => o.Random = new SeededRandom(2)));
            await using var _s = server;
            await using var _c = client;
            return client.SessionId.ToArray();
        }
        Assert.Equal(await Run(), await Run());
    }
}
