using System.Diagnostics;
using System.Runtime.Versioning;
using System.Text;
using CsCheck;
using Warren.Agent.Scp;
using Warren.Platform.Runtime;
using Xunit;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// The agent's legacy SCP protocol (<c>warren-agent scp -t|-f</c>) driven by OpenSSH's own <c>scp -O</c> client
/// inside the busybox image, which has no scp binary. scp's -S program stands in for ssh: it drops the ssh
/// options and host and runs the remote command ("scp -t DEST" etc.) as <c>/bin/sh -c "exec /.warren/agent scp …"</c>,
/// as the front door will.
/// </summary>
[Collection(DockerCollection.Name)]
[SupportedOSPlatform("linux")]
public sealed class AgentScpTests() : BusyboxVmTest("scp")
{
    private const string Home = "/home/warren";
    private string Container => DockerVmRuntime.ContainerName(VmId!);

    /// <summary>The -S program: <c>PROGRAM [ssh options] -- HOST "scp [-flags] -t|-f PATH"</c> → the agent in the VM.</summary>
    private string Wrapper()
    {
        string path = Path.Combine(ScratchDirectory, "fake-ssh.sh");
        if (!File.Exists(path))
        {
            File.WriteAllText(path, $$"""
                #!/bin/sh
                while [ $# -gt 0 ]; do a=$1; shift; [ "$a" = "--" ] && break; done
                shift # the host
                cmd=$1
                case "$cmd" in
                  "scp "*) cmd=${cmd#scp } ;;
                  *) echo "fake-ssh: unexpected remote command: $cmd" >&2; exit 1 ;;
                esac
                echo "$cmd" >> {{ScratchDirectory}}/remote-commands.log
                exec docker exec -i -u warren -w {{Home}} {{Container}} /bin/sh -c "exec {{DockerVmRuntime.AgentMountPath}} scp $cmd"
                """.Replace("\r", "") + "\n");
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        return path;
    }

    private async Task ScpAsync(params string[] args)
    {
        var (code, stdout, stderr) = await DockerTestEnvironment.RunAsync("scp", ["-O", "-q", "-S", Wrapper(), .. args]);
        Assert.True(code == 0, $"scp {string.Join(' ', args)} failed ({code}): {stderr}\n{stdout}");
        Assert.True(File.Exists(Path.Combine(ScratchDirectory, "remote-commands.log")), "the -S wrapper was never run");
    }

    private async Task<string> InVmAsync(string script)
    {
        var (code, stdout, stderr) = await DockerTestEnvironment.RunAsync("docker", ["exec", "-u", "warren", Container, "/bin/sh", "-c", script]);
        Assert.True(code == 0, $"in-VM `{script}` failed ({code}): {stderr}");
        return stdout;
    }

    /// <summary>Copies a VM file out with docker cp (independent of the code under test).</summary>
    private async Task<byte[]> ReadVmFileAsync(string path)
    {
        string local = Path.Combine(ScratchDirectory, "cp-" + Guid.NewGuid().ToString("N")[..8]);
        var (code, _, stderr) = await DockerTestEnvironment.RunAsync("docker", ["cp", $"{Container}:{path}", local]);
        Assert.True(code == 0, $"docker cp {path} failed: {stderr}");
        return await File.ReadAllBytesAsync(local);
    }

    private static byte[] Payload(int size, int seed)
    {
        var b = new byte[size];
        new Random(seed).NextBytes(b);
        return b;
    }

    [DockerFact]
    public async Task Upload_File_ToDirectoryAndToFilePath()
    {
        DockerTestEnvironment.Require();
        var payload = Payload(300_000, 1); // several copy buffers
        string local = Path.Combine(ScratchDirectory, "payload.bin");
        await File.WriteAllBytesAsync(local, payload);
        await File.WriteAllBytesAsync(Path.Combine(ScratchDirectory, "empty.bin"), []);

        await ScpAsync(local, Path.Combine(ScratchDirectory, "empty.bin"), "vm:"); // multiple sources: scp adds -d, target is the home dir
        await ScpAsync(local, $"vm:{Home}/renamed.bin");              // target is a (new) file path
        Assert.Equal(payload, await ReadVmFileAsync($"{Home}/payload.bin"));
        Assert.Equal(payload, await ReadVmFileAsync($"{Home}/renamed.bin"));
        Assert.Empty(await ReadVmFileAsync($"{Home}/empty.bin"));
        // Owned by the invoking user; overwriting a longer file truncates it.
        Assert.Contains("warren", await InVmAsync($"ls -ln {Home}/payload.bin; id -un"));
        await File.WriteAllBytesAsync(local, [1, 2, 3]);
        await ScpAsync(local, $"vm:{Home}/renamed.bin");
        Assert.Equal([1, 2, 3], await ReadVmFileAsync($"{Home}/renamed.bin"));
        Assert.Contains("-t", await File.ReadAllTextAsync(Path.Combine(ScratchDirectory, "remote-commands.log")));
    }

    [DockerFact]
    public async Task Download_File()
    {
        DockerTestEnvironment.Require();
        await InVmAsync($"head -c 200000 /dev/urandom > {Home}/d.bin");
        var expected = await ReadVmFileAsync($"{Home}/d.bin");
        string local = Path.Combine(ScratchDirectory, "d.bin");
        await ScpAsync($"vm:{Home}/d.bin", local);
        Assert.Equal(expected, await File.ReadAllBytesAsync(local));
        Assert.Contains("-f", await File.ReadAllTextAsync(Path.Combine(ScratchDirectory, "remote-commands.log")));

        // A missing source is an error the client reports, not a hang.
        var (code, _, stderr) = await DockerTestEnvironment.RunAsync("scp", ["-O", "-S", Wrapper(), $"vm:{Home}/missing", Path.Combine(ScratchDirectory, "m")]);
        Assert.NotEqual(0, code);
        Assert.Contains("No such file", stderr);
    }

    [DockerFact]
    public async Task Recursive_UploadAndDownload_OfANestedTree()
    {
        DockerTestEnvironment.Require();
        string tree = Path.Combine(ScratchDirectory, "tree");
        var files = new Dictionary<string, byte[]>
        {
            ["top.txt"] = Encoding.UTF8.GetBytes("top\n"),
            ["a/one.bin"] = Payload(70_000, 2),
            ["a/b/two.txt"] = Encoding.UTF8.GetBytes("two\n"),
            ["a/b/c/three.bin"] = Payload(5, 3),
            ["x/empty.txt"] = [],
        };
        foreach (var (rel, data) in files)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(tree, rel))!);
            await File.WriteAllBytesAsync(Path.Combine(tree, rel), data);
        }
        Directory.CreateDirectory(Path.Combine(tree, "emptydir"));

        await ScpAsync("-r", tree, $"vm:{Home}/");
        foreach (var (rel, data) in files) Assert.Equal(data, await ReadVmFileAsync($"{Home}/tree/{rel}"));
        Assert.Contains("emptydir", await InVmAsync($"ls {Home}/tree"));

        // Into a name that does not exist yet: the directory is created under that name.
        await ScpAsync("-r", tree, $"vm:{Home}/copy");
        Assert.Equal(files["a/b/c/three.bin"], await ReadVmFileAsync($"{Home}/copy/a/b/c/three.bin"));

        string back = Path.Combine(ScratchDirectory, "back");
        Directory.CreateDirectory(back);
        await ScpAsync("-r", $"vm:{Home}/tree", back);
        foreach (var (rel, data) in files) Assert.Equal(data, await File.ReadAllBytesAsync(Path.Combine(back, "tree", rel)));
        Assert.True(Directory.Exists(Path.Combine(back, "tree", "emptydir")));
        Assert.Equal(
            Directory.GetFileSystemEntries(tree, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(tree, p)).Order(),
            Directory.GetFileSystemEntries(Path.Combine(back, "tree"), "*", SearchOption.AllDirectories)
                .Select(p => Path.GetRelativePath(Path.Combine(back, "tree"), p)).Order());
    }

    [DockerFact]
    public async Task PreserveTimes_KeepsMtime_BothWays()
    {
        DockerTestEnvironment.Require();
        var when = new DateTime(2001, 2, 3, 4, 5, 6, DateTimeKind.Utc);
        long epoch = new DateTimeOffset(when).ToUnixTimeSeconds();
        string dir = Path.Combine(ScratchDirectory, "pdir");
        Directory.CreateDirectory(dir);
        string file = Path.Combine(dir, "old.txt");
        await File.WriteAllTextAsync(file, "old\n");
        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
        File.SetLastWriteTimeUtc(file, when);
        Directory.SetLastWriteTimeUtc(dir, when);

        await ScpAsync("-p", file, $"vm:{Home}/old.txt");
        Assert.Equal(epoch.ToString(), (await InVmAsync($"stat -c %Y {Home}/old.txt")).Trim());
        Assert.Equal("640", (await InVmAsync($"stat -c %a {Home}/old.txt")).Trim());

        await ScpAsync("-r", "-p", dir, $"vm:{Home}/");
        Assert.Equal($"{epoch}\n{epoch}", (await InVmAsync($"stat -c %Y {Home}/pdir {Home}/pdir/old.txt")).Trim());

        // Without -p the time is the arrival time.
        await ScpAsync(file, $"vm:{Home}/new.txt");
        Assert.NotEqual(epoch.ToString(), (await InVmAsync($"stat -c %Y {Home}/new.txt")).Trim());

        await InVmAsync($"touch -d '2002-03-04 05:06:07' {Home}/old.txt");
        long vmEpoch = long.Parse((await InVmAsync($"stat -c %Y {Home}/old.txt")).Trim());
        string back = Path.Combine(ScratchDirectory, "back.txt");
        await ScpAsync("-p", $"vm:{Home}/old.txt", back);
        Assert.Equal(vmEpoch, new DateTimeOffset(File.GetLastWriteTimeUtc(back)).ToUnixTimeSeconds());
        Assert.Equal("old\n", await File.ReadAllTextAsync(back));
    }

    [DockerFact]
    public async Task HostileSink_InVm_RejectsTraversalNames()
    {
        DockerTestEnvironment.Require();
        await InVmAsync($"mkdir -p {Home}/target");
        foreach (var header in new[] { "C0644 5 ../evil\n", "C0644 5 a/b\n", "D0755 0 ../evil\n", "C0644 5 ..\n", "D0755 0 .\n", "C0644 5 \n" })
        {
            var (code, stdout, _) = await DockerTestEnvironment.RunAsync("docker",
                ["exec", "-i", "-u", "warren", Container, DockerVmRuntime.AgentMountPath, "scp", "-r", "-t", $"{Home}/target"],
                stdin: header + "hello\0");
            Assert.NotEqual(0, code);
            Assert.True(stdout.Length >= 2 && stdout[0] == '\0' && stdout[1] is '\u0001' or '\u0002', $"{header.Trim()}: reply {Escape(stdout)}");
            Assert.Contains("unexpected filename", stdout);
        }
        Assert.Equal("", (await InVmAsync($"ls -A {Home}/target")).Trim());
        Assert.DoesNotContain("evil", await InVmAsync($"ls -A {Home} /home"));
    }

    private static string Escape(string s) => string.Concat(s.Select(c => c < 0x20 ? $"\\x{(int)c:x2}" : c.ToString()));
}

/// <summary>The agent's scp sink run directly on the host (not as PID 1, never `init`) against a temp directory.</summary>
[SupportedOSPlatform("linux")]
public sealed class AgentScpHostTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "warren-scpsink-" + Guid.NewGuid().ToString("N")[..8]);

    public AgentScpHostTests() => Directory.CreateDirectory(_root);

    public void Dispose()
    {
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>The published agent; its absence fails the test (build it with scripts/build-images.sh).</summary>
    private static string AgentPath => DockerVmRuntime.ResolveAgentPath(null);

    internal static (int Code, byte[] Stdout) RunAgent(string cwd, byte[] stdin, params string[] args)
    {
        var psi = new ProcessStartInfo(AgentPath)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = cwd,
        };
        psi.ArgumentList.Add("scp");
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = new MemoryStream();
        var readOut = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        var readErr = p.StandardError.ReadToEndAsync();
        try
        {
            p.StandardInput.BaseStream.Write(stdin);
            p.StandardInput.BaseStream.Flush();
        }
        catch (IOException) { } // the agent may stop reading early (fatal error): fine
        try { p.StandardInput.Close(); } catch (IOException) { }
        if (!p.WaitForExit(TimeSpan.FromSeconds(20)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException("agent scp did not finish on EOF");
        }
        readOut.Wait(TimeSpan.FromSeconds(5));
        readErr.Wait(TimeSpan.FromSeconds(5));
        return (p.ExitCode, stdout.ToArray());
    }

    [Fact]
    public void HostileSink_RejectsTraversal_AndWritesNothingOutsideTheTarget()
    {
        string target = Path.Combine(_root, "target");
        Directory.CreateDirectory(target);
        foreach (var header in new[] { "C0644 5 ../evil\n", "C0644 5 a/b\n", "D0755 0 ../evil\n", "C0644 5 .\n", "C0644 5 ..\n", "C0644 5 \n",
            "C0644 5 /etc/evil\n", "C0644 5 evil\0x\n" })
        {
            var (code, stdout) = RunAgent(_root, Encoding.UTF8.GetBytes(header + "hello\0"), "-r", "-t", target);
            Assert.Equal(1, code);
            Assert.True(stdout.Length >= 2 && stdout[0] == 0 && stdout[1] is 1 or 2, $"{header.Trim()}: bad reply");
            Assert.Contains("unexpected filename", Encoding.UTF8.GetString(stdout));
        }
        Assert.Empty(Directory.GetFileSystemEntries(target));
        Assert.Equal([target], Directory.GetFileSystemEntries(_root));
    }

    [Fact]
    public void Sink_RejectsBadModeSizeAndOversizedHeaders()
    {
        string target = Path.Combine(_root, "t");
        Directory.CreateDirectory(target);
        foreach (var header in new[] { "C0844 5 x\n", "C644 5 x\n", "C0644 -5 x\n", "C0644 +5 x\n", "C0644 99999999999999999999 x\n",
            "C0644 5x x\n", "C0644  5 x\n", "T1 0 1\n", "T1 1000000 1 0\n", "X\n", "C0644 5 " + new string('a', ScpProtocol.MaxHeaderLength) + "\n" })
        {
            var (code, stdout) = RunAgent(_root, Encoding.UTF8.GetBytes(header + "hello\0"), "-t", target);
            Assert.Equal(1, code);
            Assert.True(stdout.Length >= 2 && stdout[0] == 0 && stdout[1] == 2, $"{header[..Math.Min(30, header.Length)].Trim()}: bad reply");
        }
        Assert.Empty(Directory.GetFileSystemEntries(target));
    }

    [Fact]
    public void Sink_AcceptsAWellFormedStream_AndDRequiresADirectory()
    {
        string target = Path.Combine(_root, "t");
        Directory.CreateDirectory(target);
        var stream = "T1000000000 0 1000000000 0\nD0750 0 sub\nC0600 5 f\nhello\0E\nC0644 0 e\n\0"u8.ToArray();
        var (code, stdout) = RunAgent(_root, stream, "-r", "-p", "-t", target);
        Assert.Equal(0, code);
        Assert.Equal(new byte[8], stdout); // ready, T, D, C, data, E, C, data
        Assert.Equal("hello", File.ReadAllText(Path.Combine(target, "sub", "f")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(target, "sub", "f")));
        Assert.Equal(new DateTime(2001, 9, 9, 1, 46, 40, DateTimeKind.Utc), Directory.GetLastWriteTimeUtc(Path.Combine(target, "sub")));
        Assert.Equal(0, new FileInfo(Path.Combine(target, "e")).Length);

        var (dCode, dOut) = RunAgent(_root, [], "-d", "-t", Path.Combine(target, "e"));
        Assert.Equal(1, dCode);
        Assert.Equal(2, dOut[0]);
        var (rCode, rOut) = RunAgent(_root, "D0755 0 d\n"u8.ToArray(), "-t", target); // D without -r
        Assert.Equal(1, rCode);
        Assert.Equal(2, rOut[1]);
    }

    /// <summary>Random bytes, and random sequences of plausible record fragments, never crash or hang the sink,
    /// and nothing appears outside its target directory.</summary>
    [Fact]
    public void Sink_NeverCrashes_OnRandomInput()
    {
        string target = Path.Combine(_root, "fuzz");
        Directory.CreateDirectory(target);
        string[] fragments = ["C0644 ", "D0755 0 ", "C0600 3 ", "T1 0 2 0\n", "E\n", "\n", "\0", "\u0001oops\n", "\u0002", "..", ".", "/", "a", "b/c",
            "12", "0 ", "99999999999999999999", " ", "abc\0", "C", "D", "T"];
        var randomBytes = Gen.Byte.Array[0, 600];
        var records = Gen.Int[0, fragments.Length - 1].Array[0, 40].Select(ix => Encoding.UTF8.GetBytes(string.Concat(ix.Select(i => fragments[i]))));
        var flags = Gen.Int[0, 3].Select(i => i switch { 0 => new[] { "-t" }, 1 => ["-r", "-t"], 2 => ["-rp", "-t"], _ => ["-d", "-r", "-t"] });
        Gen.Select(Gen.OneOf(randomBytes, records), flags).Sample((input, f) =>
        {
            var (code, _) = RunAgent(_root, input, [.. f, target]);
            Assert.True(code is 0 or 1, $"exit code {code}");
            Assert.Equal([target], Directory.GetFileSystemEntries(_root));
        }, iter: 300, threads: 1);
    }

    [Fact]
    public void HeaderParser_IsStrict()
    {
        Assert.True(ScpSink.TryParseHeader("C0644 12 name.txt"u8, out var mode, out var size, out var name, out _));
        Assert.Equal((0x1A4u, 12L, "name.txt"), (mode, size, name));
        Assert.True(ScpSink.TryParseHeader("C0644 9223372036854775807 n"u8, out _, out size, out _, out _));
        Assert.Equal(long.MaxValue, size);
        Assert.False(ScpSink.TryParseHeader("C0644 9223372036854775808 n"u8, out _, out _, out _, out _));
        Assert.False(ScpSink.TryParseHeader("C06444 1 n"u8, out _, out _, out _, out _));
        Assert.True(ScpSink.TryParseTimes("1 0 2 999999"u8, out var t));
        Assert.Equal(new ScpSink.Times(1, 0, 2, 999999), t);
        Assert.False(ScpSink.TryParseTimes("1 0 2 0 "u8, out _));
        Assert.False(ScpSink.TryParseTimes("-1 0 2 0"u8, out _));
    }
}
