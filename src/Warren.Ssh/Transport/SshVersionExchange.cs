using System.Text;

namespace Warren.Ssh.Transport;

/// <summary>Protocol version exchange (RFC 4253 §4.2).</summary>
internal static class SshVersionExchange
{
    /// <summary>RFC 4253 §4.2: the identification line is at most 255 characters including CR LF.</summary>
    public const int MaxVersionLineBytes = 255;

    /// <summary>
    /// RFC 4253 §4.2 lets a server send other lines before its version; they are not
    /// length-limited by the RFC. We cap each at 1024 bytes and their number at
    /// <see cref="MaxBannerLines"/>, so a hostile server cannot keep a client reading forever.
    /// </summary>
    public const int MaxBannerLineBytes = 1024;

    /// <summary>OpenSSH's client gives up after a comparable number of pre-banner lines.</summary>
    public const int MaxBannerLines = 1024;

    private const byte Cr = (byte)'\r';
    private const byte Lf = (byte)'\n';

    public static async Task WriteAsync(Stream stream, string version, CancellationToken ct)
    {
        await stream.WriteAsync(Encoding.ASCII.GetBytes(version + "\r\n"), ct).ConfigureAwait(false);
        await stream.FlushAsync(ct).ConfigureAwait(false);
    }

    public static void Validate(string version)
    {
        if (!version.StartsWith("SSH-2.0-", StringComparison.Ordinal) || version.Length + 2 > MaxVersionLineBytes
            || version.Any(c => c < 0x20 || c > 0x7e))
            throw new ArgumentException("The version must be a printable \"SSH-2.0-...\" line of at most 253 characters.", nameof(version));
    }

    /// <summary>
    /// Reads the peer's identification line, one byte at a time so nothing after the
    /// line is consumed. <paramref name="allowBanner"/>: the client side skips lines
    /// that do not start with "SSH-".
    /// </summary>
    public static async Task<string> ReadAsync(Stream stream, bool allowBanner, CancellationToken ct)
    {
        var line = new byte[MaxBannerLineBytes];
        var one = new byte[1];
        for (int lines = 0; lines < MaxBannerLines; lines++)
        {
            int n = 0;
            while (true)
            {
                int read = await stream.ReadAsync(one, ct).ConfigureAwait(false);
                if (read == 0) throw new SshConnectionClosedException("connection closed during version exchange");
                if (one[0] == Lf) break;
                if (n == line.Length)
                    throw new SshProtocolException(SshDisconnectReason.ProtocolError, "identification line too long");
                line[n++] = one[0];
            }
            if (n > 0 && line[n - 1] == Cr) n--;
            var span = line.AsSpan(0, n);
            bool isVersion = span.StartsWith("SSH-"u8);
            if (!isVersion)
            {
                if (!allowBanner) throw new SshProtocolException(SshDisconnectReason.ProtocolError, "peer did not send an SSH identification line");
                continue;
            }
            if (n + 2 > MaxVersionLineBytes)
                throw new SshProtocolException(SshDisconnectReason.ProtocolError, "identification line longer than 255 bytes");
            foreach (var b in span)
                if (b < 0x20 || b > 0x7e)
                    throw new SshProtocolException(SshDisconnectReason.ProtocolError, "identification line has non-printable characters");
            // RFC 4253 §5.1: "SSH-1.99" means a server that also speaks 2.0.
            if (!span.StartsWith("SSH-2.0-"u8) && !span.StartsWith("SSH-1.99-"u8))
                throw new SshProtocolException(SshDisconnectReason.ProtocolVersionNotSupported, "peer does not speak SSH protocol 2.0");
            return Encoding.ASCII.GetString(span);
        }
        throw new SshProtocolException(SshDisconnectReason.ProtocolError, "too many lines before the identification line");
    }
}
