using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Warren.Runtime.MicroVm;

/// <summary>The host-side steps of creating a microVM, in order (what <see cref="CreatePhases"/> times).</summary>
internal enum CreatePhase { Image, Base, Network, Disks, Tap, Qemu, Qmp }

/// <summary>
/// How long each host-side step of a create took (milliseconds), logged once per VM so the boot overhead over bare QEMU
/// can be split into Warren's part and the guest's (bench/vm/run.sh reads it from the daemon's log).
/// </summary>
internal sealed class CreatePhases
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<(CreatePhase Phase, long Milliseconds)> _marks = new(Enum.GetValues<CreatePhase>().Length);
    private long _last;

    public void Mark(CreatePhase phase)
    {
        long now = _clock.ElapsedMilliseconds;
        _marks.Add((phase, now - _last));
        _last = now;
    }

    /// <summary>"image=12 base=0 … total=345" (milliseconds).</summary>
    public override string ToString()
    {
        var text = new StringBuilder();
        foreach (var (phase, ms) in _marks)
            text.Append(phase.ToString().ToLowerInvariant()).Append('=').Append(ms.ToString(CultureInfo.InvariantCulture)).Append(' ');
        return text.Append("total=").Append(_last.ToString(CultureInfo.InvariantCulture)).ToString();
    }
}
