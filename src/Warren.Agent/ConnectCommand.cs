using System.Net;
using System.Net.Sockets;

namespace Warren.Agent;

/// <summary>
/// <c>connect [--ready] HOST PORT</c>: copies stdin to a TCP connection made from inside the VM's network
/// namespace and the connection to stdout. Stdin EOF half-closes the socket; the peer closing ends it.
/// HOST must be an address, "localhost", or a name in /etc/hosts (the static agent has no NSS/DNS).
/// </summary>
internal static class ConnectCommand
{
    /// <summary>Copy buffer; a TCP window's worth keeps syscalls low.</summary>
    private const int CopyBufferBytes = 64 * 1024;

    /// <summary>Matches VmConnectionStream.ReadyLine in Warren.Runtime.Docker.</summary>
    internal const string ReadyLine = "warren-agent: connected";

    public static async Task<int> RunAsync(string[] args)
    {
        bool ready = args.Length > 0 && args[0] == "--ready";
        if (ready) args = args[1..];
        if (args.Length != 2 || !int.TryParse(args[1], out int port) || port is < 1 or > 65535)
            throw new AgentUsageException("connect: [--ready] HOST PORT");
        var addresses = Resolve(args[0]);
        if (addresses.Count == 0)
        {
            Console.Error.Write($"warren-agent: connect: cannot resolve '{args[0]}'\n");
            return 1;
        }

        Socket? socket = null;
        SocketException? last = null;
        foreach (var address in addresses)
        {
            var s = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await s.ConnectAsync(new IPEndPoint(address, port));
                socket = s;
                break;
            }
            catch (SocketException e)
            {
                last = e;
                s.Dispose();
            }
        }
        if (socket == null)
        {
            Console.Error.Write($"warren-agent: connect {args[0]}:{port}: {last?.SocketErrorCode}\n");
            return 1;
        }

        // --ready: tell the runtime on stderr that the connection stands (before any data flows on stdout).
        if (ready) Console.Error.Write(ReadyLine + "\n");

        using (socket)
        {
            using var net = new NetworkStream(socket, ownsSocket: false);
            using var stdin = Console.OpenStandardInput();
            using var stdout = Console.OpenStandardOutput();
            var up = Task.Run(async () =>
            {
                var buf = new byte[CopyBufferBytes];
                try
                {
                    int n;
                    while ((n = await stdin.ReadAsync(buf)) > 0) await net.WriteAsync(buf.AsMemory(0, n));
                }
                catch (IOException) { }
                try { socket.Shutdown(SocketShutdown.Send); } catch (SocketException) { } catch (ObjectDisposedException) { }
            });
            var buffer = new byte[CopyBufferBytes];
            try
            {
                int n;
                while ((n = await net.ReadAsync(buffer)) > 0)
                {
                    await stdout.WriteAsync(buffer.AsMemory(0, n));
                    await stdout.FlushAsync();
                }
            }
            catch (IOException) { }
            // The peer closed: we are done even if stdin is still open.
            return 0;
        }
    }

    internal static List<IPAddress> Resolve(string host)
    {
        if (IPAddress.TryParse(host.Trim('[', ']'), out var ip)) return [ip];
        if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return [IPAddress.Loopback, IPAddress.IPv6Loopback];
        var result = new List<IPAddress>();
        try
        {
            foreach (var line in File.ReadLines("/etc/hosts"))
            {
                var fields = line.Split('#')[0].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length >= 2 && fields.Skip(1).Any(f => f.Equals(host, StringComparison.OrdinalIgnoreCase))
                    && IPAddress.TryParse(fields[0], out var a))
                    result.Add(a);
            }
        }
        catch (IOException) { }
        if (result.Count == 0)
        {
            try { result.AddRange(Dns.GetHostAddresses(host)); }
            catch (SocketException) { }
        }
        return result;
    }
}
