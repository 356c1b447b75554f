using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Warren.Edge.Tests.Integrations;

/// <summary>
/// A throwaway CA and one server certificate for a host name, for test HTTPS servers that Warren dials as
/// integration targets (the CA's PEM goes to <c>Warren:Integrations:TrustedCaFile</c>).
/// </summary>
public static class TestCertificateAuthority
{
    /// <summary>A leaf for <paramref name="hostName"/> (with its key) and the path of its CA's PEM, written into <paramref name="directory"/>.</summary>
    public static async Task<(X509Certificate2 Leaf, string CaPemPath)> IssueAsync(string hostName, string directory)
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Warren integration test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(2));
        using var leafKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var leafRequest = new CertificateRequest("CN=" + hostName, leafKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(hostName);
        leafRequest.CertificateExtensions.Add(san.Build());
        leafRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var leafPublic = leafRequest.Create(ca, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1), RandomNumberGenerator.GetBytes(8));
        using var leafWithKey = leafPublic.CopyWithPrivateKey(leafKey);
        var leaf = X509CertificateLoader.LoadPkcs12(leafWithKey.Export(X509ContentType.Pfx), null);
        Directory.CreateDirectory(directory);
        string caPemPath = Path.Combine(directory, hostName + "-ca.pem");
        await File.WriteAllTextAsync(caPemPath, ca.ExportCertificatePem());
        return (leaf, caPemPath);
    }
}
