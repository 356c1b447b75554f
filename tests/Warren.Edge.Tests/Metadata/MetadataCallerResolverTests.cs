using System.Net;
using Warren.Edge.Metadata;
using Warren.Platform.Addressing;
using Warren.Platform.Storage;

namespace Warren.Edge.Tests.Metadata;

/// <summary>
/// The caller is the VM whose network the local address belongs to, and only while the platform knows that VM: a
/// removed VM (not in the index) is nobody, whatever the runtime's directory still says.
/// </summary>
public sealed class MetadataCallerResolverTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("warren-meta-").FullName;
    private readonly WarrenDatabase _db;

    public MetadataCallerResolverTests() => _db = new WarrenDatabase(Path.Combine(_dir, "warren.db"));

    public void Dispose()
    {
        _db.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private sealed class Directory1(string? vmId) : IVmHostAddressDirectory
    {
        public int Lookups;
        public Task<string?> FindVmIdByHostAddressAsync(IPAddress hostAddress, CancellationToken ct)
        {
            Interlocked.Increment(ref Lookups);
            return Task.FromResult(vmId);
        }
    }

    [Fact]
    public async Task UnknownAddress_OrAVmThePlatformNoLongerHas_IsNobody()
    {
        var index = new PlatformIndex(_db);
        var none = new MetadataCallerResolver(new Directory1(null), index, TimeProvider.System);
        Assert.Null(await none.ResolveAsync(IPAddress.Parse("10.231.0.1"), IPAddress.Parse("10.231.0.2"), CancellationToken.None));
        var removed = new Directory1("vm-gone");
        var resolver = new MetadataCallerResolver(removed, index, TimeProvider.System);
        Assert.Null(await resolver.ResolveAsync(IPAddress.Parse("10.231.0.1"), IPAddress.Parse("10.231.0.2"), CancellationToken.None));
        Assert.Null(await resolver.ResolveAsync(null, IPAddress.Parse("10.231.0.2"), CancellationToken.None));
        // Within the cache period one engine lookup serves repeated requests from the same VM network.
        Assert.Null(await resolver.ResolveAsync(IPAddress.Parse("::ffff:10.231.0.1"), null, CancellationToken.None));
        Assert.InRange(removed.Lookups, 1, 2);
    }
}
