using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Docker.DotNet;
using Docker.DotNet.Models;
using Warren.Platform.Runtime;
using Xunit;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// --registry-auth against a real registry: Debian's docker-registry on 127.0.0.1:PORT with htpasswd auth
/// (the engine treats 127.0.0.0/8 as insecure, so plain HTTP works). warren/busybox:1 is pushed as
/// 127.0.0.1:PORT/private/app:1, removed locally, then prepared with and without the right credential.
/// </summary>
[Collection(DockerCollection.Name)]
public sealed class PrivateRegistryTests : IAsyncLifetime
{
    private const string RegistryBinary = "/usr/bin/docker-registry";
    private const string User = "warren-ci";
    /// <summary>Polls while the registry starts listening.</summary>
    private const int StartAttempts = 100;
    private static readonly TimeSpan StartPoll = TimeSpan.FromMilliseconds(100);

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "warren-registry-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly string _secret = Convert.ToHexString(Guid.NewGuid().ToByteArray());
    private readonly List<string> _vms = [];
    private Process? _registry;
    private DockerVmRuntime? _runtime;
    private int _port;

    private string Image => $"127.0.0.1:{_port}/private/app:1";

    public async Task InitializeAsync()
    {
        if (DockerTestEnvironment.UnavailableReason != null || !File.Exists(RegistryBinary)) return;
        _runtime = new DockerVmRuntime(DockerTestEnvironment.Options());
        Directory.CreateDirectory(_dir);
        _port = FreePort();
        // htpasswd -i reads the password from stdin: it never appears in a process's argv (ps).
        var (code, _, err) = await DockerTestEnvironment.RunAsync("htpasswd", ["-B", "-i", "-c", Path.Combine(_dir, "htpasswd"), User], stdin: _secret);
        Assert.True(code == 0, "htpasswd failed: " + err);
        File.WriteAllText(Path.Combine(_dir, "config.yml"), $"""
            version: 0.1
            log:
              level: error
            storage:
              filesystem:
                rootdirectory: {Path.Combine(_dir, "data")}
            http:
              addr: 127.0.0.1:{_port}
            auth:
              htpasswd:
                realm: warren-test
                path: {Path.Combine(_dir, "htpasswd")}
            """);
        var psi = new ProcessStartInfo(RegistryBinary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add(Path.Combine(_dir, "config.yml"));
        _registry = Process.Start(psi)!;
        _registry.OutputDataReceived += (_, _) => { };
        _registry.ErrorDataReceived += (_, _) => { };
        _registry.BeginOutputReadLine();
        _registry.BeginErrorReadLine();
        for (int i = 0; i < StartAttempts; i++)
        {
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync(IPAddress.Loopback, _port);
                break;
            }
            catch (SocketException)
            {
                await Task.Delay(StartPoll);
            }
        }

        // Push the busybox image with the credential, then drop it locally.
        var client = _runtime.Client;
        await client.Images.TagImageAsync(DockerTestEnvironment.BusyboxImage, new ImageTagParameters { RepositoryName = $"127.0.0.1:{_port}/private/app", Tag = "1" });
        string? pushError = null;
        await client.Images.PushImageAsync($"127.0.0.1:{_port}/private/app", new ImagePushParameters { Tag = "1" },
            new AuthConfig { Username = User, Password = _secret, ServerAddress = $"127.0.0.1:{_port}" },
            new SyncProgress<JSONMessage>(m => { if (!string.IsNullOrEmpty(m.ErrorMessage)) pushError = m.ErrorMessage; }));
        Assert.Null(pushError);
        await RemoveLocalImageAsync();
    }

    public async Task DisposeAsync()
    {
        if (_runtime != null)
        {
            foreach (var vm in _vms)
            {
                try { await _runtime.RemoveAsync(vm, CancellationToken.None); } catch (Exception) { }
            }
            await RemoveLocalImageAsync();
            _runtime.Dispose();
        }
        if (_registry != null)
        {
            try { _registry.Kill(); await _registry.WaitForExitAsync(); } catch (InvalidOperationException) { }
            _registry.Dispose();
        }
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private async Task RemoveLocalImageAsync()
    {
        try { await _runtime!.Client.Images.DeleteImageAsync(Image, new ImageDeleteParameters { Force = true }); }
        catch (DockerApiException) { }
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private void Require()
    {
        DockerTestEnvironment.Require();
        Assert.True(File.Exists(RegistryBinary), $"{RegistryBinary} missing (docker-registry package; scripts/prereqs.sh installs it)");
        Assert.NotNull(_runtime);
    }

    [DockerFact]
    public async Task PrivateImage_NeedsTheRightCredential_AndTheSecretNeverLeaks()
    {
        Require();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));

        var none = await Assert.ThrowsAsync<DockerRuntimeException>(() => _runtime!.PrepareImageAsync(Image, null, cts.Token));
        Assert.Equal(DockerRuntimeErrors.ImageUnauthorized, none.Code);

        var wrong = await Assert.ThrowsAsync<DockerRuntimeException>(() =>
            _runtime!.PrepareImageAsync(Image, new RegistryCredential(User, "not-" + _secret), cts.Token));
        Assert.Equal(DockerRuntimeErrors.ImageUnauthorized, wrong.Code);
        Assert.DoesNotContain(_secret, wrong.ToString());

        var credential = new RegistryCredential(User, _secret);
        Assert.DoesNotContain(_secret, credential.ToString());
        var info = await _runtime!.PrepareImageAsync(Image, credential, cts.Token);
        Assert.Equal(Image, info.Reference);
        Assert.Equal(["/bin/sh"], info.Command);

        // Cached now, but a registry image is pulled again each time, so no credential still means no image.
        var cachedNone = await Assert.ThrowsAsync<DockerRuntimeException>(() => _runtime!.PrepareImageAsync(Image, null, cts.Token));
        Assert.Equal(DockerRuntimeErrors.ImageUnauthorized, cachedNone.Code);

        // End to end: a VM from the private image.
        string id = "wt-" + Guid.NewGuid().ToString("N")[..12];
        _vms.Add(id);
        await _runtime.CreateAsync(new VmSpec(id, "private", Image, new VmResources(1, 128L * 1024 * 1024, 0),
            new Dictionary<string, string>(), CommandMode.Auto, null, null, credential), cts.Token);
        var vm = await _runtime.InspectAsync(id, cts.Token);
        Assert.Equal(RuntimeVmState.Running, vm!.State);

        // The secret is not in the container's config (labels, env, command).
        var c = await _runtime.Client.Containers.InspectContainerAsync(DockerVmRuntime.ContainerName(id));
        string config = System.Text.Json.JsonSerializer.Serialize(new { c.Config.Labels, c.Config.Env, c.Config.Entrypoint, c.Config.Cmd });
        Assert.DoesNotContain(_secret, config);
    }
}
