using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Warren.Edge.Tls;

/// <summary>
/// Holds the front door's server certificates and picks one per TLS handshake by SNI.
/// Either loads the configured PEM files or, with none configured, creates (first start) or
/// reuses (later starts) a local dev CA and a certificate for <c>*.&lt;vm-domain&gt;</c>,
/// <c>&lt;vm-domain&gt;</c> and the control host in <c>{DataDirectory}/tls/</c>.
/// </summary>
/// <remarks>
/// <see cref="Reload"/> re-reads the certificate files (<see cref="TlsCertificateReloader"/> calls it when
/// they change) and swaps in the new set atomically: each handshake sees either the old or the new
/// certificates, never a mix. A file that fails to load keeps its old certificate.
/// </remarks>
public sealed class TlsCertificateProvider : IDisposable
{
    /// <summary>Dev CA lifetime. Long, because people add it to their trust store once.</summary>
    public static readonly TimeSpan DevCaLifetime = TimeSpan.FromDays(3650);

    /// <summary>Dev server certificate lifetime: 397 days, the CA/Browser Forum ballot SC22 maximum browsers accept.</summary>
    public static readonly TimeSpan DevServerCertificateLifetime = TimeSpan.FromDays(397);

    /// <summary>A dev certificate this close to expiry is replaced at start.</summary>
    public static readonly TimeSpan DevRenewBefore = TimeSpan.FromDays(30);

    /// <summary>Random certificate serial size: RFC 5280 §4.1.2.2 allows up to 20 octets; CA/B BR §7.1 wants ≥ 64 random bits.</summary>
    public const int SerialNumberBytes = 16;

    public const string CaCertificateFileName = "ca.crt";
    public const string CaKeyFileName = "ca.key";
    public const string ServerCertificateFileName = "server.crt";
    public const string ServerKeyFileName = "server.key";

    /// <summary>The certificates in use, in source order; replaced whole, never changed in place.</summary>
    private volatile Entry[] _entries = [];
    private readonly List<CertificateSource> _sources = new();
    private readonly object _reloadGate = new();
    private readonly ILogger _logger;

    private TlsCertificateProvider(ILogger logger) => _logger = logger;

    /// <summary>Path of the dev CA certificate (to add to a trust store), or null when certificates come from files.</summary>
    public string? CaCertificatePath { get; private set; }

    /// <summary>The certificate used when SNI matches nothing (the first configured, or the dev one).</summary>
    public X509Certificate2 DefaultCertificate => _entries[0].Certificate;

    /// <summary>The certificate and key files in use (configured, or the dev certificate's), for change watching.</summary>
    public IReadOnlyList<string> SourceFiles => _sources.SelectMany(s => new[] { s.CertificatePath, s.KeyPath }).ToArray();

    /// <summary>Loads or creates the certificates. Throws when configured files are missing or invalid.</summary>
    public static TlsCertificateProvider Create(TlsOptions options, TimeProvider? time = null, ILogger? logger = null)
    {
        time ??= TimeProvider.System;
        logger ??= NullLogger.Instance;
        var provider = new TlsCertificateProvider(logger);
        if (options.Certificates.Count == 0)
            provider.CreateOrReuseDev(options, time, logger);
        else
        {
            foreach (var files in options.Certificates)
                provider._sources.Add(new CertificateSource(Path.GetFullPath(files.CertificatePath), Path.GetFullPath(files.KeyPath), IncludeChain: true));
        }
        var entries = new Entry[provider._sources.Count];
        for (int i = 0; i < entries.Length; i++)
        {
            var source = provider._sources[i];
            var (certificatePem, keyPem) = source.Read();
            entries[i] = LoadEntry(certificatePem, keyPem, source.IncludeChain);
            source.Fingerprint = CertificateSource.FingerprintOf(certificatePem, keyPem);
            Log.Loaded(logger, source.CertificatePath, entries[i].Certificate.Subject, entries[i].Certificate.NotAfter);
        }
        provider._entries = entries;
        return provider;
    }

    /// <summary>
    /// Re-reads every certificate/key pair. A pair whose contents changed and loads is swapped in (all
    /// changes at once); one that fails to read or load keeps its current certificate and logs an error
    /// (once per content, so a broken file is not reported every check). True when anything changed.
    /// </summary>
    public bool Reload()
    {
        lock (_reloadGate)
        {
            var current = _entries;
            Entry[]? next = null;
            for (int i = 0; i < _sources.Count; i++)
            {
                var source = _sources[i];
                string certificatePem, keyPem;
                try
                {
                    (certificatePem, keyPem) = source.Read();
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    if (source.Fingerprint is not null)
                        Log.ReloadFailed(_logger, source.CertificatePath, current[i].Certificate.Subject, ex);
                    source.Fingerprint = null; // read again, and report again, once the files are back
                    continue;
                }
                string fingerprint = CertificateSource.FingerprintOf(certificatePem, keyPem);
                if (fingerprint == source.Fingerprint)
                    continue;
                source.Fingerprint = fingerprint;
                try
                {
                    var entry = LoadEntry(certificatePem, keyPem, source.IncludeChain);
                    (next ??= (Entry[])current.Clone())[i] = entry;
                    Log.Reloaded(_logger, source.CertificatePath, entry.Certificate.Subject, entry.Certificate.SerialNumber, entry.Certificate.NotAfter);
                }
                catch (Exception ex)
                {
                    // Whatever is wrong with the new files, the old certificate keeps serving.
                    Log.ReloadFailed(_logger, source.CertificatePath, current[i].Certificate.Subject, ex);
                }
            }
            if (next is null)
                return false;
            // Replaced certificates are not disposed: a handshake that already picked one may still be using it.
            _entries = next;
            return true;
        }
    }

    /// <summary>The certificate context for a ClientHello's server name (SNI), falling back to the default.</summary>
    public SslStreamCertificateContext Select(string? serverName)
    {
        var entries = _entries;
        if (!string.IsNullOrEmpty(serverName) && entries.Length > 1)
        {
            foreach (var entry in entries)
            {
                if (entry.Covers(serverName))
                    return entry.Context;
            }
        }
        return entries[0].Context;
    }

    /// <summary>Server options for one handshake, with ALPN h2 + http/1.1 when <paramref name="http2"/>.</summary>
    public SslServerAuthenticationOptions CreateServerOptions(string? serverName, bool http2)
    {
        var context = Select(serverName);
        return new SslServerAuthenticationOptions
        {
            ServerCertificateContext = context,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            ClientCertificateRequired = false,
            ApplicationProtocols = http2
                ? new List<SslApplicationProtocol> { SslApplicationProtocol.Http2, SslApplicationProtocol.Http11 }
                : new List<SslApplicationProtocol> { SslApplicationProtocol.Http11 },
        };
    }

    public void Dispose()
    {
        foreach (var e in _entries)
            e.Certificate.Dispose();
    }

    /// <summary>
    /// The leaf (first certificate) with its key, plus the rest of the PEM as the chain sent to clients when
    /// <paramref name="includeChain"/>. Throws when the PEM is malformed or the key does not match.
    /// </summary>
    private static Entry LoadEntry(string certificatePem, string keyPem, bool includeChain)
    {
        var leaf = LoadLeaf(certificatePem, keyPem);
        var intermediates = new X509Certificate2Collection();
        if (includeChain)
        {
            var chain = new X509Certificate2Collection();
            chain.ImportFromPem(certificatePem);
            foreach (var c in chain)
            {
                if (c.Thumbprint != leaf.Thumbprint)
                    intermediates.Add(c);
            }
        }
        return new Entry(leaf, SslStreamCertificateContext.Create(leaf, intermediates, offline: true));
    }

    private static X509Certificate2 LoadLeaf(string certificatePem, string keyPem)
    {
        using var ephemeral = X509Certificate2.CreateFromPem(certificatePem, keyPem);
        // Round-trip through PKCS#12 so the key is usable by SslStream on every platform.
        return X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pkcs12), password: null);
    }

    private static X509Certificate2 LoadWithKey(string certificatePath, string keyPath) =>
        LoadLeaf(File.ReadAllText(certificatePath), File.ReadAllText(keyPath));

    private void CreateOrReuseDev(TlsOptions options, TimeProvider time, ILogger logger)
    {
        string dir = Path.Combine(options.DataDirectory, "tls");
        Directory.CreateDirectory(dir);
        string caCert = Path.Combine(dir, CaCertificateFileName);
        string caKey = Path.Combine(dir, CaKeyFileName);
        string serverCert = Path.Combine(dir, ServerCertificateFileName);
        string serverKey = Path.Combine(dir, ServerKeyFileName);
        var now = time.GetUtcNow();

        X509Certificate2 ca;
        if (File.Exists(caCert) && File.Exists(caKey) && (ca = LoadWithKey(caCert, caKey)).NotAfter.ToUniversalTime() > now.UtcDateTime + DevRenewBefore)
        {
            Log.CaInUse(logger, Path.GetFullPath(caCert));
        }
        else
        {
            ca = CreateCa(options, now);
            WritePem(caCert, ca.ExportCertificatePem() + "\n", secret: false);
            using (var key = ca.GetECDsaPrivateKey()!)
                WritePem(caKey, key.ExportPkcs8PrivateKeyPem() + "\n", secret: true);
            File.Delete(serverCert); // a new CA invalidates the old leaf
            Log.CaCreated(logger, Path.GetFullPath(caCert));
        }

        string[] names = DevNames(options);
        X509Certificate2? leaf = null;
        if (File.Exists(serverCert) && File.Exists(serverKey))
        {
            var existing = LoadWithKey(serverCert, serverKey);
            bool fresh = existing.NotAfter.ToUniversalTime() > now.UtcDateTime + DevRenewBefore;
            bool issuedByCa = existing.Issuer == ca.Subject && existing.Extensions.OfType<X509AuthorityKeyIdentifierExtension>()
                .Any(a => a.KeyIdentifier?.Span.SequenceEqual(ca.Extensions.OfType<X509SubjectKeyIdentifierExtension>().Single().SubjectKeyIdentifierBytes.Span) == true);
            var covered = new Entry(existing, null!);
            if (fresh && issuedByCa && names.All(covered.CoversExactly))
                leaf = existing;
            else
                existing.Dispose();
        }
        if (leaf is null)
        {
            leaf = CreateServerCertificate(ca, names, now);
            WritePem(serverCert, leaf.ExportCertificatePem() + "\n" + ca.ExportCertificatePem() + "\n", secret: false);
            using (var key = leaf.GetECDsaPrivateKey()!)
                WritePem(serverKey, key.ExportPkcs8PrivateKeyPem() + "\n", secret: true);
            Log.CertificateCreated(logger, Path.GetFullPath(serverCert), string.Join(", ", names));
        }

        CaCertificatePath = Path.GetFullPath(caCert);
        // Served from the files like configured ones (so replacing them takes effect); no chain: the client trusts the CA itself.
        _sources.Add(new CertificateSource(Path.GetFullPath(serverCert), Path.GetFullPath(serverKey), IncludeChain: false));
        leaf.Dispose();
        ca.Dispose();
    }

    private static string[] DevNames(TlsOptions options)
    {
        string domain = options.VmDomain.Trim().TrimEnd('.').ToLowerInvariant();
        string control = options.ControlHost.Trim().TrimEnd('.').ToLowerInvariant();
        return new[] { "*." + domain, domain, control }.Distinct().ToArray();
    }

    private static X509Certificate2 CreateCa(TlsOptions options, DateTimeOffset now)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(
            new X500DistinguishedName($"CN=Warren dev CA ({options.VmDomain}), O=Warren"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: true, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        return request.CreateSelfSigned(now.AddMinutes(-5), now + DevCaLifetime);
    }

    private static X509Certificate2 CreateServerCertificate(X509Certificate2 ca, string[] names, DateTimeOffset now)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName($"CN={names[0]}"), key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        foreach (var n in names)
            san.AddDnsName(n);
        request.CertificateExtensions.Add(san.Build(critical: false));
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(new OidCollection { new Oid("1.3.6.1.5.5.7.3.1") }, critical: false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        var serial = RandomNumberGenerator.GetBytes(SerialNumberBytes);
        serial[0] &= 0x7F; // positive INTEGER, RFC 5280 §4.1.2.2
        var notAfter = now + DevServerCertificateLifetime;
        if (notAfter > ca.NotAfter)
            notAfter = ca.NotAfter;
        using var unkeyed = request.Create(ca, now.AddMinutes(-5), notAfter, serial);
        using var withKey = unkeyed.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), password: null);
    }

    /// <summary>Writes atomically (temp file + rename); private keys get mode 0600 before any byte is written.</summary>
    private static void WritePem(string path, string pem, bool secret)
    {
        string temp = path + ".tmp";
        var fileOptions = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            fileOptions.UnixCreateMode = secret ? UnixFileMode.UserRead | UnixFileMode.UserWrite
                : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
        File.Delete(temp);
        using (var stream = new FileStream(temp, fileOptions))
        using (var writer = new StreamWriter(stream))
            writer.Write(pem);
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>Where one certificate comes from, and a fingerprint of the contents last tried (loaded or not).</summary>
    private sealed record CertificateSource(string CertificatePath, string KeyPath, bool IncludeChain)
    {
        public string? Fingerprint { get; set; }

        public (string CertificatePem, string KeyPem) Read() => (File.ReadAllText(CertificatePath), File.ReadAllText(KeyPath));

        public static string FingerprintOf(string certificatePem, string keyPem) =>
            Convert.ToHexString(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(certificatePem + "\0" + keyPem)));
    }

    private sealed record Entry(X509Certificate2 Certificate, SslStreamCertificateContext Context)
    {
        private readonly string[] _dnsNames = Certificate.Extensions.OfType<X509SubjectAlternativeNameExtension>()
            .SelectMany(e => e.EnumerateDnsNames()).Select(n => n.ToLowerInvariant()).ToArray();

        /// <summary>SNI match: exact, or a wildcard covering exactly one left-most label (RFC 6125 §6.4.3).</summary>
        public bool Covers(string host)
        {
            host = host.TrimEnd('.').ToLowerInvariant();
            foreach (var n in _dnsNames)
            {
                if (n == host)
                    return true;
                if (n.StartsWith("*.", StringComparison.Ordinal))
                {
                    int dot = host.IndexOf('.');
                    if (dot > 0 && host.AsSpan(dot + 1).SequenceEqual(n.AsSpan(2)))
                        return true;
                }
            }
            return false;
        }

        public bool CoversExactly(string name) => _dnsNames.Contains(name);
    }

    private static class Log
    {
        private static readonly Action<ILogger, string, Exception?> s_caCreated = LoggerMessage.Define<string>(
            LogLevel.Warning, EdgeEventIds.TlsCaCreated,
            "Created a dev TLS CA at {CaPath}; add it to your browser's or system's trust store to trust Warren's HTTPS sites");
        private static readonly Action<ILogger, string, string, Exception?> s_created = LoggerMessage.Define<string, string>(
            LogLevel.Information, EdgeEventIds.TlsCertificateCreated, "Created dev TLS certificate {Path} for {Names}");
        private static readonly Action<ILogger, string, string, DateTime, Exception?> s_loaded = LoggerMessage.Define<string, string, DateTime>(
            LogLevel.Information, EdgeEventIds.TlsCertificateLoaded, "TLS certificate {Path} ({Subject}, expires {NotAfter:u})");

        private static readonly Action<ILogger, string, Exception?> s_caInUse = LoggerMessage.Define<string>(
            LogLevel.Information, EdgeEventIds.TlsCaCreated, "Dev TLS CA: {CaPath} (trust it to use Warren's HTTPS sites without warnings)");

        public static void CaCreated(ILogger l, string path) => s_caCreated(l, path, null);
        public static void CaInUse(ILogger l, string path) => s_caInUse(l, path, null);
        public static void CertificateCreated(ILogger l, string path, string names) => s_created(l, path, names, null);
        private static readonly Action<ILogger, string, string, string, DateTime, Exception?> s_reloaded = LoggerMessage.Define<string, string, string, DateTime>(
            LogLevel.Information, EdgeEventIds.TlsCertificateReloaded, "Reloaded TLS certificate {Path} ({Subject}, serial {Serial}, expires {NotAfter:u})");
        private static readonly Action<ILogger, string, string, Exception?> s_reloadFailed = LoggerMessage.Define<string, string>(
            LogLevel.Error, EdgeEventIds.TlsCertificateReloadFailed, "Could not load the changed TLS certificate {Path}; still serving the previous one ({Subject})");

        public static void Loaded(ILogger l, string path, string subject, DateTime notAfter) => s_loaded(l, path, subject, notAfter, null);
        public static void Reloaded(ILogger l, string path, string subject, string serial, DateTime notAfter) => s_reloaded(l, path, subject, serial, notAfter, null);
        public static void ReloadFailed(ILogger l, string path, string subject, Exception ex) => s_reloadFailed(l, path, subject, ex);
    }
}
