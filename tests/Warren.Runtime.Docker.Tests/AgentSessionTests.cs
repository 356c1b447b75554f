using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Warren.Platform.Runtime;
using Xunit;
using Warren.Runtime.Agent;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// The host side of the agent session socket against an in-process fake agent (<see cref="FakeAgent"/>): the OPEN
/// encoding, framing (many frames per read, frames split across reads, bad frames), ordering, flow control, the
/// control frames, and when DockerVmRuntime falls back to Docker exec. No Docker needed: the runtime points at an
/// engine that does not exist, so anything that reaches it fails with an engine error, not a session error.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
/// <summary>
/// Alone: <see cref="Streaming_AllocatesNothingPerChunk"/> counts the process's allocations
/// (GC.GetTotalAllocatedBytes), which tests running in parallel would add to.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AllocationCountingCollection
{
    public const string Name = "allocation counting";
}

[Collection(AllocationCountingCollection.Name)]
public sealed class AgentSessionTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private const string VmId = "vm-fake";

    // Short, so the socket path fits sun_path wherever TMPDIR points.
    private readonly string _root = Path.Combine("/tmp", "wst-" + Guid.NewGuid().ToString("N")[..10]);
    private readonly AgentSessionDirectory _directory;

    public AgentSessionTests()
    {
        _directory = new AgentSessionDirectory(_root);
        _directory.Prepare(VmId);
    }

    public void Dispose()
    {
        try { Directory.Delete(_root, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    private DockerVmRuntime Runtime(SessionSocketMode mode = SessionSocketMode.Required, TimeSpan? requiredSocketWait = null) => new(new DockerRuntimeOptions
    {
        AgentSocketDirectory = _root,
        SessionSocket = mode,
        // Any existing file: these tests never create a container.
        AgentPath = typeof(AgentSessionTests).Assembly.Location,
        Endpoint = new Uri("unix://" + Path.Combine(_root, "no-engine.sock")),
        RequiredSocketWait = requiredSocketWait ?? TimeSpan.FromMilliseconds(300),
    });

    private FakeAgent Agent() => new(_directory.SocketPath(VmId));

    private string TokenOnDisk() => File.ReadAllText(Path.Combine(_directory.VmDirectory(VmId), AgentSessionDirectory.TokenName));

    /// <summary>Starts an exec, answers its OPEN with STARTED, and returns the process and the agent's side.</summary>
    private static async Task<(IVmProcess Process, FakeAgentConnection Agent, FakeOpen Open)> StartExecAsync(
        DockerVmRuntime runtime, FakeAgent agent, ExecSpec spec, byte[]? firstReply = null)
    {
        var exec = runtime.ExecAsync(VmId, spec, CancellationToken.None);
        var conn = await agent.AcceptAsync();
        var (type, payload) = await conn.ExpectFrameAsync();
        Assert.Equal(AgentFrameType.Open, type);
        var open = FakeOpen.Parse(payload);
        await conn.SendAsync(firstReply ?? FakeAgent.Started(4242));
        return (await exec.WaitAsync(Timeout), conn, open);
    }

    private static async Task<string> ReadAllAsync(Stream s)
    {
        using var reader = new StreamReader(s, Encoding.UTF8, leaveOpen: true);
        return await reader.ReadToEndAsync().WaitAsync(Timeout);
    }

    // ------------------------------------------------------------------ OPEN

    [Fact]
    public async Task Exec_SendsOpenAsSpecified_WithTokenTtyArgvAndEnv()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var spec = new ExecSpec(["sh", "-c", "echo ü"], User: "1000:1000", Env: new Dictionary<string, string> { ["FOO"] = "bar" },
            Tty: new TtySpec("xterm-256color", 120, 40), WorkingDirectory: "/tmp");
        var (process, conn, open) = await StartExecAsync(runtime, agent, spec);
        await using (conn)
        await using (process)
        {
            Assert.Equal(TokenOnDisk(), open.Token);
            Assert.Equal("exec", open.Kind);
            Assert.Equal("1000:1000", open.User);
            Assert.Equal("/tmp", open.Cwd);
            Assert.Equal("xterm-256color", open.Term);
            Assert.Equal((120u, 40u), (open.Columns, open.Rows));
            Assert.Equal(["sh", "-c", "echo ü"], open.Argv);
            // TERM goes into the environment as with Docker exec, and into OPEN's term field.
            Assert.Equal(["FOO=bar", "TERM=xterm-256color"], open.Env);
            Assert.Null(process.StandardError);
            Assert.Equal(4242, ((AgentVmProcess)process).ProcessId);
            await conn.SendAsync(FakeAgent.Exit(0, 0));
            Assert.Equal(new ExitResult(0, null), await process.Completion.WaitAsync(Timeout));
        }
    }

    [Fact]
    public async Task Exec_WithoutTty_AsksForPipes_AsRoot_InTheHomeDirectory()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var (process, conn, open) = await StartExecAsync(runtime, agent, new ExecSpec(["true"]));
        await using (conn)
        await using (process)
        {
            Assert.Equal(("", "", ""), (open.User, open.Cwd, open.Term));
            Assert.Equal((0u, 0u), (open.Columns, open.Rows));
            Assert.Empty(open.Env);
            Assert.NotNull(process.StandardError);
        }
    }

    // ------------------------------------------------------------------ framing

    [Fact]
    public async Task ManyFramesInOneRead_AreAllDelivered_InOrder()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var reply = FakeAgent.Concat(FakeAgent.Started(7),
            FakeAgent.Frame(AgentFrameType.Stdout, "one "), FakeAgent.Frame(AgentFrameType.Stderr, "err"),
            FakeAgent.Frame(AgentFrameType.Stdout, ""), FakeAgent.Frame(AgentFrameType.Stdout, "two"),
            FakeAgent.Exit(0, 3));
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["x"]), reply);
        await using (conn)
        await using (process)
        {
            var stdout = ReadAllAsync(process.StandardOutput);
            var stderr = ReadAllAsync(process.StandardError!);
            Assert.Equal(new ExitResult(3, null), await process.Completion.WaitAsync(Timeout));
            Assert.Equal("one two", await stdout);
            Assert.Equal("err", await stderr);
        }
    }

    [Fact]
    public async Task FramesSplitAcrossReads_AreReassembled()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var big = new byte[300_000]; // larger than the host's read buffer and than one frame may be split into
        new Random(1).NextBytes(big);
        var bytes = FakeAgent.Concat(FakeAgent.Started(1),
            FakeAgent.Frame(AgentFrameType.Stdout, big.AsSpan(0, 200_000)),
            FakeAgent.Frame(AgentFrameType.Stderr, "e"),
            FakeAgent.Frame(AgentFrameType.Stdout, big.AsSpan(200_000)),
            FakeAgent.Exit(1, 9));
        var exec = runtime.ExecAsync(VmId, new ExecSpec(["x"]), CancellationToken.None);
        await using var conn = await agent.AcceptAsync();
        await conn.ExpectFrameAsync();
        var sender = Task.Run(async () =>
        {
            // Odd-sized pieces with pauses: headers and fixed payloads arrive in fragments.
            int[] sizes = [1, 2, 3, 4, 5, 7, 11, 4093, 1, 65537];
            for (int pos = 0, i = 0; pos < bytes.Length; i++)
            {
                int n = Math.Min(sizes[i % sizes.Length], bytes.Length - pos);
                await conn.SendAsync(bytes[pos..(pos + n)]);
                pos += n;
                if (n < 16) await Task.Delay(1);
            }
        });
        await using var process = await exec.WaitAsync(Timeout);
        using var stdout = new MemoryStream();
        var copy = process.StandardOutput.CopyToAsync(stdout);
        Assert.Equal("e", await ReadAllAsync(process.StandardError!));
        await copy.WaitAsync(Timeout);
        await sender.WaitAsync(Timeout);
        Assert.Equal(big, stdout.ToArray());
        Assert.Equal(new ExitResult(null, "KILL"), await process.Completion.WaitAsync(Timeout));
    }

    [Fact]
    public async Task OversizeFrame_EndsTheSessionWithAClearError()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var header = new byte[5];
        header[0] = (byte)AgentFrameType.Stdout;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(1), 256 * 1024 + 1);
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["x"]),
            FakeAgent.Concat(FakeAgent.Started(1), FakeAgent.Frame(AgentFrameType.Stdout, "before"), header));
        await using (conn)
        await using (process)
        {
            var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => process.Completion.WaitAsync(Timeout));
            Assert.Equal(DockerRuntimeErrors.AgentSessionFailed, e.Code);
            Assert.Contains("262145", e.Message);
            Assert.Contains("limit", e.Message);
            // Readers get what came before, then an IOException (the Stream contract), not a hang.
            var buffer = new byte[64];
            Assert.Equal("before", Encoding.UTF8.GetString(buffer, 0, await process.StandardOutput.ReadAsync(buffer).AsTask().WaitAsync(Timeout)));
            await Assert.ThrowsAsync<IOException>(() => process.StandardOutput.ReadAsync(buffer).AsTask().WaitAsync(Timeout));
        }
    }

    public static TheoryData<string, byte[]> BadFrames() => new()
    {
        { "unknown frame type 0x7f", FakeAgent.Frame((AgentFrameType)0x7f, "") },
        { "host frame type from the agent", FakeAgent.Frame(AgentFrameType.Data, "x") },
        { "STARTED twice", FakeAgent.Started(1) },
        { "STDOUT_EOF in an exec", FakeAgent.Frame(AgentFrameType.StdoutEof, "") },
        { "EXIT too short", FakeAgent.Frame(AgentFrameType.Exit, new byte[8]) },
        { "EXIT of unknown kind", FakeAgent.Exit(2, 0) },
        { "EXIT with code 256", FakeAgent.Exit(0, 256) },
        { "EXIT with signal 0", FakeAgent.Exit(1, 0) },
        { "EXIT with signal 65", FakeAgent.Exit(1, 65) },
        { "EXIT with core flag 2", FakeAgent.Exit(1, 11, 2) },
        { "truncated header", [(byte)AgentFrameType.Stdout, 0, 0] },
        { "truncated payload", FakeAgent.Frame(AgentFrameType.Stdout, "abcdef")[..8] },
    };

    [Theory]
    [MemberData(nameof(BadFrames))]
    public async Task BadFrame_AfterStart_FaultsCompletion_NeverHangs(string why, byte[] frame)
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["x"]));
        await using (process)
        {
            await conn.SendAsync(frame);
            await conn.DisposeAsync(); // a truncated frame is only known as such at end of stream
            var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => process.Completion.WaitAsync(Timeout));
            Assert.Equal(DockerRuntimeErrors.AgentSessionFailed, e.Code);
            Assert.Contains(VmId, e.Message);
            Assert.False(string.IsNullOrWhiteSpace(why));
        }
    }

    [Fact]
    public async Task StderrFrame_WithATty_IsAViolation()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["x"], Tty: new TtySpec("xterm", 80, 24)));
        await using (conn)
        await using (process)
        {
            await conn.SendAsync(FakeAgent.Frame(AgentFrameType.Stderr, "x"));
            var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => process.Completion.WaitAsync(Timeout));
            Assert.Contains("STDERR", e.Message);
        }
    }

    [Fact]
    public async Task OutputBeforeStarted_FailsTheExec()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var exec = runtime.ExecAsync(VmId, new ExecSpec(["x"]), CancellationToken.None);
        await using var conn = await agent.AcceptAsync();
        await conn.ExpectFrameAsync();
        await conn.SendAsync(FakeAgent.Frame(AgentFrameType.Stdout, "early"));
        var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => exec.WaitAsync(Timeout));
        Assert.Contains("before STARTED", e.Message);
        Assert.Null(await conn.ReadFrameAsync()); // and the host closed the socket
    }

    [Fact]
    public async Task ClosingWithoutAnswer_FailsTheExec()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var exec = runtime.ExecAsync(VmId, new ExecSpec(["x"]), CancellationToken.None);
        var conn = await agent.AcceptAsync();
        await conn.ExpectFrameAsync();
        await conn.DisposeAsync();
        var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => exec.WaitAsync(Timeout));
        Assert.Contains("without answering", e.Message);
    }

    [Fact]
    public async Task ErrorFrame_FailsTheExec_WithTheAgentsMessage_Sanitised()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var exec = runtime.ExecAsync(VmId, new ExecSpec(["x"], User: "bob"), CancellationToken.None);
        await using var conn = await agent.AcceptAsync();
        await conn.ExpectFrameAsync();
        await conn.SendAsync(FakeAgent.Frame(AgentFrameType.Error, "unknown user bob\n\u001b[31m" + new string('x', 100_000)));
        var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => exec.WaitAsync(Timeout));
        Assert.Equal(DockerRuntimeErrors.AgentSessionFailed, e.Code);
        Assert.Contains("unknown user bob", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain('\u001b', e.Message);
        Assert.True(e.Message.Length < 600, "the agent's message is bounded");
    }

    // ------------------------------------------------------------------ ordering, flow control

    [Fact]
    public async Task Exit_ComesAfterAllOutput_AndASlowReaderHoldsTheAgentBack()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        const int FrameBytes = 32 * 1024, Frames = 256; // 8 MiB: far more than the host buffers
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["x"]));
        await using (conn)
        await using (process)
        {
            var chunk = new byte[FrameBytes];
            long sentBytes = 0;
            var sender = Task.Run(async () =>
            {
                for (int i = 0; i < Frames; i++)
                {
                    chunk.AsSpan().Fill((byte)i);
                    await conn.SendAsync(FakeAgent.Frame(AgentFrameType.Stdout, chunk));
                    Interlocked.Add(ref sentBytes, FrameBytes);
                }
                await conn.SendAsync(FakeAgent.Exit(0, 0));
            });
            await Task.Delay(TimeSpan.FromMilliseconds(500));
            // Nobody reads: the host stopped reading the socket, so the agent is blocked well short of the end.
            Assert.False(sender.IsCompleted);
            Assert.False(process.Completion.IsCompleted);
            Assert.InRange(Interlocked.Read(ref sentBytes), 0, 4L * 1024 * 1024);

            long total = 0;
            var buffer = new byte[64 * 1024];
            int expectedFrame = 0, inFrame = 0;
            while (true)
            {
                int n = await process.StandardOutput.ReadAsync(buffer).AsTask().WaitAsync(Timeout);
                if (n == 0) break;
                for (int i = 0; i < n;)
                {
                    // Every byte of frame k is k: order across frames and reads is kept.
                    int run = Math.Min(n - i, FrameBytes - inFrame);
                    Assert.Equal(-1, buffer.AsSpan(i, run).IndexOfAnyExcept((byte)expectedFrame));
                    i += run;
                    inFrame += run;
                    if (inFrame == FrameBytes) { inFrame = 0; expectedFrame++; }
                }
                total += n;
            }
            Assert.Equal((long)FrameBytes * Frames, total);
            Assert.Equal(new ExitResult(0, null), await process.Completion.WaitAsync(Timeout));
            await sender.WaitAsync(Timeout);
        }
    }

    // ------------------------------------------------------------------ the hot path does not allocate per chunk

    [Fact]
    public async Task Streaming_AllocatesNothingPerChunk()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        const int Chunk = 32 * 1024, Chunks = 2048; // 64 MiB each way, in the SSH front door's chunk size
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["x"]));
        await using (conn)
        await using (process)
        {
            var chunk = new byte[Chunk];
            var drain = new byte[256 * 1024];
            var frame = FakeAgent.Frame(AgentFrameType.Stdout, chunk);
            var readBuffer = new byte[Chunk];
            // The fake's side loops in one async method each (socket ValueTasks do not allocate), so what is
            // counted is the host's.
            async Task DrainAsync(long bytes)
            {
                for (long got = 0; got < bytes;) got += await conn.Socket.ReceiveAsync(drain.AsMemory(), SocketFlags.None);
            }
            async Task FeedAsync(int frames)
            {
                for (int i = 0; i < frames; i++)
                    for (int sent = 0; sent < frame.Length;) sent += await conn.Socket.SendAsync(frame.AsMemory(sent), SocketFlags.None);
            }
            async Task StdinAsync(int chunks)
            {
                var sink = DrainAsync((long)chunks * (Chunk + 5));
                for (int i = 0; i < chunks; i++) await process.StandardInput.WriteAsync(chunk);
                await sink.WaitAsync(Timeout);
            }
            async Task StdoutAsync(int chunks)
            {
                var source = FeedAsync(chunks);
                for (long got = 0; got < (long)chunks * Chunk;) got += await process.StandardOutput.ReadAsync(readBuffer);
                await source.WaitAsync(Timeout);
            }
            // The first rounds warm up the JIT and ArrayPool.Shared, whose per-thread caches fill as pooled arrays
            // move between thread-pool threads (a cost bounded by the thread count, not by the chunks); the best of
            // five rounds is what a long transfer costs per chunk. GC.GetTotalAllocatedBytes counts the whole
            // process, and in a full run other test classes leave work behind (timers, engine event streams,
            // disposals) that allocates at its own pace while this collection runs alone; each round therefore
            // subtracts what the process allocated while idle for as long as the transfer took.
            async Task<long> Measure(Func<int, Task> transfer)
            {
                long best = long.MaxValue;
                for (int round = 0; round < 5; round++)
                {
                    long before = GC.GetTotalAllocatedBytes(precise: true);
                    long started = System.Diagnostics.Stopwatch.GetTimestamp();
                    await transfer(Chunks);
                    long used = GC.GetTotalAllocatedBytes(precise: true) - before;
                    var took = System.Diagnostics.Stopwatch.GetElapsedTime(started);
                    long idleBefore = GC.GetTotalAllocatedBytes(precise: true);
                    await Task.Delay(took);
                    long idle = GC.GetTotalAllocatedBytes(precise: true) - idleBefore;
                    best = Math.Min(best, Math.Max(0, used - idle));
                }
                return best;
            }
            long stdin = await Measure(StdinAsync);
            long stdout = await Measure(StdoutAsync);
            // Under 128 bytes a chunk: room for test-host noise, while copying each chunk (the old path's ToArray)
            // would be 64 MiB and even one small object per chunk 200+ KiB.
            const long Limit = 128L * Chunks;
            Assert.True(stdin < Limit, $"stdin allocated {stdin} bytes for {Chunks} chunks");
            Assert.True(stdout < Limit, $"stdout allocated {stdout} bytes for {Chunks} chunks");
        }
    }

    // ------------------------------------------------------------------ host → agent frames

    [Fact]
    public async Task Stdin_Resize_Signal_Eof_BecomeFrames_AndBigWritesAreSplit()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["x"], Tty: new TtySpec("xterm", 80, 24)));
        await using (conn)
        await using (process)
        {
            var data = new byte[600 * 1024];
            new Random(2).NextBytes(data);
            var write = process.StandardInput.WriteAsync(data).AsTask();
            using var received = new MemoryStream();
            while (received.Length < data.Length)
            {
                var (type, payload) = await conn.ExpectFrameAsync();
                Assert.Equal(AgentFrameType.Data, type);
                Assert.InRange(payload.Length, 1, 256 * 1024);
                received.Write(payload);
            }
            await write.WaitAsync(Timeout);
            Assert.Equal(data, received.ToArray());

            await process.ResizeAsync(132, 43, CancellationToken.None);
            var resize = await conn.ExpectFrameAsync();
            Assert.Equal(AgentFrameType.Resize, resize.Type);
            Assert.Equal((132u, 43u), (BinaryPrimitives.ReadUInt32BigEndian(resize.Payload), BinaryPrimitives.ReadUInt32BigEndian(resize.Payload.AsSpan(4))));

            await process.SignalAsync("SIGTERM", CancellationToken.None);
            var signal = await conn.ExpectFrameAsync();
            Assert.Equal(AgentFrameType.Signal, signal.Type);
            Assert.Equal(15u, BinaryPrimitives.ReadUInt32BigEndian(signal.Payload));
            await Assert.ThrowsAsync<ArgumentException>(() => process.SignalAsync("NOPE", CancellationToken.None));

            await process.CloseStandardInputAsync();
            await process.CloseStandardInputAsync();
            var eof = await conn.ExpectFrameAsync();
            Assert.Equal((AgentFrameType.Eof, 0), (eof.Type, eof.Payload.Length));
            await Assert.ThrowsAsync<IOException>(() => process.StandardInput.WriteAsync(new byte[1]).AsTask());

            await conn.SendAsync(FakeAgent.Exit(1, 15));
            Assert.Equal(new ExitResult(null, "TERM"), await process.Completion.WaitAsync(Timeout));
            // After exit, resize and signal are no-ops, as with Docker exec.
            await process.ResizeAsync(10, 10, CancellationToken.None);
            await process.SignalAsync("KILL", CancellationToken.None);
        }
    }

    [Theory]
    [InlineData(11u, 1, null, "SEGV", true)]
    [InlineData(9u, 0, null, "KILL", false)]
    [InlineData(7u, 0, 135, null, false)] // SIGBUS has no SSH name: reported as a shell does
    public async Task Exit_BySignal_IsReportedAsSshDoes(uint signal, byte core, int? code, string? name, bool dumped)
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["x"]),
            FakeAgent.Concat(FakeAgent.Started(1), FakeAgent.Exit(1, signal, core)));
        await using (conn)
        await using (process)
        {
            Assert.Equal(new ExitResult(code, name, dumped), await process.Completion.WaitAsync(Timeout));
        }
    }

    [Fact]
    public async Task Dispose_BeforeExit_ClosesTheSocket()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var (process, conn, _) = await StartExecAsync(runtime, agent, new ExecSpec(["sleep", "600"]));
        await using (conn)
        {
            await process.DisposeAsync();
            Assert.Null(await conn.ReadFrameAsync()); // the agent sees end of stream and SIGHUPs the process
            Assert.Equal(new ExitResult(null, null), await process.Completion.WaitAsync(Timeout));
            Assert.Equal(0, await process.StandardOutput.ReadAsync(new byte[1]).AsTask().WaitAsync(Timeout));
        }
    }

    // ------------------------------------------------------------------ connect

    [Fact]
    public async Task Connect_RelaysBothWays_WithHalfCloseInEachDirection()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var connect = runtime.ConnectAsync(VmId, "127.0.0.1", 8080, CancellationToken.None);
        await using var conn = await agent.AcceptAsync();
        var open = FakeOpen.Parse((await conn.ExpectFrameAsync()).Payload);
        Assert.Equal(("connect", "127.0.0.1", 8080u), (open.Kind, open.Host, open.Port));
        Assert.Equal(TokenOnDisk(), open.Token);
        await conn.SendAsync(FakeAgent.Started(null));
        await using var stream = await connect.WaitAsync(Timeout);
        var halfClosable = Assert.IsAssignableFrom<IHalfClosableStream>(stream);

        await stream.WriteAsync("GET /"u8.ToArray());
        var data = await conn.ExpectFrameAsync();
        Assert.Equal((AgentFrameType.Data, "GET /"), (data.Type, Encoding.UTF8.GetString(data.Payload)));
        await halfClosable.ShutdownWriteAsync();
        Assert.Equal(AgentFrameType.Eof, (await conn.ExpectFrameAsync()).Type);

        // The answer still flows after our half-close; STDOUT_EOF is the peer's, and reads then return 0.
        await conn.SendAsync(FakeAgent.Concat(FakeAgent.Frame(AgentFrameType.Stdout, "200 OK"), FakeAgent.Frame(AgentFrameType.StdoutEof, "")));
        Assert.Equal("200 OK", await ReadAllAsync(stream));
        Assert.Equal(0, await stream.ReadAsync(new byte[8]));
        await conn.DisposeAsync(); // both directions ended: the agent closes, which is a clean end
    }

    [Fact]
    public async Task Connect_ErrorFrame_IsAConnectFailure_LikeDockerExecs()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var connect = runtime.ConnectAsync(VmId, "127.0.0.1", 1, CancellationToken.None);
        await using var conn = await agent.AcceptAsync();
        await conn.ExpectFrameAsync();
        await conn.SendAsync(FakeAgent.Frame(AgentFrameType.Error, "connection refused"));
        var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => connect.WaitAsync(Timeout));
        Assert.Equal(DockerRuntimeErrors.ConnectFailed, e.Code);
        Assert.Equal("cannot connect to 127.0.0.1:1 inside the VM: connection refused", e.Message);
    }

    [Fact]
    public async Task Connect_CutOffWithoutStdoutEof_IsAnIOException()
    {
        using var runtime = Runtime();
        using var agent = Agent();
        var connect = runtime.ConnectAsync(VmId, "localhost", 22, CancellationToken.None);
        var conn = await agent.AcceptAsync();
        await conn.ExpectFrameAsync();
        await conn.SendAsync(FakeAgent.Concat(FakeAgent.Started(null), FakeAgent.Frame(AgentFrameType.Stdout, "SSH-2.0")));
        await using var stream = await connect.WaitAsync(Timeout);
        await conn.DisposeAsync();
        var buffer = new byte[64];
        Assert.Equal(7, await stream.ReadAsync(buffer).AsTask().WaitAsync(Timeout));
        await Assert.ThrowsAsync<IOException>(() => stream.ReadAsync(buffer).AsTask().WaitAsync(Timeout));
    }

    // ------------------------------------------------------------------ fallback to Docker exec

    [Fact]
    public async Task Auto_WithoutSocket_FallsBackToDockerExec()
    {
        using var runtime = Runtime(SessionSocketMode.Auto);
        // No agent listening: the call goes to the (missing) engine, which is not a session error.
        var e = await Assert.ThrowsAnyAsync<Exception>(() => runtime.ExecAsync(VmId, new ExecSpec(["true"]), CancellationToken.None));
        Assert.False(e is DockerRuntimeException { Code: DockerRuntimeErrors.AgentSessionFailed }, e.ToString());
    }

    [Fact]
    public async Task Auto_WithAStaleSocket_FallsBackToDockerExec()
    {
        // A socket file nobody listens on (a stopped VM's): ECONNREFUSED. .NET unlinks the path it bound when the
        // socket closes, so the socket is bound elsewhere and moved into place.
        string bound = Path.Combine(_root, "stale.sock");
        using (var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            stale.Bind(new UnixDomainSocketEndPoint(bound));
            File.Move(bound, _directory.SocketPath(VmId));
        }
        Assert.True(File.Exists(_directory.SocketPath(VmId)));
        using var runtime = Runtime(SessionSocketMode.Auto);
        var e = await Assert.ThrowsAnyAsync<Exception>(() => runtime.ExecAsync(VmId, new ExecSpec(["true"]), CancellationToken.None));
        Assert.False(e is DockerRuntimeException { Code: DockerRuntimeErrors.AgentSessionFailed }, e.ToString());
    }

    [Fact]
    public async Task Auto_ForAVmWithoutToken_FallsBackToDockerExec()
    {
        using var runtime = Runtime(SessionSocketMode.Auto);
        var e = await Assert.ThrowsAnyAsync<Exception>(() => runtime.ExecAsync("vm-from-before", new ExecSpec(["true"]), CancellationToken.None));
        Assert.False(e is DockerRuntimeException { Code: DockerRuntimeErrors.AgentSessionFailed }, e.ToString());
    }

    [Fact]
    public async Task Disabled_NeverTouchesTheSocket()
    {
        using var runtime = Runtime(SessionSocketMode.Disabled);
        using var agent = Agent();
        var accept = agent.AcceptAsync();
        await Assert.ThrowsAnyAsync<Exception>(() => runtime.ExecAsync(VmId, new ExecSpec(["true"]), CancellationToken.None));
        await Task.Delay(200);
        Assert.False(accept.IsCompleted);
    }

    [Fact]
    public async Task Required_WithoutSocket_FailsAfterWaiting()
    {
        using var runtime = Runtime(SessionSocketMode.Required);
        var e = await Assert.ThrowsAsync<DockerRuntimeException>(() => runtime.ExecAsync(VmId, new ExecSpec(["true"]), CancellationToken.None));
        Assert.Equal(DockerRuntimeErrors.AgentSessionFailed, e.Code);
        Assert.Contains("no session socket", e.Message);
    }

    [Fact]
    public async Task Required_WaitsForASocketThatAppears()
    {
        // A wait far longer than the agent's 100 ms delay: each poll also asks the (absent) engine for the run volume,
        // and on a loaded machine the first such call alone can take longer than the 300 ms the other tests use.
        using var runtime = Runtime(SessionSocketMode.Required, TimeSpan.FromSeconds(10));
        var exec = runtime.ExecAsync(VmId, new ExecSpec(["true"]), CancellationToken.None);
        await Task.Delay(100);
        using var agent = Agent();
        await using var conn = await agent.AcceptAsync();
        await conn.ExpectFrameAsync();
        await conn.SendAsync(FakeAgent.Concat(FakeAgent.Started(1), FakeAgent.Exit(0, 0)));
        await using var process = await exec.WaitAsync(Timeout);
        Assert.Equal(0, (await process.Completion.WaitAsync(Timeout)).ExitCode);
    }

    [Fact]
    public async Task OversizeRequest_FallsBackInAuto()
    {
        using var runtime = Runtime(SessionSocketMode.Auto);
        using var agent = Agent();
        var accept = agent.AcceptAsync();
        var huge = new ExecSpec(["sh", "-c", new string('x', 70_000)]);
        var e = await Assert.ThrowsAnyAsync<Exception>(() => runtime.ExecAsync(VmId, huge, CancellationToken.None));
        Assert.False(e is DockerRuntimeException { Code: DockerRuntimeErrors.AgentSessionFailed }, e.ToString());
        await Task.Delay(100);
        Assert.False(accept.IsCompleted);
    }

    // ------------------------------------------------------------------ the directory

    [Fact]
    public void Prepare_MakesAPrivateDirectoryAndToken_AndKeepsAValidToken()
    {
        string dir = _directory.VmDirectory(VmId);
        string tokenPath = Path.Combine(dir, AgentSessionDirectory.TokenName);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(dir));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(tokenPath));
        string token = File.ReadAllText(tokenPath);
        Assert.Matches("^[0-9a-f]{64}$", token);
        _directory.Prepare(VmId);
        Assert.Equal(token, File.ReadAllText(tokenPath));

        _directory.Prepare("vm-other");
        Assert.NotEqual(token, File.ReadAllText(Path.Combine(_directory.VmDirectory("vm-other"), AgentSessionDirectory.TokenName)));

        File.WriteAllText(tokenPath, "damaged");
        _directory.Prepare(VmId);
        Assert.Matches("^[0-9a-f]{64}$", File.ReadAllText(tokenPath));

        _directory.Delete(VmId);
        Assert.False(Directory.Exists(dir));
        _directory.Delete(VmId);
    }

    [Fact]
    public async Task GuestPlantedLinks_AreNotFollowed()
    {
        // Root in the VM owns the directory's entries: a symlink to a host socket or file must not be followed.
        string dir = _directory.VmDirectory(VmId);
        string elsewhere = Path.Combine(_root, "host.sock");
        using var hostService = new FakeAgent(elsewhere);
        File.CreateSymbolicLink(_directory.SocketPath(VmId), elsewhere);
        Assert.Null((await _directory.TryConnectAsync(VmId, CancellationToken.None)).Socket);

        string secret = Path.Combine(_root, "host-secret");
        File.WriteAllText(secret, new string('a', 64));
        string tokenPath = Path.Combine(dir, AgentSessionDirectory.TokenName);
        File.Delete(tokenPath);
        File.CreateSymbolicLink(tokenPath, secret);
        Assert.False(_directory.TryReadToken(VmId, new byte[64]));

        // A FIFO in place of the token must not block the daemon.
        File.Delete(tokenPath);
        var mkfifo = await DockerTestEnvironment.RunAsync("mkfifo", [tokenPath], timeout: TimeSpan.FromSeconds(10));
        Assert.Equal(0, mkfifo.ExitCode);
        var sw = Stopwatch.StartNew();
        Assert.False(_directory.TryReadToken(VmId, new byte[64]));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5));

        // Prepare replaces what the guest planted with a fresh token.
        _directory.Prepare(VmId);
        Assert.True(_directory.TryReadToken(VmId, new byte[64]));
        Assert.Equal(new string('a', 64), File.ReadAllText(secret));
    }

    [Fact]
    public async Task TooLongSocketPath_IsNotUsed()
    {
        string deep = Path.Combine(_root, new string('d', 100));
        var directory = new AgentSessionDirectory(deep);
        directory.Prepare(VmId);
        Assert.True(Encoding.UTF8.GetByteCount(directory.SocketPath(VmId)) > AgentSessionDirectory.MaxSocketPathBytes);
        Assert.Null((await directory.TryConnectAsync(VmId, CancellationToken.None)).Socket);
    }
}
