using System.Buffers.Binary;
using Warren.Agent.Native;

namespace Warren.Agent.Serve;

/// <summary>
/// An exec session: the command runs as <c>session-child</c> (setsid, tty, user, cwd, then execve) with three pipes
/// or a pty on its stdio. Threads: the connection's own thread turns host frames into input, signals and resizes;
/// one pump per output source (stdout, stderr; or the pty master) sends frames; a waiter reaps the command and
/// sends EXIT once the output ended, then closes the connection.
/// </summary>
internal sealed unsafe class ExecSession
{
    private readonly FrameReader _reader;
    private readonly FrameWriter _writer;
    private readonly ExecRequest _request;

    /// <summary>Set when the session is over (EXIT sent, or the host gone): wakes pumps and input writes.</summary>
    private readonly WakeEvent _cancel = new();

    /// <summary>Pty only: set when the command was reaped, so the pump drains the master and stops.</summary>
    private readonly WakeEvent? _exited;

    private Pty? _pty;
    private int _stdinWrite = -1, _stdoutRead = -1, _stderrRead = -1;
    private readonly List<Thread> _pumps = new(2);

    /// <summary>Guards <see cref="_reaped"/>: a signal is sent only while the pid is still ours (not reaped, so not reusable).</summary>
    private readonly object _processLock = new();
    private bool _reaped;
    private int _pid;
    private volatile bool _exitSent;

    /// <summary>The connection thread and the waiter; the last one out disposes the events they share.</summary>
    private int _users = 2;

    private ExecSession(FrameReader reader, FrameWriter writer, ExecRequest request)
    {
        _reader = reader;
        _writer = writer;
        _request = request;
        if (!request.Tty) return;
        try { _exited = new WakeEvent(); }
        catch (IOException)
        {
            _cancel.Dispose();
            throw;
        }
    }

    /// <summary>Runs the session on the connection's thread; throws <see cref="RequestRefused"/> before STARTED only.</summary>
    public static void Run(FrameReader reader, FrameWriter writer, ExecRequest request)
    {
        CheckUser(request.User);
        ExecSession session;
        try { session = new ExecSession(reader, writer, request); }
        catch (IOException e) { throw new RequestRefused($"cannot start session: {e.Message}"); }
        session.Start();
        session.RunInput();
    }

    /// <summary>Unknown users are refused with ERROR here; session-child resolves the user again as it switches.</summary>
    private static void CheckUser(string user)
    {
        if (user.Length == 0) return;
        try { UserSpec.Resolve(user); }
        catch (AgentUsageException e) { throw new RequestRefused(e.Message); }
        // A malformed /etc/passwd or /etc/group line (UserSpec parses them strictly).
        catch (Exception e) when (e is FormatException or OverflowException or IndexOutOfRangeException)
        {
            throw new RequestRefused($"cannot resolve user '{OpenReader.Printable(user)}': {e.Message}");
        }
    }

    private void Start()
    {
        int[] stdio;
        int stdinRead = -1, stdoutWrite = -1, stderrWrite = -1;
        try
        {
            if (_request.Tty)
            {
                _pty = new Pty(_request.Columns, _request.Rows);
                stdio = [_pty.Slave, _pty.Slave, _pty.Slave];
            }
            else
            {
                (stdinRead, _stdinWrite) = FdIo.Pipe();
                (_stdoutRead, stdoutWrite) = FdIo.Pipe();
                (_stderrRead, stderrWrite) = FdIo.Pipe();
                // Only serve's ends: the command's must stay blocking, as any program expects.
                FdIo.SetNonBlocking(_stdinWrite);
                FdIo.SetNonBlocking(_stdoutRead);
                FdIo.SetNonBlocking(_stderrRead);
                stdio = [stdinRead, stdoutWrite, stderrWrite];
            }
            _pid = Processes.Spawn(ChildArgv(), ChildEnvironment(), null, stdio);
        }
        catch (Exception e) when (e is IOException or FileNotFoundException)
        {
            _pty?.Dispose();
            DisposeShared();
            FdIo.CloseIfOpen(ref _stdinWrite);
            FdIo.CloseIfOpen(ref _stdoutRead);
            FdIo.CloseIfOpen(ref _stderrRead);
            throw new RequestRefused($"cannot start session: {e.Message}");
        }
        finally
        {
            // The child has its copies; holding ours would keep the command's output from ever reaching EOF.
            FdIo.CloseIfOpen(ref stdinRead);
            FdIo.CloseIfOpen(ref stdoutWrite);
            FdIo.CloseIfOpen(ref stderrWrite);
            _pty?.CloseSlave();
        }

        Span<byte> pid = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(pid, (uint)_pid);
        _writer.Send(Frame.Started, pid);

        if (_pty != null)
        {
            _pumps.Add(ServeCommand.StartThread("pty", new OutputPump(_pty.Master, Frame.Stdout, _writer, _cancel, _exited).Run));
        }
        else
        {
            // stdout is where bulk output flows (its pipe may grow); stderr keeps the default pipe.
            _pumps.Add(ServeCommand.StartThread("stdout", () => Pump(ref _stdoutRead, Frame.Stdout, growPipe: true)));
            _pumps.Add(ServeCommand.StartThread("stderr", () => Pump(ref _stderrRead, Frame.Stderr, growPipe: false)));
        }
        ServeCommand.StartThread("waiter", WaitAndReport);
    }

    private void Pump(ref int fd, byte frameType, bool growPipe)
    {
        try { new OutputPump(fd, frameType, _writer, _cancel, growPipeWhenFull: growPipe).Run(); }
        finally { FdIo.CloseIfOpen(ref fd); } // abandoned early, this makes the command's writes fail (EPIPE), as sshd does
    }

    private string[] ChildArgv()
    {
        var argv = new List<string>(_request.Argv.Length + 8) { Processes.SelfPath(), "session-child" };
        if (_request.Tty) argv.Add("--tty");
        if (ServeCommand.InheritedDescriptorLimit is { } nofile) argv.AddRange(["--nofile", nofile.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        argv.AddRange(["--user", _request.User, "--cwd", _request.Cwd, "--"]);
        argv.AddRange(_request.Argv);
        return argv.ToArray();
    }

    /// <summary>The agent's environment plus the request's KEY=VALUE entries, and TERM with a pty.</summary>
    private List<string> ChildEnvironment()
    {
        var overrides = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in _request.Env)
        {
            int eq = entry.IndexOf('=');
            overrides[entry[..eq]] = entry[(eq + 1)..];
        }
        if (_request.Tty) overrides["TERM"] = _request.Term;
        return Processes.CurrentEnvironment(overrides);
    }

    /// <summary>Host frames until the host closes (or EXIT closed the connection); a protocol violation also ends it.</summary>
    private void RunInput()
    {
        try
        {
            ReadFrames();
        }
        catch (ProtocolViolation e)
        {
            ServeCommand.Debug($"exec session: {e.Message}");
        }
        catch (HostClosed) { }
        finally
        {
            if (!_exitSent)
            {
                // The host left before EXIT: hang up on the command as sshd does when a session channel closes;
                // the waiter keeps reaping it.
                SendSignal(Libc.SIGHUP);
                _cancel.Set();
            }
            FdIo.CloseIfOpen(ref _stdinWrite);
            _writer.Close();
            // Nobody reads or writes the terminal any more: closing the master hangs it up (EIO and SIGHUP for
            // whoever still has the slave), as sshd does, instead of leaving writers blocked on a full pty.
            foreach (var pump in _pumps) pump.Join();
            _pty?.Dispose();
            Release();
        }
    }

    private void ReadFrames()
    {
        int target = _pty?.Master ?? _stdinWrite;
        bool eofReceived = false, targetOpen = true;
        bool mayGrowPipe = _pty == null; // bulk input grows the stdin pipe the first time it fills
        Span<byte> control = stackalloc byte[8];
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
                        if (!targetOpen) continue; // the command closed its input (or the session ended): discard
                        var outcome = FdIo.WriteAll(target, piece, _writer.SocketFd, _cancel, ref mayGrowPipe);
                        if (outcome == WriteOutcome.HostGone) return;
                        targetOpen = outcome == WriteOutcome.Written;
                    }
                    break;
                case Frame.Eof:
                    if (eofReceived || length != 0) throw new ProtocolViolation("bad EOF");
                    eofReceived = true;
                    if (_pty == null) FdIo.CloseIfOpen(ref _stdinWrite);
                    else if (targetOpen)
                    {
                        // VEOF: at the start of a line the reader (in canonical mode) sees end of file.
                        ReadOnlySpan<byte> veof = [0x04];
                        if (FdIo.WriteAll(target, veof, _writer.SocketFd, _cancel) == WriteOutcome.HostGone) return;
                    }
                    break;
                case Frame.Resize:
                    if (length != 8) throw new ProtocolViolation("bad RESIZE");
                    _reader.ReadExactly(control);
                    _pty?.Resize(BinaryPrimitives.ReadUInt32BigEndian(control), BinaryPrimitives.ReadUInt32BigEndian(control[4..]));
                    break;
                case Frame.Signal:
                    if (length != 4) throw new ProtocolViolation("bad SIGNAL");
                    _reader.ReadExactly(control[..4]);
                    uint signal = BinaryPrimitives.ReadUInt32BigEndian(control);
                    if (signal is >= 1 and <= 64) SendSignal((int)signal);
                    break;
                default:
                    throw new ProtocolViolation($"unexpected frame type 0x{type:x2} in an exec session");
            }
        }
    }

    private void SendSignal(int signal)
    {
        lock (_processLock)
        {
            // kill(0) and kill(-1) would signal serve's process group or every process: only ever a started child.
            if (!_reaped && _pid > 1) Libc.Kill(_pid, signal);
        }
    }

    /// <summary>The waiter: reaps the command, waits for the output to end, sends EXIT and closes the connection.</summary>
    private void WaitAndReport()
    {
        try
        {
            int status = Reap();
            _exited?.Set();
            foreach (var pump in _pumps) pump.Join();
            if (status == -1) ServeCommand.Log($"pid {_pid} could not be reaped; reporting exit 255");
            Span<byte> exit = stackalloc byte[9];
            bool signaled = status != -1 && Libc.WIfSignaled(status);
            BinaryPrimitives.WriteUInt32BigEndian(exit, signaled ? 1u : 0u);
            BinaryPrimitives.WriteUInt32BigEndian(exit[4..], (uint)(status == -1 ? 255 : signaled ? Libc.WTermSig(status) : Libc.WExitStatus(status)));
            exit[8] = (byte)(signaled && (status & CoreDumpFlag) != 0 ? 1 : 0);
            _exitSent = true;
            _writer.Send(Frame.Exit, exit);
            // EXIT is the last frame: close, which also ends the input thread's receive.
            _cancel.Set();
            _writer.Close();
        }
        finally
        {
            Release();
        }
    }

    /// <summary>WCOREDUMP's bit in a wait status.</summary>
    private const int CoreDumpFlag = 0x80;

    /// <summary>
    /// Waits for the command without reaping it (WNOWAIT), then reaps it under the lock that signals take: the pid
    /// can only be reused after waitpid(), and by then <see cref="_reaped"/> stops every kill(). Returns the wait status, or -1.
    /// </summary>
    private int Reap()
    {
        byte* info = stackalloc byte[Libc.SigInfoBytes];
        while (Libc.WaitId(Libc.P_PID, _pid, info, Libc.WEXITED | Libc.WNOWAIT) != 0 && Libc.Errno == Libc.EINTR) { }
        lock (_processLock)
        {
            _reaped = true;
            int rc, status;
            do rc = Libc.WaitPid(_pid, out status, 0);
            while (rc < 0 && Libc.Errno == Libc.EINTR);
            return rc == _pid ? status : -1;
        }
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _users) == 0) DisposeShared();
    }

    private void DisposeShared()
    {
        _exited?.Dispose();
        _cancel.Dispose();
    }
}
