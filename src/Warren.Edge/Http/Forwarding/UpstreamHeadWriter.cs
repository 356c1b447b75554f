namespace Warren.Edge.Http.Forwarding;

/// <summary>
/// Writes the request head a VM receives, for both HTTP/1.1 paths — the native lane (the client's bytes) and the
/// full path (Kestrel's parsed strings) — in one order with one set of decisions (<see cref="ForwardedHeaderRules"/>):
/// request line, <c>Host</c>, the client's fields that pass, <c>Cookie</c> without the front door's login cookies,
/// <c>X-Forwarded-For</c> (the client's chain, then the peer), <c>X-Forwarded-Proto</c>, <c>X-Forwarded-Host</c>,
/// the identity fields, the framing, the empty line. Each input has a bytes and a string form; both end here.
/// </summary>
/// <remarks>
/// Every method writes into <see cref="Output"/>, whose limit bounds the head; a head over it leaves
/// <see cref="ByteBuffer.Overflowed"/> set (the caller refuses the request). A string value holding a control
/// character is refused (false): a CR or LF there would start a field of the client's choosing (RFC 9112 §2.2).
/// </remarks>
internal readonly struct UpstreamHeadWriter(ByteBuffer output)
{
    public ByteBuffer Output => output;

    /// <summary><c>method SP target SP HTTP/1.1</c> and <c>Host</c> (RFC 9112 §3, §3.2: Host first).</summary>
    public void Start(ReadOnlySpan<byte> method, ReadOnlySpan<byte> target, ReadOnlySpan<byte> host)
    {
        output.Append(method);
        output.Append(" "u8);
        output.Append(target);
        output.Append(" HTTP/1.1\r\nHost: "u8);
        output.Append(host);
        output.Append("\r\n"u8);
    }

    /// <inheritdoc cref="Start(ReadOnlySpan{byte}, ReadOnlySpan{byte}, ReadOnlySpan{byte})"/>
    /// <remarks>The method and target are ASCII (Kestrel validated them; the caller checks the target it writes).</remarks>
    public bool Start(string method, string target, string host)
    {
        output.AppendAscii(method);
        output.Append(" "u8);
        output.AppendAscii(target);
        output.Append(" HTTP/1.1\r\nHost: "u8);
        if (!output.AppendValue(host))
            return false;
        output.Append("\r\n"u8);
        return true;
    }

    /// <summary>
    /// One of the client's fields when <see cref="ForwardedHeaderRules.IsReplacedRequestHeader(ReadOnlySpan{byte}, bool)"/>
    /// lets it pass (the field line as the client sent it: <paramref name="line"/> is <c>name: value</c>).
    /// <paramref name="passCookie"/>: the caller knows this head holds no login cookie (the lane's requests), so
    /// Cookie passes as it is; otherwise Cookie is left to <see cref="Cookie"/>.
    /// </summary>
    public void ClientField(ReadOnlySpan<byte> name, ReadOnlySpan<byte> line, bool removeAuthorization, bool passCookie)
    {
        bool cookie = passCookie && name.Length == 6 && System.Text.Ascii.EqualsIgnoreCase(name, "Cookie"u8);
        if (!cookie && ForwardedHeaderRules.IsReplacedRequestHeader(name, removeAuthorization))
            return;
        output.Append(line);
        output.Append("\r\n"u8);
    }

    /// <summary>One value of one of the client's fields (the caller asked <see cref="ForwardedHeaderRules"/> whether it passes).</summary>
    public bool ClientField(string name, string value) => Field(name, value);

    /// <summary>The Cookie field the VM gets (<see cref="ForwardedHeaderRules.ForwardedCookie"/>), if any.</summary>
    public bool Cookie(string? kept) => kept is null || Field(ForwardedHeaderRules.CookieHeader, kept);

    /// <summary>Starts <c>X-Forwarded-For</c>: the client's own entries (<see cref="ForwardedForEntry(ReadOnlySpan{byte})"/>) come next, then <see cref="ForwardedForPeer"/>.</summary>
    public void StartForwardedFor()
    {
        output.AppendAscii(ForwardedHeaderRules.ForwardedForHeader);
        output.Append(": "u8);
    }

    /// <summary>
    /// One value of a client's X-Forwarded-For field (it may be behind proxies of its own): every field in order as
    /// one list (RFC 9110 §5.3). Empty values add nothing.
    /// </summary>
    public void ForwardedForEntry(ReadOnlySpan<byte> value)
    {
        if (value.IsEmpty)
            return;
        output.Append(value);
        output.Append(", "u8);
    }

    /// <inheritdoc cref="ForwardedForEntry(ReadOnlySpan{byte})"/>
    public bool ForwardedForEntry(string? value)
    {
        if (string.IsNullOrEmpty(value))
            return true;
        if (!output.AppendValue(value))
            return false;
        output.Append(", "u8);
        return true;
    }

    /// <summary>Ends X-Forwarded-For with the peer's address, the one entry the front door vouches for.</summary>
    public void ForwardedForPeer(ReadOnlySpan<byte> clientAddress)
    {
        output.Append(clientAddress);
        output.Append("\r\n"u8);
    }

    /// <inheritdoc cref="ForwardedForPeer(ReadOnlySpan{byte})"/>
    public void ForwardedForPeer(string clientAddress)
    {
        output.AppendAscii(clientAddress);
        output.Append("\r\n"u8);
    }

    /// <summary><c>X-Forwarded-Proto</c> and <c>X-Forwarded-Host</c>: how and under which name the client reached the front door.</summary>
    public void ProtoAndHost(ReadOnlySpan<byte> scheme, ReadOnlySpan<byte> host)
    {
        output.AppendAscii(ForwardedHeaderRules.ForwardedProtoHeader);
        output.Append(": "u8);
        output.Append(scheme);
        output.Append("\r\n"u8);
        output.AppendAscii(ForwardedHeaderRules.ForwardedHostHeader);
        output.Append(": "u8);
        output.Append(host);
        output.Append("\r\n"u8);
    }

    /// <inheritdoc cref="ProtoAndHost(ReadOnlySpan{byte}, ReadOnlySpan{byte})"/>
    public bool ProtoAndHost(string scheme, string host) =>
        Field(ForwardedHeaderRules.ForwardedProtoHeader, scheme) && Field(ForwardedHeaderRules.ForwardedHostHeader, host);

    /// <summary>The identity fields for a signed-in person (exe.dev's proxy): user id, email, and the token's context if any.</summary>
    public bool Identity(WebUser? user, string? tokenCtx)
    {
        if (user is null)
            return true;
        return Field(ForwardedHeaderRules.UserIdHeader, user.UserId) && Field(ForwardedHeaderRules.EmailHeader, user.Email)
            && (tokenCtx is null || Field(ForwardedHeaderRules.TokenCtxHeader, tokenCtx));
    }

    /// <summary><c>Content-Length</c> (RFC 9112 §6.2).</summary>
    public void ContentLength(long length)
    {
        Span<byte> digits = stackalloc byte[20];
        length.TryFormat(digits, out int count, provider: System.Globalization.CultureInfo.InvariantCulture);
        output.Append("Content-Length: "u8);
        output.Append(digits[..count]);
        output.Append("\r\n"u8);
    }

    /// <summary><c>Transfer-Encoding: chunked</c> (RFC 9112 §6.1): a body of unknown length.</summary>
    public void Chunked() => output.Append("Transfer-Encoding: chunked\r\n"u8);

    /// <summary>The empty line; true when the whole head fit.</summary>
    public bool End()
    {
        output.Append("\r\n"u8);
        return !output.Overflowed;
    }

    private bool Field(string name, string value)
    {
        output.AppendAscii(name);
        output.Append(": "u8);
        if (!output.AppendValue(value))
            return false;
        output.Append("\r\n"u8);
        return true;
    }
}
