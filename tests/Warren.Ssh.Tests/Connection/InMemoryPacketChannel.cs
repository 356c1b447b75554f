using System.Threading.Channels;
using Warren.Ssh.Keys;
using Warren.Ssh.Transport;

namespace Warren.Ssh.Tests.Connection;

/// <summary>
/// One end of an in-memory <see cref="ISshPacketChannel"/> pair: what one side
/// sends, the other receives, in order. Lets the auth and connection layers be
/// tested without the real transport. DISCONNECT is recorded on both ends.
/// </summary>
internal sealed class InMemoryPacketChannel : ISshPacketChannel, ISshPacketDelivery
{
    private readonly Channel<byte[]> _inbox = Channel.CreateUnbounded<byte[]>();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private InMemoryPacketChannel _peer = null!;

    private InMemoryPacketChannel(ReadOnlyMemory<byte> sessionId, string remoteVersion, SshPublicKey? serverHostKey, IReadOnlyList<string> serverSigAlgs)
    {
        SessionId = sessionId;
        RemoteVersion = remoteVersion;
        ServerHostKey = serverHostKey;
        PeerServerSigAlgs = serverSigAlgs;
    }

    /// <summary>A connected pair; the client end reports <paramref name="hostKey"/> as the server's host key.</summary>
    public static (InMemoryPacketChannel Client, InMemoryPacketChannel Server) CreatePair(SshPublicKey? hostKey = null, byte[]? sessionId = null, IReadOnlyList<string>? serverSigAlgs = null)
    {
        sessionId ??= System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);
        var client = new InMemoryPacketChannel(sessionId, "SSH-2.0-TestServer", hostKey, serverSigAlgs ?? ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ecdsa-sha2-nistp256"]);
        var server = new InMemoryPacketChannel(sessionId, "SSH-2.0-TestClient", null, []);
        client._peer = server;
        server._peer = client;
        return (client, server);
    }

    public ReadOnlyMemory<byte> SessionId { get; }
    public string RemoteVersion { get; }
    public SshPublicKey? ServerHostKey { get; }
    public IReadOnlyList<string> PeerServerSigAlgs { get; }
    public Task Completion => _completion.Task;

    /// <summary>The DISCONNECT this end sent, if any.</summary>
    public (SshDisconnectReason Reason, string Description)? SentDisconnect { get; private set; }

    /// <summary>The DISCONNECT the peer sent, if any.</summary>
    public (SshDisconnectReason Reason, string Description)? ReceivedDisconnect => _peer.SentDisconnect;

    public async ValueTask<SshPacket> ReceiveAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            var payload = await _inbox.Reader.ReadAsync(cancellationToken);
            return new SshPacket(payload, null);
        }
        catch (ChannelClosedException)
        {
            throw new SshConnectionClosedException("in-memory pair closed");
        }
    }

    /// <summary>
    /// As the real transport does (the connection layer takes messages this way): each message to the handler in
    /// order, from one loop, then OnClosed when the pair closes.
    /// </summary>
    public void StartDelivering(ISshPacketHandler handler) => _ = Task.Run(async () =>
    {
        try
        {
            while (true) handler.OnPacket(await _inbox.Reader.ReadAsync());
        }
        catch (ChannelClosedException)
        {
            handler.OnClosed(new SshConnectionClosedException("in-memory pair closed"));
        }
    });

    /// <summary>Next message or null when the pair is closed (for test assertions).</summary>
    public async Task<byte[]?> TryReceiveRawAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try { return await _inbox.Reader.ReadAsync(cts.Token); }
        catch (ChannelClosedException) { return null; }
    }

    public ValueTask SendAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        if (!_peer._inbox.Writer.TryWrite(payload.ToArray())) throw new SshConnectionClosedException("in-memory pair closed");
        return ValueTask.CompletedTask;
    }

    public ValueTask DisconnectAsync(SshDisconnectReason reason, string description, CancellationToken cancellationToken = default)
    {
        SentDisconnect ??= (reason, description);
        Close();
        return ValueTask.CompletedTask;
    }

    public void Close()
    {
        _inbox.Writer.TryComplete();
        _peer._inbox.Writer.TryComplete();
        _completion.TrySetResult();
        _peer._completion.TrySetResult();
    }

    public ValueTask DisposeAsync()
    {
        Close();
        return ValueTask.CompletedTask;
    }
}
