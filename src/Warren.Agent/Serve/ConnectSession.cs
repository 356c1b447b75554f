using System.Net;
using System.Net.Sockets;

namespace Warren.Agent.Serve;

/// <summary>
/// A connect session: a TCP connection made from inside the VM, relayed both ways. The connection's thread
/// writes DATA to the TCP socket (EOF half-closes it); a pump sends what the peer sends as STDOUT and its
/// half-close as STDOUT_EOF. Once both directions ended the unix socket is closed; an error on either side
/// (a reset, the host leaving) closes everything.
/// </summary>
internal sealed class ConnectSession
{
    private readonly FrameReader _reader;
    private readonly FrameWriter _writer;
    private readonly Socket _tcp;
    private readonly WakeEvent _cancel = new();

    /// <summary>Directions that ended cleanly (host EOF, peer EOF); at 2 the connection is closed.</summary>
    private int _directionsEnded;

    private ConnectSession(FrameReader reader, FrameWriter writer, Socket tcp)
    {
        _reader = reader;
        _writer = writer;
        _tcp = tcp;
    }

    /// <summary>Runs the session on the connection's thread; throws <see cref="RequestRefused"/> before STARTED only.</summary>
    public static void Run(FrameReader reader, FrameWriter writer, ConnectRequest request)
    {
        var tcp = Connect(request);
        try
        {
            new ConnectSession(reader, writer, tcp).Relay();
        }
        finally
        {
            tcp.Dispose();
        }
    }

    /// <summary>Tries each address of the host in turn (as ConnectCommand does); a blocking connect, bounded by the kernel's SYN retries.</summary>
    private static Socket Connect(ConnectRequest request)
    {
        var addresses = ConnectCommand.Resolve(request.Host);
        string target = $"{OpenReader.Printable(request.Host)}:{request.Port}";
        if (addresses.Count == 0) throw new RequestRefused($"connect {target}: cannot resolve host");
        SocketError last = SocketError.HostNotFound;
        foreach (var address in addresses)
        {
            var s = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                s.Connect(new IPEndPoint(address, request.Port));
                // Raw non-blocking I/O from here on (FdIo/OutputPump), so waits can be woken.
                s.Blocking = false;
                return s;
            }
            catch (SocketException e)
            {
                last = e.SocketErrorCode;
                s.Dispose();
            }
        }
        throw new RequestRefused($"connect {target}: {last}");
    }

    private void Relay()
    {
        int tcpFd = (int)_tcp.Handle;
        _writer.Send(Frame.Started, []);
        var pump = ServeCommand.StartThread("tcp", () =>
        {
            var copier = new OutputPump(tcpFd, Frame.Stdout, _writer, _cancel);
            copier.Run();
            if (copier.ReachedEof && _writer.Send(Frame.StdoutEof, [])) DirectionEnded();
            else _writer.Close(); // a reset, or the host gone: nothing more can flow
        });
        try
        {
            ReadFrames(tcpFd);
        }
        catch (ProtocolViolation e)
        {
            ServeCommand.Debug($"connect session: {e.Message}");
        }
        catch (HostClosed) { }
        finally
        {
            _cancel.Set();
            _writer.Close();
            pump.Join();
            _cancel.Dispose();
        }
    }

    private void ReadFrames(int tcpFd)
    {
        bool eofReceived = false;
        while (_reader.TryReadHeader(out byte type, out int length))
        {
            switch (type)
            {
                case Frame.Data:
                    if (eofReceived) throw new ProtocolViolation("DATA after EOF");
                    while (length > 0)
                    {
                        var piece = _reader.ReadSome(length);
                        length -= piece.Length;
                        // The peer not reading any more (reset) or the session gone ends the relay.
                        if (FdIo.WriteAll(tcpFd, piece, _writer.SocketFd, _cancel) != WriteOutcome.Written) return;
                    }
                    break;
                case Frame.Eof:
                    if (eofReceived || length != 0) throw new ProtocolViolation("bad EOF");
                    eofReceived = true;
                    try { _tcp.Shutdown(SocketShutdown.Send); }
                    catch (SocketException) { return; }
                    DirectionEnded();
                    break;
                default:
                    throw new ProtocolViolation($"unexpected frame type 0x{type:x2} in a connect session");
            }
        }
    }

    /// <summary>"The agent closes the unix socket once both directions ended."</summary>
    private void DirectionEnded()
    {
        if (Interlocked.Increment(ref _directionsEnded) == 2) _writer.Close();
    }
}
