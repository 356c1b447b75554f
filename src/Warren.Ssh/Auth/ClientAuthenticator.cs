using Warren.Ssh.Client;
using Warren.Ssh.Keys;
using Warren.Ssh.Transport;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Auth;

/// <summary>Client side of RFC 4252 (publickey, password) and RFC 4256 (keyboard-interactive).</summary>
internal sealed class ClientAuthenticator
{
    /// <summary>INFO_REQUEST rounds in one keyboard-interactive attempt; OpenSSH servers use one or two.</summary>
    public const int MaxInfoRounds = 16;

    private readonly ISshPacketChannel _transport;
    private readonly SshClientOptions _options;
    private readonly CancellationToken _ct;
    private string[] _methods = [];

    private ClientAuthenticator(ISshPacketChannel transport, SshClientOptions options, CancellationToken ct)
    {
        _transport = transport;
        _options = options;
        _ct = ct;
    }

    /// <summary>Authenticates; returns the key that worked, or null for a non-key method.</summary>
    public static Task<SshPublicKey?> RunAsync(ISshPacketChannel transport, SshClientOptions options, CancellationToken ct)
        => new ClientAuthenticator(transport, options, ct).RunAsync();

    private async Task<SshPublicKey?> RunAsync()
    {
        var w = new SshWriter();
        w.WriteByte(SshAuthMessage.ServiceRequest).WriteString(SshAuthMethods.UserauthService);
        await _transport.SendAsync(w.WrittenMemory, _ct).ConfigureAwait(false);
        using (var accept = await ReceiveAsync().ConfigureAwait(false))
        {
            if (accept.MessageNumber != SshAuthMessage.ServiceAccept) throw Protocol("expected SERVICE_ACCEPT");
        }

        if (await TryNoneAsync().ConfigureAwait(false)) return null;

        foreach (var key in _options.Keys)
        {
            if (!_methods.Contains(SshAuthMethods.PublicKey)) break;
            if (await TryPublicKeyAsync(key).ConfigureAwait(false)) return key.PublicKey;
        }
        if (_options.KeyboardInteractiveResponder is { } responder && _methods.Contains(SshAuthMethods.KeyboardInteractive))
        {
            if (await TryKeyboardInteractiveAsync(responder).ConfigureAwait(false)) return null;
        }
        if (_options.Password is { } password && _methods.Contains(SshAuthMethods.Password))
        {
            if (await TryPasswordAsync(password).ConfigureAwait(false)) return null;
        }
        throw new SshAuthenticationException("permission denied (no authentication method succeeded)");
    }

    private SshWriter Header(string method)
    {
        var w = new SshWriter();
        w.WriteByte(SshAuthMessage.UserauthRequest).WriteString(_options.User).WriteString(SshAuthMethods.ConnectionService).WriteString(method);
        return w;
    }

    private async Task<bool> TryNoneAsync()
    {
        await _transport.SendAsync(Header(SshAuthMethods.None).WrittenMemory, _ct).ConfigureAwait(false);
        using var reply = await ReceiveAsync().ConfigureAwait(false);
        return ReadResult(reply);
    }

    /// <summary>
    /// Picks the signature algorithm: for RSA the strongest rsa-sha2-* the server
    /// lists in server-sig-algs (RFC 8332 §3.3, RFC 8308 §3.1); otherwise the key's own.
    /// </summary>
    internal static string ChooseAlgorithm(SshPrivateKey key, IReadOnlyList<string> serverSigAlgs)
    {
        var mine = key.SignatureAlgorithms;
        if (serverSigAlgs.Count > 0)
            foreach (var alg in mine)
                if (serverSigAlgs.Contains(alg)) return alg;
        return mine[0];
    }

    private async Task<bool> TryPublicKeyAsync(SshPrivateKey key)
    {
        // Signed request straight away (RFC 4252 §7 allows skipping the query).
        string algorithm = ChooseAlgorithm(key, _transport.PeerServerSigAlgs);
        var blob = key.PublicKey.Blob;
        var data = PublicKeySignatureData.Build(_transport.SessionId.Span, _options.User, SshAuthMethods.ConnectionService, algorithm, blob.Span);
        var signature = key.Sign(algorithm, data);
        var w = Header(SshAuthMethods.PublicKey);
        w.WriteBoolean(true).WriteString(algorithm).WriteString(blob.Span).WriteString(signature);
        await _transport.SendAsync(w.WrittenMemory, _ct).ConfigureAwait(false);
        using var reply = await ReceiveAsync().ConfigureAwait(false);
        return ReadResult(reply);
    }

    private async Task<bool> TryPasswordAsync(string password)
    {
        var w = Header(SshAuthMethods.Password);
        w.WriteBoolean(false).WriteString(password);
        await _transport.SendAsync(w.WrittenMemory, _ct).ConfigureAwait(false);
        using var reply = await ReceiveAsync().ConfigureAwait(false);
        if (reply.MessageNumber == SshAuthMessage.UserauthInfoRequest) throw new SshAuthenticationException("server demands a password change");
        return ReadResult(reply);
    }

    private async Task<bool> TryKeyboardInteractiveAsync(SshKeyboardInteractiveResponder responder)
    {
        var w = Header(SshAuthMethods.KeyboardInteractive);
        w.WriteString("").WriteString(""); // language tag (deprecated), submethods
        await _transport.SendAsync(w.WrittenMemory, _ct).ConfigureAwait(false);
        for (int round = 0; round <= MaxInfoRounds; round++)
        {
            string name, instruction;
            SshPrompt[] prompts;
            using (var reply = await ReceiveAsync().ConfigureAwait(false))
            {
                if (reply.MessageNumber != SshAuthMessage.UserauthInfoRequest) return ReadResult(reply);
                if (round == MaxInfoRounds) throw Protocol("too many keyboard-interactive rounds");
                var r = new SshReader(reply.Payload.Span[1..]);
                if (!r.TryReadUtf8(out name, SshAuthLimits.MaxPromptTextBytes) || !r.TryReadUtf8(out instruction, SshAuthLimits.MaxPromptTextBytes)
                    || !r.TryReadString(out _) || !r.TryReadUInt32(out var count))
                    throw Protocol("malformed USERAUTH_INFO_REQUEST");
                if (count > SshAuthLimits.MaxPrompts) throw Protocol("too many prompts");
                prompts = new SshPrompt[count];
                for (int i = 0; i < prompts.Length; i++)
                {
                    if (!r.TryReadUtf8(out var text, SshAuthLimits.MaxPromptTextBytes) || !r.TryReadBoolean(out var echo))
                        throw Protocol("malformed USERAUTH_INFO_REQUEST");
                    prompts[i] = new SshPrompt(text, echo);
                }
            }
            var answers = await responder(name, instruction, prompts, _ct).ConfigureAwait(false);
            if (answers.Count != prompts.Length) throw new ArgumentException("The responder must answer every prompt.");
            var resp = new SshWriter();
            resp.WriteByte(SshAuthMessage.UserauthInfoResponse).WriteUInt32((uint)answers.Count);
            foreach (var a in answers) resp.WriteString(a);
            await _transport.SendAsync(resp.WrittenMemory, _ct).ConfigureAwait(false);
        }
        return false;
    }

    /// <summary>True on SUCCESS; on FAILURE records the methods that can continue.</summary>
    private bool ReadResult(SshPacket reply)
    {
        switch (reply.MessageNumber)
        {
            case SshAuthMessage.UserauthSuccess:
                return true;
            case SshAuthMessage.UserauthFailure:
                {
                    var r = new SshReader(reply.Payload.Span[1..]);
                    if (!r.TryReadNameList(out var methods) || !r.TryReadBoolean(out _)) throw Protocol("malformed USERAUTH_FAILURE");
                    _methods = methods;
                    return false;
                }
            default:
                throw Protocol("unexpected message during authentication");
        }
    }

    /// <summary>Next message, handling USERAUTH_BANNER (RFC 4252 §5.4) on the way.</summary>
    private async Task<SshPacket> ReceiveAsync()
    {
        while (true)
        {
            var packet = await _transport.ReceiveAsync(_ct).ConfigureAwait(false);
            if (packet.MessageNumber != SshAuthMessage.UserauthBanner) return packet;
            using (packet)
            {
                var r = new SshReader(packet.Payload.Span[1..]);
                if (r.TryReadUtf8(out var text, SshAuthLimits.MaxBannerBytes)) _options.BannerReceived?.Invoke(text);
            }
        }
    }

    private static SshProtocolException Protocol(string message) => new(SshDisconnectReason.ProtocolError, message);
}
