using System.Formats.Tar;
using System.Text;
using Docker.DotNet;
using Docker.DotNet.Models;
using Warren.Platform.Runtime;
using Warren.Runtime.Docker.Tests.Conformance;
using Xunit;

namespace Warren.Runtime.Docker.Tests;

/// <summary>
/// The conformance suite against Docker with the FROM-scratch busybox image (no libc), plus Docker specifics. No
/// agent socket directory is configured, so every session is a Docker exec (the fallback path, and how VMs created
/// before the session socket behave); <see cref="DockerSessionSocketConformanceTests"/> runs the suite over the socket.
/// </summary>
[Collection(DockerCollection.Name)]
public sealed class DockerRuntimeConformanceTests : RuntimeConformanceTests
{
    private readonly DockerVmRuntime? _runtime;
    private readonly List<string> _images = [];

    public DockerRuntimeConformanceTests()
    {
        if (DockerTestEnvironment.UnavailableReason == null) _runtime = new DockerVmRuntime(DockerTestEnvironment.Options());
    }

    protected override IVmRuntime Runtime => _runtime ?? throw new InvalidOperationException(DockerTestEnvironment.UnavailableReason);
    protected override string TestImage => DockerTestEnvironment.BusyboxImage;
    protected override void RequireEnvironment() => DockerTestEnvironment.Require();
    protected override int ExpectedAgentOomScoreAdj => DockerVmRuntime.AgentOomScoreAdj ?? 0;

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        if (_runtime != null)
        {
            foreach (var image in _images)
            {
                try { await _runtime.Client.Images.DeleteImageAsync(image, new ImageDeleteParameters { Force = true }); }
                catch (DockerApiException) { }
            }
            _runtime.Dispose();
        }
    }

    [DockerFact]
    public async Task Container_CarriesLabelsVolumeLimitsRestartPolicyAndReadOnlyAgent()
    {
        string id = await CreateVmAsync("labelled");
        var c = await _runtime!.Client.Containers.InspectContainerAsync(DockerVmRuntime.ContainerName(id));
        Assert.Equal(id, c.Config.Labels[DockerVmRuntime.LabelVmId]);
        Assert.Equal("labelled", c.Config.Labels[DockerVmRuntime.LabelVmName]);
        Assert.Equal("true", c.Config.Labels[DockerVmRuntime.LabelManaged]);
        Assert.StartsWith("test-", c.Config.Labels[DockerVmRuntime.LabelInstance]);
        Assert.Equal("labelled", c.Config.Hostname);
        Assert.Equal(RestartPolicyKind.OnFailure, c.HostConfig.RestartPolicy.Name);
        Assert.Equal(1_000_000_000L, c.HostConfig.NanoCPUs);
        Assert.Equal(256L * 1024 * 1024, c.HostConfig.Memory);
        var agent = Assert.Single(c.Mounts, m => m.Destination == DockerVmRuntime.AgentMountPath);
        Assert.False(agent.RW);
        var data = Assert.Single(c.Mounts, m => m.Destination == "/data");
        Assert.Equal(DockerVmRuntime.VolumeName(id), data.Name);
        Assert.Equal(DockerVmRuntime.AgentMountPath, c.Config.Entrypoint[0]);
        // PID 1 is the agent.
        Assert.Contains("/.warren/agent init", await ShAsync(id, "cat /proc/1/cmdline | tr '\\0' ' '"));
    }

    [DockerFact]
    public async Task PrepareImage_ReadsExposedPortsUserEntrypointCmdAndEnv()
    {
        DockerTestEnvironment.Require();
        string tag = "warren-test/exposed:" + Guid.NewGuid().ToString("N")[..8];
        _images.Add(tag);
        string dockerfile = $"FROM {DockerTestEnvironment.BusyboxImage}\nEXPOSE 8080 443/tcp 53/udp\nUSER 1000\nENV GREETING=hi\n" +
                            "ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"exec sleep 1000\"]\nLABEL warren.test=1\n";
        using var context = new MemoryStream();
        using (var tar = new TarWriter(context, leaveOpen: true))
        {
            tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "Dockerfile") { DataStream = new MemoryStream(Encoding.UTF8.GetBytes(dockerfile)) });
        }
        context.Position = 0;
        await _runtime!.Client.Images.BuildImageFromDockerfileAsync(new ImageBuildParameters { Tags = [tag], Remove = true, ForceRemove = true },
            context, null, null, new Progress<JSONMessage>(), Timeout());

        var info = await Runtime.PrepareImageAsync(tag, null, Timeout());
        Assert.Equal([443, 8080], info.ExposedTcpPorts);
        Assert.Equal("1000", info.User);
        Assert.Equal(["/bin/sh", "-c"], info.Entrypoint);
        Assert.Equal(["exec sleep 1000"], info.Command);
        Assert.Contains("GREETING=hi", info.Env);
        Assert.False(string.IsNullOrEmpty(info.Digest));

        // Auto mode runs the image's entrypoint+cmd as the image's user, under the agent.
        string id = NewVmId();
        await Runtime.CreateAsync(Spec(id, "auto") with { Image = tag }, Timeout());
        Assert.True(await EventuallyAsync(async () => (await RunAsync(id, "sh", "-c", "ps -o user,args | grep -v grep | grep 'sleep 1000'")).Stdout.Contains("1000")));
    }

    [DockerFact]
    public async Task List_SeesOnlyThisInstancesVms()
    {
        string id = await CreateVmAsync("mine");
        var options = DockerTestEnvironment.Options();
        options.Instance = "other-" + Guid.NewGuid().ToString("N")[..8];
        using var other = new DockerVmRuntime(options);
        Assert.DoesNotContain(await other.ListAsync(Timeout()), v => v.VmId == id);
        Assert.Contains(await Runtime.ListAsync(Timeout()), v => v.VmId == id);
    }

    [DockerFact]
    public async Task PrepareImage_UnknownImage_IsImageNotFound()
    {
        DockerTestEnvironment.Require();
        var e = await Assert.ThrowsAsync<DockerRuntimeException>(() =>
            Runtime.PrepareImageAsync("warren-test/does-not-exist:" + Guid.NewGuid().ToString("N")[..8], null, Timeout()));
        Assert.Contains(e.Code, new[] { DockerRuntimeErrors.ImageNotFound, DockerRuntimeErrors.ImageUnauthorized });
    }

    [DockerFact]
    public async Task Resize_SaysPlainlyWhetherDiskIsEnforced()
    {
        string id = await CreateVmAsync();
        var outcome = await Runtime.ResizeAsync(id, new VmResources(1, 256L * 1024 * 1024, 2L * 1024 * 1024 * 1024), Timeout());
        if (!outcome.DiskEnforced) Assert.False(string.IsNullOrEmpty(outcome.Note));
    }

    [DockerFact]
    public async Task Remove_DeletesTheVolumeAndSnapshotImages()
    {
        string id = await CreateVmAsync("snap");
        await Runtime.RenameAsync(id, "snap2", Timeout());
        await Runtime.RemoveAsync(id, Timeout());
        var volumes = await _runtime!.Client.Volumes.ListAsync();
        Assert.DoesNotContain(volumes.Volumes ?? [], v => v.Name == DockerVmRuntime.VolumeName(id));
        var images = await _runtime.Client.Images.ListImagesAsync(new ImagesListParameters { All = true });
        Assert.DoesNotContain(images.SelectMany(i => i.RepoTags ?? []), t => t.StartsWith(DockerVmRuntime.SnapshotRepository(id), StringComparison.Ordinal));
    }
}

/// <summary>Docker tests share the one engine; run them one class at a time.</summary>
[CollectionDefinition(Name)]
public sealed class DockerCollection
{
    public const string Name = "docker";
}
