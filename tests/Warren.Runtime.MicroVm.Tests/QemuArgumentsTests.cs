using Warren.Platform.Runtime;
using Xunit;

namespace Warren.Runtime.MicroVm.Tests;

/// <summary>
/// The QEMU command line's memory options (unit level: the VMs booted by the other tests prove QEMU 7.2 accepts them):
/// TCG's translation cache bounded by tb-size, none of it under KVM, and the balloon's free page reporting.
/// </summary>
public sealed class QemuArgumentsTests
{
    private static List<string> Arguments(bool kvm, int tcgCacheMiB)
    {
        var record = new VmRecord("vm1", "one", "warren/busybox:1", "sha256:00", new VmResources(1, 512L << 20, 1L << 30), "10.42.0.2",
            [], [], [], null, null, null, null);
        return QemuProcess.Arguments(record, new VmLayout("/tmp/warren-args-test", "vm1"), "/kernel", kvm, consoleLog: false, tcgCacheMiB: tcgCacheMiB);
    }

    private static string After(List<string> args, string option) => args[args.IndexOf(option) + 1];

    [Fact]
    public void Tcg_BoundsTheTranslationCache()
    {
        Assert.Equal("tcg,tb-size=64", After(Arguments(kvm: false, tcgCacheMiB: 64), "-accel"));
        Assert.Equal("tcg", After(Arguments(kvm: false, tcgCacheMiB: 0), "-accel"));
    }

    [Fact]
    public void Kvm_HasNoTranslationCache()
    {
        Assert.Equal("kvm", After(Arguments(kvm: true, tcgCacheMiB: 64), "-accel"));
    }

    [Fact]
    public void Balloon_ReportsFreePages_AndDeflatesOnOom()
    {
        var balloon = Arguments(kvm: false, tcgCacheMiB: 64).Single(a => a.StartsWith("virtio-balloon-device", StringComparison.Ordinal));
        Assert.Contains("free-page-reporting=on", balloon.Split(','));
        Assert.Contains("deflate-on-oom=on", balloon.Split(','));
    }

    [Fact]
    public void CreatePhases_AreListedInOrderWithTheirTotal()
    {
        var phases = new CreatePhases();
        phases.Mark(CreatePhase.Image);
        phases.Mark(CreatePhase.Disks);
        var text = phases.ToString();
        Assert.Matches(@"^image=\d+ disks=\d+ total=\d+$", text);
    }
}
