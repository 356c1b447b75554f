using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// <c>ssh-key add --tag=T</c> (exe.dev's docs: ssh-key, "scope key to VMs with this tag") through the real daemon and
/// OpenSSH: the second key sees and reaches only the account's VMs tagged T, over SSH and through the commands, and
/// may not add keys; another account's VM with the same tag stays out of reach.
/// </summary>
public sealed class CompatSshKeyTagTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    private const string SmallImage = "--image=warren/busybox:1";

    private WarrenDaemon Daemon => fixture.Daemon;

    private static List<string> Names(ProcessResult ls)
    {
        Assert.True(ls.ExitCode == 0, ls.ToString());
        return JsonDocument.Parse(ls.Stdout).RootElement.GetProperty("vms").EnumerateArray().Select(v => v.GetProperty("vm_name").GetString()!).ToList();
    }

    [Fact]
    public async Task AKeyAddedWithTag_SeesAndReachesOnlyTaggedVms_AndCannotAddKeys()
    {
        ProcessRunner.Require("docker");
        var owner = await Daemon.CreateUserAsync("keytag-owner@example.com");
        foreach (var cmd in new[] { $"new --name=ktci {SmallImage} --tag=ci", $"new --name=ktprod {SmallImage} --tag=prod" })
        {
            var made = await owner.ControlAsync(cmd + " --json");
            Assert.True(made.ExitCode == 0, made.ToString() + Daemon.Log);
        }
        var mallory = await Daemon.CreateUserAsync("keytag-mallory@example.com");
        var theirs = await mallory.ControlAsync($"new --name=ktmallory {SmallImage} --tag=ci --json");
        Assert.True(theirs.ExitCode == 0, theirs.ToString());

        // The second key, from its own ssh-keygen, added with the tag (the key on stdin, as exe.dev's docs show).
        var ci = await SshUser.CreateKeyAsync(Daemon, "ci-bot");
        var added = await owner.ControlAsync("ssh-key add --tag=ci --json", stdin: ci.PublicKey + "\n");
        Assert.True(added.ExitCode == 0, added.ToString());
        Assert.Equal("ci", JsonDocument.Parse(added.Stdout).RootElement.GetProperty("permissions").GetProperty("tag").GetString());
        Assert.Contains("[VMs tagged ci]", (await owner.ControlAsync("ssh-key list")).Stdout);

        // Commands: only the tagged VM exists for it; the other is "not found", as one that does not exist.
        Assert.Equal(["ktci"], Names(await ci.ControlAsync("ls --json")));
        var comment = await ci.ControlAsync("comment ktprod hello");
        Assert.Equal(1, comment.ExitCode);
        Assert.Contains("VM \"ktprod\" not found", comment.Stderr + comment.Stdout);
        Assert.Equal(1, (await ci.ControlAsync("rm ktprod")).ExitCode);
        Assert.Contains("ktprod", Names(await owner.ControlAsync("ls --json")));

        // SSH: into the tagged VM, straight to the slot and through the control host; not into the others.
        var inside = await ci.VmAsync("127.0.1.1", "echo in-scope", user: "vm+ktci");
        Assert.True(inside.ExitCode == 0 && inside.Stdout.Contains("in-scope"), inside.ToString());
        var hop = await ci.ControlAsync("ssh ktci echo hop-in-scope");
        Assert.True(hop.ExitCode == 0 && hop.Stdout.Contains("hop-in-scope"), hop.ToString());
        foreach (var vm in new[] { "ktprod", "ktmallory" })
        {
            var outside = await ci.VmAsync("127.0.1.1", "echo leaked", user: "vm+" + vm);
            Assert.True(outside.ExitCode != 0 && !outside.Stdout.Contains("leaked"), outside.ToString());
            var viaControl = await ci.ControlAsync($"ssh {vm} echo leaked");
            Assert.True(viaControl.ExitCode != 0 && !viaControl.Stdout.Contains("leaked"), viaControl.ToString());
        }

        // HTTPS: the key's holder can sign a token for any VM's proxy; only a tagged VM's accepts it.
        foreach (var (vm, content, reachable) in new[] { ("ktci", "ci-site", true), ("ktprod", "prod-site", false) })
        {
            var dig = await DnsEndToEndTests.DigAsync(Daemon, $"{vm}.box.localhost");
            string ip = dig.Answer.Last(rr => rr.Type == "A").Data;
            await WebSupport.StartHttpdAsync(owner, vm, 80, "/data/www", content);
            string token = await WebSupport.MintExe0Async(ci.KeyPath, $"{{\"exp\":{WebSupport.UnixNow() + 3600}}}", $"v0@{vm}.box.localhost");
            var site = await WebSupport.CurlAsync(Daemon, $"{vm}.box.localhost", ip, "/", "-H", "Authorization: Bearer " + token);
            if (reachable) Assert.True(site.Status == 200 && site.Body.Contains(content), site.Raw);
            else Assert.True(site.Status == 401 && !site.Body.Contains(content), site.Raw);
        }

        // What it creates carries the tag.
        var created = await ci.ControlAsync($"new --name=ktmade {SmallImage} --json");
        Assert.True(created.ExitCode == 0, created.ToString());
        Assert.Equal(["ktci", "ktmade"], Names(await ci.ControlAsync("ls --json")).Order().ToList());

        // It may not add a key (which would reach every VM), nor remove the owner's.
        var third = await SshUser.CreateKeyAsync(Daemon, "third");
        var addAnother = await ci.ControlAsync("ssh-key add", stdin: third.PublicKey + "\n");
        Assert.Equal(1, addAnother.ExitCode);
        Assert.Contains("cannot add SSH keys", addAnother.Stderr + addAnother.Stdout);
        Assert.NotEqual(0, (await third.ControlAsync("whoami")).ExitCode);
        Assert.Equal(1, (await ci.ControlAsync("ssh-key remove keytag-owner@example.com")).ExitCode);
        Assert.Equal(0, (await owner.ControlAsync("whoami")).ExitCode);

        // Bad input: clear errors, no key.
        var bad = await owner.ControlAsync("ssh-key add --tag='Not A Tag'", stdin: third.PublicKey + "\n");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("invalid --tag", bad.Stderr + bad.Stdout);
        var both = await owner.ControlAsync("ssh-key add --tag=ci --vm=ktci", stdin: third.PublicKey + "\n");
        Assert.Equal(1, both.ExitCode);
        Assert.Contains("cannot be combined", both.Stderr + both.Stdout);
        Assert.NotEqual(0, (await third.ControlAsync("whoami")).ExitCode);

        foreach (var vm in new[] { "ktci", "ktprod", "ktmade" }) await owner.ControlAsync($"rm {vm}");
        await mallory.ControlAsync("rm ktmallory");
    }
}
