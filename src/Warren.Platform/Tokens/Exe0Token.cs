using System.Buffers.Text;
using System.Diagnostics.CodeAnalysis;
using System.Text;
using System.Text.Json;

namespace Warren.Platform.Tokens;

/// <summary>
/// A self-signed API token in exe.dev's <c>exe0</c> format:
/// <c>exe0.</c> + unpadded base64url(payload) + <c>.</c> + unpadded base64url(SSHSIG blob).
/// </summary>
/// <remarks>
/// The payload is a strict JSON object with only <c>exp</c>, <c>nbf</c>, <c>cmds</c> and <c>ctx</c>;
/// the signature is verified over the exact payload bytes (never re-serialised). Parsing here is
/// syntactic only: the signature, the signer and the clock are checked by <see cref="TokenAuthenticator"/>.
/// </remarks>
public sealed class Exe0Token
{
    public const string Prefix = "exe0.";

    /// <summary>exe.dev (sshkey/token.go): a whole token is at most 8192 bytes.</summary>
    public const int MaxTokenBytes = 8192;

    private Exe0Token(string text, byte[] payload, byte[] signature, TokenPayload parsed)
    {
        Text = text;
        PayloadBytes = payload;
        SignatureBlob = signature;
        Payload = parsed;
    }

    /// <summary>The token as given.</summary>
    public string Text { get; }

    /// <summary>The exact payload bytes that were signed.</summary>
    public byte[] PayloadBytes { get; }

    /// <summary>The binary SSHSIG blob (PROTOCOL.sshsig), not armored.</summary>
    public byte[] SignatureBlob { get; }

    public TokenPayload Payload { get; }

    /// <summary>Never includes the token text (it is a bearer secret).</summary>
    public override string ToString() => $"Exe0Token {{ exp = {Payload.Exp?.ToString() ?? "none"}, cmds = {(Payload.Cmds is null ? "default" : Payload.Cmds.Count.ToString())} }}";

    public static bool LooksLikeExe0(string? s) => s is not null && s.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>
    /// Parses the token's structure and its payload. Never throws on any input; <paramref name="error"/>
    /// is one of the <see cref="TokenErrors"/> messages.
    /// </summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out Exe0Token? token, [NotNullWhen(false)] out string? error)
    {
        token = null;
        if (text is null || !text.StartsWith(Prefix, StringComparison.Ordinal))
        {
            error = TokenErrors.Invalid;
            return false;
        }
        // Character count bounds the UTF-8 size from below; anything non-ASCII fails base64 decoding anyway.
        if (text.Length > MaxTokenBytes)
        {
            error = TokenErrors.Invalid;
            return false;
        }
        var rest = text.AsSpan(Prefix.Length);
        int dot = rest.IndexOf('.');
        if (dot <= 0 || dot == rest.Length - 1 || rest[(dot + 1)..].Contains('.'))
        {
            error = TokenErrors.Invalid;
            return false;
        }
        if (!TryDecodeBase64Url(rest[..dot], out var payload) || !TryDecodeBase64Url(rest[(dot + 1)..], out var signature))
        {
            error = TokenErrors.Invalid;
            return false;
        }
        if (!TokenPayload.TryParse(payload, out var parsed, out error)) return false;
        token = new Exe0Token(text, payload, signature, parsed);
        return true;
    }

    /// <summary>Builds the token text from payload bytes and a binary SSHSIG blob.</summary>
    public static string Format(ReadOnlySpan<byte> payload, ReadOnlySpan<byte> sshsigBlob)
        => Prefix + Base64Url.EncodeToString(payload) + "." + Base64Url.EncodeToString(sshsigBlob);

    /// <summary>Strict unpadded base64url (RFC 4648 §5 without '=').</summary>
    internal static bool TryDecodeBase64Url(ReadOnlySpan<char> s, [NotNullWhen(true)] out byte[]? bytes)
    {
        bytes = null;
        if (s.IsEmpty || s.Length % 4 == 1) return false;
        foreach (char c in s)
        {
            bool ok = c is >= 'A' and <= 'Z' or >= 'a' and <= 'z' or >= '0' and <= '9' or '-' or '_';
            if (!ok) return false;
        }
        try
        {
            bytes = Base64Url.DecodeFromChars(s);
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }
}

/// <summary>The validated payload of an <see cref="Exe0Token"/>.</summary>
public sealed class TokenPayload
{
    /// <summary>exe.dev: exp/nbf must lie in 2000-01-01T00:00:00Z…2100-01-01T00:00:00Z (Unix seconds).</summary>
    public const long MinTime = 946684800;

    /// <inheritdoc cref="MinTime"/>
    public const long MaxTime = 4102444800;

    /// <summary>Nesting limit for <c>ctx</c>; System.Text.Json's default reader depth.</summary>
    public const int MaxDepth = 64;

    private static readonly string[] s_fields = ["exp", "nbf", "cmds", "ctx"];

    public long? Exp { get; private init; }
    public long? Nbf { get; private init; }

    /// <summary>Null when absent (the default command list applies); empty allows nothing.</summary>
    public IReadOnlyList<string>? Cmds { get; private init; }

    /// <summary>The raw bytes of <c>ctx</c> as written (forwarded verbatim as X-ExeDev-Token-Ctx), or null.</summary>
    public string? CtxRawJson { get; private init; }

    public static bool TryParse(ReadOnlySpan<byte> json, [NotNullWhen(true)] out TokenPayload? payload, [NotNullWhen(false)] out string? error)
    {
        payload = null;
        if (json.IsEmpty || json[0] != (byte)'{')
        {
            error = TokenErrors.Malformed("payload must be a JSON object");
            return false;
        }
        if (json.IndexOfAny((byte)'\n', (byte)'\r', (byte)0) >= 0)
        {
            error = TokenErrors.Malformed("payload contains a newline or NUL byte");
            return false;
        }
        if (!System.Text.Unicode.Utf8.IsValid(json))
        {
            error = TokenErrors.Malformed("payload is not valid UTF-8");
            return false;
        }
        if (json[^1] is (byte)' ' or (byte)'\t')
        {
            error = TokenErrors.Malformed("payload has trailing whitespace");
            return false;
        }
        try
        {
            return TryParseCore(json, out payload, out error);
        }
        catch (JsonException)
        {
            error = TokenErrors.Malformed("payload is not valid JSON");
            return false;
        }
        catch (InvalidOperationException)
        {
            // Utf8JsonReader raises this for invalid UTF-8 inside strings when getting their value.
            error = TokenErrors.Malformed("payload is not valid JSON");
            return false;
        }
    }

    private static bool TryParseCore(ReadOnlySpan<byte> json, out TokenPayload? payload, out string? error)
    {
        payload = null;
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = MaxDepth, CommentHandling = JsonCommentHandling.Disallow });
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            error = TokenErrors.Malformed("payload must be a JSON object");
            return false;
        }
        long? exp = null, nbf = null;
        List<string>? cmds = null;
        string? ctx = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (true)
        {
            if (!reader.Read()) { error = TokenErrors.Malformed("payload is not valid JSON"); return false; }
            if (reader.TokenType == JsonTokenType.EndObject) break;
            string name = reader.GetString()!;
            if (!seen.Add(name))
            {
                error = TokenErrors.Malformed($"duplicate field \"{Escape(name)}\"");
                return false;
            }
            if (Array.IndexOf(s_fields, name) < 0)
            {
                error = TokenErrors.UnknownField(name);
                return false;
            }
            if (!reader.Read()) { error = TokenErrors.Malformed("payload is not valid JSON"); return false; }
            switch (name)
            {
                case "exp":
                case "nbf":
                    if (!TryReadTime(ref reader, out long t))
                    {
                        error = TokenErrors.Malformed($"\"{name}\" must be an integer between {MinTime} and {MaxTime}");
                        return false;
                    }
                    if (name == "exp") exp = t; else nbf = t;
                    break;
                case "cmds":
                    if (reader.TokenType != JsonTokenType.StartArray)
                    {
                        error = TokenErrors.Malformed("\"cmds\" must be an array of strings");
                        return false;
                    }
                    cmds = new List<string>();
                    while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                    {
                        if (reader.TokenType != JsonTokenType.String)
                        {
                            error = TokenErrors.Malformed("\"cmds\" must be an array of strings");
                            return false;
                        }
                        string c = reader.GetString()!;
                        if (c.Length == 0)
                        {
                            error = TokenErrors.Malformed("\"cmds\" entries must be non-empty");
                            return false;
                        }
                        cmds.Add(c);
                    }
                    break;
                case "ctx":
                {
                    int start = (int)reader.TokenStartIndex;
                    if (!TrySkipCheckingDuplicates(ref reader, out error)) return false;
                    ctx = Encoding.UTF8.GetString(json[start..(int)reader.BytesConsumed]);
                    break;
                }
            }
        }
        // isFinalBlock=true and no AllowMultipleValues: another Read() throws if anything but whitespace follows.
        if (reader.Read())
        {
            error = TokenErrors.Malformed("payload is not valid JSON");
            return false;
        }
        payload = new TokenPayload { Exp = exp, Nbf = nbf, Cmds = cmds, CtxRawJson = ctx };
        error = null;
        return true;
    }

    private static bool TryReadTime(ref Utf8JsonReader reader, out long value)
    {
        value = 0;
        if (reader.TokenType != JsonTokenType.Number || reader.HasValueSequence) return false;
        var raw = reader.ValueSpan;
        // Plain integers only: no sign, fraction, exponent or leading zero.
        if (raw.Length == 0 || raw.Length > 10 || (raw[0] == (byte)'0' && raw.Length > 1)) return false;
        foreach (byte b in raw) if (b is < (byte)'0' or > (byte)'9') return false;
        if (!reader.TryGetInt64(out value)) return false;
        return value is >= MinTime and <= MaxTime;
    }

    /// <summary>Skips the value at the reader, failing on a duplicate key in any nested object.</summary>
    private static bool TrySkipCheckingDuplicates(ref Utf8JsonReader reader, out string? error)
    {
        error = null;
        if (reader.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray)) return true;
        var stack = new Stack<HashSet<string>?>();
        stack.Push(reader.TokenType == JsonTokenType.StartObject ? new HashSet<string>(StringComparer.Ordinal) : null);
        while (stack.Count > 0)
        {
            if (!reader.Read()) { error = TokenErrors.Malformed("payload is not valid JSON"); return false; }
            switch (reader.TokenType)
            {
                case JsonTokenType.PropertyName:
                    string n = reader.GetString()!;
                    if (!stack.Peek()!.Add(n))
                    {
                        error = TokenErrors.Malformed($"duplicate field \"{Escape(n)}\"");
                        return false;
                    }
                    break;
                case JsonTokenType.StartObject: stack.Push(new HashSet<string>(StringComparer.Ordinal)); break;
                case JsonTokenType.StartArray: stack.Push(null); break;
                case JsonTokenType.EndObject or JsonTokenType.EndArray: stack.Pop(); break;
            }
        }
        return true;
    }

    private static string Escape(string s)
    {
        const int MaxShown = 64;
        var sb = new StringBuilder();
        foreach (char c in s.Length > MaxShown ? s[..MaxShown] : s)
            sb.Append(c is < ' ' or '"' or '\\' or '\u007f' ? $"\\u{(int)c:x4}" : c.ToString());
        return sb.ToString();
    }

    internal static string FieldForError(string name) => Escape(name);
}

/// <summary>Token error messages, exactly as exe.dev prints them.</summary>
public static class TokenErrors
{
    public const string Invalid = "invalid token";
    public const string Expired = "invalid token: token has expired";
    public const string NotYetValid = "invalid token: token is not yet valid";
    public const string KeyExpired = "SSH key has expired";
    public const string NotAllowed = "command not allowed by token permissions";

    public static string UnknownField(string name) => $"invalid token: unknown field \"{TokenPayload.FieldForError(name)}\"";

    /// <summary>A payload that breaks the strict JSON rules: "invalid token: …".</summary>
    public static string Malformed(string detail) => "invalid token: " + detail;
}
