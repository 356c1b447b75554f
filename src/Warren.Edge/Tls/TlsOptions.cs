namespace Warren.Edge.Tls;

/// <summary>Where the HTTPS front door's certificates come from.</summary>
public sealed class TlsOptions
{
    /// <summary>
    /// Certificates from PEM files (production). Each entry: a certificate file (leaf first, then
    /// intermediates) and its private key. When empty, a dev CA and wildcard certificate are generated.
    /// </summary>
    public List<TlsCertificateFiles> Certificates { get; set; } = new();

    /// <summary>Data directory; the dev CA and certificate live in <c>{DataDirectory}/tls/</c>.</summary>
    public string DataDirectory { get; set; } = "var";

    /// <summary>The VM domain: the dev certificate covers it and <c>*.&lt;vm-domain&gt;</c>.</summary>
    public string VmDomain { get; set; } = "box.localhost";

    /// <summary>The control host: the dev certificate covers it too.</summary>
    public string ControlHost { get; set; } = "warren.localhost";
}

/// <summary>A PEM certificate (chain) file and its PEM private key file.</summary>
public sealed record TlsCertificateFiles(string CertificatePath, string KeyPath);
