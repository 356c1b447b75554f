using System.Text;

namespace Warren.Edge.Http.Forwarding;

/// <summary>
/// The last value seen per response header name on one upstream connection: a VM answers with the same Server,
/// Content-Type, Accept-Ranges… on every response, and Kestrel needs strings, so an equal value reuses the
/// previous string instead of allocating (Kestrel does the same for request headers on a connection).
/// Keyed by the shared name constants of <see cref="ForwardedHeaderRules.KnownResponseHeaderName"/>, by reference.
/// Used by one request at a time, like its connection.
/// </summary>
internal sealed class ResponseValueCache
{
    private const int Slots = 8;
    private readonly string?[] _names = new string?[Slots];
    private readonly string?[] _values = new string?[Slots];
    private int _next;

    public string Get(string knownName, ReadOnlySpan<byte> value)
    {
        for (int i = 0; i < Slots; i++)
        {
            if (ReferenceEquals(_names[i], knownName))
            {
                string? cached = _values[i];
                if (cached is not null && EqualsLatin1(cached, value))
                    return cached;
                return _values[i] = Encoding.Latin1.GetString(value);
            }
        }
        int slot = _next;
        _next = (_next + 1) % Slots;
        _names[slot] = knownName;
        return _values[slot] = Encoding.Latin1.GetString(value);
    }

    private static bool EqualsLatin1(string s, ReadOnlySpan<byte> bytes)
    {
        if (s.Length != bytes.Length)
            return false;
        for (int i = 0; i < bytes.Length; i++)
        {
            if (s[i] != bytes[i])
                return false;
        }
        return true;
    }
}
