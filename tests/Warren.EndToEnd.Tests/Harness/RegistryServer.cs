using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Docker.DotNet;
using Docker.DotNet.Models;

namespace Warren.EndToEnd.Tests.Harness;

/// <summary>
/// A real private registry for tests: Debian's <c>docker-registry</c> on 127.0.0.1:FREE-PORT with htpasswd
/// (bcrypt) auth and a random password. The engine treats 127.0.0.0/8 as an insecure registry, so plain HTTP
/// works without engine configuration. Missing programs make <see cref="StartAsync"/> throw: a test that
/// needs the registry fails instead of skipping.
/// </summary>
public sealed class RegistryServer : IAsyncDisposable
{
    public const string RegistryBinary = "/usr/bin/docker-registry";
    /// <summary>Polls while the registry opens its port (bounded).</summary>
    private const int StartAttempts = 150;
    private static readonly TimeSpan StartPoll = TimeSpan.FromMilliseconds(100);

    private readonly string _dir;
    private readonly Process _process;
    private readonly StringBuilder _log = new();
    private readonly List<string> _localTags = [];

    public int Port { get; }
    /// <summary>host:port, the first component of image references in this registry.</summary>
    public string Host => $"127.0.0.1:{Port}";
    public string User { get; }
    /// <summary>The registry password: random hex, so that a leak anywhere is unambiguous to search for.</summary>
    public string Password { get; }
    public string Log { get { lock (_log) return _log.ToString(); } }
    /// <summary>Its configuration (storage, htpasswd, TLS), for a second server of the same content elsewhere.</summary>
    public string ConfigPath => Path.Combine(_dir, "config.yml");

    private RegistryServer(string dir, Process process, int port, string user, string password)
    {
        _dir = dir;
        _process = process;
        Port = port;
        User = user;
        Password = password;
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_log) _log.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_log) _log.AppendLine(e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <param name="tls">PEM files of the registry's certificate (chain) and key: HTTPS instead of plain HTTP, for
    /// clients that only trust a registry outside 127.0.0.0/8 over TLS (an engine inside a VM, say).</param>
    public static async Task<RegistryServer> StartAsync(string user = "warren-e2e", (string CertificatePath, string KeyPath)? tls = null)
    {
        if (!File.Exists(RegistryBinary))
            throw new InvalidOperationException($"{RegistryBinary} missing (Debian package docker-registry; scripts/prereqs.sh installs it)");
        var htpasswd = ProcessRunner.Require("htpasswd");
        ProcessRunner.Require("docker");

        var dir = Directory.CreateTempSubdirectory("warren-e2e-registry-").FullName;
        var password = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        // -i: the password comes on stdin, never in a process's argv.
        var hp = await ProcessRunner.RunAsync(htpasswd, ["-B", "-i", "-c", Path.Combine(dir, "htpasswd"), user], stdin: password);
        if (hp.ExitCode != 0) throw new InvalidOperationException("htpasswd failed: " + hp);
        int port = FreePort();
        File.WriteAllText(Path.Combine(dir, "config.yml"), $"""
            version: 0.1
            log:
              level: error
            storage:
              filesystem:
                rootdirectory: {Path.Combine(dir, "data")}
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:{port}
            {(tls is { } t ? $"  tls:\n    certificate: {t.CertificatePath}\n    key: {t.KeyPath}" : "")}
            auth:
              htpasswd:
                realm: warren-e2e
                path: {Path.Combine(dir, "htpasswd")}
            """);
        var psi = new ProcessStartInfo(RegistryBinary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add(Path.Combine(dir, "config.yml"));
        var server = new RegistryServer(dir, Process.Start(psi)!, port, user, password);
        for (int i = 0; i < StartAttempts; i++)
        {
            if (server._process.HasExited) break;
            try
            {
                using var probe = new TcpClient();
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                await probe.ConnectAsync(IPAddress.Loopback, port, cts.Token);
                return server;
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                await Task.Delay(StartPoll);
            }
        }
        var log = server.Log;
        await server.DisposeAsync();
        throw new InvalidOperationException($"docker-registry did not listen on 127.0.0.1:{port}:\n{log}");
    }

    /// <summary>
    /// Pushes local image <paramref name="localImage"/> as HOST/<paramref name="repository"/>:<paramref name="tag"/>
    /// with the credential (in the X-Registry-Auth header of that one request: no docker login, no config file),
    /// then removes the local tag so the engine must pull it back. Returns the full reference.
    /// </summary>
    public async Task<string> PushAsync(string localImage, string repository, string tag)
    {
        string fullRepo = $"{Host}/{repository}";
        string reference = $"{fullRepo}:{tag}";
        var tagged = await ProcessRunner.RunAsync("docker", ["tag", localImage, reference]);
        if (tagged.ExitCode != 0) throw new InvalidOperationException("docker tag failed: " + tagged);
        _localTags.Add(reference);
        using var client = new DockerClientConfiguration().CreateClient();
        string? error = null;
        await client.Images.PushImageAsync(fullRepo, new ImagePushParameters { Tag = tag },
            new AuthConfig { Username = User, Password = Password, ServerAddress = Host },
            new SyncProgress<JSONMessage>(m =>
            {
                if (!string.IsNullOrEmpty(m.ErrorMessage)) error = m.ErrorMessage;
                else if (m.Error is { Message.Length: > 0 }) error = m.Error.Message;
            }));
        if (error is not null) throw new InvalidOperationException($"push of {reference} failed: {error}\n{Log}");
        await RemoveLocalAsync(reference);
        return reference;
    }

    /// <summary>Removes a local image tag (the engine's copy), ignoring "no such image".</summary>
    public static Task<ProcessResult> RemoveLocalAsync(string reference)
        => ProcessRunner.RunAsync("docker", ["rmi", "-f", reference]);

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var t in _localTags) await RemoveLocalAsync(t);
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
                await _process.WaitForExitAsync(cts.Token);
            }
        }
        catch (Exception e) when (e is InvalidOperationException or OperationCanceledException) { }
        _process.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>IProgress that reports on the caller's thread (Progress&lt;T&gt; posts to the pool and can race the return).</summary>
    private sealed class SyncProgress<T>(Action<T> action) : IProgress<T>
    {
        public void Report(T value) => action(value);
    }
}
