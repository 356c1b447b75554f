using System.Text.Json;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// <c>ssh-key generate-api-key --tag=T</c> (exe.dev's tag-scoped keys) through the real daemon, OpenSSH and curl: the
/// token sees and manages only the account's VMs with the tag, and the VMs it creates get the tag.
/// </summary>
public sealed class CompatTagTokenTests(DaemonFixture fixture) : IClassFixture<DaemonFixture>
{
    private const string ControlHost = "warren.localhost";
    private const string SmallImage = "--image=warren/busybox:1";

    private WarrenDaemon Daemon => fixture.Daemon;

    private async Task<WebSupport.HttpResult> ExecAsync(string token, string command)
    {
        var body = Path.Combine(Directory.CreateTempSubdirectory("warren-tag-token-").FullName, "body");
        await File.WriteAllTextAsync(body, command);
        return await WebSupport.CurlAsync(Daemon, ControlHost, Daemon.ControlAddress, "/exec",
            "-H", "Authorization: Bearer " + token, "--data-binary", "@" + body);
    }

    private static async Task<List<(string Name, List<string> Tags)>> LsAsync(SshUser u)
    {
        var ls = await u.ControlAsync("ls --json");
        Assert.True(ls.ExitCode == 0, ls.ToString());
        return JsonDocument.Parse(ls.Stdout).RootElement.GetProperty("vms").EnumerateArray()
            .Select(v => (v.GetProperty("vm_name").GetString()!, v.GetProperty("tags").EnumerateArray().Select(t => t.GetString()!).ToList()))
            .ToList();
    }

    [Fact]
    public async Task ATagScopedToken_SeesAndManagesOnlyItsTaggedVms_AndTagsWhatItCreates()
    {
        ProcessRunner.Require("docker");
        var owner = await Daemon.CreateUserAsync("tag-owner@example.com");
        foreach (var cmd in new[] { $"new --name=tagci {SmallImage} --tag=ci", $"new --name=tagprod {SmallImage} --tag=prod" })
        {
            var made = await owner.ControlAsync(cmd + " --json");
            Assert.True(made.ExitCode == 0, made.ToString() + Daemon.Log);
        }

        // A scope that could change tags would let the token move VMs in and out of it.
        var withTag = await owner.ControlAsync("ssh-key generate-api-key --label=ci-bad --tag=ci --cmds=ls,tag --json");
        Assert.Equal(1, withTag.ExitCode);
        var badTag = await owner.ControlAsync("ssh-key generate-api-key --label=ci-bad --tag=Not_A_Tag --json");
        Assert.Equal(1, badTag.ExitCode);

        var key = await owner.ControlAsync("ssh-key generate-api-key --label=ci --tag=ci --cmds=ls,new,rm,comment,restart --json");
        Assert.True(key.ExitCode == 0, key.ToString());
        var keyJson = JsonDocument.Parse(key.Stdout).RootElement;
        Assert.Equal("ci", keyJson.GetProperty("tag").GetString());
        string token = keyJson.GetProperty("token").GetString()!;

        var ls = await ExecAsync(token, "ls");
        Assert.True(ls.Status == 200, ls.Raw);
        var names = JsonDocument.Parse(ls.Body).RootElement.GetProperty("vms").EnumerateArray().Select(v => v.GetProperty("vm_name").GetString()).ToList();
        Assert.Equal(["tagci"], names);

        // A VM outside the tag is "not found", exactly like one that does not exist.
        var comment = await ExecAsync(token, "comment tagprod hello");
        Assert.True(comment.Status == 422, comment.Raw);
        Assert.Equal("VM \"tagprod\" not found", JsonDocument.Parse(comment.Body).RootElement.GetProperty("error").GetString());
        var rm = await ExecAsync(token, "rm tagprod");
        Assert.True(rm.Status == 422, rm.Raw);
        Assert.Contains(await LsAsync(owner), v => v.Name == "tagprod");

        // Inside the scope it works; what it creates carries the tag.
        var inScope = await ExecAsync(token, "comment tagci from-the-token");
        Assert.True(inScope.Status == 200, inScope.Raw);
        var created = await ExecAsync(token, $"new --name=tagnew {SmallImage}");
        Assert.True(created.Status == 200, created.Raw + Daemon.Log);
        Assert.Contains("ci", Assert.Single(await LsAsync(owner), v => v.Name == "tagnew").Tags);
        var after = await ExecAsync(token, "ls");
        Assert.Equal(["tagci", "tagnew"], JsonDocument.Parse(after.Body).RootElement.GetProperty("vms").EnumerateArray()
            .Select(v => v.GetProperty("vm_name").GetString()).Order().ToList());

        // Another account's VM with the same tag stays invisible.
        var other = await Daemon.CreateUserAsync("tag-other@example.com");
        var theirs = await other.ControlAsync($"new --name=tagtheirs {SmallImage} --tag=ci --json");
        Assert.True(theirs.ExitCode == 0, theirs.ToString());
        var stillMine = await ExecAsync(token, "ls");
        Assert.DoesNotContain("tagtheirs", stillMine.Body);
        var touchTheirs = await ExecAsync(token, "rm tagtheirs");
        Assert.True(touchTheirs.Status == 422, touchTheirs.Raw);
        Assert.Contains(await LsAsync(other), v => v.Name == "tagtheirs");

        // ssh-key list shows the scope.
        var list = await owner.ControlAsync("ssh-key list --json");
        Assert.Contains("\"tag\":\"ci\"", list.Stdout);
    }
}
