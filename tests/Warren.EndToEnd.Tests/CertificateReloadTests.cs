using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Warren.EndToEnd.Tests.Harness;
using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Certificate hot reload through the real daemon: HTTPS from configured PEM files
/// (<c>Warren:Tls:Certificates:0</c>); replacing the files on disk makes the running daemon serve the new
/// certificate (seen with <c>openssl s_client</c> and verified by curl); a broken file keeps the previous
/// certificate and is reported in the log.
/// </summary>
public sealed partial class CertificateReloadTests
{
    /// <summary>Upper bound for a replaced file to be served (the watcher reacts within about a second).</summary>
    private static readonly TimeSpan ReloadWait = TimeSpan.FromSeconds(60);
    private const string ControlHost = "warren.localhost";

    [GeneratedRegex("-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")]
    private static partial Regex PemCertificate();

    /// <summary>A test CA and leaves for the daemon's names, written as renewal tools do (temp file + rename).</summary>
    private sealed class TestPki : IDisposable
    {
        private readonly ECDsa _caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        private readonly X509Certificate2 _ca;
        public string Directory { get; } = System.IO.Directory.CreateTempSubdirectory("warren-e2e-pki-").FullName;
        public string CaPath => Path.Combine(Directory, "ca.crt");
        public string CertificatePath => Path.Combine(Directory, "live", "fullchain.pem");
        public string KeyPath => Path.Combine(Directory, "live", "privkey.pem");

        public TestPki()
        {
            var request = new CertificateRequest("CN=Warren e2e reload CA", _caKey, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            _ca = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(30));
            File.WriteAllText(CaPath, _ca.ExportCertificatePem() + "\n");
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(CertificatePath)!);
        }

        /// <summary>Issues a leaf "CN=<paramref name="label"/>" for the daemon's names and installs it; returns its serial (hex).</summary>
        public string Install(string label)
        {
            using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest($"CN={label}", key, HashAlgorithmName.SHA256);
            var san = new SubjectAlternativeNameBuilder();
            san.AddDnsName("*.box.localhost");
            san.AddDnsName("box.localhost");
            san.AddDnsName(ControlHost);
            request.CertificateExtensions.Add(san.Build());
            request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
            request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(_ca, true, false));
            using var leaf = request.Create(_ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(7), RandomNumberGenerator.GetBytes(12));
            Replace(KeyPath, key.ExportPkcs8PrivateKeyPem() + "\n");
            Replace(CertificatePath, leaf.ExportCertificatePem() + "\n" + _ca.ExportCertificatePem() + "\n");
            return leaf.SerialNumber;
        }

        public static void Replace(string path, string contents)
        {
            File.WriteAllText(path + ".tmp", contents);
            File.Move(path + ".tmp", path, overwrite: true);
        }

        public void Dispose()
        {
            _ca.Dispose();
            _caKey.Dispose();
            try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The certificate the daemon presents for the control host, as <c>openssl s_client</c> receives it.</summary>
    private static async Task<X509Certificate2> ServedCertificateAsync(WarrenDaemon daemon)
    {
        var r = await ProcessRunner.RunAsync(ProcessRunner.Require("openssl"),
            ["s_client", "-connect", $"{daemon.ControlAddress}:{daemon.HttpsPort}", "-servername", ControlHost], stdin: "",
            timeout: TimeSpan.FromSeconds(60));
        var pem = PemCertificate().Match(r.Stdout);
        Assert.True(pem.Success, "openssl s_client printed no certificate: " + r);
        return X509Certificate2.CreateFromPem(pem.Value);
    }

    private static async Task<string> AwaitServedSerialAsync(WarrenDaemon daemon, string expected)
    {
        string served = "";
        var deadline = DateTime.UtcNow + ReloadWait;
        while (DateTime.UtcNow < deadline)
        {
            using var cert = await ServedCertificateAsync(daemon);
            served = cert.SerialNumber;
            if (served == expected) break;
            await Task.Delay(250);
        }
        return served;
    }

    /// <summary>
    /// curl verifying the served chain against the test CA; returns the HTTP status of the sign-in page, which answers
    /// 401 "Sign in to continue" to a visitor without a session.
    /// </summary>
    private static async Task<int> CurlVerifiedAsync(WarrenDaemon daemon, TestPki pki)
    {
        var r = await ProcessRunner.RunAsync(ProcessRunner.Require("curl"),
            ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60", "--cacert", pki.CaPath,
             "--resolve", $"{ControlHost}:{daemon.HttpsPort}:{daemon.ControlAddress}", $"https://{ControlHost}:{daemon.HttpsPort}/login"],
            timeout: TimeSpan.FromSeconds(90));
        Assert.True(r.ExitCode == 0, "curl could not verify the served certificate: " + r);
        return int.Parse(r.Stdout.Trim());
    }

    [Fact]
    public async Task ReplacedCertificateFiles_AreServedWithoutARestart_BrokenOnesAreNot()
    {
        using var pki = new TestPki();
        string first = pki.Install("warren-reload-1");
        var daemon = new WarrenDaemon(extraConfig: new()
        {
            ["Warren:Tls:Certificates:0:CertificatePath"] = pki.CertificatePath,
            ["Warren:Tls:Certificates:0:KeyPath"] = pki.KeyPath,
        });
        try
        {
            await daemon.StartAsync();
            using (var served = await ServedCertificateAsync(daemon))
            {
                Assert.Equal(first, served.SerialNumber);
                Assert.Equal("CN=warren-reload-1", served.Subject);
            }
            Assert.Equal(401, await CurlVerifiedAsync(daemon, pki));

            // Renewal: new key and certificate, written over the old files.
            string second = pki.Install("warren-reload-2");
            Assert.Equal(second, await AwaitServedSerialAsync(daemon, second));
            Assert.Equal(401, await CurlVerifiedAsync(daemon, pki));
            Assert.Contains("Reloaded TLS certificate", daemon.Log);

            // A broken certificate file: reported, and the previous certificate is still served.
            TestPki.Replace(pki.CertificatePath, "-----BEGIN CERTIFICATE-----\ntruncated\n");
            var deadline = DateTime.UtcNow + ReloadWait;
            while (!daemon.Log.Contains("Could not load the changed TLS certificate") && DateTime.UtcNow < deadline)
                await Task.Delay(250);
            Assert.Contains("Could not load the changed TLS certificate", daemon.Log);
            using (var served = await ServedCertificateAsync(daemon))
                Assert.Equal(second, served.SerialNumber);
            Assert.Equal(401, await CurlVerifiedAsync(daemon, pki));

            // Fixed again: served.
            string third = pki.Install("warren-reload-3");
            Assert.Equal(third, await AwaitServedSerialAsync(daemon, third));
        }
        finally
        {
            await daemon.DisposeAsync();
        }
    }
}
