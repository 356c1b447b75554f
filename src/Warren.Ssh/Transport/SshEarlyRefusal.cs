using System.Security.Cryptography;
using System.Text;
using Warren.Ssh.Crypto;
using Warren.Ssh.Wire;

namespace Warren.Ssh.Transport;

/// <summary>
/// Refuses a connection before any key exchange, telling the client why: our identification line (RFC 4253 §4.2)
/// and one SSH_MSG_DISCONNECT in an unencrypted binary packet (RFC 4253 §6, no cipher or MAC before the first
/// NEWKEYS; §11.1 lets either side disconnect at any time). OpenSSH's client prints the reason and description.
/// Costs the daemon no key exchange and reads nothing from the client.
/// </summary>
public static class SshEarlyRefusal
{
    /// <summary>The whole refusal is a few hundred bytes, written once; a client that never reads cannot hold it longer.</summary>
    public static readonly TimeSpan WriteTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// After the refusal, what the client already sent (its version line and KEXINIT) is read and dropped until it
    /// closes, for at most this long and <see cref="MaxDrainBytes"/>: closing with unread input makes the kernel send
    /// a reset, which can reach the client before it has read the DISCONNECT (nginx's lingering_close, for the same reason).
    /// </summary>
    public static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Bytes read and dropped after the refusal at most (a KEXINIT is a few KiB).</summary>
    public const int MaxDrainBytes = 64 * 1024;

    /// <summary>Description bytes kept (a fixed server message; bounded all the same).</summary>
    private const int MaxDescriptionBytes = 200;

    /// <summary>Writes the refusal and disposes <paramref name="stream"/>; never throws for a peer that is already gone.</summary>
    public static async Task RefuseAsync(Stream stream, string version, SshDisconnectReason reason, string description)
    {
        try
        {
            using var timeout = new CancellationTokenSource(WriteTimeout);
            await stream.WriteAsync(Build(version, reason, description), timeout.Token).ConfigureAwait(false);
            await stream.FlushAsync(timeout.Token).ConfigureAwait(false);
            await DrainAsync(stream).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
            // The client left or does not read: nothing more is owed to it.
        }
        finally
        {
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static async Task DrainAsync(Stream stream)
    {
        using var timeout = new CancellationTokenSource(DrainTimeout);
        var buffer = new byte[4096];
        int total = 0;
        while (total < MaxDrainBytes)
        {
            int n = await stream.ReadAsync(buffer, timeout.Token).ConfigureAwait(false);
            if (n == 0)
                return;
            total += n;
        }
    }

    /// <summary>The bytes sent: version line, then <c>uint32 packet_length, byte padding_length, payload, padding</c>.</summary>
    internal static byte[] Build(string version, SshDisconnectReason reason, string description)
    {
        SshVersionExchange.Validate(version);
        var text = Encoding.UTF8.GetBytes(description);
        if (text.Length > MaxDescriptionBytes)
            text = text[..MaxDescriptionBytes];
        // RFC 4253 §11.1: byte SSH_MSG_DISCONNECT, uint32 reason code, string description, string language tag.
        var payload = new SshWriter().WriteByte(SshMessageNumbers.Disconnect).WriteUInt32((uint)reason)
            .WriteString(text).WriteString(ReadOnlySpan<byte>.Empty).ToArray();
        // RFC 4253 §6: at least 4 bytes of padding, the whole packet a multiple of the block size (8 without a cipher).
        int block = NonePacketCipher.MinimumBlockSize;
        int padding = block - (PacketCipher.LengthFieldSize + 1 + payload.Length) % block;
        if (padding < 4)
            padding += block;
        var line = Encoding.ASCII.GetBytes(version + "\r\n");
        var bytes = new byte[line.Length + PacketCipher.LengthFieldSize + 1 + payload.Length + padding];
        line.CopyTo(bytes, 0);
        var packet = bytes.AsSpan(line.Length);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(packet, (uint)(1 + payload.Length + padding));
        packet[4] = (byte)padding;
        payload.CopyTo(packet[5..]);
        RandomNumberGenerator.Fill(packet[(5 + payload.Length)..]);
        return bytes;
    }
}
