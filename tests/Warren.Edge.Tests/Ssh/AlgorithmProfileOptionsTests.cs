using Microsoft.Extensions.Configuration;
using Warren.Edge.Ssh;
using Warren.Ssh.Crypto;

namespace Warren.Edge.Tests.Ssh;

/// <summary><c>Warren:Ssh:AlgorithmProfile</c> as the daemon binds it: a known name in any case, else a configuration error.</summary>
public sealed class AlgorithmProfileOptionsTests
{
    private static SshFrontDoorOptions Bind(string? value)
    {
        var settings = new Dictionary<string, string?>();
        if (value is not null)
            settings[SshFrontDoorOptions.SectionName + ":AlgorithmProfile"] = value;
        var o = new SshFrontDoorOptions();
        new ConfigurationBuilder().AddInMemoryCollection(settings).Build().GetSection(SshFrontDoorOptions.SectionName).Bind(o);
        return o;
    }

    [Fact]
    public void Default_IsCompatible_NamesBindInAnyCase_AnUnknownOneIsAnError()
    {
        Assert.Equal(SshAlgorithmProfile.Compatible, Bind(null).AlgorithmProfile);
        Assert.Equal(SshAlgorithmProfile.Modern, Bind("modern").AlgorithmProfile);
        Assert.Equal(SshAlgorithmProfile.Modern, Bind("MODERN").AlgorithmProfile);
        Assert.Equal(SshAlgorithmProfile.Compatible, Bind("compatible").AlgorithmProfile);
        Assert.Throws<InvalidOperationException>(() => Bind("fips"));
        Assert.Throws<InvalidOperationException>(() => Bind(""));
    }
}
