using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>Issue 5 security: a source that keeps failing authentication is refused for a while, others are not.</summary>
public sealed class FailedAuthLimitTests
{
    [Fact]
    public async Task SourceOverItsFailedAuthBudget_IsRefused_EvenWithAGoodKey_OtherSourcesAreNot()
    {
        var daemon = new WarrenDaemon(extraConfig: new()
        {
            ["Warren:Ssh:FailedAuthBurstPerSource"] = "3",
            ["Warren:Ssh:FailedAuthsPerSecondPerSource"] = "0.01",
        });
        try
        {
            await daemon.StartAsync();
            var good = await daemon.CreateUserAsync("good@example.com");
            Assert.Equal(0, (await good.ControlAsync("whoami")).ExitCode);

            var attacker = await SshUser.CreateKeyAsync(daemon, "attacker@example.com");
            // Unknown keys at a slot address fail authentication; bounded number of tries.
            for (int i = 0; i < 6; i++)
                Assert.Equal(255, (await attacker.VmAsync("127.0.1.1", "true", extra: ["-b", "127.0.0.1"])).ExitCode);

            // Same source, registered key: refused during the penalty.
            var blocked = await good.VmAsync(daemon.ControlAddress, "whoami", extra: ["-b", "127.0.0.1"]);
            Assert.Equal(255, blocked.ExitCode);
            Assert.Contains("Permission denied", blocked.Stderr);

            // Another source address is unaffected.
            var other = await good.VmAsync(daemon.ControlAddress, "whoami", extra: ["-b", "127.0.0.7"]);
            Assert.True(other.ExitCode == 0, other.ToString());
            Assert.Contains("good@example.com", other.Stdout);
        }
        finally
        {
            await daemon.DisposeAsync();
        }
    }
}
