using System.Text;
using Warren.Platform.Runtime;
using Xunit;

namespace Warren.Runtime.Docker.Tests.Conformance;

/// <summary>
/// The behaviour every <see cref="IVmRuntime"/> must show (ContainerSSH's conformance-suite pattern).
/// A subclass supplies the runtime and an image with busybox-like tools (sh, cat, sleep, hostname, stty,
/// httpd); each test creates its own VMs, and every VM is removed in <see cref="DisposeAsync"/>.
/// </summary>
public abstract class RuntimeConformanceTests : IAsyncLifetime
{
    /// <summary>Bound on any single wait in these tests (never asserted on: only keeps a hung engine from hanging CI).</summary>
    protected static readonly TimeSpan OperationTimeout = TimeSpan.FromMinutes(2);
    /// <summary>Attempts × interval for conditions that become true eventually (e.g. a server inside the VM listening).</summary>
    private const int PollAttempts = 100;
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    private readonly List<string> _created = [];

    protected abstract IVmRuntime Runtime { get; }

    /// <summary>An image with busybox-like tools whose default command is a shell.</summary>
    protected abstract string TestImage { get; }

    /// <summary>Fails (or is skipped upstream) when the runtime's environment is missing.</summary>
    protected abstract void RequireEnvironment();

    /// <summary>The agent's oom_score_adj: -1000 where the runtime can exempt it from the OOM killer.</summary>
    protected abstract int ExpectedAgentOomScoreAdj { get; }

    public virtual Task InitializeAsync() => Task.CompletedTask;

    public virtual async Task DisposeAsync()
    {
        foreach (var id in _created)
        {
            try { await Runtime.RemoveAsync(id, CancellationToken.None); }
            catch (Exception) { /* best effort: the label sweep in the fixture catches the rest */ }
        }
    }

    protected static CancellationToken Timeout() => new CancellationTokenSource(OperationTimeout).Token;

    protected string NewVmId()
    {
        string id = "wt-" + Guid.NewGuid().ToString("N")[..12];
        _created.Add(id);
        return id;
    }

    protected VmSpec Spec(string vmId, string name, CommandMode mode = CommandMode.Auto, IReadOnlyList<string>? command = null,
        string? setupScript = null, VmResources? resources = null) =>
        new(vmId, name, TestImage, resources ?? new VmResources(1, 256L * 1024 * 1024, 0),
            new Dictionary<string, string> { ["WARREN_TEST"] = "1" }, mode, command, setupScript, null);

    protected async Task<string> CreateVmAsync(string? name = null, string? setupScript = null, CommandMode mode = CommandMode.Auto,
        IReadOnlyList<string>? command = null)
    {
        RequireEnvironment();
        string id = NewVmId();
        await Runtime.CreateAsync(Spec(id, name ?? "vm-" + id[3..9], mode, command, setupScript), Timeout());
        return id;
    }

    /// <summary>Runs a command to completion with stdin closed at once.</summary>
    protected async Task<(ExitResult Exit, string Stdout, string Stderr)> RunAsync(string vmId, params string[] command)
    {
        await using var p = await Runtime.ExecAsync(vmId, new ExecSpec(command), Timeout());
        await p.CloseStandardInputAsync();
        var stdout = ReadAllAsync(p.StandardOutput);
        var stderr = p.StandardError is { } e ? ReadAllAsync(e) : Task.FromResult("");
        var exit = await p.Completion.WaitAsync(OperationTimeout);
        return (exit, await stdout, await stderr);
    }

    protected async Task<string> ShAsync(string vmId, string script)
    {
        var (exit, stdout, stderr) = await RunAsync(vmId, "sh", "-c", script);
        Assert.True(exit.ExitCode == 0, $"`{script}` failed: {exit} {stderr}");
        return stdout;
    }

    protected static async Task<string> ReadAllAsync(Stream s)
    {
        using var reader = new StreamReader(s, Encoding.UTF8);
        return await reader.ReadToEndAsync().WaitAsync(OperationTimeout);
    }

    protected static async Task<bool> EventuallyAsync(Func<Task<bool>> condition)
    {
        for (int i = 0; i < PollAttempts; i++)
        {
            if (await condition()) return true;
            await Task.Delay(PollInterval);
        }
        return false;
    }

    // ------------------------------------------------------------------ lifecycle

    [DockerFact]
    public async Task Create_IsIdempotent_AndTheVmRuns()
    {
        RequireEnvironment();
        string id = NewVmId();
        var spec = Spec(id, "idem");
        await Runtime.CreateAsync(spec, Timeout());
        await Runtime.CreateAsync(spec, Timeout());
        var info = await Runtime.InspectAsync(id, Timeout());
        Assert.NotNull(info);
        Assert.Equal(id, info.VmId);
        Assert.Equal("idem", info.Name);
        Assert.Equal(RuntimeVmState.Running, info.State);
        Assert.NotNull(info.StartedAt);
        Assert.Equal("ok\n", await ShAsync(id, "echo ok"));
    }

    [DockerFact]
    public async Task StopStartRestart_AreIdempotent()
    {
        string id = await CreateVmAsync();
        await Runtime.StopAsync(id, Timeout());
        await Runtime.StopAsync(id, Timeout());
        Assert.Equal(RuntimeVmState.Stopped, (await Runtime.InspectAsync(id, Timeout()))!.State);
        await Runtime.StartAsync(id, Timeout());
        await Runtime.StartAsync(id, Timeout());
        Assert.Equal(RuntimeVmState.Running, (await Runtime.InspectAsync(id, Timeout()))!.State);
        await Runtime.RestartAsync(id, Timeout());
        Assert.Equal(RuntimeVmState.Running, (await Runtime.InspectAsync(id, Timeout()))!.State);
        Assert.Equal("up\n", await ShAsync(id, "echo up"));
    }

    [DockerFact]
    public async Task Remove_IsIdempotent_AndDeletesData()
    {
        string id = await CreateVmAsync();
        await ShAsync(id, "echo precious > /data/file");
        await Runtime.RemoveAsync(id, Timeout());
        await Runtime.RemoveAsync(id, Timeout());
        Assert.Null(await Runtime.InspectAsync(id, Timeout()));
        Assert.DoesNotContain(await Runtime.ListAsync(Timeout()), v => v.VmId == id);

        // Same id again: a fresh, empty /data.
        await Runtime.CreateAsync(Spec(id, "again"), Timeout());
        Assert.Equal("absent\n", await ShAsync(id, "test -e /data/file && echo present || echo absent"));
    }

    [DockerFact]
    public async Task UnknownVm_InspectIsNull_AndOperationsThrow()
    {
        RequireEnvironment();
        string id = NewVmId();
        Assert.Null(await Runtime.InspectAsync(id, Timeout()));
        Assert.Null(await Runtime.SampleStatsAsync(id, Timeout()));
        Assert.Null(await Runtime.GetAddressAsync(id, Timeout()));
        await Runtime.RemoveAsync(id, Timeout());
        await Assert.ThrowsAnyAsync<Exception>(() => Runtime.StartAsync(id, Timeout()));
        await Assert.ThrowsAnyAsync<Exception>(() => Runtime.ExecAsync(id, new ExecSpec(["true"]), Timeout()));
    }

    [DockerFact]
    public async Task List_FindsManagedVmsWithIdAndName()
    {
        string id = await CreateVmAsync("listed");
        var all = await Runtime.ListAsync(Timeout());
        var mine = Assert.Single(all, v => v.VmId == id);
        Assert.Equal("listed", mine.Name);
        Assert.Equal(RuntimeVmState.Running, mine.State);
    }

    [DockerFact]
    public async Task CommandExit_KeepsTheVmAlive()
    {
        string id = await CreateVmAsync(mode: CommandMode.Custom, command: ["sh", "-c", "echo started > /data/cmd; exit 3"]);
        Assert.True(await EventuallyAsync(async () => (await RunAsync(id, "cat", "/data/cmd")).Stdout == "started\n"));
        Assert.Equal(RuntimeVmState.Running, (await Runtime.InspectAsync(id, Timeout()))!.State);
        Assert.Equal("alive\n", await ShAsync(id, "echo alive"));
    }

    [DockerFact]
    public async Task Agent_IsExemptFromTheOomKiller_WhileTheImageCommandAndSessionsAreNot()
    {
        // The agent (PID 1) keeps the VM reachable, so under memory pressure the OOM killer must take the app:
        // oom_score_adj -1000 exempts a process, 0 is the default (proc(5)). Both the image's command and a
        // session must also start with no ignored or blocked signals.
        // Not grep last: BusyBox sh execs a script's last command in place with SIGQUIT left ignored.
        const string Probe = "cat /proc/self/oom_score_adj; grep -E '^Sig(Ign|Blk)' /proc/self/status; true";
        string id = await CreateVmAsync(mode: CommandMode.Custom,
            command: ["sh", "-c", $"({Probe}) > /data/probe.tmp && mv /data/probe.tmp /data/probe; exec sleep 3600"]);
        Assert.True(await EventuallyAsync(async () => (await RunAsync(id, "test", "-e", "/data/probe")).Exit.ExitCode == 0));
        Assert.Equal($"{ExpectedAgentOomScoreAdj}\n", await ShAsync(id, "cat /proc/1/oom_score_adj"));
        const string Defaults = "0\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n";
        Assert.Equal(Defaults, await ShAsync(id, "cat /data/probe"));
        Assert.Equal(Defaults, await ShAsync(id, Probe));
    }

    [DockerFact]
    public async Task MoreCpusThanTheHostHas_AreAccepted_AtCreateAndResize()
    {
        // CPUs are a share of the host, not a reservation: asking for more than the host has (within the plan's
        // limit, which the platform checks) gets the whole host instead of the engine's refusal.
        RequireEnvironment();
        double beyondHost = Environment.ProcessorCount + 3;
        string id = NewVmId();
        await Runtime.CreateAsync(Spec(id, "vm-" + id[3..9], resources: new VmResources(beyondHost, 256L * 1024 * 1024, 0)), Timeout());
        Assert.Equal("up\n", await ShAsync(id, "echo up"));
        await Runtime.ResizeAsync(id, new VmResources(beyondHost + 1, 128L * 1024 * 1024, 0), Timeout());
        await Runtime.ResizeAsync(id, new VmResources(1, 256L * 1024 * 1024, 0), Timeout());
        Assert.Equal("up\n", await ShAsync(id, "echo up"));
    }

    [DockerFact]
    public async Task SetupScript_RunsOnceOnFirstBoot_AndIsLogged()
    {
        string id = await CreateVmAsync(setupScript: "#!/bin/sh\necho run >> /data/setup-count\necho from-setup\n");
        Assert.True(await EventuallyAsync(async () => (await RunAsync(id, "test", "-e", "/data/.warren/setup.done")).Exit.ExitCode == 0));
        await Runtime.RestartAsync(id, Timeout());
        Assert.True(await EventuallyAsync(async () => (await RunAsync(id, "true")).Exit.ExitCode == 0));
        Assert.Equal("run\n", await ShAsync(id, "cat /data/setup-count"));
        Assert.Contains("from-setup", await ShAsync(id, "cat /data/.warren/setup.log"));
    }

    // ------------------------------------------------------------------ exec

    [DockerFact]
    public async Task Exec_ReportsExitCodeAndSeparateStreams()
    {
        string id = await CreateVmAsync();
        var (exit, stdout, stderr) = await RunAsync(id, "sh", "-c", "echo out; echo err >&2; exit 3");
        Assert.Equal(new ExitResult(3, null), exit);
        Assert.Equal("out\n", stdout);
        Assert.Equal("err\n", stderr);
    }

    [DockerFact]
    public async Task Exec_PassesEnvUserAndWorkingDirectory()
    {
        string id = await CreateVmAsync();
        await using var p = await Runtime.ExecAsync(id, new ExecSpec(["sh", "-c", "echo $FOO; id -u; pwd"], User: "1000",
            Env: new Dictionary<string, string> { ["FOO"] = "bar" }, WorkingDirectory: "/tmp"), Timeout());
        await p.CloseStandardInputAsync();
        var stdout = await ReadAllAsync(p.StandardOutput);
        Assert.Equal(0, (await p.Completion.WaitAsync(OperationTimeout)).ExitCode);
        Assert.Equal("bar\n1000\n/tmp\n", stdout);
    }

    [DockerFact]
    public async Task Exec_StdinEof_ReachesTheProcess()
    {
        string id = await CreateVmAsync();
        await using var p = await Runtime.ExecAsync(id, new ExecSpec(["cat"]), Timeout());
        await p.StandardInput.WriteAsync("hello\nworld\n"u8.ToArray());
        await p.CloseStandardInputAsync();
        Assert.Equal("hello\nworld\n", await ReadAllAsync(p.StandardOutput));
        Assert.Equal(0, (await p.Completion.WaitAsync(OperationTimeout)).ExitCode);
    }

    [DockerFact]
    public async Task Exec_WithTty_MergesStreams_AndFollowsResize()
    {
        string id = await CreateVmAsync();
        await using var p = await Runtime.ExecAsync(id, new ExecSpec(["sh", "-c", "stty size; echo err >&2; read line; stty size"],
            Tty: new TtySpec("xterm", 80, 24)), Timeout());
        Assert.Null(p.StandardError);
        var output = new StringBuilder();
        var buffer = new byte[4096];
        async Task ReadUntilAsync(string text)
        {
            for (int i = 0; i < PollAttempts && !output.ToString().Contains(text, StringComparison.Ordinal); i++)
            {
                int n = await p.StandardOutput.ReadAsync(buffer).AsTask().WaitAsync(OperationTimeout);
                if (n == 0) break;
                output.Append(Encoding.UTF8.GetString(buffer, 0, n));
            }
        }
        await ReadUntilAsync("err");
        Assert.Contains("24 80", output.ToString());
        await p.ResizeAsync(100, 30, Timeout());
        await p.StandardInput.WriteAsync("\n"u8.ToArray());
        await ReadUntilAsync("30 100");
        Assert.Contains("30 100", output.ToString());
        Assert.Equal(0, (await p.Completion.WaitAsync(OperationTimeout)).ExitCode);
    }

    [DockerFact]
    public async Task Exec_Signal_EndsProcessWithExitSignal()
    {
        string id = await CreateVmAsync();
        await using var p = await Runtime.ExecAsync(id, new ExecSpec(["sh", "-c", "echo ready; exec sleep 600"]), Timeout());
        var buffer = new byte[64];
        int n = await p.StandardOutput.ReadAsync(buffer).AsTask().WaitAsync(OperationTimeout);
        Assert.Equal("ready\n", Encoding.UTF8.GetString(buffer, 0, n));
        await p.SignalAsync("TERM", Timeout());
        var exit = await p.Completion.WaitAsync(OperationTimeout);
        Assert.Equal(new ExitResult(null, "TERM"), exit);
    }

    // ------------------------------------------------------------------ data, hostname, copy, resize

    [DockerFact]
    public async Task Data_SurvivesRestartStopStartAndResize()
    {
        string id = await CreateVmAsync();
        await ShAsync(id, "echo keep > /data/file");
        await Runtime.RestartAsync(id, Timeout());
        Assert.Equal("keep\n", await ShAsync(id, "cat /data/file"));
        await Runtime.StopAsync(id, Timeout());
        await Runtime.StartAsync(id, Timeout());
        Assert.Equal("keep\n", await ShAsync(id, "cat /data/file"));
        var outcome = await Runtime.ResizeAsync(id, new VmResources(0.5, 128L * 1024 * 1024, 0), Timeout());
        Assert.True(outcome.CpuApplied);
        Assert.True(outcome.MemoryApplied);
        Assert.Equal("keep\n", await ShAsync(id, "cat /data/file"));
        var stats = await Runtime.SampleStatsAsync(id, Timeout());
        Assert.NotNull(stats);
        Assert.Equal(128L * 1024 * 1024, stats.MemoryLimitBytes);
    }

    [DockerFact]
    public async Task Hostname_IsTheName_AndFollowsRename_KeepingData()
    {
        string id = await CreateVmAsync("first-name");
        Assert.Equal("first-name\n", await ShAsync(id, "hostname"));
        await ShAsync(id, "echo keep > /data/file; echo layer > /etc/marker");
        await Runtime.RenameAsync(id, "second-name", Timeout());
        Assert.Equal("second-name\n", await ShAsync(id, "hostname"));
        Assert.Equal("keep\nlayer\n", await ShAsync(id, "cat /data/file /etc/marker"));
        var info = await Runtime.InspectAsync(id, Timeout());
        Assert.Equal("second-name", info!.Name);
        Assert.Equal(id, info.VmId);
        Assert.Equal(RuntimeVmState.Running, info.State);
    }

    [DockerFact]
    public async Task Copy_SnapshotsFilesystemAndData_IntoARunningVm()
    {
        string source = await CreateVmAsync("original");
        await ShAsync(source, "echo data > /data/file; mkdir -p /data/sub; echo deep > /data/sub/f; chown 1000:1000 /data/sub/f; echo layer > /etc/marker");
        string target = NewVmId();
        await Runtime.CopyAsync(source, Spec(target, "the-copy"), Timeout());
        Assert.Equal(RuntimeVmState.Running, (await Runtime.InspectAsync(target, Timeout()))!.State);
        Assert.Equal("data\ndeep\nlayer\n", await ShAsync(target, "cat /data/file /data/sub/f /etc/marker"));
        Assert.Equal("1000\n", await ShAsync(target, "stat -c %u /data/sub/f"));
        Assert.Equal("the-copy\n", await ShAsync(target, "hostname"));
        // The source keeps running and its data is independent of the copy's.
        await ShAsync(target, "echo changed > /data/file");
        Assert.Equal("data\n", await ShAsync(source, "cat /data/file"));
    }

    // ------------------------------------------------------------------ network, stats

    [DockerFact]
    public async Task Connect_ReachesAPortServedInsideTheVm()
    {
        string id = await CreateVmAsync();
        await ShAsync(id, "mkdir -p /www && echo hello-from-vm > /www/index.html && httpd -p 127.0.0.1:8080 -h /www");
        string? body = null;
        Assert.True(await EventuallyAsync(async () =>
        {
            try
            {
                await using var stream = await Runtime.ConnectAsync(id, "127.0.0.1", 8080, Timeout());
                await stream.WriteAsync("GET / HTTP/1.0\r\n\r\n"u8.ToArray());
                body = await ReadAllAsync(stream);
                return true;
            }
            catch (DockerRuntimeException)
            {
                return false; // httpd not listening yet
            }
        }));
        Assert.Contains("hello-from-vm", body);
    }

    [DockerFact]
    public async Task Connect_ToAClosedPort_Fails()
    {
        string id = await CreateVmAsync();
        await Assert.ThrowsAnyAsync<Exception>(() => Runtime.ConnectAsync(id, "127.0.0.1", 1, Timeout()));
    }

    [DockerFact]
    public async Task Address_AndStats_AreReportedOnlyWhileRunning()
    {
        string id = await CreateVmAsync();
        var address = await Runtime.GetAddressAsync(id, Timeout());
        Assert.NotNull(address);
        var stats = await Runtime.SampleStatsAsync(id, Timeout());
        Assert.NotNull(stats);
        Assert.True(stats.MemoryUsedBytes > 0);
        Assert.Equal(256L * 1024 * 1024, stats.MemoryLimitBytes);
        Assert.True(stats.CpuPercent >= 0);
        await Runtime.StopAsync(id, Timeout());
        Assert.Null(await Runtime.SampleStatsAsync(id, Timeout()));
        Assert.Null(await Runtime.GetAddressAsync(id, Timeout()));
    }

    // ------------------------------------------------------------------ SSH session kinds and listening (the SSH front door's seam)

    [DockerFact]
    public async Task Session_Shell_And_Command_StartInTheHomeDirectory()
    {
        string id = await CreateVmAsync();
        await using (var shell = await Runtime.ExecAsync(id, new ExecSpec([], User: "root", Kind: ExecSessionKind.Shell), Timeout()))
        {
            await shell.StandardInput.WriteAsync("pwd; exit 7\n"u8.ToArray());
            await shell.CloseStandardInputAsync();
            Assert.Equal("/root\n", await ReadAllAsync(shell.StandardOutput));
            Assert.Equal(new ExitResult(7, null), await shell.Completion.WaitAsync(OperationTimeout));
        }
        await using var command = await Runtime.ExecAsync(id, new ExecSpec(["pwd; exit 4"], User: "root", Kind: ExecSessionKind.Command), Timeout());
        await command.CloseStandardInputAsync();
        Assert.Equal("/root\n", await ReadAllAsync(command.StandardOutput));
        Assert.Equal(new ExitResult(4, null), await command.Completion.WaitAsync(OperationTimeout));
    }

    [DockerFact]
    public async Task Session_Sftp_AnswersInitWithItsVersion()
    {
        string id = await CreateVmAsync();
        await using var sftp = await Runtime.ExecAsync(id, new ExecSpec([], User: "root", Kind: ExecSessionKind.Sftp), Timeout());
        // SSH_FXP_INIT version 3 (draft-ietf-secsh-filexfer-02 §4): uint32 length 5, byte 1, uint32 3.
        await sftp.StandardInput.WriteAsync(new byte[] { 0, 0, 0, 5, 1, 0, 0, 0, 3 });
        await sftp.StandardInput.FlushAsync();
        var header = new byte[9];
        await sftp.StandardOutput.ReadExactlyAsync(header).AsTask().WaitAsync(OperationTimeout);
        Assert.Equal((byte)2, header[4]); // SSH_FXP_VERSION
        Assert.Equal(3u, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(5)));
        await sftp.CloseStandardInputAsync();
        Assert.Equal(0, (await sftp.Completion.WaitAsync(OperationTimeout)).ExitCode);
    }

    [DockerFact]
    public async Task Session_LegacyScp_ReceivesAFile_EvenWithoutAnScpBinary()
    {
        string id = await CreateVmAsync();
        await using (var scp = await Runtime.ExecAsync(id, new ExecSpec(["scp -t /tmp"], User: "root", Kind: ExecSessionKind.Command), Timeout()))
        {
            // The sink side of OpenSSH's scp -O protocol: it acks with a zero byte, then gets "C<mode> <size> <name>\n", the bytes and a zero.
            var ack = new byte[1];
            async Task ExpectAckAsync()
            {
                await scp.StandardOutput.ReadExactlyAsync(ack).AsTask().WaitAsync(OperationTimeout);
                Assert.Equal(0, ack[0]);
            }
            await ExpectAckAsync();
            await scp.StandardInput.WriteAsync("C0644 6 conformance.txt\n"u8.ToArray());
            await scp.StandardInput.FlushAsync();
            await ExpectAckAsync();
            await scp.StandardInput.WriteAsync("hello\n\0"u8.ToArray());
            await scp.StandardInput.FlushAsync();
            await ExpectAckAsync();
            await scp.CloseStandardInputAsync();
            Assert.Equal(0, (await scp.Completion.WaitAsync(OperationTimeout)).ExitCode);
        }
        Assert.Equal("hello\n", await ShAsync(id, "cat /tmp/conformance.txt"));
    }

    [DockerFact]
    public async Task Listen_Tcp_OffersConnectionsMadeInsideTheVm()
    {
        string id = await CreateVmAsync();
        await using var listener = await Runtime.ListenAsync(id, ListenSpec.Tcp("root", "127.0.0.1", 0), Timeout());
        Assert.InRange(listener.BoundPort, 1u, 65535u);
        Assert.Null(listener.SocketPath);
        await using var accepting = listener.AcceptAsync(Timeout()).GetAsyncEnumerator();

        // A peer inside the VM's network namespace: the runtime's own connect.
        await using var peer = await Runtime.ConnectAsync(id, "127.0.0.1", (int)listener.BoundPort, Timeout());
        Assert.True(await accepting.MoveNextAsync().AsTask().WaitAsync(OperationTimeout));
        Assert.Equal("127.0.0.1", accepting.Current.OriginatorAddress);
        await using var accepted = await accepting.Current.AcceptAsync(Timeout());
        await peer.WriteAsync("ping\n"u8.ToArray());
        await peer.FlushAsync();
        var got = new byte[5];
        await accepted.ReadExactlyAsync(got).AsTask().WaitAsync(OperationTimeout);
        Assert.Equal("ping\n", Encoding.ASCII.GetString(got));
        await accepted.WriteAsync("pong\n"u8.ToArray());
        await accepted.FlushAsync();
        await peer.ReadExactlyAsync(got).AsTask().WaitAsync(OperationTimeout);
        Assert.Equal("pong\n", Encoding.ASCII.GetString(got));

        // A second connection, rejected: the VM-side peer sees its connection closed.
        await using var refused = await Runtime.ConnectAsync(id, "127.0.0.1", (int)listener.BoundPort, Timeout());
        Assert.True(await accepting.MoveNextAsync().AsTask().WaitAsync(OperationTimeout));
        await accepting.Current.RejectAsync(Timeout());
        Assert.Equal(0, await refused.ReadAsync(new byte[1]).AsTask().WaitAsync(OperationTimeout));
    }

    [DockerFact]
    public async Task Listen_Unix_MakesASocketOnlyItsUserCanReach()
    {
        string id = await CreateVmAsync();
        await using var listener = await Runtime.ListenAsync(id, ListenSpec.Unix("1000"), Timeout());
        Assert.Equal(0u, listener.BoundPort);
        Assert.NotNull(listener.SocketPath);
        Assert.StartsWith("/tmp/", listener.SocketPath);
        var listing = (await ShAsync(id, $"test -S '{listener.SocketPath}' && ls -ldn \"$(dirname '{listener.SocketPath}')\"")).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("drwx------", listing[0]);
        Assert.Equal("1000", listing[2]);
    }
}
