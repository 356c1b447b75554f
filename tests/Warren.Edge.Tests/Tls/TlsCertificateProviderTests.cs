using System.Security.Cryptography.X509Certificates;
using Warren.Edge.Tls;

namespace Warren.Edge.Tests.Tls;

public sealed class TlsCertificateProviderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("warren-tls-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private TlsOptions Options() => new() { DataDirectory = _dir, VmDomain = "box.localhost", ControlHost = "warren.localhost" };

    [Fact]
    public void FirstStart_CreatesCaAndWildcard_SignedByCa()
    {
        using var provider = TlsCertificateProvider.Create(Options());
        Assert.Equal(Path.Combine(_dir, "tls", "ca.crt"), provider.CaCertificatePath);
        var leaf = provider.DefaultCertificate;
        var names = leaf.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single().EnumerateDnsNames().ToArray();
        Assert.Equal(new[] { "*.box.localhost", "box.localhost", "warren.localhost" }, names);
        Assert.True(leaf.HasPrivateKey);

        using var ca = X509CertificateLoader.LoadCertificateFromFile(provider.CaCertificatePath!);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        Assert.True(chain.Build(leaf), string.Join(", ", chain.ChainStatus.Select(s => s.StatusInformation)));
    }

    [Fact]
    public void PrivateKeys_AreOwnerOnly()
    {
        using var _ = TlsCertificateProvider.Create(Options());
        foreach (var key in new[] { "ca.key", "server.key" })
        {
            var mode = File.GetUnixFileMode(Path.Combine(_dir, "tls", key));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, mode);
        }
    }

    [Fact]
    public void Restart_ReusesCaAndCertificate()
    {
        string thumbprint;
        using (var first = TlsCertificateProvider.Create(Options()))
            thumbprint = first.DefaultCertificate.Thumbprint;
        using var second = TlsCertificateProvider.Create(Options());
        Assert.Equal(thumbprint, second.DefaultCertificate.Thumbprint);
    }

    [Fact]
    public void ChangedDomain_ReissuesCertificate_KeepsCa()
    {
        string caPem;
        using (var first = TlsCertificateProvider.Create(Options()))
            caPem = File.ReadAllText(first.CaCertificatePath!);
        var options = Options();
        options.VmDomain = "vm.example";
        using var second = TlsCertificateProvider.Create(options);
        Assert.Equal(caPem, File.ReadAllText(second.CaCertificatePath!));
        Assert.Contains("*.vm.example", second.DefaultCertificate.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single().EnumerateDnsNames());
    }

    [Fact]
    public void ConfiguredFiles_AreSelectedBySni()
    {
        // Make two "configured" certificates by generating dev ones in two directories.
        var a = Options();
        var b = Options();
        b.DataDirectory = Path.Combine(_dir, "b");
        b.VmDomain = "other.example";
        b.ControlHost = "ctl.other.example";
        using (TlsCertificateProvider.Create(a)) { }
        using (TlsCertificateProvider.Create(b)) { }
        var configured = new TlsOptions
        {
            Certificates =
            {
                new TlsCertificateFiles(Path.Combine(_dir, "tls", "server.crt"), Path.Combine(_dir, "tls", "server.key")),
                new TlsCertificateFiles(Path.Combine(b.DataDirectory, "tls", "server.crt"), Path.Combine(b.DataDirectory, "tls", "server.key")),
            },
        };
        using var provider = TlsCertificateProvider.Create(configured);
        Assert.Null(provider.CaCertificatePath);
        Assert.Contains("box.localhost", provider.Select("web.box.localhost").TargetCertificate.Subject);
        Assert.Contains("other.example", provider.Select("web.other.example").TargetCertificate.Subject);
        Assert.Contains("other.example", provider.Select("CTL.other.example").TargetCertificate.Subject);
        // Wildcards cover one label only; unknown names get the first certificate.
        Assert.Contains("box.localhost", provider.Select("a.b.other.example").TargetCertificate.Subject);
        Assert.Contains("box.localhost", provider.Select(null).TargetCertificate.Subject);
    }
}
