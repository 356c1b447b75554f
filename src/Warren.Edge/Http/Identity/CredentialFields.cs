using System.Text;
using Microsoft.AspNetCore.Http;

namespace Warren.Edge.Http.Identity;

/// <summary>
/// The one list of request fields that can carry a credential: <c>X-Exedev-Authorization</c> (exe.dev's own
/// header), <c>Authorization</c> (Bearer, or Basic with the token as password) and a login cookie
/// (<c>login-with-exe-PORT</c>). <see cref="RequestIdentityReader"/> reads credentials only from requests this list
/// admits, and the connection-level lane serves anonymously only requests it rejects, so a new credential type is
/// added here once and both paths see it.
/// </summary>
public static class CredentialFields
{
    /// <summary>exe.dev's token header, preferred over <c>Authorization</c> (exe.dev's docs: proxy).</summary>
    public const string ExeDevAuthorization = "X-Exedev-Authorization";

    /// <summary>A site's login cookie is this prefix plus the public port (exe.dev: <c>login-with-exe-443</c>).</summary>
    public const string LoginCookiePrefix = "login-with-exe-";

    private static ReadOnlySpan<byte> LoginCookiePrefixBytes => "login-with-exe-"u8;

    /// <summary>
    /// True when the field <paramref name="name"/>: <paramref name="value"/> of a raw request head carries (or may
    /// carry) a credential. Any <c>Authorization</c> counts, whatever its scheme, so the answer errs towards the full path.
    /// </summary>
    public static bool IsCredential(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value) => name.Length switch
    {
        6 => Ascii.EqualsIgnoreCase(name, "Cookie"u8) && value.IndexOf(LoginCookiePrefixBytes) >= 0,
        13 => Ascii.EqualsIgnoreCase(name, "Authorization"u8),
        22 => Ascii.EqualsIgnoreCase(name, "X-Exedev-Authorization"u8),
        _ => false,
    };

    /// <summary>The same question for a request Kestrel parsed: does any field carry a credential?</summary>
    public static bool HasCredentials(IHeaderDictionary headers)
    {
        if (headers.ContainsKey(ExeDevAuthorization) || headers.ContainsKey("Authorization"))
            return true;
        foreach (var cookie in headers.Cookie)
        {
            if (cookie is not null && cookie.Contains(LoginCookiePrefix, StringComparison.Ordinal))
                return true;
        }
        return false;
    }
}
