using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.Versioning;
using System.Security.Cryptography;
using System.Text;
using Xunit;
using Xunit.Abstractions;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// The guest agent's session socket (docs/AGENT-PROTOCOL.md) spoken frame by frame against the published agent
/// binary. <see cref="AgentServeProtocolTests"/> runs <c>warren-agent serve DIR</c> on the host (never
/// <c>init</c>, which as a host process would signal everything); <see cref="AgentServeProtocolContainerTests"/> checks
/// the same inside a busybox container started by the agent's own <c>init</c>.
/// The frame code here is written from the document, not shared with the agent, so a drift shows.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class AgentServeProtocolTests(AgentServeProtocolTests.ServeFixture serve) : IClassFixture<AgentServeProtocolTests.ServeFixture>
{
    [Fact]
    public void Socket_is_private_to_root()
    {
        var mode = File.GetUnixFileMode(serve.SocketPath);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, mode);
    }

    [Fact]
    public void Stale_socket_is_replaced_and_a_bad_token_file_is_refused()
    {
        using var fresh = new ServeFixture(createStaleSocket: true);
        var result = fresh.Client().Exec(new ExecOpen(["echo", "fresh"]));
        Assert.Equal("fresh\n", result.StdoutText);

        // A token file that is not 64 hex characters: serve refuses to start instead of accepting a short token.
        string dir = ServeFixture.MakePrivateDirectory();
        try
        {
            File.WriteAllText(Path.Combine(dir, "token"), "short\n");
            using var p = Process.Start(new ProcessStartInfo(ServeFixture.AgentPath, ["serve", dir]) { RedirectStandardError = true })!;
            Assert.True(p.WaitForExit(10_000), "serve with a bad token file did not exit");
            Assert.NotEqual(0, p.ExitCode);
            Assert.Contains("token", p.StandardError.ReadToEnd());
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Exec_echo()
    {
        var result = serve.Client().Exec(new ExecOpen(["echo", "hello", "world"]));
        Assert.True(result.Pid > 0);
        Assert.Equal("hello world\n", result.StdoutText);
        Assert.Equal("", result.StderrText);
        Assert.Equal((0u, 0u, (byte)0), result.Exit);
        Assert.True(result.ClosedAfterExit, "EXIT must be the last frame");
    }

    [Fact]
    public void Exit_code_and_stderr_are_separate()
    {
        var result = serve.Client().Exec(new ExecOpen(["sh", "-c", "echo out; echo err >&2; exit 3"]));
        Assert.Equal("out\n", result.StdoutText);
        Assert.Equal("err\n", result.StderrText);
        Assert.Equal((0u, 3u, (byte)0), result.Exit);
    }

    [Fact]
    public void Unknown_command_exits_127_with_a_message()
    {
        var result = serve.Client().Exec(new ExecOpen(["no-such-command-warren"]));
        Assert.Equal((0u, 127u, (byte)0), result.Exit);
        Assert.Contains("not found", result.StderrText);
    }

    [Fact]
    public void Environment_cwd_and_home()
    {
        var result = serve.Client().Exec(new ExecOpen(["sh", "-c", "echo $WARREN_TEST_VAR; pwd; echo $HOME; echo $USER"])
        {
            Env = ["WARREN_TEST_VAR=a b=c"],
            Cwd = "/tmp",
        });
        Assert.Equal("a b=c\n/tmp\n/root\nroot\n", result.StdoutText);

        var home = serve.Client().Exec(new ExecOpen(["pwd"]));
        Assert.Equal("/root\n", home.StdoutText);

        var badCwd = serve.Client().Exec(new ExecOpen(["pwd"]) { Cwd = "/no/such/dir" });
        Assert.Equal((0u, 126u, (byte)0), badCwd.Exit);
        Assert.Contains("/no/such/dir", badCwd.StderrText);
    }

    [Fact]
    public void Commands_start_with_default_signals_and_descriptor_limit()
    {
        // serve ignores SIGPIPE for itself; the command must not inherit that (or `yes | head` would never end).
        var result = serve.Client().Exec(new ExecOpen(["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -c 3"]));
        Assert.Equal("SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\ny\ny", result.StdoutText);

        // An agent started under nohup from a background shell inherits SIGHUP, SIGINT and SIGQUIT ignored (ignores
        // survive execve); its commands must not: a command that ignores SIGHUP outlives the client hanging up.
        using var nohup = new ServeFixture(createStaleSocket: false, ignoreHangUpAndInterrupts: true);
        var inherited = nohup.Client().Exec(new ExecOpen(["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status"]));
        Assert.Equal("SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", inherited.StdoutText);
        var tty = nohup.Client().Exec(new ExecOpen(["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status"]) { Term = "xterm", Columns = 80, Rows = 24 });
        Assert.Equal("SigBlk:\t0000000000000000\r\nSigIgn:\t0000000000000000\r\n", tty.StdoutText);

        // serve raises its own soft descriptor limit to the hard one; sessions get the limit serve started with.
        using var limited = new ServeFixture(createStaleSocket: false, softDescriptorLimit: 512);
        var limits = limited.Client().Exec(new ExecOpen(["sh", "-c", "ulimit -Sn"]));
        Assert.Equal("512\n", limits.StdoutText);
    }

    [Fact]
    public void Stdin_round_trips_through_cat_with_eof()
    {
        var data = new byte[6 * 1024 * 1024 + 12345];
        new Random(7).NextBytes(data);
        var rng = new Random(8);
        var result = serve.Client().Exec(new ExecOpen(["cat"]), client =>
        {
            // Frames of varied sizes up to the maximum, so frames straddle the agent's receives.
            for (int offset = 0; offset < data.Length;)
            {
                int n = Math.Min(data.Length - offset, rng.Next(1, 256 * 1024 + 1));
                client.Send(0x02, data.AsSpan(offset, n));
                offset += n;
            }
            client.Send(0x03, []);
        });
        Assert.Equal((0u, 0u, (byte)0), result.Exit);
        Assert.Equal(data.Length, result.Stdout.Length);
        Assert.True(SHA256.HashData(data).AsSpan().SequenceEqual(SHA256.HashData(result.Stdout)), "cat's output differs from its input");
    }

    [Fact]
    public void Output_frames_respect_the_maximum_length()
    {
        var result = serve.Client().Exec(new ExecOpen(["sh", "-c", "dd if=/dev/zero bs=1M count=3 2>/dev/null"]));
        Assert.Equal(3 * 1024 * 1024, result.Stdout.Length);
        Assert.All(result.Frames, f => Assert.True(f.Payload.Length <= 256 * 1024));
    }

    [Fact]
    public void Exit_follows_output_of_processes_that_outlive_the_command()
    {
        // The background subshell holds stdout after sh exited: EXIT waits for the pipe's EOF.
        var result = serve.Client().Exec(new ExecOpen(["sh", "-c", "(sleep 0.3; echo late) & echo early"]));
        Assert.Equal("early\nlate\n", result.StdoutText);
        Assert.Equal((0u, 0u, (byte)0), result.Exit);
    }

    [Fact]
    public void Tty_exit_does_not_wait_for_a_process_holding_the_terminal()
    {
        // sleep ignores the hang-up and keeps the pty slave open: the agent drains briefly, then sends EXIT.
        var sw = Stopwatch.StartNew();
        var result = serve.Client().Exec(new ExecOpen(["sh", "-c", "(trap '' HUP; exec sleep 3) & echo hi"]) { Term = "xterm" });
        Assert.Equal("hi\r\n", result.StdoutText);
        Assert.Equal((0u, 0u, (byte)0), result.Exit);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2.5), $"EXIT took {sw.Elapsed}");
    }

    [Fact]
    public void Tty_session_has_a_terminal_of_the_given_size_and_term()
    {
        var result = serve.Client().Exec(new ExecOpen(["sh", "-c", "tty; stty size; echo $TERM; test -t 0 && test -t 2 && echo all-tty"])
        {
            Term = "xterm-256color",
            Columns = 100,
            Rows = 40,
        });
        Assert.Equal((0u, 0u, (byte)0), result.Exit);
        Assert.Matches(@"^/dev/pts/\d+\r\n40 100\r\nxterm-256color\r\nall-tty\r\n$", result.StdoutText);
        Assert.DoesNotContain(result.Frames, f => f.Type == 0x12); // no STDERR with a pty
    }

    [Fact]
    public void Tty_resize_reaches_the_command()
    {
        using var client = serve.Client();
        client.Open(new ExecOpen(["sh", "-c", "stty size; read line; stty size"]) { Term = "xterm", Columns = 80, Rows = 24 });
        client.ExpectStarted();
        client.ReadStdoutUntil("24 80");
        client.Send(0x04, U32(120, 50));
        client.Send(0x02, "\n"u8);
        var rest = client.ReadToExit();
        Assert.Contains("50 120", rest.StdoutText);
        Assert.Equal((0u, 0u, (byte)0), rest.Exit);
    }

    [Fact]
    public void Interactive_shell_in_a_pty()
    {
        string shell = File.Exists("/bin/bash") ? "/bin/bash" : "/bin/sh";
        using var client = serve.Client();
        client.Open(new ExecOpen(shell == "/bin/bash" ? [shell, "--norc", "--noprofile", "-i"] : [shell, "-i"]) { Term = "xterm", Columns = 80, Rows = 24 });
        client.ExpectStarted();
        client.Send(0x02, "echo $((6*7))x\n"u8);
        client.ReadStdoutUntil("42x");
        client.Send(0x02, "exit 5\n"u8);
        var rest = client.ReadToExit();
        Assert.Equal((0u, 5u, (byte)0), rest.Exit);
    }

    [Fact]
    public void Eof_in_a_pty_ends_cat()
    {
        using var client = serve.Client();
        client.Open(new ExecOpen(["cat"]) { Term = "xterm", Columns = 80, Rows = 24 });
        client.ExpectStarted();
        client.Send(0x02, "abc\n"u8);
        client.ReadStdoutUntil("abc\r\nabc\r\n"); // the echo, then cat's copy
        client.Send(0x03, []);
        var rest = client.ReadToExit();
        Assert.Equal((0u, 0u, (byte)0), rest.Exit);
    }

    [Fact]
    public void Signal_kills_sleep()
    {
        using var client = serve.Client();
        client.Open(new ExecOpen(["sleep", "30"]));
        client.ExpectStarted();
        client.Send(0x05, U32(15));
        var sw = Stopwatch.StartNew();
        var rest = client.ReadToExit();
        Assert.Equal((1u, 15u, (byte)0), rest.Exit);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void Closing_the_socket_hangs_up_the_command()
    {
        int pid;
        using (var client = serve.Client())
        {
            client.Open(new ExecOpen(["sleep", "30"]));
            pid = client.ExpectStarted();
            Assert.True(Directory.Exists($"/proc/{pid}"));
        }
        // serve sends SIGHUP and reaps it: the pid disappears (no zombie left behind).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (Directory.Exists($"/proc/{pid}") && DateTime.UtcNow < deadline) Thread.Sleep(20);
        Assert.False(Directory.Exists($"/proc/{pid}"), $"pid {pid} still exists after the host closed");
    }

    [Fact]
    public void Bad_token_gets_error()
    {
        using var client = serve.Client();
        client.Open(new ExecOpen(["echo", "no"]), token: new string('0', 64));
        var frame = client.ReadFrame();
        Assert.NotNull(frame);
        Assert.Equal(0x14, frame.Value.Type);
        Assert.Contains("token", Encoding.UTF8.GetString(frame.Value.Payload));
        Assert.Null(client.ReadFrame());
    }

    [Fact]
    public void Unknown_user_gets_error()
    {
        using var client = serve.Client();
        client.Open(new ExecOpen(["id"]) { User = "no-such-user-warren" });
        var frame = client.ReadFrame();
        Assert.Equal(0x14, frame!.Value.Type);
        Assert.Contains("no-such-user-warren", Encoding.UTF8.GetString(frame.Value.Payload));
    }

    [Fact]
    public void Oversize_or_misplaced_frames_close_only_that_connection()
    {
        using (var client = serve.Client())
        {
            client.SendRawHeader(0x01, 256 * 1024 + 1);
            Assert.Null(client.ReadFrame());
        }
        using (var client = serve.Client())
        {
            client.Send(0x04, U32(80, 24)); // RESIZE before OPEN
            Assert.Null(client.ReadFrame());
        }
        using (var client = serve.Client())
        {
            client.Open(new ExecOpen(["sleep", "30"]));
            client.ExpectStarted();
            client.SendRawHeader(0x02, uint.MaxValue); // DATA far over the limit in a running session
            Assert.Null(client.ReadFrame());
        }
        using (var client = serve.Client())
        {
            client.Open(new ExecOpen(["cat"]));
            client.ExpectStarted();
            client.Send(0x03, []);
            client.Send(0x02, "late"u8); // DATA after EOF
            var frames = client.ReadAll();
            Assert.DoesNotContain(frames, f => f.Type == 0x11);
        }
        Assert.Equal("still here\n", serve.Client().Exec(new ExecOpen(["echo", "still here"])).StdoutText);
    }

    [Fact]
    public void Mutated_open_frames_never_kill_the_server()
    {
        var rng = new Random(20240611);
        var valid = ExecOpen.Encode(new ExecOpen(["echo", "fuzz"]) { Env = ["A=1"], Term = "", Cwd = "/" }, serve.Token);
        const int tokenEnd = 5 + 4 + 64; // frame header, token length, token
        const int Cases = 300;
        for (int i = 0; i < Cases; i++)
        {
            var frame = Mutate(valid, rng, keepTokenUpTo: rng.Next(3) == 0 ? 0 : tokenEnd);
            using var client = serve.Client(TimeSpan.FromSeconds(15));
            try
            {
                client.SendRaw(frame);
                client.ShutdownSend(); // a truncated OPEN must not wait out the 10 s OPEN timeout
            }
            catch (SocketException) { } // the server may already have closed: fine
            var frames = client.ReadAll();
            // Whatever happened: an ERROR, a complete session, or a plain close; never garbage.
            Assert.All(frames, f => Assert.Contains(f.Type, new byte[] { 0x10, 0x11, 0x12, 0x13, 0x14 }));
            Assert.False(serve.Process.HasExited, $"serve died on case {i}: {Convert.ToHexString(frame)}");
        }
        Assert.Equal("alive\n", serve.Client().Exec(new ExecOpen(["echo", "alive"])).StdoutText);
    }

    [Fact]
    public void Connections_over_the_limit_get_busy()
    {
        const int Limit = 1024;
        var held = new List<SessionClient>();
        try
        {
            for (int i = 0; i < Limit; i++) held.Add(serve.Client());
            using (var extra = serve.Client())
            {
                var frame = extra.ReadFrame();
                Assert.Equal(0x14, frame!.Value.Type);
                Assert.Equal("busy", Encoding.UTF8.GetString(frame.Value.Payload));
            }
        }
        finally
        {
            foreach (var c in held) c.Dispose();
        }
        // The slots come back once serve sees the connections close.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            using var client = serve.Client();
            client.Open(new ExecOpen(["echo", "free"]));
            var first = client.ReadFrame();
            if (first is { Type: 0x10 }) break;
            Assert.True(DateTime.UtcNow < deadline, "slots were not released");
            Thread.Sleep(100);
        }
    }

    [Fact]
    public void Silent_connection_is_closed_after_the_open_timeout()
    {
        using var client = serve.Client(TimeSpan.FromSeconds(20));
        var sw = Stopwatch.StartNew();
        Assert.Null(client.ReadFrame());
        Assert.InRange(sw.Elapsed.TotalSeconds, 8, 15);
    }

    [Fact]
    public void Connect_relays_both_ways_with_half_close()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var client = serve.Client();
        client.Open(ConnectOpen.Encode("127.0.0.1", port, serve.Token));
        using var peer = listener.AcceptSocket();
        peer.ReceiveTimeout = 10_000;
        Assert.Equal(0x10, client.ReadFrame()!.Value.Type);

        // Host → peer, then the host's half-close reaches the peer as EOF while the other direction stays open.
        client.Send(0x02, "ping"u8);
        client.Send(0x03, []);
        var got = new MemoryStream();
        var buffer = new byte[1024];
        int n;
        while ((n = peer.Receive(buffer)) > 0) got.Write(buffer, 0, n);
        Assert.Equal("ping", Encoding.ASCII.GetString(got.ToArray()));

        // Peer → host, then the peer's half-close is STDOUT_EOF, after which the agent closes the connection.
        peer.Send("pong"u8);
        peer.Shutdown(SocketShutdown.Send);
        var frames = client.ReadAll();
        Assert.Equal("pong", Encoding.ASCII.GetString(frames.Where(f => f.Type == 0x11).SelectMany(f => f.Payload).ToArray()));
        Assert.Equal(0x15, frames[^1].Type);
    }

    [Fact]
    public void Connect_to_a_closed_port_gets_error()
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }
        using var client = serve.Client();
        client.Open(ConnectOpen.Encode("127.0.0.1", port, serve.Token));
        var frame = client.ReadFrame();
        Assert.Equal(0x14, frame!.Value.Type);
        Assert.Contains("ConnectionRefused", Encoding.UTF8.GetString(frame.Value.Payload));
    }

    [Fact]
    public void User_switching()
    {
        var nobody = File.ReadAllLines("/etc/passwd").Select(l => l.Split(':')).FirstOrDefault(f => f[0] == "nobody");
        Assert.NotNull(nobody);
        var byName = serve.Client().Exec(new ExecOpen(["sh", "-c", "id -u; id -g; echo $USER; pwd"]) { User = "nobody" });
        // nobody's home usually does not exist: then the session starts in / instead.
        string cwd = Directory.Exists(nobody[5]) ? nobody[5] : "/";
        Assert.Equal($"{nobody[2]}\n{nobody[3]}\nnobody\n{cwd}\n", byName.StdoutText);

        var byUid = serve.Client().Exec(new ExecOpen(["id", "-u"]) { User = "4321:4321" });
        Assert.Equal("4321\n", byUid.StdoutText);

        var tty = serve.Client().Exec(new ExecOpen(["id", "-u"]) { User = "nobody", Term = "xterm" });
        Assert.Equal($"{nobody[2]}\r\n", tty.StdoutText);
    }

    private static byte[] U32(params uint[] values)
    {
        var bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(i * 4), values[i]);
        return bytes;
    }

    /// <summary>One random mutation: flip bytes, overwrite a length field with an extreme value, truncate, or append.</summary>
    private static byte[] Mutate(byte[] valid, Random rng, int keepTokenUpTo)
    {
        var bytes = valid.ToList();
        int from = Math.Min(keepTokenUpTo, bytes.Count - 1);
        int mutations = rng.Next(1, 4);
        for (int m = 0; m < mutations; m++)
        {
            int at = rng.Next(from, bytes.Count);
            switch (rng.Next(5))
            {
                case 0: bytes[at] ^= (byte)rng.Next(1, 256); break;
                case 1:
                    uint[] extremes = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 65536, 65537, 4097, 1025];
                    var word = new byte[4];
                    BinaryPrimitives.WriteUInt32BigEndian(word, extremes[rng.Next(extremes.Length)]);
                    for (int k = 0; k < 4 && at + k < bytes.Count; k++) bytes[at + k] = word[k];
                    break;
                case 2: bytes.RemoveRange(at, bytes.Count - at); break;
                case 3: bytes.AddRange(Enumerable.Range(0, rng.Next(1, 64)).Select(_ => (byte)rng.Next(256))); break;
                case 4: bytes.RemoveAt(at); break;
            }
            if (bytes.Count <= from) break;
        }
        return bytes.ToArray();
    }

    /// <summary>One <c>warren-agent serve</c> on the host for the whole class, in a fresh 0700 directory with a random token.</summary>
    public sealed class ServeFixture : IDisposable
    {
        public static string AgentPath => DockerVmRuntime.ResolveAgentPath(null);

        public string Directory { get; }
        public string Token { get; }
        public Process Process { get; }
        public string SocketPath => Path.Combine(Directory, "agent.sock");

        /// <summary>serve's stderr, for diagnosing a failure.</summary>
        public StringBuilder Log { get; } = new();

        public ServeFixture() : this(createStaleSocket: false) { }

        internal ServeFixture(bool createStaleSocket, int? softDescriptorLimit = null, bool ignoreHangUpAndInterrupts = false)
        {
            Directory = MakePrivateDirectory();
            Token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
            File.WriteAllText(Path.Combine(Directory, "token"), Token + "\n");
            if (createStaleSocket)
            {
                using var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                stale.Bind(new UnixDomainSocketEndPoint(SocketPath)); // bound, never listened on: a dead socket file
            }
            // With a descriptor limit or inherited ignored signals (as under nohup from a background shell), through
            // sh's ulimit and trap (exec: the pid stays serve's).
            string prelude = (softDescriptorLimit is { } nofile ? $"ulimit -Sn {nofile} && " : "")
                + (ignoreHangUpAndInterrupts ? "trap '' HUP INT QUIT && " : "");
            var start = prelude.Length > 0
                ? new ProcessStartInfo("/bin/sh", ["-c", prelude + "exec \"$0\" serve \"$1\"", AgentPath, Directory])
                : new ProcessStartInfo(AgentPath, ["serve", Directory]);
            start.RedirectStandardError = start.RedirectStandardOutput = start.RedirectStandardInput = true;
            start.UseShellExecute = false;
            Process = Process.Start(start)!;
            Process.ErrorDataReceived += (_, e) => { lock (Log) Log.AppendLine(e.Data); };
            Process.BeginErrorReadLine();
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
            while (DateTime.UtcNow < deadline)
            {
                try
                {
                    using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    probe.Connect(new UnixDomainSocketEndPoint(SocketPath));
                    return;
                }
                catch (SocketException) { Thread.Sleep(50); }
                if (Process.HasExited) throw new InvalidOperationException($"serve exited with {Process.ExitCode}");
            }
            throw new TimeoutException("serve did not start listening");
        }

        public static string MakePrivateDirectory()
        {
            string dir = Path.Combine(Path.GetTempPath(), "warren-serve-" + Guid.NewGuid().ToString("N")[..8]);
            System.IO.Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            return dir;
        }

        public SessionClient Client(TimeSpan? timeout = null) => SessionClient.Connect(SocketPath, Token, timeout);

        public void Dispose()
        {
            try { Process.Kill(); Process.WaitForExit(5000); } catch (InvalidOperationException) { }
            Process.Dispose();
            try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
        }
    }
}

/// <summary>The same protocol inside a container whose PID 1 is the agent's init (busybox image: no libc).</summary>
[Collection(DockerCollection.Name)]
[SupportedOSPlatform("linux")]
public sealed class AgentServeProtocolContainerTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = AgentServeProtocolTests.ServeFixture.MakePrivateDirectory();
    private readonly string _container = "warren-aps-" + Guid.NewGuid().ToString("N")[..8];
    private readonly string _token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));

    [DockerFact]
    public async Task Serves_sessions_inside_a_busybox_vm()
    {
        DockerTestEnvironment.Require();
        File.WriteAllText(Path.Combine(_dir, "token"), _token);
        var (code, _, stderr) = await DockerTestEnvironment.RunAsync("docker",
        [
            "run", "-d", "--name", _container, "--label", DockerTestEnvironment.TestLabel + "=1",
            "-v", AgentServeProtocolTests.ServeFixture.AgentPath + ":/.warren/agent:ro", "-v", _dir + ":/.warren/run",
            "--entrypoint", "/.warren/agent", DockerTestEnvironment.BusyboxImage, "init", "--",
        ]);
        Assert.True(code == 0, stderr);
        string socket = Path.Combine(_dir, "agent.sock");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!File.Exists(socket) && DateTime.UtcNow < deadline) await Task.Delay(50);
        Assert.True(File.Exists(socket), "init did not start serve");

        SessionClient Client() => SessionClient.Connect(socket, _token, TimeSpan.FromSeconds(60));

        var id = Client().Exec(new ExecOpen(["sh", "-c", "id -u; pwd; echo $HOME"]) { User = "warren" });
        Assert.Equal("1000\n/home/warren\n/home/warren\n", id.StdoutText);

        var tty = Client().Exec(new ExecOpen(["sh", "-c", "tty; stty size"]) { Term = "xterm", Columns = 90, Rows = 30 });
        Assert.Matches(@"^/dev/pts/\d+\r\n30 90\r\n$", tty.StdoutText);

        var missing = Client().Exec(new ExecOpen(["no-such-command"]));
        Assert.Equal((0u, 127u, (byte)0), missing.Exit);

        // Bulk input into `cat > /dev/null`: the path the session socket exists for.
        const long Bytes = 1L << 30;
        const int Chunk = 256 * 1024;
        var frame = new byte[5 + Chunk]; // one DATA frame, built once and sent again and again
        frame[0] = 0x02;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), Chunk);
        var sw = Stopwatch.StartNew();
        var bulk = Client().Exec(new ExecOpen(["sh", "-c", "cat > /dev/null"]), c =>
        {
            for (long sent = 0; sent < Bytes; sent += Chunk) c.SendRaw(frame);
            c.Send(0x03, []);
        });
        sw.Stop();
        Assert.Equal((0u, 0u, (byte)0), bulk.Exit);
        output.WriteLine($"1 GiB into cat > /dev/null: {sw.Elapsed.TotalSeconds:F2} s, {Bytes / sw.Elapsed.TotalSeconds / 1e6:F0} MB/s");

        // serve is restarted by init if it dies: a session kills its own serve (the parent of session-child, which
        // exec'd into sh), the connection drops with it, and a new serve binds the socket again.
        using (var killer = Client())
        {
            killer.Open(new ExecOpen(["sh", "-c", "kill $PPID; sleep 5"]));
            killer.ExpectStarted();
            Assert.DoesNotContain(killer.ReadAll(), f => f.Type == 0x13);
        }
        deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        string? again = null;
        while (again == null && DateTime.UtcNow < deadline)
        {
            // Until the new serve listens: the old socket file refuses, or the dying serve's backlog drops us.
            try
            {
                using var client = Client();
                client.Open(new ExecOpen(["echo", "again"]));
                if (client.ReadFrame() is { Type: 0x10 }) again = client.ReadToExit().StdoutText;
            }
            catch (SocketException) { }
            if (again == null) await Task.Delay(100);
        }
        Assert.Equal("again\n", again);
    }

    [DockerFact]
    public async Task Init_starts_the_image_command_with_defaults_whatever_it_inherited()
    {
        // init as PID 1 of a container started with SIGHUP/SIGINT/SIGQUIT ignored (as under nohup from a background
        // shell) and with the engine's OOM exemption for the agent: the image's command must start with default
        // signals and oom_score_adj 0 (proc(5)), while init keeps its value. Where the engine may not lower the
        // value, a raised one shows the same reset.
        DockerTestEnvironment.Require();
        int agentOomScoreAdj = DockerVmRuntime.AgentOomScoreAdj ?? 500;
        const string Probe = "cat /proc/1/oom_score_adj /proc/self/oom_score_adj; grep -E '^Sig(Ign|Blk)' /proc/self/status; echo probed";
        var (code, _, stderr) = await DockerTestEnvironment.RunAsync("docker",
        [
            "run", "-d", "--name", _container, "--label", DockerTestEnvironment.TestLabel + "=1",
            "--oom-score-adj", agentOomScoreAdj.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-v", AgentServeProtocolTests.ServeFixture.AgentPath + ":/.warren/agent:ro",
            "--entrypoint", "/bin/sh", DockerTestEnvironment.BusyboxImage,
            "-c", "trap '' HUP INT QUIT; exec /.warren/agent init -- sh -c \"$0\"", Probe,
        ]);
        Assert.True(code == 0, stderr);
        string logs = "";
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!logs.Contains("probed") && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
            logs = (await DockerTestEnvironment.RunAsync("docker", ["logs", _container])).Stdout;
        }
        Assert.Equal($"{agentOomScoreAdj}\n0\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nprobed\n", logs);
    }

    public void Dispose()
    {
        DockerTestEnvironment.RunAsync("docker", ["rm", "-f", _container]).GetAwaiter().GetResult();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

/// <summary>OPEN for kind exec, with the protocol's defaults.</summary>
public sealed record ExecOpen(string[] Argv)
{
    public string User { get; init; } = "";
    public string Cwd { get; init; } = "";
    public string Term { get; init; } = "";
    public uint Columns { get; init; }
    public uint Rows { get; init; }
    public string[] Env { get; init; } = [];

    /// <summary>The whole OPEN frame (header included).</summary>
    public static byte[] Encode(ExecOpen open, string token)
    {
        var p = new PayloadBuilder().String(token).String("exec").String(open.User).String(open.Cwd).String(open.Term)
            .U32(open.Columns).U32(open.Rows).U32((uint)open.Argv.Length);
        foreach (var a in open.Argv) p.String(a);
        p.U32((uint)open.Env.Length);
        foreach (var e in open.Env) p.String(e);
        return p.Frame(0x01);
    }
}

public static class ConnectOpen
{
    public static byte[] Encode(string host, int port, string token) =>
        new PayloadBuilder().String(token).String("connect").String(host).U32((uint)port).Frame(0x01);
}

public sealed class PayloadBuilder
{
    private readonly MemoryStream _bytes = new();

    public PayloadBuilder U32(uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        _bytes.Write(b);
        return this;
    }

    public PayloadBuilder String(string value)
    {
        var utf8 = Encoding.UTF8.GetBytes(value);
        U32((uint)utf8.Length);
        _bytes.Write(utf8);
        return this;
    }

    public byte[] Frame(byte type)
    {
        var payload = _bytes.ToArray();
        var frame = new byte[5 + payload.Length];
        frame[0] = type;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(frame, 5);
        return frame;
    }
}

public readonly record struct AgentFrame(byte Type, byte[] Payload);

/// <summary>What an exec session produced.</summary>
public sealed record ExecResult(int Pid, List<AgentFrame> Frames, byte[] Stdout, byte[] Stderr, (uint Kind, uint Value, byte Core) Exit, bool ClosedAfterExit)
{
    public string StdoutText => Encoding.UTF8.GetString(Stdout);
    public string StderrText => Encoding.UTF8.GetString(Stderr);
}

/// <summary>A blocking client of the session socket; every receive has a timeout so a hung agent fails the test instead of hanging it.</summary>
public sealed class SessionClient : IDisposable
{
    private readonly Socket _socket;
    private readonly string _token;
    private readonly MemoryStream _pendingStdout = new();

    private readonly TimeSpan _timeout;

    private SessionClient(Socket socket, string token, TimeSpan timeout)
    {
        _socket = socket;
        _token = token;
        _timeout = timeout;
    }

    /// <summary>
    /// <paramref name="timeout"/> bounds each wait for data. It is enforced with Poll, not ReceiveTimeout: on Unix a
    /// socket timeout moves .NET's sync calls onto its async engine, which made this client, not the agent, the bottleneck.
    /// </summary>
    public static SessionClient Connect(string path, string token, TimeSpan? timeout = null)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(path));
        return new SessionClient(socket, token, timeout ?? TimeSpan.FromSeconds(30));
    }

    public void Open(ExecOpen open, string? token = null) => SendRaw(ExecOpen.Encode(open, token ?? _token));
    public void Open(byte[] frame) => SendRaw(frame);

    public void SendRaw(ReadOnlySpan<byte> bytes)
    {
        while (bytes.Length > 0) bytes = bytes[_socket.Send(bytes)..];
    }

    public void SendRawHeader(byte type, uint length)
    {
        Span<byte> header = stackalloc byte[5];
        header[0] = type;
        BinaryPrimitives.WriteUInt32BigEndian(header[1..], length);
        SendRaw(header);
    }

    public void Send(byte type, ReadOnlySpan<byte> payload)
    {
        var frame = new byte[5 + payload.Length];
        frame[0] = type;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(frame.AsSpan(5));
        SendRaw(frame);
    }

    public void ShutdownSend() => _socket.Shutdown(SocketShutdown.Send);

    /// <summary>The next frame, or null once the agent closed the connection (a reset counts as closed).</summary>
    public AgentFrame? ReadFrame()
    {
        var header = new byte[5];
        if (!ReadExactly(header, eofOk: true)) return null;
        int length = (int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(1));
        Assert.InRange(length, 0, 256 * 1024);
        var payload = new byte[length];
        ReadExactly(payload, eofOk: false);
        return new AgentFrame(header[0], payload);
    }

    private bool ReadExactly(byte[] buffer, bool eofOk)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            if (!_socket.Poll(_timeout, SelectMode.SelectRead)) throw new TimeoutException($"no data from the agent within {_timeout}");
            int n;
            try { n = _socket.Receive(buffer, got, buffer.Length - got, SocketFlags.None); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset) { n = 0; }
            if (n == 0)
            {
                Assert.True(eofOk && got == 0, "connection closed inside a frame");
                return false;
            }
            got += n;
        }
        return true;
    }

    public List<AgentFrame> ReadAll()
    {
        var frames = new List<AgentFrame>();
        while (ReadFrame() is { } f) frames.Add(f);
        return frames;
    }

    public int ExpectStarted()
    {
        var f = ReadFrame();
        Assert.True(f is { Type: 0x10 }, $"expected STARTED, got {(f == null ? "close" : $"0x{f.Value.Type:x2} {Encoding.UTF8.GetString(f.Value.Payload)}")}");
        Assert.Equal(4, f!.Value.Payload.Length);
        return (int)BinaryPrimitives.ReadUInt32BigEndian(f.Value.Payload);
    }

    /// <summary>Reads STDOUT until its text (so far) contains <paramref name="text"/>.</summary>
    public void ReadStdoutUntil(string text)
    {
        while (!Encoding.UTF8.GetString(_pendingStdout.ToArray()).Contains(text, StringComparison.Ordinal))
        {
            var f = ReadFrame();
            Assert.True(f != null, $"closed before '{text}'; got '{Encoding.UTF8.GetString(_pendingStdout.ToArray())}'");
            Assert.True(f.Value.Type == 0x11, $"unexpected frame 0x{f.Value.Type:x2} waiting for '{text}'");
            _pendingStdout.Write(f.Value.Payload);
        }
        _pendingStdout.SetLength(0);
    }

    /// <summary>Frames until EXIT (which must be last), collected.</summary>
    public ExecResult ReadToExit(int pid = 0)
    {
        var frames = new List<AgentFrame>();
        var stdout = new MemoryStream();
        var stderr = new MemoryStream();
        while (true)
        {
            var f = ReadFrame();
            if (f == null) Assert.Fail($"closed before EXIT; stdout so far '{Encoding.UTF8.GetString(stdout.ToArray())}' stderr '{Encoding.UTF8.GetString(stderr.ToArray())}'");
            frames.Add(f.Value);
            switch (f.Value.Type)
            {
                case 0x11: stdout.Write(f.Value.Payload); break;
                case 0x12: stderr.Write(f.Value.Payload); break;
                case 0x13:
                    var p = f.Value.Payload;
                    Assert.Equal(9, p.Length);
                    var exit = (BinaryPrimitives.ReadUInt32BigEndian(p), BinaryPrimitives.ReadUInt32BigEndian(p.AsSpan(4)), p[8]);
                    bool closed = ReadFrame() == null;
                    return new ExecResult(pid, frames, stdout.ToArray(), stderr.ToArray(), exit, closed);
                default:
                    Assert.Fail($"unexpected frame 0x{f.Value.Type:x2}: {Encoding.UTF8.GetString(f.Value.Payload)}");
                    break;
            }
        }
    }

    /// <summary>OPEN, STARTED, then <paramref name="input"/> on another thread (so output is read meanwhile), then everything up to EXIT.</summary>
    public ExecResult Exec(ExecOpen open, Action<SessionClient>? input = null)
    {
        using (this)
        {
            Open(open);
            int pid = ExpectStarted();
            Task sending = input == null ? Task.CompletedTask : Task.Run(() => input(this));
            var result = ReadToExit(pid);
            Assert.True(sending.Wait(TimeSpan.FromSeconds(60)), "input did not finish");
            sending.GetAwaiter().GetResult();
            return result;
        }
    }

    public void Dispose() => _socket.Dispose();
}
