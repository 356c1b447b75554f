using System.Buffers;

namespace Warren.Edge.Http.Forwarding;

/// <summary>How a VM's response body is delimited (RFC 9112 §6.3), as <see cref="ResponseFraming.Start"/> decides it.</summary>
internal enum ResponseBodyMode
{
    /// <summary>No body: the answer to a HEAD request, 204, 304.</summary>
    None,
    Length,
    Chunked,
    /// <summary>Neither a length nor chunked: the body ends when the VM closes the connection.</summary>
    UntilClose,
}

/// <summary>
/// The response framing of both HTTP/1.1 paths, engine-neutral: what a VM's response head (<see cref="Http1ResponseHead"/>)
/// means for its body, the body bytes relayed to the client as they arrive (chunked decoded by
/// <see cref="ChunkedBodyDecoder"/>, re-framed for the client when <c>chunkToClient</c>), and whether the VM
/// connection may carry another request afterwards: only when the message ended exactly where its framing says.
/// The native lane calls it from its state machine, the full path from its receive loop; neither frames a body itself.
/// </summary>
internal struct ResponseFraming
{
    private ChunkedBodyDecoder _decoder;
    private bool _keepAlive;

    public ResponseBodyMode Mode { get; private set; }

    /// <summary>Body bytes still due (<see cref="ResponseBodyMode.Length"/>).</summary>
    public long Remaining { get; private set; }

    /// <summary>The body has ended (a Length body: all received; chunked: the last chunk and trailers).</summary>
    public bool Done { get; private set; }

    /// <summary>The VM connection ended the message cleanly and may be reused (meaningful once <see cref="Done"/>).</summary>
    public bool Reusable { get; private set; }

    /// <summary>What was wrong with a body <see cref="Take"/> refused.</summary>
    public string? Error { get; private set; }

    /// <summary>
    /// A response's body framing; <paramref name="bodyless"/> for a HEAD request's answer (RFC 9110 §9.3.2), and
    /// 204 and 304 never have one (RFC 9110 §15.3.5, §15.4.5). <paramref name="leftover"/>: the bytes received after
    /// the head (a bodyless response followed by bytes is not reusable: they are not ours to interpret).
    /// </summary>
    public static ResponseFraming Start(Http1ResponseHead head, bool bodyless, int leftover)
    {
        var framing = new ResponseFraming { _keepAlive = head.KeepAlive };
        if (IsBodyless(head, bodyless))
        {
            framing.Mode = ResponseBodyMode.None;
            framing.Done = true;
            framing.Reusable = head.KeepAlive && leftover == 0;
        }
        else if (head.Chunked)
            framing.Mode = ResponseBodyMode.Chunked;
        else if (head.ContentLength >= 0)
        {
            // A length of 0 is a Length body already done: bytes after the head then break it (Take refuses them).
            framing.Mode = ResponseBodyMode.Length;
            framing.Remaining = head.ContentLength;
            framing.Done = head.ContentLength == 0;
            framing.Reusable = framing.Done && head.KeepAlive;
        }
        else
            framing.Mode = ResponseBodyMode.UntilClose;
        return framing;
    }

    /// <summary>A response the front door wrote itself in place of the VM's: nothing more to relay, and the VM connection is not reused.</summary>
    public static ResponseFraming Failed => new() { Mode = ResponseBodyMode.None, Done = true };

    /// <summary>The answer has no body: to a HEAD request, or a 204 or 304.</summary>
    public static bool IsBodyless(Http1ResponseHead head, bool headRequest) => headRequest || head.StatusCode is 204 or 304;

    /// <summary>The Content-Length the client is told (the VM's; never on a 204), or -1 when the body is chunked or absent.</summary>
    public static long AnnouncedLength(Http1ResponseHead head) => head.ContentLength >= 0 && head.StatusCode != 204 ? head.ContentLength : -1;

    /// <summary>
    /// Relays body bytes from the VM into <paramref name="output"/>; false (and <see cref="Error"/>) for a body that
    /// breaks its framing — more bytes than the Content-Length, or malformed chunked framing.
    /// </summary>
    public bool Take(ReadOnlySpan<byte> data, IBufferWriter<byte> output, bool chunkToClient)
    {
        switch (Mode)
        {
            case ResponseBodyMode.Length:
                if (data.Length > Remaining)
                    return Refuse("more bytes than the response's Content-Length");
                output.Write(data);
                Counted(data.Length);
                return true;
            case ResponseBodyMode.UntilClose:
                WriteData(output, data, chunkToClient);
                return true;
            case ResponseBodyMode.Chunked:
                while (!data.IsEmpty)
                {
                    var status = _decoder.Decode(data, out int consumed, out int dataStart, out int dataLength);
                    if (status == ChunkStatus.Invalid)
                        return Refuse("malformed chunked body");
                    if (status == ChunkStatus.Data)
                        WriteData(output, data.Slice(dataStart, dataLength), chunkToClient);
                    data = data[consumed..];
                    if (status == ChunkStatus.Done)
                    {
                        // Extensions and trailers end here, on every path; bytes after the end are not ours to interpret.
                        if (chunkToClient)
                            output.Write(LastChunk);
                        Done = true;
                        Reusable = data.IsEmpty && _keepAlive;
                        return true;
                    }
                }
                return true;
            default:
                return data.IsEmpty || Refuse("a body where none may be");
        }
    }

    /// <summary><paramref name="count"/> bytes of a Length body were placed in the client's output directly (received into it).</summary>
    public void Counted(int count)
    {
        Remaining -= count;
        Done = Remaining == 0;
        Reusable = Done && _keepAlive;
    }

    /// <summary>
    /// The VM closed the connection: true when that ends the body (<see cref="ResponseBodyMode.UntilClose"/>; the
    /// last chunk is written when <paramref name="chunkToClient"/>), false when it cut the body short.
    /// </summary>
    public bool TakeEnd(IBufferWriter<byte> output, bool chunkToClient)
    {
        if (Mode != ResponseBodyMode.UntilClose)
            return Refuse(Mode == ResponseBodyMode.Chunked
                ? "the VM closed the connection inside a chunked body"
                : "the VM closed the connection inside a response body");
        if (chunkToClient)
            output.Write(LastChunk);
        Done = true;
        Reusable = false;
        return true;
    }

    private bool Refuse(string error)
    {
        Error = error;
        Reusable = false;
        return false;
    }

    /// <summary>The last chunk with no trailers: how every re-chunked body ends.</summary>
    public static ReadOnlySpan<byte> LastChunk => "0\r\n\r\n"u8;

    /// <summary>Writes body bytes, as one chunk (<c>size CRLF data CRLF</c>, RFC 9112 §7.1) when <paramref name="chunked"/>.</summary>
    public static void WriteData(IBufferWriter<byte> writer, ReadOnlySpan<byte> data, bool chunked)
    {
        if (data.IsEmpty)
            return;
        if (!chunked)
        {
            writer.Write(data);
            return;
        }
        var frame = writer.GetSpan(20);
        data.Length.TryFormat(frame, out int digits, "x", System.Globalization.CultureInfo.InvariantCulture);
        frame[digits] = (byte)'\r';
        frame[digits + 1] = (byte)'\n';
        writer.Advance(digits + 2);
        writer.Write(data);
        writer.Write("\r\n"u8);
    }
}
