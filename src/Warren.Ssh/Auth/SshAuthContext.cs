using System.Net;
using Warren.Ssh.Keys;

namespace Warren.Ssh.Auth;

/// <summary>
/// What the server knows about a connection while it authenticates. Keys in
/// <see cref="OfferedKeys"/> are only CLAIMS: the client has not proven it holds
/// them. Never treat an offered or queried key as the identity; after success use
/// <c>SshServerConnection.AuthenticatedKey</c>, the key whose signature verified
/// (the lesson of CVE-2024-45337).
/// </summary>
public sealed class SshAuthContext
{
    /// <summary>Bound on remembered offered keys; OpenSSH's MaxAuthTries (6) makes real clients offer far fewer.</summary>
    public const int MaxRememberedKeys = 32;

    private readonly List<SshPublicKey> _offered = [];

    internal SshAuthContext(EndPoint localEndPoint, EndPoint remoteEndPoint, ReadOnlyMemory<byte> sessionId, string clientVersion)
    {
        LocalEndPoint = localEndPoint;
        RemoteEndPoint = remoteEndPoint;
        SessionId = sessionId;
        ClientVersion = clientVersion;
    }

    /// <summary>Address the connection arrived on (after any PROXY header the front door applied).</summary>
    public EndPoint LocalEndPoint { get; }
    public EndPoint RemoteEndPoint { get; }

    /// <summary>H of the first key exchange (RFC 4253 §7.2).</summary>
    public ReadOnlyMemory<byte> SessionId { get; }

    /// <summary>Client version line, e.g. "SSH-2.0-OpenSSH_9.2p1" (peer-controlled text).</summary>
    public string ClientVersion { get; }

    /// <summary>Public keys the client named so far (unverified), oldest first, at most <see cref="MaxRememberedKeys"/>.</summary>
    public IReadOnlyList<SshPublicKey> OfferedKeys => _offered;

    internal void RecordOffered(SshPublicKey key)
    {
        if (_offered.Count < MaxRememberedKeys && !_offered.Contains(key)) _offered.Add(key);
    }
}

/// <summary>One prompt of a keyboard-interactive INFO_REQUEST (RFC 4256 §3.2).</summary>
public readonly record struct SshPrompt(string Text, bool Echo);

/// <summary>Server side of keyboard-interactive: asks the client's user questions (RFC 4256 §3.2–3.4).</summary>
public interface IKeyboardInteractivePrompter
{
    /// <summary>Sends SSH_MSG_USERAUTH_INFO_REQUEST and returns the responses, one per prompt.</summary>
    ValueTask<IReadOnlyList<string>> PromptAsync(string name, string instruction, IReadOnlyList<SshPrompt> prompts, CancellationToken cancellationToken = default);
}
