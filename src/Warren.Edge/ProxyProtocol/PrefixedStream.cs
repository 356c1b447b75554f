namespace Warren.Edge.ProxyProtocol;

/// <summary>
/// A stream that first returns bytes already read from <see cref="Inner"/> (while looking
/// for a PROXY header that turned out not to be there), then reads from it directly.
/// Writes go straight to the inner stream. Owns and disposes the inner stream.
/// </summary>
internal sealed class PrefixedStream(byte[] prefix, Stream inner) : ReadInterceptingStream(inner)
{
    private int _offset;

    private bool TryTakePrefix(Span<byte> destination, out int n)
    {
        n = 0;
        if (_offset >= prefix.Length || destination.IsEmpty) return false;
        n = Math.Min(destination.Length, prefix.Length - _offset);
        prefix.AsSpan(_offset, n).CopyTo(destination);
        _offset += n;
        return true;
    }

    public override int Read(Span<byte> buffer) => TryTakePrefix(buffer, out int n) ? n : Inner.Read(buffer);

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        // A zero-byte read asks "is data available?": with prefix bytes pending it is, now.
        if (buffer.IsEmpty && _offset < prefix.Length) return ValueTask.FromResult(0);
        return TryTakePrefix(buffer.Span, out int n) ? ValueTask.FromResult(n) : Inner.ReadAsync(buffer, cancellationToken);
    }
}

/// <summary>
/// Passes an untrusted peer's bytes through unchanged, but fails the read with
/// <see cref="ProxyProtocolError.Untrusted"/> as soon as the first bytes spell a PROXY v1 or v2
/// signature: a spoofed header must disconnect the peer, never be believed or passed on
/// (sshpiper GHSA-4w53-6jvp-gg52). Inspecting the bytes as they are consumed avoids waiting
/// for the client before the server speaks. Owns and disposes the inner stream.
/// </summary>
internal sealed class UntrustedProxyHeaderGuardStream(Stream inner) : ReadInterceptingStream(inner)
{
    /// <summary>Bytes inspected: enough for "PROXY " and the 12-byte v2 signature.</summary>
    private static readonly int s_inspectLength = ProxyProtocolReader.V2Signature.Length;

    private readonly byte[] _first = new byte[s_inspectLength];
    private int _seen;
    private bool _cleared;

    private int Inspect(ReadOnlySpan<byte> data, int n)
    {
        if (_cleared || n <= 0) return n;
        int take = Math.Min(n, s_inspectLength - _seen);
        data[..take].CopyTo(_first.AsSpan(_seen));
        _seen += take;
        var seen = _first.AsSpan(0, _seen);
        var v1 = ProxyProtocolReader.V1Prefix;
        var v2 = ProxyProtocolReader.V2Signature;
        bool couldBeV1 = seen.Length <= v1.Length ? v1.StartsWith(seen) : seen.StartsWith(v1);
        bool couldBeV2 = v2.StartsWith(seen);
        if ((couldBeV1 && seen.Length >= v1.Length) || (couldBeV2 && seen.Length == v2.Length))
            throw ProxyProtocolReader.Fail(ProxyProtocolError.Untrusted, "PROXY header from a peer that is not a trusted proxy");
        if (!couldBeV1 && !couldBeV2) _cleared = true;
        return n;
    }

    public override int Read(Span<byte> buffer)
    {
        int n = Inner.Read(buffer);
        return Inspect(buffer, n);
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int n = await Inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        return Inspect(buffer.Span, n);
    }
}
