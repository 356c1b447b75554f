using Xunit;

namespace Warren.EndToEnd.Tests;

/// <summary>
/// Which image <c>new</c> uses without <c>--image</c>: under the microVM runtime the one with Docker Engine and Compose
/// (exe.dev's "docker compose in the VM" deployments), unless the operator names another; the Docker runtime keeps
/// warren/default:1 (a container cannot run an engine for its tenant).
/// </summary>
public sealed class PatternBDefaultImageTests
{
    private static string? DefaultImage(params string[] args) => WarrenConfiguration.Build(args)["Warren:DefaultImage"];

    [Fact]
    public void MicroVmRuntime_DefaultsToTheDockerImage()
    {
        Assert.Equal(WarrenConfiguration.MicroVmDefaultImage, DefaultImage("--Warren:Runtime=microvm"));
        Assert.Equal("warren/dind:1", WarrenConfiguration.MicroVmDefaultImage);
    }

    [Fact]
    public void AnOperatorsImage_Wins()
    {
        Assert.Equal("registry.example/base:2", DefaultImage("--Warren:Runtime=microvm", "--Warren:DefaultImage=registry.example/base:2"));
    }

    [Fact]
    public void DockerRuntime_KeepsThePlatformDefault()
    {
        Assert.Null(DefaultImage());
        Assert.Null(DefaultImage("--Warren:Runtime=docker"));
        Assert.Equal("warren/default:1", new Warren.Platform.PlatformOptions().DefaultImage);
    }
}
