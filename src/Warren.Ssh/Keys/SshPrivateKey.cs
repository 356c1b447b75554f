namespace Warren.Ssh.Keys;

/// <summary>
/// A private key able to produce SSH signature blobs (RFC 4253 §6.6).
/// Used for host keys (server), user keys (client) and SSHSIG.
/// </summary>
public abstract partial class SshPrivateKey : IDisposable
{
    public abstract SshPublicKey PublicKey { get; }

    /// <summary>Signature algorithms this key can produce, preferred first.</summary>
    public abstract IReadOnlyList<string> SignatureAlgorithms { get; }

    /// <summary>Returns the signature blob: string algorithm, string signature.</summary>
    public abstract byte[] Sign(string signatureAlgorithm, ReadOnlySpan<byte> data);

    public virtual void Dispose() { }
}
