using Warren.Ssh.Auth;
using Warren.Ssh.Connection;
using Warren.Ssh.Keys;
using Warren.Ssh.Transport;

namespace Warren.Ssh.Client;

/// <summary>Answers keyboard-interactive prompts (RFC 4256 §3.3): one response per prompt.</summary>
public delegate ValueTask<IReadOnlyList<string>> SshKeyboardInteractiveResponder(string name, string instruction, IReadOnlyList<SshPrompt> prompts, CancellationToken cancellationToken);

/// <summary>Configuration of an <see cref="SshClient"/>.</summary>
public sealed class SshClientOptions
{
    public required string User { get; init; }

    /// <summary>Keys tried in order with publickey authentication.</summary>
    public IReadOnlyList<SshPrivateKey> Keys { get; init; } = [];

    /// <summary>
    /// Decides whether the server's host key is trusted. Required: there is no
    /// silent "accept anything" default; tests pass <c>_ =&gt; ValueTask.FromResult(true)</c> explicitly.
    /// </summary>
    public required Func<SshPublicKey, ValueTask<bool>> HostKeyValidator { get; init; }

    /// <summary>Answers keyboard-interactive prompts; null skips that method.</summary>
    public SshKeyboardInteractiveResponder? KeyboardInteractiveResponder { get; init; }

    /// <summary>Password for the "password" method; null skips it.</summary>
    public string? Password { get; init; }

    /// <summary>Receives USERAUTH_BANNER text (peer-controlled: escape before display).</summary>
    public Action<string>? BannerReceived { get; init; }

    /// <summary>Transport algorithms and limits; the host key validator above is applied on top.</summary>
    public SshTransportClientOptions? Transport { get; init; }

    public SshConnectionLimits ConnectionLimits { get; init; } = new();
}
