using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Habits made for exe.dev, with the real OpenSSH client against the real daemon and engine: `ssh vm.example` sends
/// the local user's name (`runner` on CI), which the VM rarely has, and must still land somewhere sensible.
/// </summary>
public sealed class VmSessionCompatTests(VmSessionCompatTests.Fixture fixture) : IClassFixture<VmSessionCompatTests.Fixture>
{
    private WarrenDaemon Daemon => fixture.Daemon;
    private const string Slot = "127.0.1.1";

    [Fact]
    public async Task Any_ssh_user_name_lands_on_an_existing_user()
    {
        // An image with neither USER nor the default login user: every unknown name lands as root, not in
        // "exec request failed on channel 0".
        var bare = await UserWithVmAsync("compat-bare@example.com", "compat-bare", fixture.RootOnlyImage);
        foreach (var name in new[] { "runner", "warren", "root" })
        {
            var r = await bare.VmAsync(Slot, "id -u; echo $HOME", user: name);
            Assert.True(r.ExitCode == 0, $"{name}@: {r}");
            Assert.Equal("0\n/root\n", r.Stdout);
        }

        // The image has the default login user: an unknown name gets it, root@ and an existing name get themselves.
        var usual = await UserWithVmAsync("compat-usual@example.com", "compat-usual", "warren/busybox:1");
        Assert.Equal("1000\n", (await usual.VmAsync(Slot, "id -u", user: "runner")).Stdout);
        Assert.Equal("0\n", (await usual.VmAsync(Slot, "id -u", user: "root")).Stdout);
        Assert.Equal("1000\n", (await usual.VmAsync(Slot, "id -u", user: "warren")).Stdout);
    }

    [Fact]
    public async Task Ssh_through_the_control_plane_runs_the_command_line_in_the_login_shell()
    {
        // `ssh CONTROL ssh VM 'echo x > /data/f; cat /data/f'`: the local shell removes the quotes, OpenSSH joins the
        // words, and the VM's shell must see the redirection and the second command, as with `ssh VM '…'`.
        var u = await UserWithVmAsync("compat-hop@example.com", "compat-hop", "warren/busybox:1");
        var hop = await u.ControlAsync("ssh compat-hop echo x > /data/f; cat /data/f; id -u");
        Assert.True(hop.ExitCode == 0, hop.ToString());
        Assert.Equal("x\n1000\n", hop.Stdout);
        // (As a user the VM lacks, like CI's `runner`: the tests may run as root, which the VM has.)
        var direct = await u.VmAsync(Slot, "echo x > /data/f; cat /data/f; id -u", user: "runner");
        Assert.Equal(hop.Stdout, direct.Stdout);

        // Quoting is undone twice (the control plane's lexer, then the VM's shell), as OpenSSH's ssh does.
        var quoted = await u.ControlAsync("ssh compat-hop 'echo \"a  b\" | wc -w'");
        Assert.Equal("2\n", quoted.Stdout.TrimStart());
    }

    private async Task<SshUser> UserWithVmAsync(string email, string vm, string image)
    {
        var u = await Daemon.CreateUserAsync(email);
        var r = await u.ControlAsync($"new --name={vm} --image={image}");
        Assert.True(r.ExitCode == 0, r.ToString());
        return u;
    }

    /// <summary>
    /// One daemon with a single shared address (each account's VM lands on it) and, among its provided images, one
    /// built here FROM warren/busybox:1 whose passwd has only root and whose config has no USER.
    /// </summary>
    public sealed class Fixture : DaemonFixture, IAsyncLifetime
    {
        public string RootOnlyImage { get; } = "warren-e2e/root-only:" + Guid.NewGuid().ToString("N")[..10];

        protected override Dictionary<string, string> Config => new()
        {
            ["Warren:Slots:0:Name"] = "s001",
            ["Warren:Slots:0:PublicIp"] = Slot,
            ["Warren:Slots:0:LocalIp"] = Slot,
            ["Warren:Images:Provided:0"] = "warren/busybox:1",
            ["Warren:Images:Provided:1"] = RootOnlyImage,
        };

        async Task IAsyncLifetime.InitializeAsync()
        {
            string context = Directory.CreateTempSubdirectory("warren-e2e-image-").FullName;
            try
            {
                File.WriteAllText(Path.Combine(context, "Dockerfile"),
                    "FROM warren/busybox:1\nRUN sed -i '/^warren:/d' /etc/passwd /etc/group\n");
                var build = await ProcessRunner.RunAsync("docker", ["build", "-q", "--label", "warren.test=1", "-t", RootOnlyImage, context]);
                if (build.ExitCode != 0) throw new InvalidOperationException(build.ToString());
            }
            finally { Directory.Delete(context, recursive: true); }
            await InitializeAsync();
        }

        async Task IAsyncLifetime.DisposeAsync()
        {
            await DisposeAsync();
            await ProcessRunner.RunAsync("docker", ["rmi", "-f", RootOnlyImage]);
        }
    }
}
