using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Warren.Edge.Tests.Support;
using Warren.Edge.Tls;

namespace Warren.Edge.Tests.Tls;

/// <summary>Certificate files re-read on change: the provider's atomic swap, and the watcher/periodic reloader.</summary>
public sealed class TlsCertificateReloadTests : IDisposable
{
    /// <summary>Upper bound for a reload to show up after a file change (the watcher's debounce here is 50 ms).</summary>
    private static readonly TimeSpan ReloadWait = TimeSpan.FromSeconds(15);

    private readonly string _dir = Directory.CreateTempSubdirectory("warren-tls-reload-").FullName;
    private readonly CapturingLogger _log = new();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string CertPath => Path.Combine(_dir, "site.crt");
    private string KeyPath => Path.Combine(_dir, "site.key");

    /// <summary>A self-signed certificate for the VM domain with a recognisable subject; returns (certificate PEM, key PEM, serial).</summary>
    private static (string Cert, string Key, string Serial) NewCertificate(string label)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={label}", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("*.box.localhost");
        san.AddDnsName("warren.localhost");
        request.CertificateExtensions.Add(san.Build());
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(30));
        return (cert.ExportCertificatePem() + "\n", key.ExportPkcs8PrivateKeyPem() + "\n", cert.SerialNumber);
    }

    /// <summary>Writes both files the way renewal tools do: a temporary file, then a rename over the old one.</summary>
    private void Install(string certPem, string keyPem)
    {
        File.WriteAllText(KeyPath + ".new", keyPem);
        File.Move(KeyPath + ".new", KeyPath, overwrite: true);
        File.WriteAllText(CertPath + ".new", certPem);
        File.Move(CertPath + ".new", CertPath, overwrite: true);
    }

    private TlsCertificateProvider Configured() => TlsCertificateProvider.Create(
        new TlsOptions { Certificates = { new TlsCertificateFiles(CertPath, KeyPath) } }, logger: _log);

    private static async Task<bool> EventuallyAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + ReloadWait;
        while (DateTime.UtcNow < deadline)
        {
            if (condition())
                return true;
            await Task.Delay(50);
        }
        return condition();
    }

    [Fact]
    public void Reload_SwapsInTheNewCertificate_AndIgnoresUnchangedFiles()
    {
        var first = NewCertificate("first");
        Install(first.Cert, first.Key);
        using var provider = Configured();
        Assert.Equal(first.Serial, provider.DefaultCertificate.SerialNumber);
        Assert.False(provider.Reload());

        var second = NewCertificate("second");
        Install(second.Cert, second.Key);
        Assert.True(provider.Reload());
        Assert.Equal(second.Serial, provider.DefaultCertificate.SerialNumber);
        Assert.Equal("CN=second", provider.Select("web.box.localhost").TargetCertificate.Subject);
        Assert.True(provider.DefaultCertificate.HasPrivateKey);
        Assert.Contains(_log.Entries, e => e.Id == EdgeEventIds.TlsCertificateReloaded.Id && e.Message.Contains("CN=second"));
        Assert.False(provider.Reload());
    }

    [Fact]
    public void BrokenOrMismatchedFiles_KeepTheOldCertificate_AndLogAnErrorOnce()
    {
        var good = NewCertificate("good");
        Install(good.Cert, good.Key);
        using var provider = Configured();

        File.WriteAllText(CertPath, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
        Assert.False(provider.Reload());
        Assert.Equal(good.Serial, provider.DefaultCertificate.SerialNumber);
        Assert.Equal(1, _log.Errors);
        Assert.False(provider.Reload()); // same broken content: not reported again
        Assert.Equal(1, _log.Errors);

        // A new certificate with the old key: the pair does not match.
        var other = NewCertificate("other");
        File.WriteAllText(CertPath, other.Cert);
        Assert.False(provider.Reload());
        Assert.Equal(good.Serial, provider.DefaultCertificate.SerialNumber);
        Assert.Equal(2, _log.Errors);

        // Missing file: still the old certificate.
        File.Delete(CertPath);
        Assert.False(provider.Reload());
        Assert.Equal(good.Serial, provider.DefaultCertificate.SerialNumber);
        Assert.Equal(3, _log.Errors);

        // Fixed: the new pair is served.
        Install(other.Cert, other.Key);
        Assert.True(provider.Reload());
        Assert.Equal(other.Serial, provider.DefaultCertificate.SerialNumber);
    }

    [Fact]
    public void DevCertificate_IsReloadedFromItsFiles_Too()
    {
        using var provider = TlsCertificateProvider.Create(new TlsOptions { DataDirectory = _dir }, logger: _log);
        var replacement = NewCertificate("replacement");
        File.WriteAllText(Path.Combine(_dir, "tls", TlsCertificateProvider.ServerKeyFileName), replacement.Key);
        File.WriteAllText(Path.Combine(_dir, "tls", TlsCertificateProvider.ServerCertificateFileName), replacement.Cert);
        Assert.True(provider.Reload());
        Assert.Equal(replacement.Serial, provider.DefaultCertificate.SerialNumber);
        Assert.Contains(Path.Combine(_dir, "tls", TlsCertificateProvider.ServerCertificateFileName), provider.SourceFiles);
    }

    [Fact]
    public async Task Reloader_PicksUpAReplacedFile_ThroughTheWatcher()
    {
        var first = NewCertificate("watched-1");
        Install(first.Cert, first.Key);
        using var provider = Configured();
        // No periodic check: only a change event can trigger this reload.
        using var reloader = new TlsCertificateReloader(provider, TimeSpan.FromMilliseconds(50), Timeout.InfiniteTimeSpan, watchFiles: true, TimeProvider.System, _log);
        reloader.Start();

        var second = NewCertificate("watched-2");
        Install(second.Cert, second.Key);
        Assert.True(await EventuallyAsync(() => provider.DefaultCertificate.SerialNumber == second.Serial), "the change was not picked up");

        // A broken replacement is ignored; the previous certificate stays.
        int checks = reloader.Checks;
        File.WriteAllText(CertPath, "garbage");
        Assert.True(await EventuallyAsync(() => reloader.Checks > checks && _log.Errors > 0), "the broken file was never looked at");
        Assert.Equal(second.Serial, provider.DefaultCertificate.SerialNumber);
    }

    [Fact]
    public async Task Reloader_PeriodicCheck_IsTheBackupWhenNoEventArrives()
    {
        var first = NewCertificate("polled-1");
        Install(first.Cert, first.Key);
        using var provider = Configured();
        using var reloader = new TlsCertificateReloader(provider, TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(100), watchFiles: false, TimeProvider.System, _log);
        reloader.Start();

        var second = NewCertificate("polled-2");
        Install(second.Cert, second.Key);
        Assert.True(await EventuallyAsync(() => provider.DefaultCertificate.SerialNumber == second.Serial), "the periodic check did not reload");
    }
}
