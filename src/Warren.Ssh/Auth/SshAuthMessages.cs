using Warren.Ssh.Wire;

namespace Warren.Ssh.Auth;

/// <summary>Authentication protocol message numbers (RFC 4252 §6, RFC 4256 §3.2, RFC 4253 §10).</summary>
internal static class SshAuthMessage
{
    public const byte ServiceRequest = 5;
    public const byte ServiceAccept = 6;
    public const byte UserauthRequest = 50;
    public const byte UserauthFailure = 51;
    public const byte UserauthSuccess = 52;
    public const byte UserauthBanner = 53;
    /// <summary>SSH_MSG_USERAUTH_PK_OK (RFC 4252 §7); shares 60 with INFO_REQUEST and PASSWD_CHANGEREQ.</summary>
    public const byte UserauthPkOk = 60;
    public const byte UserauthInfoRequest = 60;
    public const byte UserauthInfoResponse = 61;
}

/// <summary>Service and method names (RFC 4252 §5, §7, §8; RFC 4256 §3.1).</summary>
public static class SshAuthMethods
{
    public const string UserauthService = "ssh-userauth";
    public const string ConnectionService = "ssh-connection";
    public const string None = "none";
    public const string PublicKey = "publickey";
    public const string Password = "password";
    public const string KeyboardInteractive = "keyboard-interactive";
}

/// <summary>Authentication methods a server offers.</summary>
[Flags]
public enum SshAuthMethodSet
{
    None = 0,
    PublicKey = 1,
    KeyboardInteractive = 2,
    Password = 4,
}

internal static class SshAuthLimits
{
    /// <summary>
    /// User names: Linux LOGIN_NAME_MAX is 256 including the terminator; a longer
    /// name cannot be a real account and is refused with ILLEGAL_USER_NAME (RFC 4250 §4.2.2).
    /// </summary>
    public const int MaxUserNameBytes = 256;

    /// <summary>Passwords and keyboard-interactive responses: OpenSSH's auth-passwd.c refuses more than 1 KiB.</summary>
    public const int MaxSecretBytes = 1024;

    /// <summary>Prompts per INFO_REQUEST (RFC 4256 §3.2); OpenSSH's client refuses more than 100 (sshconnect2.c).</summary>
    public const int MaxPrompts = 100;

    /// <summary>Name, instruction and prompt texts.</summary>
    public const int MaxPromptTextBytes = 4 * 1024;

    /// <summary>The banner text a client accepts (RFC 4252 §5.4); OpenSSH's server reads up to 64 KiB.</summary>
    public const int MaxBannerBytes = 64 * 1024;
}

/// <summary>Builds the data a publickey signature covers (RFC 4252 §7).</summary>
internal static class PublicKeySignatureData
{
    public static byte[] Build(ReadOnlySpan<byte> sessionId, string user, string service, string algorithm, ReadOnlySpan<byte> keyBlob)
    {
        var w = new SshWriter(sessionId.Length + keyBlob.Length + 128);
        w.WriteString(sessionId)
         .WriteByte(SshAuthMessage.UserauthRequest)
         .WriteString(user)
         .WriteString(service)
         .WriteString(SshAuthMethods.PublicKey)
         .WriteBoolean(true)
         .WriteString(algorithm)
         .WriteString(keyBlob);
        return w.ToArray();
    }
}

/// <summary>Authentication failed: no method the server offered worked.</summary>
public sealed class SshAuthenticationException(string message) : Exception("ssh: " + message);
