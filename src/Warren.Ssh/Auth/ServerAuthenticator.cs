using Warren.Ssh.Keys;
using Warren.Ssh.Server;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Auth;

/// <summary>The outcome of a successful authentication.</summary>
internal sealed record AuthOutcome(string User, SshPublicKey? VerifiedKey, string Method, SshPermissions Permissions);

/// <summary>
/// Server side of the authentication protocol (RFC 4252) with keyboard-interactive
/// (RFC 4256) and password (RFC 4252 §8). Runs before the connection layer starts,
/// reading the transport directly.
/// </summary>
internal sealed class ServerAuthenticator : IKeyboardInteractivePrompter
{
    /// <summary>
    /// All USERAUTH_REQUESTs on one connection, successful queries included. Failures
    /// are capped by MaxAuthAttempts; this also caps PK_OK queries, each of which
    /// costs an application callback.
    /// </summary>
    public const int MaxAuthRequests = 64;

    private readonly ISshPacketChannel _transport;
    private readonly SshAuthContext _context;
    private readonly ISshServerApplication _app;
    private readonly SshServerOptions _options;
    private readonly CancellationToken _ct;
    private string? _user;
    private int _failures;
    private int _requests;
    private bool _bannerSent;
    private byte[]? _stashedRequest;
    /// <summary>
    /// The application's last publickey decision (user, key, answer): a query and the signed request that follows
    /// it get one decision, as golang.org/x/crypto/ssh's server keeps <c>cachedPubKeys</c> (one entry there too).
    /// </summary>
    private (string User, SshPublicKey Key, SshPermissions? Permissions)? _lastDecision;

    private ServerAuthenticator(ISshPacketChannel transport, SshAuthContext context, ISshServerApplication app, SshServerOptions options, CancellationToken ct)
    {
        _transport = transport;
        _context = context;
        _app = app;
        _options = options;
        _ct = ct;
    }

    public static Task<AuthOutcome> RunAsync(ISshPacketChannel transport, SshAuthContext context, ISshServerApplication app, SshServerOptions options, CancellationToken ct)
        => new ServerAuthenticator(transport, context, app, options, ct).RunAsync();

    private string MethodList()
    {
        var names = new List<string>(3);
        var m = _options.AuthenticationMethods;
        if (m.HasFlag(SshAuthMethodSet.PublicKey)) names.Add(SshAuthMethods.PublicKey);
        if (m.HasFlag(SshAuthMethodSet.KeyboardInteractive)) names.Add(SshAuthMethods.KeyboardInteractive);
        if (m.HasFlag(SshAuthMethodSet.Password)) names.Add(SshAuthMethods.Password);
        return string.Join(',', names);
    }

    private async Task<AuthOutcome> RunAsync()
    {
        // RFC 4253 §10: the client asks for "ssh-userauth" first.
        using (var first = await _transport.ReceiveAsync(_ct).ConfigureAwait(false))
        {
            if (first.MessageNumber != SshAuthMessage.ServiceRequest) throw Protocol("expected SERVICE_REQUEST");
            var r = new SshReader(first.Payload.Span[1..]);
            if (!r.TryReadUtf8(out var service, SshChannelLimitsForAuth.MaxNameBytes))
                throw Protocol("malformed SERVICE_REQUEST");
            if (service != SshAuthMethods.UserauthService)
                throw new SshProtocolException(SshDisconnectReason.ServiceNotAvailable, "service not available");
        }
        var accept = new SshWriter();
        accept.WriteByte(SshAuthMessage.ServiceAccept).WriteString(SshAuthMethods.UserauthService);
        await _transport.SendAsync(accept.WrittenMemory, _ct).ConfigureAwait(false);

        while (true)
        {
            byte[] request;
            if (_stashedRequest is not null)
            {
                request = _stashedRequest;
                _stashedRequest = null;
            }
            else
            {
                using var packet = await _transport.ReceiveAsync(_ct).ConfigureAwait(false);
                if (packet.MessageNumber != SshAuthMessage.UserauthRequest) throw Protocol("expected USERAUTH_REQUEST");
                request = packet.Payload.ToArray();
            }
            if (++_requests > MaxAuthRequests)
                throw new SshProtocolException(SshDisconnectReason.NoMoreAuthMethodsAvailable, "too many authentication requests");

            var outcome = await HandleRequestAsync(request).ConfigureAwait(false);
            if (outcome is not null)
            {
                await _transport.SendAsync(new byte[] { SshAuthMessage.UserauthSuccess }, _ct).ConfigureAwait(false);
                return outcome;
            }
        }
    }

    /// <summary>Returns the outcome on success, null when the client should try again.</summary>
    private async Task<AuthOutcome?> HandleRequestAsync(byte[] request)
    {
        string user, service, method;
        {
            var r = new SshReader(request.AsSpan(1));
            if (!r.TryReadString(out var userRaw)) throw Protocol("malformed USERAUTH_REQUEST");
            if (userRaw.Length > SshAuthLimits.MaxUserNameBytes)
                throw new SshProtocolException(SshDisconnectReason.IllegalUserName, "user name too long");
            r = new SshReader(request.AsSpan(1));
            if (!r.TryReadUtf8(out user) || !r.TryReadUtf8(out service, SshChannelLimitsForAuth.MaxNameBytes)
                || !r.TryReadUtf8(out method, SshChannelLimitsForAuth.MaxNameBytes))
                throw Protocol("malformed USERAUTH_REQUEST");
        }
        if (service != SshAuthMethods.ConnectionService)
            throw new SshProtocolException(SshDisconnectReason.ServiceNotAvailable, "service not available");
        // Like OpenSSH (auth2.c), refuse to switch users mid-authentication: the
        // application's view of "who is this" must not change under it.
        if (_user is not null && _user != user) throw Protocol("user name changed during authentication");
        _user = user;

        if (!_bannerSent && _options.Banner is { Length: > 0 } banner)
        {
            _bannerSent = true;
            var b = new SshWriter();
            b.WriteByte(SshAuthMessage.UserauthBanner).WriteString(banner).WriteString("");
            await _transport.SendAsync(b.WrittenMemory, _ct).ConfigureAwait(false);
        }

        var methods = _options.AuthenticationMethods;
        switch (method)
        {
            case SshAuthMethods.PublicKey when methods.HasFlag(SshAuthMethodSet.PublicKey):
                return await HandlePublicKeyAsync(request, user).ConfigureAwait(false);
            case SshAuthMethods.KeyboardInteractive when methods.HasFlag(SshAuthMethodSet.KeyboardInteractive):
                {
                    SshPermissions? granted;
                    try { granted = await _app.AuthenticateKeyboardInteractiveAsync(_context, user, this, _ct).ConfigureAwait(false); }
                    catch (KeyboardInteractiveAbandonedException)
                    {
                        // RFC 4256 §3.4 / RFC 4252 §5: a new request abandons this one; it
                        // counts as a failure but gets no FAILURE reply of its own.
                        await CountFailureAsync(sendFailure: false).ConfigureAwait(false);
                        return null;
                    }
                    if (granted is not null) return new AuthOutcome(user, null, method, granted);
                    await CountFailureAsync().ConfigureAwait(false);
                    return null;
                }
            case SshAuthMethods.Password when methods.HasFlag(SshAuthMethodSet.Password):
                {
                    var r = SkipHeader(request);
                    if (!r.TryReadBoolean(out var change)) throw Protocol("malformed password request");
                    if (!r.TryReadString(out var pw) || pw.Length > SshAuthLimits.MaxSecretBytes || change)
                    {
                        await CountFailureAsync().ConfigureAwait(false);
                        return null;
                    }
                    string password;
                    try { password = new System.Text.UTF8Encoding(false, true).GetString(pw); }
                    catch (System.Text.DecoderFallbackException) { await CountFailureAsync().ConfigureAwait(false); return null; }
                    if (await _app.AuthenticatePasswordAsync(_context, user, password, _ct).ConfigureAwait(false) is { } granted)
                        return new AuthOutcome(user, null, method, granted);
                    await CountFailureAsync().ConfigureAwait(false);
                    return null;
                }
            default:
                // "none" and anything not offered: list the methods (RFC 4252 §5.2). Counts as an attempt.
                await CountFailureAsync().ConfigureAwait(false);
                return null;
        }
    }

    private static SshReader SkipHeader(byte[] request)
    {
        var r = new SshReader(request.AsSpan(1));
        r.TryReadString(out _);
        r.TryReadString(out _);
        r.TryReadString(out _);
        return r;
    }

    private async Task<AuthOutcome?> HandlePublicKeyAsync(byte[] request, string user)
    {
        bool hasSignature;
        string algorithm;
        byte[] blob;
        byte[]? signature = null;
        {
            var r = SkipHeader(request);
            if (!r.TryReadBoolean(out hasSignature) || !r.TryReadUtf8(out algorithm, SshChannelLimitsForAuth.MaxNameBytes)
                || !r.TryReadString(out var blobSpan))
                throw Protocol("malformed publickey request");
            if (blobSpan.Length > SshPublicKey.MaxBlobBytes) { await CountFailureAsync().ConfigureAwait(false); return null; }
            blob = blobSpan.ToArray();
            if (hasSignature)
            {
                if (!r.TryReadString(out var sig)) throw Protocol("malformed publickey request");
                signature = sig.ToArray();
            }
        }

        // The algorithm must be one the key type defines (RFC 8332 §3.2: rsa-sha2-* for ssh-rsa keys).
        if (!SshPublicKey.TryParseBlob(blob, out var key) || !key.SignatureAlgorithms.Contains(algorithm))
        {
            await CountFailureAsync().ConfigureAwait(false);
            return null;
        }
        _context.RecordOffered(key);

        if (!hasSignature)
        {
            // Query (RFC 4252 §7): PK_OK tells the client the key would be accepted.
            // This proves nothing about the client; the key is not remembered as identity.
            if (await DecideAsync(user, key).ConfigureAwait(false) is not null)
            {
                var ok = new SshWriter();
                ok.WriteByte(SshAuthMessage.UserauthPkOk).WriteString(algorithm).WriteString(blob);
                await _transport.SendAsync(ok.WrittenMemory, _ct).ConfigureAwait(false);
                return null;
            }
            await CountFailureAsync().ConfigureAwait(false);
            return null;
        }

        // Signed request: verify first, so the application decides only for a key
        // whose possession the client has just proven over this session's id.
        var data = PublicKeySignatureData.Build(_context.SessionId.Span, user, SshAuthMethods.ConnectionService, algorithm, blob);
        if (!key.Verify(algorithm, data, signature) || await DecideAsync(user, key).ConfigureAwait(false) is not { } permissions)
        {
            await CountFailureAsync().ConfigureAwait(false);
            return null;
        }
        return new AuthOutcome(user, key, SshAuthMethods.PublicKey, permissions);
    }

    /// <summary>The application's decision for (user, key), asked once for a query and its signed request.</summary>
    private async ValueTask<SshPermissions?> DecideAsync(string user, SshPublicKey key)
    {
        if (_lastDecision is { } last && last.User == user && last.Key.Equals(key)) return last.Permissions;
        var permissions = await _app.AuthorizePublicKeyAsync(_context, user, key, _ct).ConfigureAwait(false);
        _lastDecision = (user, key, permissions);
        return permissions;
    }

    private async Task CountFailureAsync(bool sendFailure = true)
    {
        _failures++;
        if (_failures >= _options.MaxAuthAttempts)
            throw new SshProtocolException(SshDisconnectReason.NoMoreAuthMethodsAvailable, "too many authentication failures");
        if (!sendFailure) return;
        var w = new SshWriter();
        w.WriteByte(SshAuthMessage.UserauthFailure).WriteString(MethodList()).WriteBoolean(false);
        await _transport.SendAsync(w.WrittenMemory, _ct).ConfigureAwait(false);
    }

    async ValueTask<IReadOnlyList<string>> IKeyboardInteractivePrompter.PromptAsync(string name, string instruction, IReadOnlyList<SshPrompt> prompts, CancellationToken cancellationToken)
    {
        if (prompts.Count > SshAuthLimits.MaxPrompts) throw new ArgumentException("Too many prompts.", nameof(prompts));
        var w = new SshWriter();
        w.WriteByte(SshAuthMessage.UserauthInfoRequest).WriteString(name).WriteString(instruction).WriteString("")
         .WriteUInt32((uint)prompts.Count);
        foreach (var p in prompts) w.WriteString(p.Text).WriteBoolean(p.Echo);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_ct, cancellationToken);
        await _transport.SendAsync(w.WrittenMemory, linked.Token).ConfigureAwait(false);

        using var packet = await _transport.ReceiveAsync(linked.Token).ConfigureAwait(false);
        if (packet.MessageNumber == SshAuthMessage.UserauthRequest)
        {
            _stashedRequest = packet.Payload.ToArray();
            throw new KeyboardInteractiveAbandonedException();
        }
        if (packet.MessageNumber != SshAuthMessage.UserauthInfoResponse) throw Protocol("expected USERAUTH_INFO_RESPONSE");
        var r = new SshReader(packet.Payload.Span[1..]);
        // RFC 4256 §3.4: num-responses MUST equal num-prompts.
        if (!r.TryReadUInt32(out var count) || count != (uint)prompts.Count) throw Protocol("wrong number of responses");
        var answers = new string[count];
        for (int i = 0; i < answers.Length; i++)
            if (!r.TryReadUtf8(out answers[i], SshAuthLimits.MaxSecretBytes)) throw Protocol("malformed USERAUTH_INFO_RESPONSE");
        return answers;
    }

    private static SshProtocolException Protocol(string message) => new(SshDisconnectReason.ProtocolError, message);
}

/// <summary>The client abandoned keyboard-interactive by sending a new USERAUTH_REQUEST.</summary>
public sealed class KeyboardInteractiveAbandonedException() : OperationCanceledException("ssh: keyboard-interactive abandoned by the client");

internal static class SshChannelLimitsForAuth
{
    /// <summary>Service, method and algorithm names: RFC 4251 §6 caps names at 64 characters.</summary>
    public const int MaxNameBytes = 64;
}
