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

    /// <summary>
    /// Quiet time after the last change event before certificate files are re-read: a renewal writes the
    /// certificate and the key one after the other, and the pair must be read once both are in place.
    /// </summary>
    public TimeSpan ReloadDebounce { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How often certificate files are re-read regardless of change events: the backup for file systems
    /// where change notifications do not arrive (network and bind mounts, an overflowed watcher). Reading
    /// two small files a minute costs nothing. Zero or less turns the periodic check off.
    /// </summary>
    public TimeSpan ReloadCheckInterval { get; set; } = TimeSpan.FromMinutes(1);
}

/// <summary>A PEM certificate (chain) file and its PEM private key file.</summary>
public sealed record TlsCertificateFiles(string CertificatePath, string KeyPath);
