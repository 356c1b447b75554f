using System.Net.Sockets;
using Warren.Ssh.Transport;

namespace Warren.Ssh.Client;

public sealed partial class SshClient
{
    /// <summary>Runs the transport over <paramref name="stream"/> (owned from here on), then authenticates.</summary>
    public static async Task<SshClient> ConnectAsync(Stream stream, SshClientOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(options);
        var transportOptions = options.Transport ?? new SshTransportClientOptions();
        // The validator runs inside the key exchange, before anything is sent under the new keys.
        transportOptions.HostKeyValidator = options.HostKeyValidator;
        var transport = await SshTransport.ConnectAsync(stream, transportOptions, cancellationToken).ConfigureAwait(false);
        return await ConnectAsync(transport, options, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Connects over TCP to <paramref name="host"/>:<paramref name="port"/>.</summary>
    public static async Task<SshClient> ConnectAsync(string host, int port, SshClientOptions options, CancellationToken cancellationToken = default)
    {
        var tcp = new TcpClient { NoDelay = true };
        try
        {
            await tcp.ConnectAsync(host, port, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
        return await ConnectAsync(tcp.GetStream(), options, cancellationToken).ConfigureAwait(false);
    }
}
