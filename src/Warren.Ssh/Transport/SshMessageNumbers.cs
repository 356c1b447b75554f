namespace Warren.Ssh.Transport;

/// <summary>Transport-layer message numbers (RFC 4250 §4.1.2, RFC 8308 §2.3, OpenSSH PROTOCOL §1.9).</summary>
internal static class SshMessageNumbers
{
    public const byte Disconnect = 1;
    public const byte Ignore = 2;
    public const byte Unimplemented = 3;
    public const byte Debug = 4;
    public const byte ServiceRequest = 5;
    public const byte ServiceAccept = 6;
    /// <summary>RFC 8308 §2.3.</summary>
    public const byte ExtInfo = 7;
    public const byte KexInit = 20;
    public const byte NewKeys = 21;
    /// <summary>SSH_MSG_KEXDH_INIT / KEX_ECDH_INIT / KEX_HYBRID_INIT (RFC 4253 §8, RFC 5656 §7.1).</summary>
    public const byte KexEcdhInit = 30;
    /// <summary>SSH_MSG_KEXDH_REPLY / KEX_ECDH_REPLY / KEX_HYBRID_REPLY.</summary>
    public const byte KexEcdhReply = 31;
    /// <summary>Last number of the key-exchange-method-specific range (RFC 4250 §4.1.2: 30–49).</summary>
    public const byte KexMethodLast = 49;
    /// <summary>First number passed to the layers above (RFC 4250 §4.1.2: 50 and up).</summary>
    public const byte FirstUpperLayer = 50;
    /// <summary>OpenSSH PROTOCOL §1.9, ping@openssh.com.</summary>
    public const byte Ping = 192;
    public const byte Pong = 193;
}
