using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Threading.Channels;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Warren.Edge.Http.EventLoop;

/// <summary>
/// One Kestrel listener fed by the event loop instead of a socket: <c>kestrel.Listen(new HandOffEndPoint(...))</c>.
/// Equal by <see cref="Name"/>, so the loop may use its own instance when it calls
/// <see cref="HandOffConnectionListenerFactory.HandOff"/>.
/// </summary>
internal sealed class HandOffEndPoint : EndPoint
{
    public HandOffEndPoint(string name, IReadOnlyList<IPEndPoint>? socketEndPoints = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        Name = name;
        SocketEndPoints = socketEndPoints ?? Array.Empty<IPEndPoint>();
    }

    public string Name { get; }

    /// <summary>The loop's real listening sockets behind this listener, for display only (may be set once they are bound).</summary>
    public IReadOnlyList<IPEndPoint> SocketEndPoints { get; set; }

    /// <summary>Not an IP endpoint (the base class throws here, and Kestrel may ask).</summary>
    public override AddressFamily AddressFamily => AddressFamily.Unspecified;

    public override bool Equals(object? obj) => obj is HandOffEndPoint other && string.Equals(Name, other.Name, StringComparison.Ordinal);

    public override int GetHashCode() => StringComparer.Ordinal.GetHashCode(Name);

    /// <summary>Kestrel shows this as <c>http://{ToString()}</c> in its bound addresses.</summary>
    public override string ToString() =>
        SocketEndPoints.Count == 0 ? $"handoff:{Name}" : $"handoff:{Name} ({string.Join(", ", SocketEndPoints)})";
}

/// <summary>
/// The Kestrel transport for <see cref="HandOffEndPoint"/>s: the event loop passes connections it will not serve
/// itself (TLS already established) with <see cref="HandOff"/>, and Kestrel serves them like any other.
/// Kestrel asks every registered <see cref="IConnectionListenerFactory"/> whether it can bind an endpoint
/// (TransportManager.BindAsync, <see cref="IConnectionListenerFactorySelector"/>) and uses the first that can; this one
/// binds only <see cref="HandOffEndPoint"/>s and the socket transport (which binds only IP/Unix/handle endpoints)
/// keeps all other listeners.
/// </summary>
internal sealed class HandOffConnectionListenerFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    private readonly ConcurrentDictionary<HandOffEndPoint, HandOffConnectionListener> _listeners = new();
    private readonly IOptions<KestrelServerOptions>? _kestrel;
    private readonly IMemoryPoolFactory<byte>? _pools;

    public HandOffConnectionListenerFactory(IOptions<KestrelServerOptions>? kestrel = null, IMemoryPoolFactory<byte>? pools = null)
    {
        _kestrel = kestrel;
        _pools = pools;
    }

    /// <summary>
    /// Registers the hand-off transport next to Kestrel's socket transport (which keeps every IP listener):
    /// the factory as itself (for the loop's <see cref="HandOff"/>) and as one more <see cref="IConnectionListenerFactory"/>.
    /// </summary>
    internal static void AddHandOffTransport(IServiceCollection services)
    {
        services.TryAddSingleton<HandOffConnectionListenerFactory>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IConnectionListenerFactory, HandOffConnectionListenerFactory>(
            sp => sp.GetRequiredService<HandOffConnectionListenerFactory>()));
    }

    public bool CanBind(EndPoint endpoint) => endpoint is HandOffEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        if (endpoint is not HandOffEndPoint handOff)
            throw new ArgumentException($"Only {nameof(HandOffEndPoint)}s can be bound here, not {endpoint}.", nameof(endpoint));
        // Read at bind time: Kestrel has finished configuring its options by then.
        // Null there means unlimited, which a pipe spells 0 (never pause).
        var limits = _kestrel?.Value.Limits;
        var bufferLimits = new HandOffBufferLimits(
            limits is null ? HandOffBufferLimits.KestrelDefaultInputBytes : limits.MaxRequestBufferSize ?? 0,
            limits is null ? HandOffBufferLimits.KestrelDefaultOutputBytes : limits.MaxResponseBufferSize ?? 0);
        // Kestrel's own block pool, as its socket transport uses: Kestrel's HTTP/1.1 writer asks the connection's pool
        // for at least a block even for a size hint of 0, which MemoryPool<byte>.Shared answers with an empty buffer.
        var pool = _pools?.Create() ?? new BlockMemoryPool();
        var listener = new HandOffConnectionListener(handOff, bufferLimits, pool, this);
        if (!_listeners.TryAdd(handOff, listener))
            throw new AddressInUseException($"{handOff} is already bound.");
        return ValueTask.FromResult<IConnectionListener>(listener);
    }

    /// <summary>
    /// Gives a connection to the Kestrel listener bound to <paramref name="endpoint"/>. Never blocks and does no I/O
    /// (it only queues; Kestrel's accept loop picks it up on a pool thread), so the event loop thread may call it.
    /// True: the listener owns <paramref name="socket"/> and <paramref name="session"/> from now on (the caller must not
    /// touch either again, and must have removed the fd from its epoll set before the call). False (not bound,
    /// unbinding, or its queue is full): nothing was taken or changed; the caller still owns both and closes them.
    /// </summary>
    /// <param name="socket">Owns the connection's fd (e.g. <c>new Socket(new SafeSocketHandle(fd, ownsHandle: true))</c>).</param>
    /// <param name="session">Handshake done, no write pending (see <see cref="TlsSession.DetachWriteSide"/>).</param>
    /// <param name="alreadyDecrypted">Plaintext read but not consumed (e.g. a request head); copied.</param>
    public bool HandOff(HandOffEndPoint endpoint, Socket socket, TlsSession session, ReadOnlyMemory<byte> alreadyDecrypted,
        IPEndPoint local, IPEndPoint remote)
    {
        return _listeners.TryGetValue(endpoint, out var listener)
            && listener.TryEnqueue(new PendingHandOff(socket, session, alreadyDecrypted.ToArray(), local, remote));
    }

    internal void Remove(HandOffConnectionListener listener) =>
        _listeners.TryRemove(KeyValuePair.Create((HandOffEndPoint)listener.EndPoint, listener));
}

/// <summary>
/// Pipe thresholds in bytes, 0 for unlimited: Kestrel's MaxRequestBufferSize and MaxResponseBufferSize, which its
/// socket transport uses the same way (pause at the limit, resume at half).
/// </summary>
internal readonly record struct HandOffBufferLimits(long InputBytes, long OutputBytes)
{
    /// <summary>Kestrel's defaults (KestrelServerLimits), used when its options are not available.</summary>
    public const long KestrelDefaultInputBytes = 1024 * 1024, KestrelDefaultOutputBytes = 64 * 1024;
}

/// <summary>A connection queued for Kestrel's accept loop; nothing is done to it until it is accepted.</summary>
internal sealed record PendingHandOff(Socket Socket, TlsSession Session, byte[] AlreadyDecrypted, IPEndPoint Local, IPEndPoint Remote)
{
    public void Close()
    {
        Socket.Dispose();
        Session.Dispose();
    }
}

internal sealed class HandOffConnectionListener : IConnectionListener
{
    /// <summary>Connections queued but not yet accepted by Kestrel, like a listen backlog (Linux's default
    /// somaxconn is 4096 since 5.4). Kestrel's accept loop normally takes each at once; past this, HandOff says no.</summary>
    internal const int MaxPendingConnections = 4096;

    private static long s_lastConnectionNumber;

    private readonly Channel<PendingHandOff> _pending = Channel.CreateBounded<PendingHandOff>(
        new BoundedChannelOptions(MaxPendingConnections) { FullMode = BoundedChannelFullMode.Wait });
    private readonly HandOffConnectionListenerFactory _factory;
    private readonly HandOffBufferLimits _limits;
    private readonly MemoryPool<byte> _pool;
    private volatile bool _unbound;

    public HandOffConnectionListener(HandOffEndPoint endpoint, HandOffBufferLimits limits, MemoryPool<byte> pool, HandOffConnectionListenerFactory factory)
    {
        EndPoint = endpoint;
        _limits = limits;
        _pool = pool;
        _factory = factory;
    }

    public EndPoint EndPoint { get; }

    public bool TryEnqueue(PendingHandOff connection) => !_unbound && _pending.Writer.TryWrite(connection);

    /// <summary>The next handed-off connection; null once unbound (IConnectionListener's contract).</summary>
    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (await _pending.Reader.WaitToReadAsync(cancellationToken))
        {
            if (!_pending.Reader.TryRead(out var pending))
                continue;
            if (_unbound)
            {
                pending.Close();
                continue;
            }
            var id = $"handoff-{Interlocked.Increment(ref s_lastConnectionNumber):x}";
            try
            {
                return new HandOffConnection(pending, id, _limits, _pool);
            }
            catch (Exception)
            {
                // E.g. OpenSSL could not allocate the memory BIO: lose this connection, not Kestrel's accept loop.
                pending.Close();
            }
        }
        return null;
    }

    /// <summary>Stops accepting: HandOff returns false from now on, queued connections are closed, AcceptAsync returns null.</summary>
    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        _unbound = true;
        _factory.Remove(this);
        _pending.Writer.TryComplete();
        while (_pending.Reader.TryRead(out var pending))
            pending.Close();
        return ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync() => UnbindAsync();
}

/// <summary>
/// What Kestrel sees of a handed-off connection: a duplex pipe over a <see cref="TlsHandOffStream"/> and the
/// features Kestrel's socket transport and HttpsConnectionMiddleware would set, so the HTTP layer treats it as
/// TLS (HTTP/2 when ALPN chose "h2", https scheme, SNI host name).
/// </summary>
/// <remarks>
/// Like Kestrel's SocketConnection, a receive loop keeps reading into the input pipe (paused at
/// MaxRequestBufferSize), so a client that goes away is noticed at once: <see cref="ConnectionClosed"/> fires when
/// reading ends, which aborts running requests (HttpContext.RequestAborted). Output is a pipe too, drained to the
/// stream by a send loop: Kestrel's HTTP/2 frame writer writes into the transport while an earlier flush is still
/// in progress, which a pipe allows and a stream-backed PipeWriter does not (Kestrel's HttpsConnectionMiddleware
/// wraps SslStream the same way, DuplexPipeStreamAdapter).
/// </remarks>
internal sealed class HandOffConnection : ConnectionContext,
    IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature, IConnectionLifetimeFeature,
    IConnectionEndPointFeature, ITlsConnectionFeature, ITlsApplicationProtocolFeature, ITlsHandshakeFeature, IMemoryPoolFeature
{
    /// <summary>Plaintext asked for per read: one full TLS record (RFC 8446 §5.1), so SSL_read returns a whole record at once.</summary>
    internal const int MinimumReadBytes = 16 * 1024;

    private readonly TlsHandOffStream _stream;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly CancellationTokenSource _closed = new();
    private readonly FeatureCollection _features = new();
    private readonly SslApplicationProtocol _applicationProtocol;
    private readonly Task _receiving;
    private readonly Task _sending;
    private IDictionary<object, object?>? _items;
    private int _closedFired;
    private int _disposed;
    private volatile ConnectionAbortedException? _abortReason;

    public HandOffConnection(PendingHandOff pending, string connectionId, HandOffBufferLimits limits, MemoryPool<byte> pool)
    {
        MemoryPool = pool;
        // Read before the stream exists: from here on only the stream touches the session.
        var session = pending.Session;
        _applicationProtocol = session.ApplicationProtocol;
        Protocol = session.Protocol;
        NegotiatedCipherSuite = session.CipherSuite;
        HostName = session.ServerName ?? "";

        _stream = new TlsHandOffStream(pending.Socket, session, pending.AlreadyDecrypted);
        // Same thresholds as Kestrel's socket transport: pause reading at MaxRequestBufferSize, resume at half.
        _input = new Pipe(new PipeOptions(
            pool: pool,
            pauseWriterThreshold: limits.InputBytes,
            resumeWriterThreshold: limits.InputBytes / 2,
            minimumSegmentSize: MinimumReadBytes,
            useSynchronizationContext: false));
        _output = new Pipe(new PipeOptions(
            pool: pool,
            pauseWriterThreshold: limits.OutputBytes,
            resumeWriterThreshold: limits.OutputBytes / 2,
            useSynchronizationContext: false));
        Transport = new DuplexPipe(_input.Reader, _output.Writer);
        ConnectionId = connectionId;
        LocalEndPoint = pending.Local;
        RemoteEndPoint = pending.Remote;
        ConnectionClosed = _closed.Token;

        _features.Set<IConnectionIdFeature>(this);
        _features.Set<IConnectionTransportFeature>(this);
        _features.Set<IConnectionItemsFeature>(this);
        _features.Set<IConnectionLifetimeFeature>(this);
        _features.Set<IConnectionEndPointFeature>(this);
        _features.Set<ITlsConnectionFeature>(this);
        _features.Set<ITlsApplicationProtocolFeature>(this);
        _features.Set<ITlsHandshakeFeature>(this);
        _features.Set<IMemoryPoolFeature>(this);

        _receiving = ReceiveAsync();
        _sending = SendAsync();
    }

    public MemoryPool<byte> MemoryPool { get; }

    public override string ConnectionId { get; set; }
    public override IFeatureCollection Features => _features;
    public override IDictionary<object, object?> Items
    {
        get => _items ??= new Dictionary<object, object?>();
        set => _items = value;
    }
    public override IDuplexPipe Transport { get; set; }
    public override EndPoint? LocalEndPoint { get; set; }
    public override EndPoint? RemoteEndPoint { get; set; }
    public override CancellationToken ConnectionClosed { get; set; }

    // TLS as negotiated by the event loop (the client certificate is never requested).
    public X509Certificate2? ClientCertificate { get; set; }
    public Task<X509Certificate2?> GetClientCertificateAsync(CancellationToken cancellationToken) => Task.FromResult(ClientCertificate);
    public ReadOnlyMemory<byte> ApplicationProtocol => _applicationProtocol.Protocol;
    public SslProtocols Protocol { get; }
    public TlsCipherSuite? NegotiatedCipherSuite { get; }
    public string HostName { get; }
#pragma warning disable SYSLIB0058 // Obsolete in .NET 10 (use NegotiatedCipherSuite); the interface still has them.
    public CipherAlgorithmType CipherAlgorithm => CipherAlgorithmType.None;
    public int CipherStrength => 0;
    public HashAlgorithmType HashAlgorithm => HashAlgorithmType.None;
    public int HashStrength => 0;
    public ExchangeAlgorithmType KeyExchangeAlgorithm => ExchangeAlgorithmType.None;
    public int KeyExchangeStrength => 0;
#pragma warning restore SYSLIB0058

    private async Task ReceiveAsync()
    {
        var writer = _input.Writer;
        Exception? error = null;
        try
        {
            while (true)
            {
                var memory = writer.GetMemory(MinimumReadBytes);
                int read = await _stream.ReadAsync(memory);
                if (read == 0)
                    break;
                writer.Advance(read);
                var flush = await writer.FlushAsync();
                // Completed: Kestrel stopped reading. Canceled: Abort.
                if (flush.IsCompleted || flush.IsCanceled)
                    break;
            }
        }
        catch (Exception e) when (_abortReason is not null || e is ObjectDisposedException)
        {
            error = _abortReason ?? new ConnectionAbortedException("The connection was closed.", e);
        }
        catch (Exception e)
        {
            // What Kestrel's socket transport reports for a peer that went away mid-connection.
            error = new ConnectionResetException(e.Message, e);
        }
        finally
        {
            await writer.CompleteAsync(error);
            FireConnectionClosed();
        }
    }

    private async Task SendAsync()
    {
        await Task.Yield(); // off Kestrel's accept loop
        var reader = _output.Reader;
        Exception? error = null;
        // Single owner: this loop; returned in finally. Joins small segments into one TLS record.
        byte[] record = ArrayPool<byte>.Shared.Rent(TlsHandOffStream.PlaintextChunkBytes);
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync();
                if (result.IsCanceled)
                    break;
                var buffer = result.Buffer;
                if (buffer.IsSingleSegment)
                    await _stream.WriteAsync(buffer.First);
                else
                {
                    var rest = buffer;
                    while (!rest.IsEmpty)
                    {
                        int n = (int)Math.Min(rest.Length, TlsHandOffStream.PlaintextChunkBytes);
                        rest.Slice(0, n).CopyTo(record);
                        await _stream.WriteAsync(record.AsMemory(0, n));
                        rest = rest.Slice(n);
                    }
                }
                reader.AdvanceTo(buffer.End);
                if (result.IsCompleted)
                    break;
            }
        }
        catch (Exception e)
        {
            error = e;
            // As Kestrel's socket transport does after a failed send: the connection is over, reads end too.
            _stream.Abort();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(record);
            await reader.CompleteAsync(error);
        }
    }

    private void FireConnectionClosed()
    {
        if (Interlocked.Exchange(ref _closedFired, 1) != 0)
            return;
        // Off this thread, as Kestrel's SocketConnection does: the callbacks run Kestrel's abort logic.
        ThreadPool.UnsafeQueueUserWorkItem(static closed => closed.Cancel(), _closed, preferLocal: false);
    }

    /// <summary>Kestrel's abort (timeouts, protocol errors, shutdown): closes at once, without close_notify.</summary>
    public override void Abort(ConnectionAbortedException abortReason)
    {
        _abortReason ??= abortReason;
        _input.Writer.CancelPendingFlush();
        _output.Reader.CancelPendingRead();
        _stream.Abort();
    }

    /// <summary>
    /// Called by Kestrel when it is done with the connection: sends what is still queued and close_notify (each
    /// bounded by <see cref="TlsHandOffStream.CloseNotifyTimeout"/>), closes, and waits for both loops.
    /// </summary>
    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await _input.Reader.CompleteAsync();
        await _output.Writer.CompleteAsync();
        try
        {
            await _sending.WaitAsync(TlsHandOffStream.CloseNotifyTimeout);
        }
        catch (TimeoutException)
        {
            // A client that does not read: give up on the rest (Abort ends the send loop).
            _stream.Abort();
        }
        await _stream.DisposeAsync();
        await _sending;
        await _receiving;
        FireConnectionClosed();
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }
}

/// <summary>
/// The pool used when Kestrel offers no <see cref="IMemoryPoolFactory{T}"/>: blocks of at least 4 KiB from the shared
/// array pool, so that a request for "any size" (0) is never answered with an empty buffer.
/// </summary>
internal sealed class BlockMemoryPool : MemoryPool<byte>
{
    private const int BlockBytes = 4096;

    public override int MaxBufferSize => Array.MaxLength;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1) => new Block(Math.Max(minBufferSize, BlockBytes));

    protected override void Dispose(bool disposing)
    {
    }

    private sealed class Block(int size) : IMemoryOwner<byte>
    {
        private byte[]? _array = ArrayPool<byte>.Shared.Rent(size);

        public Memory<byte> Memory => _array ?? throw new ObjectDisposedException(nameof(Block));

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _array, null) is { } array)
                ArrayPool<byte>.Shared.Return(array);
        }
    }
}

