using System.Diagnostics;
using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Sign-up with e-mail verification: the daemon sends the code through its SMTP relay
/// (MailKit to a loopback SMTP endpoint); the person types it into the pty dialogue.
/// </summary>
public sealed partial class SignupByEmailTests
{
    [GeneratedRegex(@"verification code for \S+ is (\d{6})")]
    private static partial Regex Code();

    [Fact]
    public async Task UnknownKey_VerifiesByMailedCode_ThenHasAnAccount()
    {
        await using var sink = new SmtpSink();
        var daemon = new WarrenDaemon(extraConfig: new()
        {
            ["Warren:Signup:AutoVerify"] = "false",
            ["Warren:Smtp:Host"] = "127.0.0.1",
            ["Warren:Smtp:Port"] = sink.Port.ToString(),
            ["Warren:Smtp:Security"] = "None",
            ["Warren:Smtp:From"] = "warren@localhost",
        });
        try
        {
            await daemon.StartAsync();
            var u = await SshUser.CreateKeyAsync(daemon, "verify@mail.internal");
            var psi = new ProcessStartInfo("ssh") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in u.SshOptions(daemon.SshPort)) psi.ArgumentList.Add(a);
            psi.ArgumentList.Add("-tt");
            psi.ArgumentList.Add(daemon.ControlAddress);
            using var ssh = Process.Start(psi)!;
            var output = ssh.StandardOutput.ReadToEndAsync();
            await ssh.StandardInput.WriteAsync("verify@mail.internal\n");
            await ssh.StandardInput.FlushAsync();

            var errors = ssh.StandardError.ReadToEndAsync();
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(90));
            string mail;
            try { mail = await sink.Messages.Reader.ReadAsync(wait.Token); }
            catch (OperationCanceledException)
            {
                ssh.Kill();
                throw new Xunit.Sdk.XunitException($"no mail arrived\nssh stdout: {await output}\nssh stderr: {await errors}\ndaemon: {daemon.Log}");
            }
            Assert.Contains("To: verify@mail.internal", mail);
            var code = Code().Match(mail.Replace("\r", "").Replace("=\n", "")).Groups[1].Value;
            Assert.Equal(6, code.Length);

            await ssh.StandardInput.WriteAsync(code + "\nexit\n");
            await ssh.StandardInput.FlushAsync();
            ssh.StandardInput.Close();
            if (!ssh.WaitForExit(60_000)) ssh.Kill();
            var screen = await output;
            Assert.Contains("Email verified successfully", screen);

            var who = await u.ControlAsync("whoami --json");
            Assert.True(who.ExitCode == 0, who.ToString());
            Assert.Contains("\"email\":\"verify@mail.internal\"", who.Stdout);
        }
        finally
        {
            await daemon.DisposeAsync();
        }
    }
}
