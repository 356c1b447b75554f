using System.Text;
using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Issue 4's end-to-end "done means", through the real daemon, the real OpenSSH client and the real engine:
/// a VM from a private image with --registry-auth (and the secret nowhere it should not be); /data across
/// restart, resize, a daemon restart, cp, rename and rm; stat's JSON shape; the default Debian image.
/// </summary>
public sealed class VmLifecycleTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    /// <summary>stat polls: the sampler runs every 10 s; this bounds the wait well above that.</summary>
    private const int StatPollAttempts = 45;
    private static readonly TimeSpan StatPoll = TimeSpan.FromSeconds(2);

    private WarrenDaemon Daemon => fixture.Daemon;
    /// <summary>Any slot address: <c>vm+NAME@</c> picks the VM by name wherever it lives.</summary>
    private string Slot => Daemon.SlotAddresses[0];
    private string Instance => File.ReadAllText(Path.Combine(Daemon.DataDirectory, "instance-id")).Trim();

    // ------------------------------------------------------------------ 1. private image

    [Fact]
    public async Task New_FromAPrivateRegistryImage_NeedsTheCredential_AndTheSecretLeaksNowhere()
    {
        ProcessRunner.Require("docker");
        await using var registry = await RegistryServer.StartAsync();
        string marker = "warren-marker-" + Guid.NewGuid().ToString("N");
        string image = await PushMarkerImageAsync(registry, marker);
        // The engine has no local copy: everything below pulls from the registry.
        var local = await Docker("image", "inspect", image);
        Assert.NotEqual(0, local.ExitCode);

        var u = await Daemon.CreateUserAsync("private-image@example.com");
        string wrongPassword = Convert.ToHexStringLower(Guid.NewGuid().ToByteArray());

        // Without a credential (--json: one {"error":…} document on stdout) and with a wrong one (text: one line on
        // stderr): a clear message naming the image and the flag, exit 1, nothing left behind.
        var none = await u.ControlAsync($"new --name=priv --image={image} --json");
        Assert.True(none.ExitCode == 1, none.ToString());
        string noneError = JsonDocument.Parse(none.Stdout).RootElement.GetProperty("error").GetString()!;
        Assert.Contains($"registry refused access to {image} (check --registry-auth)", noneError);
        await AssertNoVmAsync(u, "priv", "no credential");

        var wrong = await u.ControlAsync($"new --name=priv --image={image} --registry-auth={registry.User}:{wrongPassword}");
        Assert.True(wrong.ExitCode == 1, wrong.ToString());
        Assert.Contains($"registry refused access to {image} (check --registry-auth)", wrong.Stderr);
        Assert.Single(wrong.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain(wrongPassword, wrong.Stdout + wrong.Stderr);
        await AssertNoVmAsync(u, "priv", "wrong password");

        // With the right credential (flag and value as two words, as people type it).
        var ok = await u.ControlAsync($"new --name=priv --image={image} --registry-auth {registry.User}:{registry.Password} --json");
        Assert.True(ok.ExitCode == 0, ok.ToString() + Daemon.Log);
        var j = JsonDocument.Parse(ok.Stdout).RootElement;
        Assert.Equal("priv", j.GetProperty("vm_name").GetString());
        Assert.Equal("running", j.GetProperty("status").GetString());
        Assert.DoesNotContain(registry.Password, ok.Stdout + ok.Stderr);

        var inside = await u.VmAsync(Slot, "cat /warren-marker.txt; hostname", user: "vm+priv");
        Assert.True(inside.ExitCode == 0, inside.ToString());
        Assert.Equal($"{marker}\npriv\n", inside.Stdout);

        var ls = JsonDocument.Parse((await u.ControlAsync("ls --json")).Stdout).RootElement.GetProperty("vms");
        Assert.Equal(image, Assert.Single(ls.EnumerateArray()).GetProperty("image").GetString());

        // The image is cached now, but a registry image is checked against the registry every time:
        // another VM without the credential is still refused (and leaves nothing).
        var cached = await u.ControlAsync($"new --name=priv-again --image={image} --json");
        Assert.True(cached.ExitCode != 0, cached.ToString());
        Assert.Contains("--registry-auth", cached.Stdout + cached.Stderr);
        await AssertNoVmAsync(u, "priv-again", "cached image without credential");

        // The secret reached the engine and nothing else: not the daemon's log, not the container's
        // configuration, not the database (WAL included) nor any other file in the data directory.
        string id = await VmIdAsync("priv");
        var inspect = await Docker("inspect", ContainerName(id));
        Assert.True(inspect.ExitCode == 0, inspect.ToString());
        Assert.DoesNotContain(registry.Password, inspect.Stdout);
        Assert.DoesNotContain(registry.Password, Daemon.Log);
        Assert.DoesNotContain(wrongPassword, Daemon.Log);
        var secret = Encoding.UTF8.GetBytes(registry.Password);
        // The agent's session socket (run/<vm>/agent.sock) is no file to read: open() fails with ENXIO.
        // VM disk images (disks/<vm>.ext4, sparse, 25 GiB by default) hold what the VMs write, not what the daemon does.
        string disks = Path.Combine(Daemon.DataDirectory, "disks") + Path.DirectorySeparatorChar;
        var files = Directory.EnumerateFiles(Daemon.DataDirectory, "*", SearchOption.AllDirectories)
            .Where(f => Path.GetFileName(f) != "agent.sock" && !f.StartsWith(disks, StringComparison.Ordinal))
            .ToList();
        Assert.Contains(files, f => Path.GetFileName(f) == "warren.db");
        foreach (var f in files)
            Assert.False(ReadShared(f).AsSpan().IndexOf(secret) >= 0, $"the registry password is in {f}");
        // …while the audit log still recorded the successful command, with the credential masked.
        Assert.Contains(AuditArguments("new"), a => a.Contains("private/app") && a.Contains(RedactionMask) && !a.Contains(registry.User + ":"));

        var rm = await u.ControlAsync("rm priv --json");
        Assert.True(rm.ExitCode == 0, rm.ToString());
        await AssertGoneFromEngineAsync(id);
    }

    /// <summary>warren/busybox:1 plus /warren-marker.txt (docker create + cp + commit: no builder needed), pushed.</summary>
    private static async Task<string> PushMarkerImageAsync(RegistryServer registry, string marker)
    {
        string temp = $"warren-e2e/marker-{Guid.NewGuid():N}:1";
        string dir = Directory.CreateTempSubdirectory("warren-e2e-marker-").FullName;
        string? container = null;
        try
        {
            File.WriteAllText(Path.Combine(dir, "warren-marker.txt"), marker + "\n");
            var created = await Docker("create", "warren/busybox:1");
            Assert.True(created.ExitCode == 0, "warren/busybox:1 missing? run scripts/build-images.sh\n" + created);
            container = created.Stdout.Trim();
            var cp = await Docker("cp", Path.Combine(dir, "warren-marker.txt"), container + ":/warren-marker.txt");
            Assert.True(cp.ExitCode == 0, cp.ToString());
            var commit = await Docker("commit", container, temp);
            Assert.True(commit.ExitCode == 0, commit.ToString());
            return await registry.PushAsync(temp, "private/app", "1");
        }
        finally
        {
            if (container is not null) await Docker("rm", "-f", container);
            await RegistryServer.RemoveLocalAsync(temp);
            Directory.Delete(dir, recursive: true);
        }
    }

    private async Task AssertNoVmAsync(SshUser u, string name, string label)
    {
        var ls = await u.ControlAsync("ls --json");
        Assert.True(ls.ExitCode == 0, ls.ToString());
        var names = JsonDocument.Parse(ls.Stdout).RootElement.GetProperty("vms").EnumerateArray().Select(v => v.GetProperty("vm_name").GetString()).ToList();
        Assert.DoesNotContain(name, names);
        var containers = await Docker("ps", "-a", "-q", "--filter", $"label=warren.instance={Instance}", "--filter", $"label=warren.vm-name={name}");
        Assert.True(containers.ExitCode == 0 && containers.Stdout.Trim().Length == 0, $"{label}: a container is left behind: {containers}");
        var volumes = await Docker("volume", "ls", "-q", "--filter", $"label=warren.instance={Instance}", "--filter", $"label=warren.vm-name={name}");
        Assert.True(volumes.ExitCode == 0 && volumes.Stdout.Trim().Length == 0, $"{label}: a volume is left behind: {volumes}");
    }

    // ------------------------------------------------------------------ 2. /data through the lifecycle

    [Fact]
    public async Task Data_SurvivesRestartResizeDaemonRestart_IsCopied_KeptByRename_GoneAfterRm()
    {
        var u = await Daemon.CreateUserAsync("lifecycle@example.com");
        string content = "kept-" + Guid.NewGuid().ToString("N");
        var created = await u.ControlAsync("new --name=keep --image=warren/busybox:1 --json");
        Assert.True(created.ExitCode == 0, created.ToString());
        var w = await u.VmAsync(Slot, "mkdir -p /data/dir && cat > /data/dir/keep.txt && echo scratch > /tmp/root-layer.txt", stdin: content, user: "vm+keep");
        Assert.True(w.ExitCode == 0, w.ToString());
        await AssertDataAsync(u, "keep", content, "after write");
        // That was the login user (not root) writing: /data belongs to the person who logs in.
        var who = await u.VmAsync(Slot, "id -un", user: "vm+keep");
        Assert.Equal("warren\n", who.Stdout);
        string id = await VmIdAsync("keep");

        // restart
        var restart = await u.ControlAsync("restart keep --json");
        Assert.True(restart.ExitCode == 0, restart.ToString());
        var rj = JsonDocument.Parse(restart.Stdout).RootElement;
        Assert.Equal("keep", rj.GetProperty("vm_name").GetString());
        Assert.Equal("restarted", rj.GetProperty("status").GetString());
        await AssertDataAsync(u, "keep", content, "after restart");

        // resize, applied in place: the engine's limits change, the container and its data stay.
        string containerBefore = (await Docker("inspect", "--format", "{{.Id}}", ContainerName(id))).Stdout.Trim();
        var resize = await u.ControlAsync("resize keep --memory=3GB --cpu=1 --json");
        Assert.True(resize.ExitCode == 0, resize.ToString());
        var sj = JsonDocument.Parse(resize.Stdout).RootElement;
        Assert.Equal("keep", sj.GetProperty("vm_name").GetString());
        Assert.Equal(8L << 30, sj.GetProperty("old_memory").GetInt64());
        Assert.Equal(3L << 30, sj.GetProperty("new_memory").GetInt64());
        Assert.Equal(2, sj.GetProperty("old_cpus").GetDouble());
        Assert.Equal(1, sj.GetProperty("new_cpus").GetDouble());
        var limits = await Docker("inspect", "--format", "{{.Id}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.State.Running}}", ContainerName(id));
        Assert.Equal($"{containerBefore} {3L << 30} 1000000000 true", limits.Stdout.Trim());
        await AssertDataAsync(u, "keep", content, "after resize");
        var lsl = JsonDocument.Parse((await u.ControlAsync("ls --json")).Stdout).RootElement.GetProperty("vms")[0];
        Assert.Equal(3L << 30, lsl.GetProperty("memory_capacity_bytes").GetInt64());
        Assert.Equal(1, lsl.GetProperty("allocated_cpus").GetDouble());

        // daemon restart on the same data directory
        await Daemon.StopAsync();
        await Daemon.StartAsync();
        var afterDaemon = JsonDocument.Parse((await u.ControlAsync("ls --json")).Stdout).RootElement.GetProperty("vms")[0];
        Assert.Equal("keep", afterDaemon.GetProperty("vm_name").GetString());
        Assert.Equal("running", afterDaemon.GetProperty("status").GetString());
        await AssertDataAsync(u, "keep", content, "after daemon restart");

        // cp: a new VM with the filesystem and /data, its own hostname; the source keeps running.
        var cp = await u.ControlAsync("cp keep keep-copy --json");
        Assert.True(cp.ExitCode == 0, cp.ToString() + Daemon.Log);
        var cj = JsonDocument.Parse(cp.Stdout).RootElement;
        Assert.Equal("keep-copy", cj.GetProperty("name").GetString());
        Assert.Equal("keep", cj.GetProperty("source").GetString());
        await AssertDataAsync(u, "keep-copy", content, "in the copy");
        var copyFs = await u.VmAsync(Slot, "cat /tmp/root-layer.txt", user: "vm+keep-copy");
        Assert.Equal("scratch\n", copyFs.Stdout);
        string copyId = await VmIdAsync("keep-copy");
        Assert.NotEqual(id, copyId);
        // /data is a disk image of its own per VM (enforced --disk).
        Assert.True(File.Exists(Path.Combine(Daemon.DataDirectory, "disks", copyId + ".ext4")), "the copy has no disk image of its own");
        // Separate disks: a write in the copy does not show in the source.
        var copyWrite = await u.VmAsync(Slot, "test -w /data && echo copy-only > /data/dir/copy.txt", user: "vm+keep-copy");
        Assert.True(copyWrite.ExitCode == 0, copyWrite.ToString());
        var sourceView = await u.VmAsync(Slot, "ls /data/dir", user: "vm+keep");
        Assert.Equal("keep.txt\n", sourceView.Stdout);
        await AssertDataAsync(u, "keep", content, "source after cp");

        // rename keeps the container identity (VM id), the data and the root filesystem; the hostname follows.
        var rename = await u.ControlAsync("rename keep kept --json");
        Assert.True(rename.ExitCode == 0, rename.ToString());
        var nj = JsonDocument.Parse(rename.Stdout).RootElement;
        Assert.Equal("keep", nj.GetProperty("old_name").GetString());
        Assert.Equal("kept", nj.GetProperty("new_name").GetString());
        Assert.Equal("renamed", nj.GetProperty("status").GetString());
        await AssertDataAsync(u, "kept", content, "after rename");
        Assert.Equal("scratch\n", (await u.VmAsync(Slot, "cat /tmp/root-layer.txt", user: "vm+kept")).Stdout);
        Assert.Equal(id, await VmIdAsync("kept"));
        var renamedLimits = await Docker("inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}", ContainerName(id));
        Assert.Equal($"{3L << 30} 1000000000", renamedLimits.Stdout.Trim());
        var oldName = await u.VmAsync(Slot, "true", user: "vm+keep");
        Assert.NotEqual(0, oldName.ExitCode);

        // rm: container, volume and snapshot images go, for both.
        var rm = await u.ControlAsync("rm kept keep-copy --json");
        Assert.True(rm.ExitCode == 0, rm.ToString());
        var dj = JsonDocument.Parse(rm.Stdout).RootElement;
        Assert.Equal(["kept", "keep-copy"], dj.GetProperty("deleted").EnumerateArray().Select(e => e.GetString()!).ToArray());
        Assert.Empty(dj.GetProperty("failed").EnumerateArray());
        await AssertGoneFromEngineAsync(id);
        await AssertGoneFromEngineAsync(copyId);
        var empty = await u.ControlAsync("ls --json");
        Assert.Equal("{\"vms\":[]}", empty.Stdout.Trim());
    }

    private async Task AssertDataAsync(SshUser u, string vm, string content, string when)
    {
        var r = await u.VmAsync(Slot, "cat /data/dir/keep.txt; echo; hostname", user: "vm+" + vm);
        Assert.True(r.ExitCode == 0, $"{when}: {r}");
        Assert.Equal($"{content}\n{vm}\n", r.Stdout);
    }

    // ------------------------------------------------------------------ 3. stat

    [Fact]
    public async Task Stat_Json_HasTheDocumentedShape_OnceTheSamplerRan()
    {
        var u = await Daemon.CreateUserAsync("stat@example.com");
        var created = await u.ControlAsync("new --name=stats --image=warren/busybox:1 --memory=2GB --json");
        Assert.True(created.ExitCode == 0, created.ToString());

        JsonElement root = default;
        int points = 0;
        for (int i = 0; i < StatPollAttempts && points == 0; i++)
        {
            if (i > 0) await Task.Delay(StatPoll);
            var r = await u.ControlAsync("stat stats --json");
            Assert.True(r.ExitCode == 0, r.ToString());
            root = JsonDocument.Parse(r.Stdout).RootElement;
            var p = root.GetProperty("points");
            points = p.ValueKind == JsonValueKind.Array ? p.GetArrayLength() : 0;
            if (points == 0) Assert.Equal(JsonValueKind.Null, p.ValueKind); // exe.dev: null, not [], when there are none
        }
        Assert.True(points > 0, "no stat points after polling:\n" + Daemon.Log);
        Assert.Equal(["name", "status", "range", "points"], root.EnumerateObject().Select(p => p.Name).ToArray());
        Assert.Equal("stats", root.GetProperty("name").GetString());
        Assert.Equal("running", root.GetProperty("status").GetString());
        Assert.Equal("24h", root.GetProperty("range").GetString());
        foreach (var point in root.GetProperty("points").EnumerateArray())
        {
            Assert.True(DateTimeOffset.TryParse(point.GetProperty("timestamp").GetString(), out _), point.ToString());
            foreach (var field in point.EnumerateObject().Where(f => f.Name != "timestamp"))
            {
                Assert.True(field.Name.StartsWith("cpu_") || field.Name.StartsWith("memory_") || field.Name.StartsWith("disk_")
                    || field.Name.StartsWith("io_") || field.Name.StartsWith("network_"), $"unexpected field {field.Name}");
                Assert.Equal(JsonValueKind.Number, field.Value.ValueKind);
                Assert.True(field.Value.GetDouble() >= 0, point.ToString());
            }
            Assert.True(point.TryGetProperty("cpu_percent", out _), point.ToString());
            Assert.True(point.GetProperty("memory_used_gb").GetDouble() > 0, point.ToString());
            Assert.Equal(2.0, point.GetProperty("memory_limit_gb").GetDouble());
            Assert.True(point.TryGetProperty("disk_used_gb", out _), point.ToString());
        }

        var hour = await u.ControlAsync("stat stats --range=1h --json");
        var hj = JsonDocument.Parse(hour.Stdout).RootElement;
        Assert.Equal("1h", hj.GetProperty("range").GetString());
        Assert.True(hj.GetProperty("points").GetArrayLength() > 0, hour.ToString());

        var text = await u.ControlAsync("stat stats");
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains("stats (running)", text.Stdout);

        var bad = await u.ControlAsync("stat stats --range=2h --json");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("--range", bad.Stdout + bad.Stderr);
        var missing = await u.ControlAsync("stat nosuchvm --json");
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("VM not found: nosuchvm", missing.Stdout + missing.Stderr);

        Assert.True((await u.ControlAsync("rm stats")).ExitCode == 0);
    }

    // ------------------------------------------------------------------ 4. the default image

    [Fact]
    public async Task New_WithoutImage_GivesDebian_LoginUserWarren_WithPasswordlessSudo_Bash_Curl()
    {
        var u = await Daemon.CreateUserAsync("default-image@example.com");
        var created = await u.ControlAsync("new --name=deb --json");
        Assert.True(created.ExitCode == 0, created.ToString() + Daemon.Log);
        var ls = JsonDocument.Parse((await u.ControlAsync("ls --json")).Stdout).RootElement.GetProperty("vms")[0];
        Assert.Equal("warren/default:1", ls.GetProperty("image").GetString());

        var r = await u.VmAsync(Slot,
            "id -un; hostname; sudo -n true && echo sudo-ok; sudo -n id -u; bash -c 'echo bash-$BASH_VERSINFO'; " +
            "curl --version | head -n1 | cut -d' ' -f1; . /etc/os-release && echo $ID; test -w /data && echo data-ok",
            user: "vm+deb");
        Assert.True(r.ExitCode == 0, r.ToString());
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("warren", lines[0]);
        Assert.Equal("deb", lines[1]);
        Assert.Equal("sudo-ok", lines[2]);
        Assert.Equal("0", lines[3]);
        Assert.StartsWith("bash-", lines[4]);
        Assert.NotEqual("bash-", lines[4]);
        Assert.Equal("curl", lines[5]);
        Assert.Equal("debian", lines[6]);
        Assert.Equal("data-ok", lines[7]);

        // The login shell is bash, and a pty session works too.
        var shell = await u.VmAsync(Slot, "getent passwd warren | cut -d: -f7", user: "vm+deb");
        Assert.Equal("/bin/bash", shell.Stdout.Trim());

        Assert.True((await u.ControlAsync("rm deb")).ExitCode == 0);
    }

    // ------------------------------------------------------------------ helpers

    private const string RedactionMask = "***";

    private static string ContainerName(string vmId) => "warren-" + vmId;
    private static string VolumeName(string vmId) => "warren-data-" + vmId;

    private static Task<ProcessResult> Docker(params string[] args) => ProcessRunner.RunAsync("docker", args);

    /// <summary>The VM's id, from the labels of this daemon's container named <paramref name="name"/>.</summary>
    private async Task<string> VmIdAsync(string name)
    {
        var r = await Docker("ps", "-a", "--filter", $"label=warren.instance={Instance}", "--filter", $"label=warren.vm-name={name}",
            "--format", "{{.Label \"warren.vm-id\"}}");
        Assert.True(r.ExitCode == 0, r.ToString());
        return Assert.Single(r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    /// <summary>No container, no volume and no snapshot image of the VM remain in the engine.</summary>
    private static async Task AssertGoneFromEngineAsync(string vmId)
    {
        var c = await Docker("ps", "-a", "-q", "--filter", $"name=^/{ContainerName(vmId)}$");
        Assert.True(c.ExitCode == 0 && c.Stdout.Trim().Length == 0, $"container of {vmId} remains: {c}");
        var v = await Docker("volume", "ls", "-q");
        Assert.True(v.ExitCode == 0, v.ToString());
        Assert.DoesNotContain(VolumeName(vmId), v.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("warren-run-" + vmId, v.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var i = await Docker("images", "-q", "warren-vm/" + vmId.ToLowerInvariant());
        Assert.True(i.ExitCode == 0 && i.Stdout.Trim().Length == 0, $"snapshot images of {vmId} remain: {i}");
    }

    /// <summary>The recorded arguments of every audited <paramref name="command"/> (read-only, beside the running daemon).</summary>
    private List<string> AuditArguments(string command)
    {
        var result = new List<string>();
        using var c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(Daemon.DataDirectory, "warren.db")};Mode=ReadOnly;Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT arguments FROM audit_log WHERE command = $c ORDER BY id";
        cmd.Parameters.AddWithValue("$c", command);
        using var r = cmd.ExecuteReader();
        while (r.Read()) result.Add(r.IsDBNull(0) ? "" : r.GetString(0));
        return result;
    }

    /// <summary>Reads a file the daemon may have open (SQLite WAL/SHM).</summary>
    private static byte[] ReadShared(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var m = new MemoryStream();
        f.CopyTo(m);
        return m.ToArray();
    }
}

