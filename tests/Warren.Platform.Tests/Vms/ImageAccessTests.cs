using CsCheck;
using Microsoft.Extensions.Configuration;
using Warren.Platform.Runtime;
using Warren.Platform.Tests.TestSupport;
using Warren.Platform.Vms;
using Xunit;

namespace Warren.Platform.Tests.Vms;

/// <summary>
/// <c>--image</c> between tenants: named references only, operator-provided images for everyone, any other image
/// pulled for the account that asks (the registry decides), and refusals that read like a missing image.
/// </summary>
public sealed class ImageAccessTests : IDisposable
{
    private const int PropertyIterations = 2000;
    private readonly TestPlatform _p = new();
    public void Dispose() => _p.Dispose();

    // ------------------------------------------------------------------ the reference grammar

    [Theory]
    [InlineData("alpine", "docker.io/library/alpine:latest", false)]
    [InlineData("alpine:3.20", "docker.io/library/alpine:3.20", false)]
    [InlineData("warren/busybox:1", "docker.io/warren/busybox:1", false)]
    [InlineData("docker.io/warren/busybox:1", "docker.io/warren/busybox:1", true)]
    [InlineData("index.docker.io/library/alpine", "docker.io/library/alpine:latest", true)]
    [InlineData("localhost/app", "localhost/app:latest", true)]
    [InlineData("127.0.0.1:5000/private/app:1", "127.0.0.1:5000/private/app:1", true)]
    [InlineData("registry.example:443/a/b/c:v1.2-rc_3", "registry.example:443/a/b/c:v1.2-rc_3", true)]
    [InlineData("Registry.Example/app", "Registry.Example/app:latest", true)]
    [InlineData("[::1]:5000/app:1", "[::1]:5000/app:1", true)]
    [InlineData("a__b-c/e.f:_x", "docker.io/a__b-c/e.f:_x", false)]
    [InlineData("host:5000", "docker.io/library/host:5000", false)] // a tag, as in the grammar
    [InlineData("ghcr.io/o/app@sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        "ghcr.io/o/app@sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789", true)]
    [InlineData("ghcr.io/o/app:1@sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        "ghcr.io/o/app:1@sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789", true)]
    public void Parse_NamedReferences(string text, string canonical, bool explicitDomain)
    {
        Assert.True(ImageReference.TryParse(text, out var r), text);
        Assert.Equal(canonical, r.Canonical);
        Assert.Equal(explicitDomain, r.HasExplicitDomain);
        Assert.True(ImageReference.TryParse(r.Canonical, out var again));
        Assert.Equal(r.Canonical, again.Canonical);
    }

    [Theory]
    [InlineData("")]
    [InlineData("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("app@sha256:0123")]
    [InlineData("app@md5:0123456789abcdef0123456789abcdef")]
    [InlineData("UPPER")]
    [InlineData("app:")]
    [InlineData("app:-x")]
    [InlineData("/app")]
    [InlineData("app/")]
    [InlineData("a//b")]
    [InlineData("a..b")]
    [InlineData("-app")]
    [InlineData("app tag")]
    [InlineData("sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("under_score.example/app")]
    [InlineData("reg.example:port/app")]
    [InlineData("app:t\u00e9")]
    public void Parse_RefusesWhatIsNoNamedReference(string text)
        => Assert.False(ImageReference.TryParse(text, out _), text);

    [Fact]
    public void Parse_NeverThrows_AndItsCanonicalFormIsAFixedPoint()
    {
        var chars = Gen.Char["abcdefsha0123456789:/@._-ABC[]é "];
        Gen.OneOf(Gen.String[chars, 0, 40], Gen.String).Sample(text =>
        {
            if (!ImageReference.TryParse(text, out var r)) return;
            Assert.True(ImageReference.TryParse(r.Canonical, out var again), r.Canonical);
            Assert.Equal(r.Canonical, again.Canonical);
            Assert.NotEqual("", r.Path);
        }, iter: PropertyIterations, threads: 1);
    }

    // ------------------------------------------------------------------ what an account may start

    [Theory]
    [InlineData("b")]                // an id prefix of another tenant's image (a cp snapshot)
    [InlineData("b1e2")]
    [InlineData("sha256:b1e2")]
    [InlineData("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("warren-vm/vm_0123:copy")] // Warren's own snapshot of someone's VM
    [InlineData("docker.io/warren-vm/vm_0123:r1")]
    public async Task EngineIdsAndSnapshots_AreRefused_AsIfMissing_WithoutAskingTheEngine(string image)
    {
        var a = await _p.NewAccountAsync("mallory@example.com");
        var e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "steal", Image = image }));
        Assert.Equal(PlatformErrorCodes.VmCreateFailed, e.Code);
        string shown = ImageReference.TryParse(image, out var r) ? r.Canonical : image;
        Assert.Equal($"failed to create VM \"steal\": {ImageMessages.NotFound(shown)}", e.UserMessage);
        Assert.Empty(_p.Engine.ImagesPrepared);
        Assert.Empty(_p.Engine.Containers);
        Assert.Empty(await _p.Vms.ListAsync(a.Id));
    }

    [Fact]
    public async Task AMissingImage_ReadsTheSameAsARefusedOne()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        _p.Runtime.FailAt = FakeStep.PrepareImage;
        _p.Runtime.FailMessage = ImageMessages.NotFound("docker.io/library/nothing:latest");
        var missing = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "x", Image = "nothing" }));
        _p.Runtime.FailAt = FakeStep.None;
        var refused = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "x", Image = "cafe" }));
        Assert.Equal(missing.Code, refused.Code);
        Assert.Equal(missing.UserMessage.Replace("nothing", "cafe"), refused.UserMessage);
    }

    [Theory]
    [InlineData("warren/busybox:1", "warren/busybox:1")]
    [InlineData("docker.io/warren/busybox:1", "warren/busybox:1")]
    [InlineData(null, "warren/default:1")]
    public async Task ProvidedImages_AreUsedFromTheEngine_WithoutCredentialOrGrant(string? image, string asked)
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web", Image = image, RegistryAuth = new RegistryCredential("me", "s3cret") });
        Assert.Equal([(asked, false)], _p.Engine.ImagesPrepared);
        Assert.Equal(asked, _p.Engine.Containers.Values.Single().Image);
        Assert.Empty(await _p.Vms.Images.ListGrantsAsync(a.Id));
    }

    [Fact]
    public async Task ARegistryImage_IsPulledForTheAccount_GrantedByDigest_AndRunByDigest()
    {
        var a = await _p.NewAccountAsync("alice@example.com");
        var vm = await _p.Vms.CreateAsync(a.Id, new VmCreateRequest { Name = "web", Image = "alpine:3" });
        Assert.Equal("alpine:3", vm.Image); // what the person typed is what ls shows
        // Asked by the canonical name: it names the registry, so the runtime asks it, cached or not.
        Assert.Equal(("docker.io/library/alpine:3", false), _p.Engine.ImagesPrepared.First());
        string digest = "sha256:" + new string('0', 64);
        Assert.Equal("docker.io/library/alpine@" + digest, _p.Engine.Containers.Values.Single().Image);
        var grant = Assert.Single(await _p.Vms.Images.ListGrantsAsync(a.Id));
        Assert.Equal(("docker.io/library/alpine:3", digest), (grant.Reference, grant.Digest));
    }

    [Fact]
    public async Task AnotherAccountsPrivateImage_CannotBeStartedByName()
    {
        _p.Engine.PrivateImageSecret = "alice-token";
        var alice = await _p.NewAccountAsync("alice@example.com");
        var bob = await _p.NewAccountAsync("bob@example.com");
        const string image = "registry.local/private/app:1";
        await _p.Vms.CreateAsync(alice.Id, new VmCreateRequest { Name = "a1", Image = image, RegistryAuth = new RegistryCredential("alice", "alice-token") });

        // The image is on the engine now; bob's new still goes to the registry, and it says no.
        foreach (var auth in new RegistryCredential?[] { null, new("bob", "guess") })
        {
            var e = await Assert.ThrowsAsync<PlatformException>(() => _p.Vms.CreateAsync(bob.Id, new VmCreateRequest { Name = "b1", Image = image, RegistryAuth = auth }));
            Assert.Equal(PlatformErrorCodes.VmCreateFailed, e.Code);
        }
        Assert.All(_p.Engine.ImagesPrepared, i => Assert.Equal("registry.local/private/app:1", i.Image));
        Assert.Empty(await _p.Vms.ListAsync(bob.Id));
        Assert.Empty(await _p.Vms.Images.ListGrantsAsync(bob.Id));
        Assert.Single(await _p.Vms.Images.ListGrantsAsync(alice.Id));
    }

    [Fact]
    public void ProvidedImages_BindFromConfiguration_ReplacingTheDefaults()
    {
        var configuration = new Microsoft.Extensions.Configuration.ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Warren:Images:Provided:0"] = "warren/default:1",
            ["Warren:Images:Provided:1"] = "warren/bench-nginx:1",
        }).Build();
        var o = new PlatformOptions();
        Microsoft.Extensions.Configuration.ConfigurationBinder.Bind(configuration.GetSection(PlatformOptions.SectionName), o);
        Assert.Equal(["warren/default:1", "warren/bench-nginx:1"], o.Images.EffectiveProvided);
    }

    [Fact]
    public void ProvidedImages_DefaultToTheLocallyBuiltOnes_AndAreValidated()
    {
        Assert.Equal(["warren/default:1", "warren/busybox:1"], new PlatformOptions().Images.EffectiveProvided);
        var o = new PlatformOptions { Images = new ImageOptions { Provided = ["ok/image:1", "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"] } };
        Assert.Contains(o.Validate(), p => p.Contains("Warren:Images:Provided"));
    }
}
