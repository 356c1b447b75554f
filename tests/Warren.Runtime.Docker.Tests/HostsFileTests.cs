using CsCheck;
using Warren.Agent;
using Xunit;

namespace Warren.Runtime.Docker.Tests;

/// <summary>The agent's <c>/etc/hosts</c> line for the VM's own name (hosts(5)): added once, the image's lines kept.</summary>
public sealed class HostsFileTests
{
    private const string Docker = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

    [Fact]
    public void AnImageWithoutTheName_GetsOneLine_AndTheSecondRunChangesNothing()
    {
        var once = HostsFile.Rewrite(Docker, "web")!;
        Assert.Equal(Docker + $"127.0.1.1\tweb\t{HostsFile.Marker}\n", once);
        Assert.Null(HostsFile.Rewrite(once, "web"));
    }

    [Theory]
    [InlineData("172.18.0.5\tweb\n")]
    [InlineData("10.0.0.1 web.example web # the engine's\n")]
    [InlineData("127.0.1.1 WEB\n")]
    public void ANameTheImageMapsAlready_IsLeftAlone(string line)
        => Assert.Null(HostsFile.Rewrite(Docker + line, "web"));

    [Fact]
    public void ARename_ReplacesOnlyTheAgentsLine()
    {
        var old = HostsFile.Rewrite(Docker + "# a comment\n10.1.1.1 db\n", "old")!;
        var renamed = HostsFile.Rewrite(old, "new")!;
        Assert.Equal(Docker + "# a comment\n10.1.1.1 db\n" + $"127.0.1.1\tnew\t{HostsFile.Marker}\n", renamed);
        // And when the image itself maps the new name, the stale line of ours just goes.
        Assert.Equal(Docker + "127.0.1.1 other\n", HostsFile.Rewrite(HostsFile.Rewrite(Docker, "x")! + "127.0.1.1 other\n", "other"));
    }

    [Fact]
    public void AMissingOrEmptyFile_GetsLocalhostToo_AndCrlfLinesAreKept()
    {
        Assert.Equal(Docker + $"127.0.1.1\tweb\t{HostsFile.Marker}\n", HostsFile.Rewrite("", "web"));
        Assert.StartsWith("127.0.0.1 localhost\r\n::1 localhost\r\n", HostsFile.Rewrite("127.0.0.1 localhost\r\n::1 localhost\r\n", "web"));
        Assert.EndsWith("1.2.3.4 a\n127.0.1.1\tweb\t" + HostsFile.Marker + "\n", HostsFile.Rewrite("1.2.3.4 a", "web"));
    }

    [Fact]
    public void EnsureOwnName_WritesInPlace_AndRefusesNamesThatCouldBreakALine()
    {
        string path = Path.Combine(Path.GetTempPath(), "warren-hosts-" + Guid.NewGuid().ToString("N"));
        try
        {
            File.WriteAllText(path, Docker);
            var log = new List<string>();
            Assert.True(HostsFile.EnsureOwnName("web", log.Add, path));
            Assert.Contains("127.0.1.1\tweb\t", File.ReadAllText(path));
            foreach (var bad in new[] { "", "a b", "a\nb", "a#b", new string('a', 65), null })
            {
                Assert.False(HostsFile.EnsureOwnName(bad, log.Add, path));
            }
            Assert.Equal(Docker + $"127.0.1.1\tweb\t{HostsFile.Marker}\n", File.ReadAllText(path));
            Assert.Equal(6, log.Count);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Property_EveryImageLineIsKeptInOrder_TheNameIsMapped_AndASecondRunWritesNothing()
    {
        var field = Gen.String[Gen.Char["abc.-19:# \t"], 0, 12];
        var line = Gen.Select(field, field, (a, b) => a + "\t" + b);
        var name = Gen.String[Gen.Char["abcxyz019-."], 1, 10];
        Gen.Select(line.Array[0, 8], name).Sample((lines, host) =>
        {
            string text = lines.Length == 0 ? "" : string.Join('\n', lines) + "\n";
            string result = HostsFile.Rewrite(text, host) ?? text;
            var kept = result.Split('\n').Where(l => !l.EndsWith(HostsFile.Marker, StringComparison.Ordinal)).ToList();
            if (lines.Length > 0) Assert.Equal(lines, kept.Take(lines.Length));
            Assert.Null(HostsFile.Rewrite(result, host));
        }, iter: 3000);
    }

    /// <summary>
    /// The real agent as PID 1 of a real container whose engine wrote no line for its name (no network: the engine
    /// maps the name only to an address it gave): the agent adds it, and BusyBox's ping resolves the name.
    /// </summary>
    [DockerFact]
    public async Task TheAgentAsInit_MapsTheName_WhereTheEngineDidNot()
    {
        DockerTestEnvironment.Require();
        string agent = DockerVmRuntime.ResolveAgentPath(null);
        string name = "hn-" + Guid.NewGuid().ToString("N")[..8];
        var run = await DockerTestEnvironment.RunAsync("docker", ["run", "-d", "--label", DockerTestEnvironment.TestLabel + "=1",
            "--network", "none", "--hostname", name, "-v", agent + ":/.warren/agent:ro", "--entrypoint", "/.warren/agent",
            DockerTestEnvironment.BusyboxImage, "init", "--", "sleep", "120"]);
        Assert.True(run.ExitCode == 0, run.Stderr);
        string container = run.Stdout.Trim();
        try
        {
            (int ExitCode, string Stdout, string Stderr) hosts = default;
            for (int i = 0; i < 50; i++) // bounded: the agent writes the file at once when it starts
            {
                hosts = await DockerTestEnvironment.RunAsync("docker", ["exec", container, "cat", "/etc/hosts"]);
                if (hosts.Stdout.Contains(HostsFile.Marker)) break;
                await Task.Delay(100);
            }
            Assert.Contains($"127.0.1.1\t{name}\t{HostsFile.Marker}", hosts.Stdout);
            Assert.Contains("127.0.0.1\tlocalhost", hosts.Stdout); // the engine's lines kept
            var ping = await DockerTestEnvironment.RunAsync("docker", ["exec", container, "ping", "-c1", "-W1", name]);
            Assert.Contains($"PING {name} (127.0.1.1)", ping.Stdout + ping.Stderr);
        }
        finally
        {
            await DockerTestEnvironment.RunAsync("docker", ["rm", "-f", container]);
        }
    }
}
