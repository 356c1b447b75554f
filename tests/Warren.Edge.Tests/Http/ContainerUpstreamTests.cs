using System.Net;
using Warren.Edge.Http;
using Warren.Edge.Tests.Support;

namespace Warren.Edge.Tests.Http;

/// <summary>
/// The production path: the front door forwards to a container's bridge address, here a busybox
/// httpd in the <c>warren/busybox:1</c> image that scripts/build-images.sh builds. The test creates the
/// container and removes it.
/// </summary>
[Collection(FrontDoorCollection.Name)]
public sealed class ContainerUpstreamTests : IAsyncLifetime
{
    public const string Image = "warren/busybox:1";

    private readonly FrontDoorFixture _f;
    private readonly string _name = "warren-edge-test-" + Guid.NewGuid().ToString("N")[..12];

    public ContainerUpstreamTests(FrontDoorFixture fixture) => _f = fixture;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await ExternalTool.RunAsync("docker", new[] { "rm", "-f", _name });

    [Fact]
    public async Task PublicSite_OnBusyboxContainer_ServesThroughTheFrontDoor()
    {
        var run = await ExternalTool.RunAsync("docker", new[]
        {
            "run", "-d", "--name", _name, "--label", "warren.test=edge", Image,
            "sh", "-c", "mkdir -p /www && echo hello-from-busybox > /www/index.html && exec httpd -f -p 80 -h /www",
        });
        Assert.True(run.ExitCode == 0, $"docker run failed (is {Image} built? scripts/build-images.sh): {run.Stderr}");
        var inspect = await ExternalTool.RunAsync("docker", new[] { "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", _name });
        Assert.Equal(0, inspect.ExitCode);
        var address = IPAddress.Parse(inspect.Stdout.Trim());

        _f.Sites.Sites["bbox"] = new WebSite("vm-bbox", "bbox", People.Owner.UserId, 80, IsPublic: true);
        _f.Locator.Addresses["vm-bbox"] = address;
        _f.Tokens.Table[("tok-owner", $"v0@bbox.{FrontDoorFixture.Domain}")] = TokenValidation.Valid(new TokenPrincipal(People.Owner, "fp-owner", Array.Empty<string>(), null));

        // httpd starts within moments of the container; poll boundedly until it answers.
        HttpStatusCode status = 0;
        string body = "";
        using var client = _f.CreateClient();
        for (int attempt = 0; attempt < 50 && status != HttpStatusCode.OK; attempt++)
        {
            if (attempt > 0)
                await Task.Delay(TimeSpan.FromMilliseconds(200));
            var response = await client.GetAsync(_f.Url("bbox", "/index.html"));
            status = response.StatusCode;
            body = await response.Content.ReadAsStringAsync();
        }
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("hello-from-busybox\n", body);

        // Stop the container (its address stays in the locator, as a stale cache would): the owner gets
        // the clear page, not a raw 502, once the connection attempt fails.
        await ExternalTool.RunAsync("docker", new[] { "kill", _name });
        var owner = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, _f.Url("bbox")) { Headers = { { "X-Exedev-Authorization", "Bearer tok-owner" } } });
        Assert.Equal(HttpStatusCode.BadGateway, owner.StatusCode);
        Assert.Contains("Port 80 unbound.", await owner.Content.ReadAsStringAsync());
    }
}
