using System.Net;
using Warren.Edge.Adapters;
using Warren.Edge.Tests.Support;

namespace Warren.Edge.Tests.Adapters;

/// <summary>
/// The front door's VM address cache never hands one VM's traffic to another: an entry lives only while the VM's
/// record is the one read before the engine was asked, and is keyed by VM id.
/// </summary>
public sealed class RuntimeWebUpstreamLocatorTests
{
    private readonly Dictionary<string, IPAddress?> _engine = new();
    private readonly Dictionary<string, object?> _records = new();
    private int _lookups;
    private readonly ManualTimeProvider _time = new();

    private RuntimeWebUpstreamLocator Locator() => new(
        (id, _) => { _lookups++; return Task.FromResult(_engine.GetValueOrDefault(id)); },
        id => _records.GetValueOrDefault(id),
        _time);

    [Fact]
    public async Task SameRecord_WithinLifetime_IsServedFromTheCache()
    {
        var locator = Locator();
        _records["vm-a"] = new object();
        _engine["vm-a"] = IPAddress.Parse("172.17.0.2");
        Assert.Equal(IPAddress.Parse("172.17.0.2"), await locator.GetAddressAsync("vm-a", default));
        Assert.Equal(IPAddress.Parse("172.17.0.2"), await locator.GetAddressAsync("vm-a", default));
        Assert.Equal(1, _lookups);
    }

    [Fact]
    public async Task ChangedRecord_AsksTheEngineAgain_AtOnce()
    {
        var locator = Locator();
        _records["vm-a"] = new object();
        _engine["vm-a"] = IPAddress.Parse("172.17.0.2");
        await locator.GetAddressAsync("vm-a", default);
        // Restarted (a new record) with another address; the old one went to vm-b.
        _records["vm-a"] = new object();
        _engine["vm-a"] = IPAddress.Parse("172.17.0.3");
        _records["vm-b"] = new object();
        _engine["vm-b"] = IPAddress.Parse("172.17.0.2");
        Assert.Equal(IPAddress.Parse("172.17.0.3"), await locator.GetAddressAsync("vm-a", default));
        Assert.Equal(IPAddress.Parse("172.17.0.2"), await locator.GetAddressAsync("vm-b", default));
        Assert.Equal(3, _lookups);
    }

    [Fact]
    public async Task RemovedOrStoppedVm_GetsNoAddress_EvenWithAFreshEntry()
    {
        var locator = Locator();
        _records["vm-a"] = new object();
        _engine["vm-a"] = IPAddress.Parse("172.17.0.2");
        await locator.GetAddressAsync("vm-a", default);
        _records["vm-a"] = null; // Deleting, stopped or gone: the index no longer shows it running
        Assert.Null(await locator.GetAddressAsync("vm-a", default));
        Assert.Equal(1, _lookups);
    }

    [Fact]
    public async Task ExpiredOrForgottenEntry_AsksTheEngineAgain()
    {
        var locator = Locator();
        _records["vm-a"] = new object();
        _engine["vm-a"] = IPAddress.Parse("172.17.0.2");
        await locator.GetAddressAsync("vm-a", default);
        _time.Advance(RuntimeWebUpstreamLocator.CacheLifetime);
        await locator.GetAddressAsync("vm-a", default);
        Assert.Equal(2, _lookups);
        locator.Forget("vm-a");
        await locator.GetAddressAsync("vm-a", default);
        Assert.Equal(3, _lookups);
    }

    [Fact]
    public async Task RecordChangedDuringTheLookup_IsNotTrustedNextTime()
    {
        _records["vm-a"] = new object();
        var locator = new RuntimeWebUpstreamLocator(
            (id, _) =>
            {
                _lookups++;
                _records["vm-a"] = new object(); // the record changes while the engine answers
                return Task.FromResult<IPAddress?>(IPAddress.Parse("172.17.0.2"));
            },
            id => _records.GetValueOrDefault(id),
            _time);
        await locator.GetAddressAsync("vm-a", default);
        await locator.GetAddressAsync("vm-a", default);
        Assert.Equal(2, _lookups);
    }
}
