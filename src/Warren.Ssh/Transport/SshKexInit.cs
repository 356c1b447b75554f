using Warren.Ssh.Wire;

namespace Warren.Ssh.Transport;

/// <summary>SSH_MSG_KEXINIT.</summary>
/// <remarks>RFC 4253 §7.1. Field names follow the RFC.</remarks>
internal sealed class SshKexInit
{
    /// <summary>RFC 4253 §7.1: 16 random bytes.</summary>
    public const int CookieLength = 16;

    public byte[] Cookie { get; init; } = new byte[CookieLength];
    public string[] KexAlgorithms { get; init; } = [];
    public string[] ServerHostKeyAlgorithms { get; init; } = [];
    public string[] EncryptionAlgorithmsClientToServer { get; init; } = [];
    public string[] EncryptionAlgorithmsServerToClient { get; init; } = [];
    public string[] MacAlgorithmsClientToServer { get; init; } = [];
    public string[] MacAlgorithmsServerToClient { get; init; } = [];
    public string[] CompressionAlgorithmsClientToServer { get; init; } = [];
    public string[] CompressionAlgorithmsServerToClient { get; init; } = [];
    public string[] LanguagesClientToServer { get; init; } = [];
    public string[] LanguagesServerToClient { get; init; } = [];
    public bool FirstKexPacketFollows { get; init; }

    public byte[] ToPayload()
    {
        var w = new SshWriter(1024);
        w.WriteByte(SshMessageNumbers.KexInit).WriteRaw(Cookie)
            .WriteNameList(KexAlgorithms).WriteNameList(ServerHostKeyAlgorithms)
            .WriteNameList(EncryptionAlgorithmsClientToServer).WriteNameList(EncryptionAlgorithmsServerToClient)
            .WriteNameList(MacAlgorithmsClientToServer).WriteNameList(MacAlgorithmsServerToClient)
            .WriteNameList(CompressionAlgorithmsClientToServer).WriteNameList(CompressionAlgorithmsServerToClient)
            .WriteNameList(LanguagesClientToServer).WriteNameList(LanguagesServerToClient)
            .WriteBoolean(FirstKexPacketFollows).WriteUInt32(0);
        return w.ToArray();
    }

    public static bool TryParse(ReadOnlySpan<byte> payload, out SshKexInit? message)
    {
        message = null;
        var r = new SshReader(payload);
        if (!r.TryReadByte(out var type) || type != SshMessageNumbers.KexInit) return false;
        if (!r.TryReadBytes(CookieLength, out var cookie)) return false;
        if (!r.TryReadNameList(out var kex) || !r.TryReadNameList(out var hostKey)
            || !r.TryReadNameList(out var encCs) || !r.TryReadNameList(out var encSc)
            || !r.TryReadNameList(out var macCs) || !r.TryReadNameList(out var macSc)
            || !r.TryReadNameList(out var compCs) || !r.TryReadNameList(out var compSc)
            || !r.TryReadNameList(out var langCs) || !r.TryReadNameList(out var langSc)
            || !r.TryReadBoolean(out var follows) || !r.TryReadUInt32(out _))
            return false;
        // Trailing bytes are tolerated (RFC 4253 §7.1 reserves the last field for extension).
        message = new SshKexInit
        {
            Cookie = cookie.ToArray(),
            KexAlgorithms = kex, ServerHostKeyAlgorithms = hostKey,
            EncryptionAlgorithmsClientToServer = encCs, EncryptionAlgorithmsServerToClient = encSc,
            MacAlgorithmsClientToServer = macCs, MacAlgorithmsServerToClient = macSc,
            CompressionAlgorithmsClientToServer = compCs, CompressionAlgorithmsServerToClient = compSc,
            LanguagesClientToServer = langCs, LanguagesServerToClient = langSc,
            FirstKexPacketFollows = follows,
        };
        return true;
    }

    /// <summary>RFC 4253 §7.1: the first algorithm on the client's list that the server also supports.</summary>
    public static string? Choose(IReadOnlyList<string> client, IReadOnlyList<string> server)
    {
        foreach (var c in client)
            foreach (var s in server)
                if (c == s) return c;
        return null;
    }
}

/// <summary>The algorithms one key exchange settled on.</summary>
public sealed record SshNegotiatedAlgorithms(
    string KeyExchange,
    string HostKey,
    string CipherClientToServer,
    string CipherServerToClient,
    string? MacClientToServer,
    string? MacServerToClient);
