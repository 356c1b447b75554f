using System.Buffers;
using System.Text;

namespace Warren.Edge.Http.Forwarding;

/// <summary>
/// A growable byte buffer on <see cref="ArrayPool{T}"/> for writing one HTTP/1.1 head (and, on the native lane, the
/// bytes that follow it). Past its limit it stops writing and reports <see cref="Overflowed"/> rather than throwing
/// mid-header; as an <see cref="IBufferWriter{T}"/> past its limit it throws, as writers do.
/// </summary>
/// <remarks>
/// <see cref="Release"/> gives the array back between messages and the next write rents one again, so an owner that
/// sits idle (a keep-alive connection between requests) holds no buffer yet keeps this object: no allocation per message.
/// </remarks>
internal sealed class ByteBuffer : IDisposable, IBufferWriter<byte>
{
    private readonly int _limit;
    private readonly int _initialCapacity;
    private byte[] _array;
    private int _length;

    public ByteBuffer(int initialCapacity, int limit)
    {
        _limit = limit;
        _initialCapacity = Math.Min(initialCapacity, limit);
        _array = ArrayPool<byte>.Shared.Rent(_initialCapacity);
    }

    public bool Overflowed { get; private set; }

    /// <summary>Empties the buffer for the next message, keeping its array.</summary>
    public void Clear()
    {
        _length = 0;
        Overflowed = false;
    }

    public ReadOnlyMemory<byte> Written => _array.AsMemory(0, _length);

    public int Length => _length;

    public ReadOnlySpan<byte> WrittenSpan => _array.AsSpan(0, _length);

    public void Advance(int count)
    {
        if ((uint)count > (uint)(_array.Length - _length))
            throw new ArgumentOutOfRangeException(nameof(count));
        _length += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        int available = Reserve(sizeHint); // first: it may replace the array
        return _array.AsMemory(_length, available);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        int available = Reserve(sizeHint);
        return _array.AsSpan(_length, available);
    }

    private int Reserve(int sizeHint)
    {
        int want = Math.Max(sizeHint, 1);
        if (_length + want > _array.Length)
        {
            if (_length + want > _limit)
                throw new InvalidOperationException("ByteBuffer limit exceeded");
            Grow(want);
        }
        return _array.Length - _length;
    }

    public void Append(ReadOnlySpan<byte> bytes)
    {
        if (TryReserve(bytes.Length, out var span))
            bytes.CopyTo(span);
    }

    /// <summary>Appends a string that callers know to be ASCII (methods, schemes, validated names and targets).</summary>
    public void AppendAscii(string text)
    {
        if (TryReserve(text.Length, out var span))
            Encoding.ASCII.GetBytes(text, span);
    }

    /// <summary>
    /// Appends a header value: ASCII as is, anything else as UTF-8 (how Kestrel decoded it). False when the value
    /// holds a control character — a CR or LF here would start a header of the client's choosing.
    /// </summary>
    public bool AppendValue(string value)
    {
        bool ascii = true;
        foreach (char c in value)
        {
            if (c < ' ' && c != '\t' || c == '\x7f')
                return false;
            ascii &= c < 0x80;
        }
        int count = ascii ? value.Length : Encoding.UTF8.GetByteCount(value);
        if (TryReserve(count, out var span))
            Encoding.UTF8.GetBytes(value, span);
        return true;
    }

    private bool TryReserve(int count, out Span<byte> span)
    {
        span = default;
        if (Overflowed)
            return false;
        if (_length + count > _array.Length)
        {
            if (_length + count > _limit)
            {
                Overflowed = true;
                return false;
            }
            Grow(count);
        }
        span = _array.AsSpan(_length, count);
        _length += count;
        return true;
    }

    private void Grow(int count)
    {
        // After Release the array is empty: the first write rents the initial size again.
        var larger = ArrayPool<byte>.Shared.Rent(Math.Min(_limit, Math.Max(Math.Max(_array.Length * 2, _initialCapacity), _length + count)));
        _array.AsSpan(0, _length).CopyTo(larger);
        if (_array.Length > 0)
            ArrayPool<byte>.Shared.Return(_array);
        _array = larger;
    }

    /// <summary>Empties the buffer and returns its array to the pool; the buffer stays usable (the next write rents one).</summary>
    public void Release()
    {
        var array = _array;
        _array = [];
        _length = 0;
        Overflowed = false;
        if (array.Length > 0)
            ArrayPool<byte>.Shared.Return(array);
    }

    public void Dispose() => Release();
}
