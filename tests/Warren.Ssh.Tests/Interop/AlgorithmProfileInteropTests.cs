using Warren.Ssh.Crypto;
using Warren.Ssh.Keys;
using Warren.Ssh.Tests.Keys;
using Warren.Ssh.Transport;
using Xunit;

namespace Warren.Ssh.Tests.Interop;

/// <summary>
/// The <see cref="SshAlgorithmProfile.Modern"/> profile against the real auditor: <c>ssh-audit</c> (Debian's package)
/// reports no <c>[fail]</c> for a listener that holds Ed25519, ECDSA and RSA host keys, while the default
/// <see cref="SshAlgorithmProfile.Compatible"/> profile does (NIST curves); and the real OpenSSH client still connects.
/// </summary>
public sealed class AlgorithmProfileInteropTests
{
    private static readonly TimeSpan AuditTimeout = TimeSpan.FromMinutes(2);

    /// <summary>ssh-audit's exit statuses (exitcodes.py: 0 good, 1 connection error, 2 warning, 3 failure).</summary>
    private const int AuditGood = 0, AuditWarning = 2, AuditFailure = 3;

    private static InteropServer Start(SshAlgorithmProfile profile)
    {
        var transport = new SshTransportServerOptions();
        SshAlgorithmProfiles.Apply(transport, profile);
        // Every host key type Warren makes: the profile, not the key set, decides what is offered.
        return new InteropServer(transport,
            [Ed25519PrivateKey.Generate(), TestKeys.Get("ecdsa-sha2-nistp256"), TestKeys.Get(RsaPublicKey.Name)]);
    }

    private static Task<ExternalProcess.Result> AuditAsync(int port) =>
        ExternalProcess.RunAsync("ssh-audit", ["-n", "-2", "-t", "30", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "127.0.0.1"],
            writeStdin: null, AuditTimeout);

    [Fact]
    public async Task Modern_SshAuditReportsNoFailure()
    {
        await using var s = Start(SshAlgorithmProfile.Modern);
        var r = await AuditAsync(s.Port);
        string report = r.StdoutText;
        // Warnings remain: this ssh-audit does not know mlkem768x25519-sha256 or the standard sntrup761 name yet.
        Assert.True(r.ExitCode is AuditGood or AuditWarning, $"ssh-audit exit {r.ExitCode}\n{report}\n{r.Stderr}");
        Assert.DoesNotContain("[fail]", report, StringComparison.Ordinal);
        // It did audit our algorithms (not an empty or refused connection).
        Assert.Contains("curve25519-sha256", report, StringComparison.Ordinal);
        Assert.Contains("ssh-ed25519", report, StringComparison.Ordinal);
        Assert.Contains("chacha20-poly1305@openssh.com", report, StringComparison.Ordinal);
        Assert.DoesNotContain("nistp", report, StringComparison.Ordinal);
        Assert.DoesNotContain("rsa-sha2", report, StringComparison.Ordinal);
        Assert.DoesNotContain("-ctr", report, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Compatible_IsTheDefault_AndSshAuditFlagsItsNistCurves()
    {
        var defaults = new SshTransportServerOptions();
        Assert.Equal(SshAlgorithms.DefaultKexAlgorithms, defaults.KexAlgorithms);
        Assert.Equal(SshAlgorithms.DefaultHostKeyAlgorithms, defaults.HostKeyAlgorithms);

        await using var s = Start(SshAlgorithmProfile.Compatible);
        var r = await AuditAsync(s.Port);
        string report = r.StdoutText;
        Assert.True(r.ExitCode == AuditFailure, $"ssh-audit exit {r.ExitCode}\n{report}\n{r.Stderr}");
        Assert.Contains("ecdh-sha2-nistp256", report, StringComparison.Ordinal);
        Assert.Contains("[fail]", report, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Modern_OpenSshClientConnects_AndOneLimitedToNistIsRefused()
    {
        await using var s = Start(SshAlgorithmProfile.Modern);
        var ok = await s.SshAsync(s.SshArgs("127.0.0.1", "echo modern"));
        Assert.True(ok.ExitCode == 0, ok.Stderr);
        Assert.Equal("modern\n", ok.StdoutText);

        // ssh exits 255 when negotiation fails (its "Unable to negotiate" line is below the LogLevel these runs use).
        var nist = await s.SshAsync(s.SshArgs("-o", "KexAlgorithms=ecdh-sha2-nistp256", "127.0.0.1", "echo no"));
        Assert.Equal(255, nist.ExitCode);
        Assert.Empty(nist.StdoutText);

        var ecdsa = await s.SshAsync(s.SshArgs("-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256", "127.0.0.1", "echo no"));
        Assert.Equal(255, ecdsa.ExitCode);
        Assert.Empty(ecdsa.StdoutText);
    }

    [Fact]
    public void Apply_SetsEachList_AndRejectsAnUnknownProfile()
    {
        var o = new SshTransportServerOptions();
        SshAlgorithmProfiles.Apply(o, SshAlgorithmProfile.Modern);
        Assert.All(o.KexAlgorithms, a => Assert.Contains(a, SshAlgorithms.SupportedKexAlgorithms));
        Assert.DoesNotContain(o.KexAlgorithms, a => a.Contains("nistp", StringComparison.Ordinal) || a.StartsWith("diffie-hellman", StringComparison.Ordinal));
        Assert.Equal([SshAlgorithms.HostKeyEd25519], o.HostKeyAlgorithms);
        Assert.All(o.Ciphers, c => Assert.True(c.Contains("gcm", StringComparison.Ordinal) || c.StartsWith("chacha20", StringComparison.Ordinal), c));
        Assert.All(o.Macs, m => Assert.EndsWith("-etm@openssh.com", m, StringComparison.Ordinal));
        SshAlgorithmProfiles.Apply(o, SshAlgorithmProfile.Compatible);
        Assert.Equal(SshAlgorithms.DefaultCiphers, o.Ciphers);
        Assert.Throws<ArgumentOutOfRangeException>(() => SshAlgorithmProfiles.Apply(o, (SshAlgorithmProfile)7));
    }
}
